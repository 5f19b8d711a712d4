"""Training as a process: killed mid-run it resumes; seeded, it repeats itself exactly."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import stage, write_params

pytestmark = pytest.mark.slow


@pytest.fixture
def prepared(workdir: Path) -> Path:
    for name in ("ingest", "validate", "preprocess", "tune"):
        stage(name, workdir)
    return workdir


def history_rows(directory: Path) -> int:
    files = list((directory / ".pipeline" / "train").glob("*/history.csv"))
    return len(files[0].read_text().splitlines()) - 1 if files else 0


def test_training_killed_mid_run_resumes_where_it_stopped(prepared):
    epochs = 12
    write_params(prepared, {"train": {"epochs": epochs, "early_stopping_patience": epochs}})
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "run", "train"],
        cwd=prepared,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 240
    while history_rows(prepared) < 3 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    done_before_kill = history_rows(prepared)
    assert 3 <= done_before_kill < epochs, "training must be interrupted mid-run for this test to mean anything"
    assert not (prepared / "models" / "model.keras").exists(), "a killed run must not publish a model"

    resumed = stage("train", prepared)
    output = resumed.stdout + resumed.stderr
    assert re.search(r"resuming an interrupted training run after epoch \d+", output)
    first_epoch = int(re.search(r"Epoch (\d+)/12", output).group(1))
    assert first_epoch > done_before_kill - 1, "resumed run started again from scratch"
    history = (prepared / "reports/train/history.csv").read_text().splitlines()[1:]
    assert [int(row.split(",")[0]) for row in history] == list(range(epochs))
    assert (prepared / "models" / "model.keras").is_file()
    assert not list((prepared / ".pipeline" / "train").iterdir()), "the backup is removed once training finishes"


def test_seeded_training_gives_identical_metrics(prepared):
    results = []
    for seed in (42, 42, 7):
        write_params(prepared, {"base": {"seed": seed}})
        stage("train", prepared)
        metrics = json.loads((prepared / "reports/train/metrics.json").read_text())
        for timing in ("train_seconds", "train_examples_per_second"):
            metrics.pop(timing)
        results.append((metrics, (prepared / "reports/train/history.csv").read_text()))
    assert results[0] == results[1]
    assert results[0] != results[2], "another seed must change the run, or this test proves nothing"
