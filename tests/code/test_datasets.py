from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.core.config import DataConfig
from pipeline.data import sources
from pipeline.data.ingestion import ingest, load_source


def make_image_dir(root: Path, classes=("cat", "dog"), per_class=6, size=(8, 8)) -> Path:
    generator = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True)
        for index in range(per_class):
            pixels = generator.integers(0, 255, size=size, dtype=np.uint8)
            Image.fromarray(pixels, mode="L").save(root / name / f"{index}.png")
    return root


def test_digits_are_written_as_png_class_folders(tmp_path):
    root = sources.write_digits_images(tmp_path / "digits")
    folders = sorted(child.name for child in root.iterdir())
    assert folders == [str(digit) for digit in range(10)]
    files = list(root.rglob("*.png"))
    assert len(files) == 1797
    with Image.open(files[0]) as image:
        assert image.size == (8, 8) and image.mode == "L"


def test_penguins_csv_has_real_missing_values(tmp_path):
    table = sources.load_table(sources.write_penguins_csv(tmp_path / "penguins.csv"), "csv")
    assert len(table) == 344
    assert {"species", "island", "sex", "bill_length_mm"} <= set(table.columns)
    assert table["sex"].isna().sum() > 0


def test_image_listing_follows_the_keras_folder_convention(tmp_path):
    root = make_image_dir(tmp_path / "images")
    (root / "cat" / "notes.txt").write_text("not an image: listed, for validation to reject")
    (root / "cat" / ".DS_Store").write_text("hidden files are skipped")
    (root / "empty_class").mkdir()
    manifest, class_folders = sources.scan_image_dir(root)
    assert list(manifest.columns) == ["path", "label"]
    assert manifest["label"].value_counts().to_dict() == {"cat": 7, "dog": 6}
    assert class_folders == ["cat", "dog", "empty_class"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "the file is empty"),
        (b"a,b,label\n", "no data rows"),
        (b"a,label\n1,\xff\xfe\n", "not UTF-8"),
    ],
)
def test_unreadable_tables_give_a_clear_error(tmp_path, content, message):
    path = tmp_path / "data.csv"
    path.write_bytes(content)
    with pytest.raises(sources.DataError, match=message):
        sources.load_table(path, "csv")


def test_missing_paths_give_a_clear_error(tmp_path):
    with pytest.raises(sources.DataError, match="no such file"):
        sources.load_table(tmp_path / "absent.csv", "csv")
    with pytest.raises(sources.DataError, match="no such folder"):
        sources.scan_image_dir(tmp_path / "absent")
    (tmp_path / "empty" / "class_a").mkdir(parents=True)
    with pytest.raises(sources.DataError, match="found no files in class sub-folders"):
        sources.scan_image_dir(tmp_path / "empty")


def test_ingest_snapshots_a_user_csv_byte_for_byte(tmp_path):
    source = tmp_path / "houses.csv"
    pd.DataFrame({"rooms": [1, 2, 3], "city": ["a", "b", None], "price": [1.0, 2.0, 3.5]}).to_csv(source, index=False)
    data = DataConfig(source="csv", path=str(source), label="price", task="regression")
    output = tmp_path / "ingested"
    output.mkdir()
    description = ingest(data, output)
    assert description["kind"] == "table" and description["task"] == "regression" and description["label"] == "price"
    loaded, snapshot = load_source(output)
    assert loaded == description
    assert snapshot.read_bytes() == source.read_bytes()


def test_ingest_lists_an_image_folder_without_copying_it(tmp_path):
    root = make_image_dir(tmp_path / "images")
    output = tmp_path / "ingested"
    output.mkdir()
    description = ingest(DataConfig(source="image_dir", path=str(root)), output)
    assert description["class_folders"] == ["cat", "dog"] and description["num_files"] == 12
    manifest = pd.read_parquet(output / description["file"])
    assert manifest["path"].str.startswith(str(root)).all()
    assert not (output / "images").exists()


def test_fingerprints_follow_content_and_labels(tmp_path):
    first, second = tmp_path / "a.png", tmp_path / "b.png"
    first.write_bytes(b"one")
    second.write_bytes(b"two")
    fingerprint = sources.fingerprint_files([str(first), str(second)], ["x", "y"])
    assert fingerprint == sources.fingerprint_files([str(first), str(second)], ["x", "y"])
    assert fingerprint != sources.fingerprint_files([str(first), str(second)], ["y", "x"])
    second.write_bytes(b"three")
    assert fingerprint != sources.fingerprint_files([str(first), str(second)], ["x", "y"])
