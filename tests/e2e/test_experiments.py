"""DVC's ways of running experiments all log into the project's MLflow store: three variants queued
and run two at a time in temporary copies of the workspace (which DVC deletes afterwards)."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest

from tests.conftest import make_dvc_project, run

pytestmark = pytest.mark.e2e

RATES = ("0.01", "0.003", "0.001")


def test_three_queued_variants_run_two_at_a_time_land_in_the_projects_store(tmp_path):
    project = make_dvc_project(tmp_path, {"train": {"epochs": 2}})
    for rate in RATES:
        run(["dvc", "exp", "run", "--queue", "-S", f"train.learning_rate={rate}"], project)
    started = time.monotonic()
    run(["dvc", "exp", "run", "--run-all", "--jobs", "2"], project, timeout=1200)
    print(f"3 queued experiments, 2 at a time: {time.monotonic() - started:.0f} s")
    status = run(["dvc", "queue", "status"], project).stdout
    assert status.count("Success") == 3, status

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    runs = [
        found
        for found in mlflow.search_runs(experiment_names=["keras-pipeline"], output_format="list")
        if "mlflow.parentRunId" not in found.data.tags
    ]
    assert sorted(found.data.params["train.learning_rate"] for found in runs) == sorted(RATES)
    assert all(found.info.status == "FINISHED" and "test_accuracy" in found.data.metrics for found in runs)
    assert len({found.data.tags["dvc.experiment"] for found in runs}) == 3  # named after DVC's experiments
    assert all(len(found.inputs.dataset_inputs) == 3 for found in runs)
    assert all(found.info.artifact_uri.startswith((project / "mlruns").as_uri()) for found in runs)
    versions = mlflow.tracking.MlflowClient().search_model_versions("name = 'digits'")
    assert len(versions) == 3, "each queued run registered its model in the project's registry"
    for found in runs:  # the artifacts outlive DVC's temporary copies
        assert mlflow.artifacts.list_artifacts(run_id=found.info.run_id)
    with sqlite3.connect(project / "mlflow.db") as connection:
        assert connection.execute("pragma integrity_check").fetchone() == ("ok",)
    assert not list(Path(project / ".dvc" / "tmp").glob("exps/tmp*/mlflow.db"))
    shown = ["dvc", "exp", "show", "--only-changed", "--drop", "pipeline/|data/|models/", "--csv"]  # as the README
    table = run(shown, project).stdout.splitlines()
    header = table[0].split(",")
    assert "train.learning_rate" in header and "accuracy" in header and len(header) <= 55, header  # was 275
    assert len([line for line in table[1:] if line.strip()]) >= 4  # the workspace and the three experiments
    metrics = json.loads(run(["dvc", "metrics", "show", "--json"], project).stdout)
    assert len(json.dumps(metrics)) < 4000, "only the numbers people compare are DVC metrics"
