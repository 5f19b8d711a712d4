"""Evaluation per slice: which test examples each slice holds, for every column type and per class; and the gate's
per-slice bars, which reject a candidate better overall but worse for one group, naming the group."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.core.config import GateConfig, config_from_dict
from pipeline.core.errors import ConfigError, StageError
from pipeline.ml.slices import judge, metric_name, slice_masks
from pipeline.stages.gate import decide
from tests.specs import make_spec

TABLE = make_spec(
    {
        "kind": "text", "label": "species", "classes": ["Adelie", "Gentoo"],
        "features": [{"column": "island", "name": "island", "type": "categorical"},
                     {"column": "bill length", "name": "bill_length", "type": "numeric"},
                     {"column": "note", "name": "note", "type": "text"}],
    }
)  # fmt: skip
FEATURES = {
    "island": np.array(["Biscoe", "Dream", "Biscoe", "", "Dream", "Biscoe", "Torgersen", "Dream"], dtype=object),
    "bill_length": np.array([35.0, 40.0, 45.0, np.nan, 50.0, 38.0, 42.0, 47.0], dtype=np.float32),
    "note": np.array(["a", "a b", "a b c", "a b c d", "x", "x y", "x y z", "w w w w w"], dtype=object),
}
LABELS = np.array([0, 1, 0, 1, 1, 0, 0, 1])


def test_each_column_type_and_each_class_makes_its_slices():
    masks = slice_masks(TABLE, FEATURES, LABELS, ["island", "bill length", "note"])
    assert masks["island = Biscoe"].tolist() == [True, False, True, False, False, True, False, False]
    assert masks["island missing"].tolist() == [False, False, False, True, False, False, False, False]
    numeric = {name: mask for name, mask in masks.items() if name.startswith("bill length")}
    assert list(numeric) == [
        "bill length in [35, 39)", "bill length in [39, 42)", "bill length in [42, 46)", "bill length in [46, 50]",
        "bill length missing",
    ]  # fmt: skip
    assert sum(mask.sum() for mask in numeric.values()) == len(LABELS)  # every example in exactly one bucket
    assert masks["note (words) in [4, 5]"].tolist() == [False, False, False, True, False, False, False, True]
    by_class = slice_masks(TABLE, FEATURES, LABELS, "auto")  # each class, and the text column's length quartiles
    assert list(by_class)[:2] == ["species = Adelie", "species = Gentoo"] and by_class["species = Gentoo"].sum() == 4
    assert list(by_class)[2:] == [name for name in masks if name.startswith("note (words)")]
    with pytest.raises(StageError, match="'colour' is not an input column"):
        slice_masks(TABLE, FEATURES, LABELS, ["colour"])
    assert metric_name("bill length in [35, 39)", "accuracy") == "test_slice/bill length in 35 to 39/accuracy"
    assert metric_name("island = Biscoe", "examples") == "test_slice/island/Biscoe/examples"


def entry(name, accuracy, examples=40, judged=True):
    return {"slice": name, "examples": examples, "judged": judged, "metrics": {"accuracy": accuracy}}


def test_a_candidate_better_overall_but_worse_on_one_slice_is_rejected_naming_it():
    champion = [entry("island = Biscoe", 0.95), entry("island = Dream", 0.97), entry("island = Torgersen", 0.5, 4)]
    candidate = [
        entry("island = Biscoe", 0.99),
        entry("island = Dream", 0.90),
        entry("island = Torgersen", 0.0, 4, False),
    ]
    settings = GateConfig(metric="accuracy", thresholds={"accuracy": 0.8}, max_slice_drop=0.02)
    failures = judge(candidate, champion, "accuracy", {}, settings.max_slice_drop)
    assert failures == [
        "slice island = Dream (40 examples): accuracy 0.9000 vs champion 0.9700 (worse by 0.0700, at most 0.02"
        " allowed): FAILS"
    ]  # Torgersen: 4 examples, too few to judge
    decision = decide({"accuracy": 0.96}, {"accuracy": 0.95}, settings, failures)
    assert decision["blessed"] is False and decision["reasons"][0].startswith("slice island = Dream")
    assert decide({"accuracy": 0.96}, {"accuracy": 0.95}, settings, [])["blessed"] is True
    under = judge(candidate, None, "accuracy", {"accuracy": 0.95}, None)
    assert under == ["slice island = Dream (40 examples): accuracy 0.9000 < 0.95: FAILS"]


def test_slice_settings_are_checked():
    config = config_from_dict({"evaluate": {"slices": ["island"]}, "gate": {"slice_thresholds": {"accuracy": 0.8}}})
    assert config.evaluate.slices == ["island"] and config.gate.max_slice_drop is None
    with pytest.raises(ConfigError, match="gate.slice_thresholds.acuracy"):
        config_from_dict({"gate": {"slice_thresholds": {"acuracy": 0.8}}})
    with pytest.raises(ConfigError, match="gate.max_slice_drop"):
        config_from_dict({"gate": {"max_slice_drop": -0.1}})
    with pytest.raises(ConfigError, match="evaluate.min_slice_examples"):
        config_from_dict({"evaluate": {"min_slice_examples": 0}})


def test_the_most_confidently_wrong_examples_come_first_with_their_inputs():
    from pipeline.ml.evaluation import confidently_wrong

    outputs = np.array([[0.9], [0.2], [0.6], [0.99], [0.4], [0.7], [0.1], [0.8]])  # P(Gentoo) of each example
    wrong = confidently_wrong(TABLE, FEATURES, LABELS, outputs, count=2)
    # wrong: 1 (an Adelie called Gentoo at 0.9), 2 (a Gentoo called Adelie at 0.8), 6 (0.7), 3 and 5 (0.6)
    assert [row["example"] for row in wrong] == [1, 2] and wrong[1]["predicted"] == "Adelie"
    assert wrong[0] == {
        "example": 1, "actual": "Adelie", "predicted": "Gentoo", "confidence": 0.9,
        "input": {"island": "Biscoe", "bill length": 35.0, "note": "a"},
    }  # fmt: skip
    assert confidently_wrong(TABLE, None, LABELS, outputs, count=1)[0].keys() == {
        "example", "actual", "predicted", "confidence",
    }  # fmt: skip
