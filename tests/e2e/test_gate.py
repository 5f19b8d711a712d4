"""The blessing gate on a real SQLite MLflow registry, with models trained by the real pipeline."""

from __future__ import annotations

import json
import sys

import pytest

from tests.conftest import make_dvc_project, run

pytestmark = pytest.mark.e2e


def decision(project) -> dict:
    return json.loads((project / "reports/gate/decision.json").read_text())


def champion_version(project) -> int:
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    return int(mlflow.tracking.MlflowClient().get_registered_model("digits").aliases["champion"])


def test_first_blessed_worse_refused_better_promoted_and_a_forced_override(tmp_path):
    project = make_dvc_project(tmp_path, {"gate": {"thresholds": {"accuracy": 0.5}, "min_improvement": 0.0}})
    run(["dvc", "repro"], project)
    first = decision(project)
    assert first["blessed"] and first["candidate_version"] == 1 and champion_version(project) == 1

    worse = run(["dvc", "exp", "run", "-S", "train.epochs=1", "-S", "train.learning_rate=0.00001"], project)
    assert "[gate] digits v2 rejected" in worse.stdout
    refused = decision(project)
    assert refused["blessed"] is False and refused["champion_version_before"] == 1
    assert refused["candidate"] < refused["champion"]
    assert any("does not beat" in reason for reason in refused["reasons"])
    assert champion_version(project) == 1, "a worse model must leave the champion in place"

    run(["dvc", "exp", "run", "-S", "train.epochs=8", "-S", "train.learning_rate=0.003"], project)
    better = decision(project)
    assert better["candidate_version"] == 3
    assert better["blessed"] is (better["candidate"] >= better["champion"])
    assert champion_version(project) == (3 if better["blessed"] else 1)

    run(["dvc", "exp", "run", "-S", "train.epochs=1", "-S", "train.learning_rate=0.00001"], project)
    assert decision(project)["blessed"] is False
    forced = run([sys.executable, "-m", "pipeline", "gate", "--force-bless", "--reason", "demo rollback"], project)
    assert "FORCED champion" in forced.stdout and champion_version(project) == 4
    import mlflow

    tags = mlflow.tracking.MlflowClient().get_model_version("digits", "4").tags
    assert tags["gate.decision"] == "forced" and tags["gate.forced_reason"] == "demo rollback"
