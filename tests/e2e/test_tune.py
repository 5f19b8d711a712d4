"""The search as a process: every trial is a nested MLflow run; killed midway, it resumes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.conftest import interrupt_stage, run, stage, write_params

pytestmark = pytest.mark.slow

SEARCH = {"enabled": True, "algorithm": "random", "max_trials": 4, "max_epochs": 3}


def finished_trials(directory: Path) -> int:
    return len(list((directory / ".pipeline" / "tune").glob("*/epochs/*.json")))


def trial_runs(directory: Path) -> list:
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{directory / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["keras-pipeline"], output_format="list")
    return [run for run in runs if "pipeline.trial_id" in run.data.tags]


def test_a_killed_search_resumes_without_repeating_finished_trials(workdir):
    write_params(workdir, {"tune": SEARCH})
    for name in ("ingest", "validate", "preprocess"):
        stage(name, workdir)
    done_before_kill = interrupt_stage("tune", workdir, lambda: finished_trials(workdir), at_least=2)
    assert 2 <= done_before_kill < 4, "the search must be interrupted midway for this test to mean anything"
    assert not (workdir / "models/hyperparameters.json").exists()

    resumed = stage("tune", workdir)
    assert "resuming the search" in resumed.stderr
    summary = json.loads((workdir / "reports/tune/summary.json").read_text())
    assert summary["trials_completed"] == 4 and summary["resumed"] is True

    runs = trial_runs(workdir)
    finished = [run.data.tags["pipeline.trial_id"] for run in runs if run.info.status == "FINISHED"]
    assert sorted(finished) == ["0", "1", "2", "3"], "each trial finished exactly once in MLflow"
    assert all(run.info.status in ("FINISHED", "KILLED") for run in runs)
    best = json.loads((workdir / "models/hyperparameters.json").read_text())["hyperparameters"]
    assert best["family"] == "cnn" and best["batch_size"] in (32, 64, 128)

    again = stage("tune", workdir)
    assert "4 trials" in again.stdout
    assert len(trial_runs(workdir)) == len(runs), "a finished search reruns no trial"

    (oracle,) = (workdir / ".pipeline" / "tune").glob("*/search/oracle.json")
    oracle.write_text(oracle.read_text()[:40])  # what a kill in mid-write of Keras Tuner's own writer leaves
    recovered = stage("tune", workdir)
    assert "is unreadable" in recovered.stderr and "starting the search over" in recovered.stderr
    assert json.loads((workdir / "reports/tune/summary.json").read_text())["trials_completed"] == 4
    (aside,) = (workdir / ".pipeline" / "tune").glob("corrupt-*")
    assert (aside / "search" / "oracle.json").is_file(), "the broken state is kept for inspection"


def test_a_chief_and_two_workers_share_one_search(workdir):
    write_params(workdir, {"tune": {**SEARCH, "max_trials": 4, "max_epochs": 2}})
    for name in ("ingest", "validate", "preprocess"):
        stage(name, workdir)
    launched = run([sys.executable, "-m", "pipeline", "tune", "--workers", "2"], workdir, timeout=420)
    assert "[tune] random: 4 trials" in launched.stdout
    runs = trial_runs(workdir)
    assert sorted(run.data.tags["pipeline.trial_id"] for run in runs) == ["0", "1", "2", "3"]
    assert all(run.info.status == "FINISHED" for run in runs), "every trial in MLflow exactly once, finished"
    assert {run.data.tags["pipeline.tuner_id"] for run in runs} <= {"tuner0", "tuner1"}
    parents = {run.data.tags["mlflow.parentRunId"] for run in runs}
    assert len(parents) == 1, "all trials nest under the one pipeline run"
    assert (workdir / "models/hyperparameters.json").is_file()
