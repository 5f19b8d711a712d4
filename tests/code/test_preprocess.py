import itertools

import numpy as np
import pandas as pd
import pytest

from pipeline.core.tasks import task
from pipeline.data.columns import input_names
from pipeline.data.modalities.table import clean_table, table_statistics
from pipeline.data.preparation import split_indices
from pipeline.data.sources import DataError


def penguin_like_table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "Bill Length (mm)": [39.1, np.nan, 40.3, 36.7, 39.3, 38.9],
            "island": ["Biscoe", "Dream", None, "Dream", "Biscoe", "Torgersen"],
            "species": ["Adelie", "Gentoo", "Adelie", None, "Gentoo", "Adelie"],
        }
    )


HOSTILE_COLUMNS = [
    "class",
    "Bill Length (mm)",
    "2nd",
    "label",
    "a.b/c-d[0]",
    "naïve café",
    "λ",
    "match",
    "self",
    "   ",
    "if",
]


def test_any_column_name_becomes_a_valid_stable_signature_key():
    import keyword

    names = input_names(HOSTILE_COLUMNS)
    assert names["class"] == "class_" and names["Bill Length (mm)"] == "bill_length_mm"
    assert names["2nd"] == "f_2nd" and names["label"] == "label_" and names["naïve café"] == "naive_cafe"
    assert names["a.b/c-d[0]"] == "a_b_c_d_0" and names["self"] == "self_"
    for key in names.values():
        assert key.isidentifier() and not keyword.iskeyword(key) and not keyword.issoftkeyword(key)
    assert input_names(HOSTILE_COLUMNS) == names  # stable
    assert len(set(names.values())) == len(names)


def test_two_columns_that_would_share_a_key_are_a_clear_error():
    with pytest.raises(DataError, match="columns 'Bill Length' and 'bill_length' would both become the model input"):
        input_names(["Bill Length", "bill_length"])


def test_impute_keeps_rows_with_missing_features_and_drops_unlabelled_rows():
    features, labels, specs = clean_table(
        penguin_like_table(), "species", task("classification"), ["Adelie", "Gentoo"], "impute"
    )
    assert len(features) == 5
    assert labels.tolist() == [0, 1, 0, 1, 0]
    assert [spec.type for spec in specs] == ["numeric", "categorical"]
    assert np.isnan(features["bill_length_mm"][1])
    assert features["island"][2] == ""


def test_drop_removes_rows_with_missing_features():
    features, labels, _ = clean_table(
        penguin_like_table(), "species", task("classification"), ["Adelie", "Gentoo"], "drop"
    )
    assert len(features) == 3 and labels.tolist() == [0, 1, 0]


def test_statistics_come_from_the_rows_given_and_ignore_missing_values():
    features, _, specs = clean_table(
        penguin_like_table(), "species", task("classification"), ["Adelie", "Gentoo"], "impute"
    )
    statistics = table_statistics(features.iloc[[0, 1, 2]], specs)
    assert statistics[0].mean == pytest.approx((39.1 + 40.3) / 2)
    assert statistics[0].median == pytest.approx((39.1 + 40.3) / 2)
    assert statistics[1].vocabulary == ["Biscoe", "Dream"]


def test_split_is_stratified_disjoint_complete_and_seeded():
    labels = np.repeat([0, 1, 2], [50, 30, 20])
    first = split_indices(labels, task("classification"), 0.15, 0.15, seed=7)
    again = split_indices(labels, task("classification"), 0.15, 0.15, seed=7)
    other = split_indices(labels, task("classification"), 0.15, 0.15, seed=8)
    assert all(np.array_equal(first[name], again[name]) for name in first)
    assert not np.array_equal(first["test"], other["test"])
    combined = np.concatenate(list(first.values()))
    assert sorted(combined.tolist()) == list(range(100))
    # Stratified: each class's share of the test split is its share of the data, to within one example.
    expected = np.bincount(labels) * len(first["test"]) / len(labels)
    assert np.all(np.abs(np.bincount(labels[first["test"]]) - expected) <= 1)


def test_too_few_examples_is_a_data_error():
    with pytest.raises(DataError, match="at least 10"):
        split_indices(np.array([0, 1, 0]), task("classification"), 0.2, 0.2, seed=0)


def test_a_class_too_small_to_stratify_still_splits(caplog):
    labels = np.array([0] * 30 + [1] * 2)
    splits = split_indices(labels, task("classification"), 0.2, 0.2, seed=1)
    assert sorted(np.concatenate(list(splits.values())).tolist()) == list(range(32))
    assert "splitting without stratification" in caplog.text


def test_training_shards_are_not_in_class_order_even_when_the_source_is(tmp_path):
    from pipeline.core.config import DataConfig, PreprocessConfig
    from pipeline.data.preparation import preprocess
    from pipeline.ml.features import make_dataset

    count = 600
    table = pd.DataFrame(
        {"size": np.arange(count, dtype=float), "label": np.repeat(["a", "b", "c"], count // 3)}
    )  # sorted by class, as image folders are
    description = {"kind": "table", "task": "classification", "label": "label", "classes": ["a", "b", "c"],
                   "fingerprint": "test"}  # fmt: skip
    table.to_parquet(tmp_path / "table.parquet")
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    data = tmp_path / "table.parquet"
    spec = preprocess(description, data, DataConfig(source="csv"), PreprocessConfig(), 1, prepared)
    labels = np.concatenate([np.asarray(batch) for _, batch in make_dataset(prepared, spec, "train", 64)])
    assert len(labels) == spec.split("train").num_examples
    first_quarter = labels[: len(labels) // 4]
    assert len(set(first_quarter.tolist())) == 3  # every class early on, not one class after another
    assert sorted(np.bincount(labels).tolist()) == sorted(spec.split("train").class_counts)


def write_user_images(folder) -> list:
    """A folder as users have them: JPEG/PNG/BMP/GIF, upper-case extensions, every size and mode."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    red = (200, 30, 30)
    paths = []
    rotated = Image.new("RGB", (40, 20), red)
    rotated.paste((0, 0, 0), (0, 0, 10, 20))  # a black stripe on the left, before rotation
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    rotated.save(folder / "PHOTO.JPG", exif=exif)
    paths.append(folder / "PHOTO.JPG")
    transparent = Image.new("RGBA", (12, 12), (0, 0, 0, 0))
    transparent.save(folder / "clear.png")
    paths.append(folder / "clear.png")
    Image.new("P", (30, 17), 3).save(folder / "palette.GIF")
    paths.append(folder / "palette.GIF")
    Image.new("L", (8, 8), 90).save(folder / "grey.bmp")
    paths.append(folder / "grey.bmp")
    Image.new("RGB", (64, 48), red).save(folder / "big.jpeg")
    paths.append(folder / "big.jpeg")
    return [str(path) for path in paths]


def test_user_images_of_every_format_and_mode_come_out_upright_at_the_configured_size(tmp_path):
    from pipeline.data.preparation import load_images

    paths = write_user_images(tmp_path / "photos")
    images = load_images(paths, [16, 16], "rgb")
    assert images.shape == (5, 16, 16, 3) and images.dtype == np.uint8
    upright = images[0]
    assert upright[:3].mean() < 60 and upright[-3:].mean() > 60  # the stripe is on top once the EXIF turn is applied
    assert (images[1] == 255).all()  # transparent is white, not black
    grey = load_images(paths, [16, 16], "grayscale")
    assert grey.shape == (5, 16, 16, 1)


def test_statistics_merged_from_parts_are_those_of_the_whole_split():
    from pipeline.data.modalities.table import feature_specs, merged_table_statistics, table_partials, typed_features
    from pipeline.data.preparation import image_partials, image_statistics, merged_image_statistics

    generator = np.random.default_rng(3)
    raw = pd.DataFrame(
        {
            "size": generator.normal(50, 9, 1001).round(1),  # repeated values: the median sits in a run
            "colour": generator.choice(["red", "blue", None, "green"], 1001, p=[0.3, 0.3, 0.1, 0.3]),
        }
    )
    raw.loc[[4, 500], "size"] = np.nan
    specs = feature_specs(raw)
    features = typed_features(raw, specs)
    whole = table_statistics(features, specs)
    for bounds in ([0, 1001], [0, 1, 600, 1001], [0, 333, 334, 900, 1001]):
        parts = [table_partials(features.iloc[start:end], specs) for start, end in itertools.pairwise(bounds)]
        merged = merged_table_statistics(parts, specs)
        assert merged[0].median == whole[0].median == np.nanmedian(raw["size"].to_numpy(np.float32))
        assert merged[0].mean == pytest.approx(whole[0].mean, rel=1e-14)
        assert merged[0].variance == pytest.approx(whole[0].variance, rel=1e-12)
        assert merged[1] == whole[1]
    assert whole[1].vocabulary == ["blue", "green", "red"]

    images = generator.integers(0, 256, (30, 4, 4, 3), dtype=np.uint8)
    merged = merged_image_statistics([image_partials(images[:7]), image_partials(images[7:])])
    assert merged == image_statistics(images)
    assert merged["mean"] == pytest.approx(images.reshape(-1, 3).mean(axis=0).tolist(), rel=1e-15)
    assert merged["variance"] == pytest.approx(images.reshape(-1, 3).astype(float).var(axis=0).tolist(), rel=1e-13)


def test_the_most_frequent_text_of_a_tie_is_the_first_to_appear_in_any_split_into_parts():
    from pipeline.core.spec import FeatureSpec
    from pipeline.data.modalities.table import merged_table_statistics, table_partials

    specs = [FeatureSpec(column="c", name="c", type="categorical")]
    features = pd.DataFrame({"c": np.array(["b", "a", "", "a", "c", "b"], dtype=object)})
    for cut in range(7):
        parts = [table_partials(features.iloc[:cut], specs), table_partials(features.iloc[cut:], specs)]
        (merged,) = merged_table_statistics(parts, specs)
        assert merged.most_frequent == "b" and merged.vocabulary == ["a", "b", "c"]


def test_non_ascii_categories_come_back_from_the_shards_as_the_same_text(tmp_path):
    """The monitor read categorical values back with numpy's astype(str), which decodes bytes as ASCII: a city
    column holding "Zürich" failed every run at its last stage (UnicodeDecodeError)."""
    from pipeline.core.config import DataConfig, MonitorConfig, PreprocessConfig
    from pipeline.data.preparation import preprocess
    from pipeline.ml.modalities import model_modality
    from pipeline.ops import monitoring

    cities = ["Zürich", "Genève", "Bâle", "東京", "Kraków 🚋", ""]
    count = 120
    table = pd.DataFrame(
        {
            "city": [cities[index % len(cities)] or None for index in range(count)],
            "size": np.arange(count, dtype=float),
            "label": np.repeat(["a", "b"], count // 2),
        }
    )
    table.to_parquet(tmp_path / "table.parquet")
    description = {"kind": "table", "task": "classification", "label": "label", "classes": ["a", "b"],
                   "fingerprint": "test"}  # fmt: skip
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    table_file = tmp_path / "table.parquet"
    spec = preprocess(description, table_file, DataConfig(source="csv"), PreprocessConfig(), 1, prepared)
    assert spec.features[0].vocabulary == sorted(city for city in cities if city)
    reference, _ = monitoring.read_reference(prepared, spec)
    current, _ = monitoring.read_reference(prepared, spec, "test")
    assert set(reference["city"]) == set(cities)  # the missing value is the empty text, as in training
    families = model_modality("table").drift_families(reference, current, spec, MonitorConfig(), (None, None))
    assert set(families["features"]["tests"]["city"]["shares"]["reference"]) == set(cities) - {""}
    batch = model_modality("table").request_batch([{"city": "Zürich", "size": 3.0}], spec)
    assert batch["city"].tolist() == [["Zürich"]]


def test_columns_named_like_the_models_own_layers_get_keys_that_build():
    """A column named `features` or `predictions` once failed to build ("The name ... is used 2 times")."""
    import dataclasses

    from pipeline.core.config import Config
    from pipeline.data.columns import MODEL_LAYER_NAMES
    from pipeline.data.modalities.table import feature_specs, typed_features
    from pipeline.ml.hyperparameters import defaults_from_config
    from pipeline.ml.models import build_model
    from tests.specs import make_spec

    table = pd.DataFrame({name: [1.0, 2.0, 3.0, 5.0] for name in sorted(MODEL_LAYER_NAMES)})
    specs = feature_specs(table, [])
    assert {spec.name for spec in specs} == {f"{name}_" for name in MODEL_LAYER_NAMES}
    specs = table_statistics(typed_features(table, specs), specs)
    spec = make_spec({"kind": "table", "classes": ["no", "yes"], "features": [dataclasses.asdict(s) for s in specs]})
    model = build_model({**defaults_from_config(Config()), "family": "mlp"}, spec)
    assert set(model.input) == {spec.name for spec in specs}
