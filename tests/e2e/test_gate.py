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


def test_first_blessed_worse_refused_a_forced_override_then_better_promoted(tmp_path):
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

    forced = run([sys.executable, "-m", "pipeline", "gate", "--force-bless", "--reason", "demo rollback"], project)
    assert "FORCED champion" in forced.stdout and champion_version(project) == 2
    import mlflow

    tags = mlflow.tracking.MlflowClient().get_model_version("digits", "2").tags
    assert tags["gate.decision"] == "forced" and tags["gate.forced_reason"] == "demo rollback"

    run(["dvc", "exp", "run", "-S", "train.epochs=8", "-S", "train.learning_rate=0.003"], project)
    better = decision(project)
    assert better["candidate_version"] == 3 and better["champion_version_before"] == 2
    assert better["candidate"] > better["champion"], "8 epochs against the forced 1-epoch model"
    assert better["blessed"] and champion_version(project) == 3

    # The champion is the candidate: nothing to evaluate, and the gate's process never loads TensorFlow
    # (the card's parameter count and example request come from the export's report).
    script = "import sys\nfrom pipeline.cli import main\nsys.argv = ['pipeline', 'run', 'gate']\nmain()\n"
    script += "assert 'tensorflow' not in sys.modules, 'imported TensorFlow'\n"
    again = run([sys.executable, "-c", script], project)
    assert "the candidate already is the champion" in again.stdout
    card = (project / "reports/gate/model_card.md").read_text()
    assert "parameters" in card and '{"instances": [[[[' in card  # an 8x8 digit is short enough to show
