import pytest

from pipeline.core.config import GateConfig
from pipeline.stages.gate import decide

SETTINGS = GateConfig(metric="accuracy", min_improvement=0.01, thresholds={"accuracy": 0.9, "roc_auc": 0.95})


def test_first_run_is_decided_by_the_thresholds():
    assert decide({"accuracy": 0.95, "roc_auc": 0.99}, None, SETTINGS)["blessed"] is True
    refused = decide({"accuracy": 0.85, "roc_auc": 0.99}, None, SETTINGS)
    assert refused["blessed"] is False and "accuracy 0.8500 >= 0.9: FAILS" in refused["reasons"]


@pytest.mark.parametrize(("candidate", "blessed"), [(0.96, True), (0.955, True), (0.954, False), (0.94, False)])
def test_the_candidate_must_beat_the_champion_by_the_margin(candidate, blessed):
    decision = decide({"accuracy": candidate, "roc_auc": 0.99}, {"accuracy": 0.945}, SETTINGS)
    assert decision["blessed"] is blessed
    assert any("vs champion 0.9450 on the same test split" in reason for reason in decision["reasons"])


def test_lower_is_better_for_errors_and_missing_metrics_are_named():
    settings = GateConfig(metric="rmse", min_improvement=0.0, thresholds={"rmse": 10.0, "accuracy": 0.9})
    decision = decide({"rmse": 4.0}, {"rmse": 5.0}, settings)
    assert decision["blessed"] is True
    assert "accuracy: not measured for this task, threshold ignored" in decision["reasons"]
    assert decide({"rmse": 6.0}, {"rmse": 5.0}, settings)["blessed"] is False


def test_force_bless_without_a_reason_is_refused(tmp_path):
    import subprocess
    import sys

    completed = subprocess.run(
        [sys.executable, "-m", "pipeline", "gate", "--force-bless"], cwd=tmp_path, capture_output=True, text=True
    )
    assert completed.returncode == 2
    assert 'needs --reason "why"' in completed.stderr and "Traceback" not in completed.stderr
