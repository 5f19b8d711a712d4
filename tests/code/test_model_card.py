"""The model card: what it says about the data, the model, the metrics beside the champion's and the gate's decision,
for each kind of data, and that it fits the registry's description column."""

from __future__ import annotations

from pipeline.serving import model_card
from tests.specs import make_spec

SPLITS = {
    "train": {"num_examples": 240, "files": [], "class_counts": [100, 80, 60]},
    "validation": {"num_examples": 50, "files": [], "class_counts": [20, 17, 13]},
    "test": {"num_examples": 52, "files": [], "class_counts": [21, 18, 13]},
}
PENGUINS = make_spec(
    {
        "kind": "table", "label": "species", "classes": ["Adelie", "Chinstrap", "Gentoo"], "splits": SPLITS,
        "features": [{"column": "island", "name": "island", "type": "categorical"},
                     {"column": "bill_length_mm", "name": "bill_length_mm", "type": "numeric"}],
    }
)  # fmt: skip


def card(spec=PENGUINS, champion=None, **overrides) -> str:
    arguments = dict(
        name="penguins",
        version=3,
        spec=spec,
        source="penguins",
        hyperparameters={"family": "mlp", "hidden_units": [128], "learning_rate": 0.001, "unrelated": 1},
        parameters=2_051,
        candidate={"accuracy": 0.98077, "f1": 0.975, "num_examples": 52},
        champion=champion,
        champion_version=2 if champion else None,
        decision={"blessed": True, "reasons": ["accuracy 0.9808 >= 0.9: passes"]},
        metric_names=["accuracy", "f1", "roc_auc"],
        intended_use=model_card.default_intended_use(spec, "penguins"),
        limitations=model_card.default_limitations(spec),
        example_request=model_card.example_request([{"island": "Dream", "bill_length_mm": 39.1}]),
    )
    return model_card.build_card(**{**arguments, **overrides})


def test_the_card_says_what_the_model_was_trained_on_and_how_it_did_beside_the_champion():
    text = card(champion={"accuracy": 0.9615, "f1": 0.95})
    assert text.startswith("# Model card: penguins v3\n")
    assert "**blessed: the new champion**" in text
    assert "- Source: `penguins` (table data, task: classification); data version `test`" in text
    assert "- Examples: train 240, validation 50, test 52" in text
    assert "Adelie (100), Chinstrap (80), Gentoo (60)" in text
    assert "`island` (categorical), `bill_length_mm` (numeric)" in text
    assert "- Family: mlp; 2,051 parameters" in text and '"unrelated"' not in text
    assert "| accuracy | 0.9808 | 0.9615 |" in text and "| f1 | 0.9750 | 0.9500 |" in text
    assert "roc_auc" not in text  # not measured: no row
    assert "- accuracy 0.9808 >= 0.9: passes" in text
    assert 'mlflow.pyfunc.load_model("models:/penguins@champion")' in text
    assert '{"instances": [{"island": "Dream", "bill_length_mm": 39.1}]}' in text
    assert "Classifying by `species` for table data like `penguins`" in text


def test_a_first_version_says_no_champion_was_compared_and_a_rejected_one_says_so():
    text = card(decision={"blessed": False, "reasons": ["accuracy 0.5 >= 0.9: FAILS"]})
    assert "No champion was compared." in text and "**not blessed**" in text and "| accuracy | 0.9808 |  |" in text


def test_every_kind_of_data_is_described():
    series = make_spec(
        {
            "kind": "series", "task": "forecast", "label": "sunspots", "splits": SPLITS,
            "series": {"time_column": "date", "window": 22, "horizon": 3, "seasonal_period": 11,
                       "frequency": "YS-JAN", "blocks": {"train": ["1700-01-01", "1916-01-01"]}},
        }
    )  # fmt: skip
    text = card(series)
    assert "the next 3 values of `sunspots` from a window of 22 steps (YS-JAN; season 11)" in text
    assert "train 1700-01-01 to 1916-01-01" in text and "Forecasting `sunspots`" in text
    regression = make_spec(
        {"kind": "table", "task": "regression", "label": "price", "splits": SPLITS,
         "label_statistics": {"mean": 12.5, "variance": 4.0}}
    )  # fmt: skip
    assert "Target `price`: training mean 12.5000, standard deviation 2.0000" in card(regression)
    images = make_spec({"kind": "image", "classes": ["0", "1", "2"], "splits": SPLITS,
                        "image": {"height": 8, "width": 8, "channels": 1}})  # fmt: skip
    long_request = [[[0.0] * 8] * 8]
    text = card(images, example_request=model_card.example_request(long_request * 10))
    assert "8x8 images, 1 channel(s)" in text and "one example is" in text  # a long request is described


def test_the_registry_description_fits_mlflows_column_and_the_page_stands_alone():
    long = card(limitations="x" * 6000)
    cut = model_card.description(long)
    assert len(cut) <= model_card.DESCRIPTION_LIMIT and cut.endswith(f"model_card/{model_card.CARD_FILE})\n")
    page = model_card.to_html(card(), "penguins v3")
    assert "<table>" in page and "<h1>Model card: penguins v3</h1>" in page and "<script" not in page
