"""Crash safety: `dvc repro` killed with SIGKILL (its whole process group, as when a machine or container
dies) at seeded random instants in every stage, then run again, ends green and clean, with an
uninterrupted run's metrics, and nothing the killed runs were writing left behind.

Each kill aims at one stage: it lands a random time after that stage starts, up to the stage's own
duration in the uninterrupted run plus two seconds (DVC's hashing and lock writing after it), so kills
fall in start-up, mid-epoch, mid-write and between stages. CHAOS_ROUNDS and CHAOS_SEED widen or
replay it (`bench/bench_chaos.py` runs the larger version)."""

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

ROUNDS = int(os.environ.get("CHAOS_ROUNDS", "1"))
SEED = int(os.environ.get("CHAOS_SEED", "20261125"))
STAGES = ("ingest", "validate", "preprocess", "tune", "train", "evaluate", "export", "gate", "monitor")
TIMINGS = ("train_seconds", "train_examples_per_second")


def environment() -> dict:
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def outcome(project: Path) -> dict:
    """What must not depend on interruptions: holdout metrics, training metrics and curves."""
    train = json.loads((project / "reports/train/summary.json").read_text())
    return {
        "evaluate": json.loads((project / "reports/evaluate/metrics.json").read_text()),
        "train": {key: value for key, value in train.items() if key not in TIMINGS},
        "history": (project / "reports/train/history.csv").read_text(),
    }


def repro_killed_in(project: Path, stage: str, delay: float, log: Path, force: bool = False) -> str:
    """Runs `dvc repro` (`force`: every stage, up to date or not); SIGKILLs its process group `delay`
    seconds after `stage` starts. Says what happened."""
    with open(log, "w") as output:
        process = subprocess.Popen(
            ["dvc", "repro", *(["--force"] if force else [])],
            cwd=project,
            stdout=output,
            stderr=subprocess.STDOUT,
            env=environment(),
            start_new_session=True,
        )
        started = None
        while process.poll() is None:
            if started is None and f"Running stage '{stage}'" in log.read_text():
                started = time.monotonic()
            if started is not None and time.monotonic() - started >= delay:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                ran = re.findall(r"Running stage '(\w+)'", log.read_text())
                return f"killed {delay:.1f} s into {stage} (last started: {ran[-1] if ran else '-'})"
            time.sleep(0.05)
    if process.returncode != 0:  # what stopped it must show in the assertion's message
        said = " / ".join([line.strip() for line in log.read_text().splitlines() if line.strip()][-3:])
        return f"{stage}: not reached, `dvc repro` failed (exit {process.returncode}): {said}"
    return f"{stage}: finished before the kill"


def damaged_dvc_files(project: Path) -> list[str]:
    """DVC's own files that a kill left unreadable. DVC rewrites both in place (opened with truncation, then
    dumped): `dvc.lock` after each stage (empty, or cut short of its `schema` and `stages` keys), and
    `.dvc/tmp/rwlock`, its JSON record of the running commands, as each stage starts and ends."""
    import yaml

    damaged = []
    lock = project / "dvc.lock"
    if lock.exists():
        try:
            content = yaml.safe_load(lock.read_text())
        except yaml.YAMLError:
            content = None
        if not isinstance(content, dict) or "stages" not in content:
            damaged.append("dvc.lock")
    running = project / ".dvc/tmp/rwlock"
    if running.exists():
        try:
            json.loads(running.read_text())
        except json.JSONDecodeError:
            damaged.append(".dvc/tmp/rwlock")
    return damaged


def processes_in(project: Path) -> list[str]:
    """Command lines of the processes still running in `project` (what a kill must not leave behind)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and Path(os.readlink(entry / "cwd")).is_relative_to(project):
                found.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip())
        except OSError:
            continue
    return found


UNFINISHED = re.compile(r"\..+-[0-9a-f]{8}-\d+-[a-z0-9_]{8}|\..+\.old-[0-9a-f]{8}-\d+")  # pipeline.core.outputs


def unfinished_outputs(project: Path) -> list[str]:
    """Staging folders, temporary files and moved-aside outputs of killed runs still in `project`."""
    return sorted(
        str(path.relative_to(project))
        for path in project.rglob(".*")
        if UNFINISHED.fullmatch(path.name) and not {".git", ".dvc"} & set(path.relative_to(project).parts)
    )


def mlflow_statuses(project: Path) -> list[str]:
    import sqlite3

    with sqlite3.connect(project / "mlflow.db") as connection:
        return [status for (status,) in connection.execute("select status from runs")]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    project = make_dvc_project(tmp_path_factory.mktemp("uninterrupted"))
    completed = run(["dvc", "repro"], project)
    durations = {name: float(seconds) for name, seconds in re.findall(r"\[(\w+)\] .* \(([\d.]+) s\)", completed.stdout)}
    return outcome(project), durations


def test_repro_killed_at_random_instants_in_every_stage_recovers_with_the_same_results(tmp_path, uninterrupted):
    expected, durations = uninterrupted
    assert set(STAGES) <= set(durations), durations
    project = make_dvc_project(tmp_path)
    generator = random.Random(SEED)
    kills = []
    for attempt, stage in enumerate(STAGES * ROUNDS):
        delay = generator.uniform(0.0, durations[stage] + 2.0)
        later_round = attempt >= len(STAGES)  # the first round leaves stages done: rerun them to kill them again
        kills.append(repro_killed_in(project, stage, delay, tmp_path / f"attempt-{attempt}.log", force=later_round))
        for damaged in damaged_dvc_files(project):  # every later `dvc repro` would fail at once
            kills[-1] += f", which emptied {damaged}: deleted, as docs/workflow.md says"  # the user's documented fix
            (project / damaged).unlink()
    print(f"kill points (seed {SEED}):", "; ".join(kills))
    assert sum(kill.startswith("killed") for kill in kills) >= len(kills) // 2, f"too few kills landed: {kills}"
    time.sleep(1.0)
    assert processes_in(project) == [], "a killed run left processes behind (e.g. an export's check server)"

    run(["dvc", "repro"], project, environment=environment())
    status = run(["dvc", "status"], project).stdout
    assert "up to date" in status, status
    assert outcome(project) == expected, f"results after kills ({kills}) differ from an uninterrupted run"
    assert "RUNNING" not in mlflow_statuses(project), "a killed stage's MLflow run was left running"
    assert unfinished_outputs(project) == [], "the runs after the kills did not remove what the kills left"
