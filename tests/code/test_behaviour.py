"""Behavioural checks: the changes each kind of data makes to test examples, what counts as an unchanged
prediction, written cases (minimum functionality and direction) run through the API's request parser, and the
gate's verdict on them."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.core.config import GateConfig, config_from_dict
from pipeline.core.errors import ConfigError
from pipeline.ml import behaviour
from pipeline.ml.modalities import model_modality
from pipeline.stages.gate import decide
from tests.specs import make_spec

REVIEWS = make_spec(
    {"kind": "text", "label": "verdict", "classes": ["rotten", "fresh"],
     "features": [{"column": "review", "name": "review", "type": "text"}]}
)  # fmt: skip


class WordRule:
    """A model whose whole rule is a word: P(fresh) 0.9 for texts with 'good', else 0.2 (a sigmoid output)."""

    def __call__(self, inputs, training=False):
        texts = [value.decode() if isinstance(value, bytes) else str(value) for value in np.ravel(inputs["review"])]
        return np.array([[0.9 if "good" in text.split() else 0.2] for text in texts], dtype=np.float32)


def test_each_kind_changes_its_test_examples_in_ways_that_should_not_matter():
    generator = np.random.default_rng(0)
    small = make_spec({"kind": "image", "classes": ["a", "b"], "image": {"height": 8, "width": 8, "channels": 1}})
    images = {"image": np.full((3, 8, 8, 1), 100.0, dtype=np.float32)}
    (darker,) = model_modality("image").perturbations(images, small, generator)  # an 8x8 digit is not shifted
    assert darker[0] == "pixels 5 % darker" and np.allclose(darker[1]["image"], 95.0) and darker[2] == 0.0
    wide = make_spec({"kind": "image", "classes": ["a", "b"], "image": {"height": 2, "width": 32, "channels": 1}})
    stripes = {"image": np.tile(np.arange(32, dtype=np.float32), (1, 2, 1))[..., None]}
    shifted = model_modality("image").perturbations(stripes, wide, generator)[1]
    assert shifted[0] == "shifted one pixel to the right"
    assert shifted[1]["image"][0, 0, :4, 0].tolist() == [0.0, 0.0, 1.0, 2.0]

    table = make_spec(
        {"kind": "text", "classes": ["a", "b"],
         "features": [{"column": "size", "name": "size", "type": "numeric"},
                      {"column": "note", "name": "note", "type": "text"}]}
    )  # fmt: skip
    rows = {
        "size": np.array([1.0, 2.0, np.nan, 4.0] * 25),
        "note": np.array(["fine", "", "ok then", "x"] * 25, dtype=object),
    }
    nudged, added = model_modality("text").perturbations(rows, table, generator)
    moved = nudged[1]["size"] - rows["size"]
    assert np.nanmax(np.abs(moved)) < 0.05 * np.nanstd(rows["size"]) and np.isnan(nudged[1]["size"][2])
    assert added[1]["note"][0] == "fine zqxjvw" and added[1]["size"] is rows["size"]

    series = make_spec(
        {"kind": "series", "task": "forecast", "label": "level",
         "features": [{"column": "level", "name": "level", "type": "numeric", "variance": 4.0},
                      {"column": "price", "name": "price", "type": "numeric", "variance": 9.0}],
         "series": {"time_column": "t", "window": 3, "horizon": 2, "seasonal_period": 1, "frequency": "D"}}
    )  # fmt: skip
    windows = {"level": np.zeros((2, 3)), "price": np.ones((2, 3))}
    ((name, up, shift),) = model_modality("series").perturbations(windows, series, generator)
    assert shift == 2.0 and np.all(up["level"] == 2.0) and np.all(up["price"] == 1.0)  # only the forecast column


def test_a_class_must_stay_and_a_value_move_by_the_shift_within_a_tenth_of_the_error():
    classes = make_spec(
        {"kind": "image", "classes": ["a", "b", "c"], "image": {"height": 1, "width": 1, "channels": 1}}
    )
    before = np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3]])
    after = np.array([[0.5, 0.4, 0.1], [0.2, 0.3, 0.5]])
    assert behaviour.unchanged(classes, before, after, 0.0, 0.0).tolist() == [True, False]
    values = make_spec({"kind": "table", "task": "regression", "features": []})
    moved = behaviour.unchanged(values, np.array([[10.0], [10.0]]), np.array([[12.05], [12.5]]), 2.0, 0.1)
    assert moved.tolist() == [True, False]


def test_written_cases_run_as_requests_and_each_says_what_it_saw(tmp_path):
    cases = tmp_path / "reviews.behaviour.yaml"
    cases.write_text(
        "minimum_functionality:\n"
        "  - {name: praise, instance: 'a good film', expect: fresh}\n"
        "  - {name: faint praise, instance: 'a fine film', expect: fresh}\n"
        "direction:\n"
        "  - {name: good raises fresh, instance: 'a film', changed: 'a good film',\n"
        "     expect: {class: fresh, change: up}}\n"
        "  - {instance: 'a good film', changed: 'a film', expect: {class: fresh, change: up}}\n"
    )
    results = behaviour.case_checks(WordRule(), REVIEWS, cases)
    assert [(result["check"], result["passes"]) for result in results] == [
        ("praise", True), ("faint praise", False), ("good raises fresh", True), ("direction case 2", False),
    ]  # fmt: skip
    assert results[1]["said"] == "expected fresh, got rotten"
    assert results[3]["said"] == "P(fresh) 0.9 -> 0.2, expected up"
    passes, reasons = behaviour.judge(results)
    assert (
        not passes and reasons[1] == "behaviour, minimum functionality: faint praise: expected fresh, got rotten: FAILS"
    )

    settings = GateConfig(metric="accuracy", thresholds={}, behaviour="judge")
    rejected = decide({"accuracy": 0.9}, None, settings, checks=results)
    assert rejected["blessed"] is False and any("faint praise" in reason for reason in rejected["reasons"])
    shown = decide({"accuracy": 0.9}, None, GateConfig(thresholds={}, behaviour="report"), checks=results)
    assert shown["blessed"] is True and shown["reasons"][1].endswith("(not judged: gate.behaviour is report)")

    broken = tmp_path / "broken.behaviour.yaml"
    broken.write_text("minimum_functionality:\n  - {instance: {title: 'x'}, expect: fresh}\n")
    with pytest.raises(ConfigError, match="unknown column 'title'"):
        behaviour.case_checks(WordRule(), REVIEWS, broken)
    broken.write_text("invariance: []\n")
    with pytest.raises(ConfigError, match="unknown section 'invariance'"):
        behaviour.case_checks(WordRule(), REVIEWS, broken)


def test_invariance_is_measured_on_every_test_example_and_cases_are_found_by_the_data_name(tmp_path):
    texts = np.array(["a good film", "a film", "good", "bad"], dtype=object)
    outputs = WordRule()({"review": texts})
    (check,) = behaviour.invariance_checks(WordRule(), REVIEWS, {"review": texts}, np.zeros(4), outputs, 0.9, 0)
    assert check["passed"] == 4 and check["total"] == 4 and check["passes"]  # an unseen word: no rule changes

    (tmp_path / "reviews.behaviour.yaml").write_text("direction: []\n")
    assert behaviour.cases_path("auto", tmp_path, "reviews") == tmp_path / "reviews.behaviour.yaml"
    assert (
        behaviour.cases_path("auto", tmp_path, "penguins") is None and behaviour.cases_path(None, tmp_path, "x") is None
    )
    with pytest.raises(ConfigError, match="does not exist"):
        behaviour.cases_path(str(tmp_path / "missing.yaml"), tmp_path, "reviews")
    assert config_from_dict({}).gate.behaviour == "judge"
    assert config_from_dict({"gate": {"thresholds": {"accuracy": 0.5}}}).gate.behaviour == "report"
