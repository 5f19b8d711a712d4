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


def test_an_export_report_of_an_earlier_version_is_named_with_the_fix(workdir):
    """`pipeline gate --force-bless` right after pulling a version whose card reads the export's report: one line
    that says to rerun the pipeline, not a KeyError."""
    import json
    import subprocess
    import sys

    command = [sys.executable, "-m", "pipeline", "gate", "--force-bless", "--reason", "rollback"]
    missing = subprocess.run(command, cwd=workdir, capture_output=True, text=True)
    assert missing.returncode == 2 and "export.json is missing" in missing.stderr
    report = workdir / "reports" / "export" / "export.json"
    report.parent.mkdir(parents=True)
    report.write_text(json.dumps({"registered_model": {"name": "digits", "version": 1, "alias": "candidate"}}))
    older = subprocess.run(command, cwd=workdir, capture_output=True, text=True)
    assert older.returncode == 2 and "Traceback" not in older.stderr
    assert "lacks parameters, example_request: an earlier version of the pipeline wrote it" in older.stderr
    assert "run `dvc repro`" in older.stderr
