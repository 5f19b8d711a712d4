"""The feedback loop end to end: drift found on shifted data (and not on unshifted data), the data
added as feedback, the retraining job run, a new model version trained, gated and pushed."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from pipeline.data.sources import write_digits_images
from pipeline.ml.baselines import judge as judge_baselines
from pipeline.ml.behaviour import judge as judge_behaviour
from tests.conftest import make_dvc_project, run

pytestmark = pytest.mark.e2e


def sample_of(folder: Path, target: Path, every: int) -> Path:
    """Every `every`-th image of each class folder, copied to `target/<class>/`."""
    for class_dir in sorted(path for path in folder.iterdir() if path.is_dir()):
        for index, image in enumerate(sorted(class_dir.iterdir())):
            if index % every == 0:
                (target / class_dir.name).mkdir(parents=True, exist_ok=True)
                shutil.copy(image, target / class_dir.name / image.name)
    return target


def pipeline(*arguments: str, cwd: Path, check: bool = True):
    return run([sys.executable, "-m", "pipeline", *arguments], cwd, check=check)


def test_drift_feedback_retrain_gate_and_push(tmp_path):
    project = make_dvc_project(tmp_path)
    remote = tmp_path / "dvc-remote"
    run(["dvc", "remote", "add", "-d", "local", str(remote)], project)
    run(["git", "commit", "-qam", "a local DVC remote"], project)
    run(["dvc", "repro"], project)
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "first model"], project)

    clean = sample_of(write_digits_images(tmp_path / "clean"), tmp_path / "recent-clean", every=6)
    noisy = sample_of(write_digits_images(tmp_path / "noisy", noisy=True), tmp_path / "recent-noisy", every=6)

    unshifted = pipeline("monitor", "--data", str(clean), "--fail-on-drift", cwd=project)
    assert "retrain: false" in unshifted.stdout
    shifted = pipeline("monitor", "--data", str(noisy), "--fail-on-drift", cwd=project, check=False)
    assert shifted.returncode == 1, shifted.stdout + shifted.stderr
    report = json.loads((project / "reports/monitor/drift.json").read_text())
    assert report["retrain"] and report["families"]["image_statistics"]["drifted"]
    assert report["feedback"]["metric"] == "accuracy"  # the class folders are labels
    page = (project / "reports/monitor/report.html").read_text()
    assert "RETRAIN" in page and "data:image/png;base64," in page
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    checks = mlflow.search_runs(experiment_names=["keras-pipeline-monitor"], output_format="list")
    verdicts = sorted(run.data.tags["pipeline.monitor.retrain"] for run in checks)
    assert verdicts == ["false", "true"]  # one run per check, beside (not among) the pipeline's runs
    assert {artifact.path for artifact in mlflow.MlflowClient().list_artifacts(checks[0].info.run_id, "monitor")} == {
        "monitor/drift.json",
        "monitor/report.html",
    }

    broken = sample_of(noisy, tmp_path / "broken", every=5)
    (broken / "3" / "0000.png").write_bytes(b"not an image")
    (broken / "eleven").mkdir()
    (broken / "eleven" / "x.png").write_bytes((broken / "3").iterdir().__next__().read_bytes())
    rejected = pipeline("feedback", "add", str(broken), cwd=project, check=False)
    assert rejected.returncode == 2 and "feedback rejected, nothing added" in rejected.stderr
    assert "decodable" in rejected.stderr and "eleven" in rejected.stderr
    assert not list((project / "data/feedback").glob("*.dvc"))

    job = pipeline("retrain", "--data", str(noisy), "--base-rev", "HEAD", cwd=project, check=False)
    assert job.returncode == 0, job.stdout[-4000:] + job.stderr[-4000:]
    summary = (project / "reports/retrain/summary.md").read_text()
    assert "## Monitor: **retraining due**" in summary and "## Retrained: yes" in summary
    assert "## Gate: digits v2" in summary and "## Metrics against `HEAD`" in summary
    (pointer,) = (project / "data/feedback").glob("feedback-*.dvc")
    assert pointer.with_suffix("").is_dir()
    source = json.loads((project / "data/ingested/source.json").read_text())
    assert source["feedback_batches"] == [pointer.stem] and source["num_files"] == 1797 + len(
        list(noisy.rglob("*.png"))
    )

    decision = json.loads((project / "reports/gate/decision.json").read_text())
    assert decision["candidate_version"] == 2 and decision["champion_version_before"] == 1
    # gate.thresholds: auto: the champion, the baselines and the behavioural checks
    past_baselines = judge_baselines(decision["baselines"], 0.95)[0] and judge_behaviour(decision["behaviour"])[0]
    assert decision["blessed"] is (decision["candidate"] >= decision["champion"] and past_baselines)
    assert any(remote.rglob("*")), "dvc push sent nothing to the remote"

    status = run(["dvc", "status", "--cloud"], project)
    assert "in sync" in status.stdout, status.stdout
    nothing = pipeline("retrain", "--base-rev", "HEAD", cwd=project)
    assert "[retrain] nothing to retrain" in nothing.stdout
