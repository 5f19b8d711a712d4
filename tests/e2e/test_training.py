"""Training as a process: killed mid-run it resumes; seeded, it repeats itself exactly."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.conftest import interrupt_stage, stage, write_params

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
    done_before_kill = interrupt_stage("train", prepared, lambda: history_rows(prepared), at_least=3)
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
        metrics = json.loads((prepared / "reports/train/summary.json").read_text())
        for timing in ("train_seconds", "train_examples_per_second"):
            metrics.pop(timing)
        results.append((metrics, (prepared / "reports/train/history.csv").read_text()))
    assert results[0] == results[1]
    assert results[0] != results[2], "another seed must change the run, or this test proves nothing"
