"""Crash safety: `dvc repro` killed with SIGKILL (its whole process group, as when a machine or container
dies) at seeded random instants, then run again, ends green and clean, with an uninterrupted run's metrics.

CHAOS_KILLS and CHAOS_SEED widen or replay it (`bench/bench_chaos.py` runs the larger version)."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import make_dvc_project, run

pytestmark = pytest.mark.e2e

KILLS = int(os.environ.get("CHAOS_KILLS", "4"))
SEED = int(os.environ.get("CHAOS_SEED", "20261125"))
TIMINGS = ("train_seconds", "train_examples_per_second")


def environment() -> dict:
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def outcome(project: Path) -> dict:
    """What must not depend on interruptions: holdout metrics, training metrics and curves."""
    train = json.loads((project / "reports/train/metrics.json").read_text())
    return {
        "evaluate": json.loads((project / "reports/evaluate/metrics.json").read_text()),
        "train": {key: value for key, value in train.items() if key not in TIMINGS},
        "history": (project / "reports/train/history.csv").read_text(),
    }


def repro_killed_after(project: Path, seconds: float, log: Path) -> tuple[bool, str]:
    """Starts `dvc repro`, SIGKILLs its process group after `seconds`; (finished first, last stage started)."""
    with open(log, "w") as output:
        process = subprocess.Popen(
            ["dvc", "repro"],
            cwd=project,
            stdout=output,
            stderr=subprocess.STDOUT,
            env=environment(),
            start_new_session=True,
        )
        try:
            process.wait(timeout=seconds)
            finished = True
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            finished = False
    stages = re.findall(r"Running stage '(\w+)'", log.read_text())
    return finished, stages[-1] if stages else "(dvc start-up)"


def mlflow_statuses(project: Path) -> list[str]:
    import sqlite3

    with sqlite3.connect(project / "mlflow.db") as connection:
        return [status for (status,) in connection.execute("select status from runs")]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    project = make_dvc_project(tmp_path_factory.mktemp("uninterrupted"))
    started = time.monotonic()
    run(["dvc", "repro"], project)
    return outcome(project), time.monotonic() - started


def test_repro_killed_at_random_instants_recovers_with_the_same_results(tmp_path, uninterrupted):
    expected, reference_seconds = uninterrupted
    project = make_dvc_project(tmp_path)
    generator = random.Random(SEED)
    kills = []
    for attempt in range(KILLS):
        instant = generator.uniform(1.0, reference_seconds * 0.5)
        finished, stage = repro_killed_after(project, instant, tmp_path / f"attempt-{attempt}.log")
        kills.append(f"{instant:.1f} s: {'finished first' if finished else 'killed in ' + stage}")
    print(f"kill points (seed {SEED}):", "; ".join(kills))
    assert sum("killed" in kill for kill in kills) >= 2, f"too few kills landed to mean anything: {kills}"

    run(["dvc", "repro"], project, environment=environment())
    status = run(["dvc", "status"], project).stdout
    assert "up to date" in status, status
    assert outcome(project) == expected, f"results after kills ({kills}) differ from an uninterrupted run"
    assert "RUNNING" not in mlflow_statuses(project), "a killed stage's MLflow run was left running"
