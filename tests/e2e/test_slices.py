"""Slices end to end on the penguins: the metrics per island and per sex in the evaluate stage's report, its DVC plot
file, MLflow and the version's model card, and the gate judging them."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from pipeline.ml.slices import metric_name
from tests.e2e.test_experiments import pipeline_runs
from tests.e2e.test_zoo import FAST, run_stages

pytestmark = pytest.mark.e2e


def test_penguins_are_evaluated_per_island_and_sex_and_the_gate_and_card_show_it(workdir):
    overrides = {
        **FAST,
        "data": {"source": "penguins"},
        "evaluate": {"slices": ["island", "sex"], "min_slice_examples": 8},
        "gate": {"thresholds": {"accuracy": 0.5}, "slice_thresholds": {"accuracy": 0.5}, "max_slice_drop": 0.2},
    }
    run_stages(workdir, overrides, stages=("ingest", "validate", "preprocess", "tune", "train", "evaluate", "export"))
    sliced = json.loads((workdir / "reports/evaluate/slices.json").read_text())
    names = [entry["slice"] for entry in sliced]
    assert names[:3] == ["island = Biscoe", "island = Dream", "island = Torgersen"], names
    assert {"sex = female", "sex = male"} <= set(names)
    assert sum(entry["examples"] for entry in sliced if entry["slice"].startswith("island")) == 52  # the test split
    small = [entry for entry in sliced if entry["examples"] < 8]
    assert all(not entry["judged"] for entry in small) and all(
        entry["judged"] for entry in sliced if entry not in small
    )
    plotted = pd.read_csv(workdir / "reports/evaluate/slices.csv")
    assert list(plotted.columns) == ["slice", "examples", "judged", "metric", "value"] and len(plotted) == len(sliced)
    (evaluate_run,) = [found for found in pipeline_runs(workdir) if "pipeline.stage.evaluate" in found.data.tags]
    logged = evaluate_run.data.metrics
    assert logged[metric_name("island = Biscoe", "examples")] == sliced[0]["examples"]
    assert "test_slice/sex/male/accuracy" in logged and "test_slice/sex/male/f1" not in logged  # the headline only
    from pipeline.cli import main

    assert main(["run", "gate"]) == 0
    decision = json.loads((workdir / "reports/gate/decision.json").read_text())
    assert decision["blessed"] is True, decision["reasons"]
    assert any(reason.endswith("judged slices: each within its bars") for reason in decision["reasons"])
    card = (workdir / "reports/gate/model_card.md").read_text()
    assert "## accuracy per slice (test split)" in card and "| island = Biscoe |" in card
    # the behavioural checks (expectations/penguins.behaviour.yaml and the generated invariance) and the baselines
    assert "## Behaviour (test split and written cases)" in card and "| a typical Gentoo on Biscoe | minimum" in card
    assert "| numbers nudged by 1 % of their spread | invariance |" in card
    assert "| linear_baseline_accuracy |" in card and "| trivial_baseline_accuracy |" in card
    assert any(reason.startswith("baseline logistic regression accuracy") for reason in decision["reasons"])
