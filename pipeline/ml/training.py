"""Fitting a Keras model the pipeline's way: early stopping, the best checkpoint, and a backup that
lets a killed run resume at the epoch it reached; the per-epoch history as CSV and a PNG.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.core.config import Config

log = logging.getLogger(__name__)


HISTORY_FILE = "history.csv"


def training_key(hyperparameters: Mapping[str, Any], config: Config, spec: dict) -> str:
    """Identifies a training job, so that a backup is only ever resumed by the same job."""
    payload = json.dumps(
        {
            "hyperparameters": dict(hyperparameters),
            "train": vars(config.train),
            "base": vars(config.base),
            "data": spec["fingerprint"],
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def history_recorder(path: Path):
    """A callback that rewrites the per-epoch history CSV after every epoch.

    It lives beside the BackupAndRestore checkpoint, so a resumed run keeps the curves of
    the epochs done before the interruption.
    """
    import keras

    class HistoryRecorder(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.rows = read_history(path)

        def on_epoch_end(self, epoch, logs=None):
            self.rows = [row for row in self.rows if int(row["epoch"]) < epoch]
            self.rows.append({"epoch": epoch, **{key: float(value) for key, value in (logs or {}).items()}})
            write_history(path, self.rows)

    return HistoryRecorder()


def read_history(path: Path) -> list[dict]:
    if not Path(path).is_file():
        return []
    with open(path, newline="") as handle:
        return [{key: float(value) for key, value in row.items()} for row in csv.DictReader(handle)]


def write_history(path: Path, rows: list[dict]) -> None:
    fields = list(dict.fromkeys(key for row in rows for key in row))
    temporary = Path(path).with_suffix(".tmp")
    with open(temporary, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({key: int(value) if key == "epoch" else value for key, value in row.items()})
    temporary.replace(path)


def train_model(
    model,
    train_dataset,
    validation_dataset,
    epochs: int,
    patience: int,
    monitor: str,
    work_dir: Path,
    extra_callbacks: list | None = None,
) -> tuple[list[dict], int, float]:
    """Fits `model` with early stopping, checkpoints and backup/restore in `work_dir`.

    Returns the per-epoch history rows (including epochs done before a resume), the number
    of epochs run by this call, and the seconds it spent in `fit`.
    """
    import keras

    work_dir.mkdir(parents=True, exist_ok=True)
    history_path = work_dir / HISTORY_FILE
    mode = "max" if "accuracy" in monitor else "min"
    recorder = history_recorder(history_path)
    resumed_epochs = len(recorder.rows)
    if resumed_epochs:
        log.info("resuming an interrupted training run after epoch %d", int(recorder.rows[-1]["epoch"]))
    callbacks = [
        keras.callbacks.BackupAndRestore(str(work_dir / "backup")),
        keras.callbacks.EarlyStopping(monitor=monitor, mode=mode, patience=patience, restore_best_weights=True),
        keras.callbacks.ModelCheckpoint(str(work_dir / "best.keras"), monitor=monitor, mode=mode, save_best_only=True),
        recorder,
        *(extra_callbacks or []),
    ]
    started = time.perf_counter()
    model.fit(
        train_dataset,
        validation_data=validation_dataset,
        epochs=epochs,
        callbacks=callbacks,
        verbose=1 if sys.stdout.isatty() else 2,
    )
    return recorder.rows, len(recorder.rows) - resumed_epochs, time.perf_counter() - started


def summarise_history(rows: list[dict], monitor: str) -> dict[str, float]:
    """The best epoch by `monitor` and its metrics, as `best_<name>` values."""
    pick = max if "accuracy" in monitor else min
    best = pick(rows, key=lambda row: row[monitor])
    summary = {"epochs_run": len(rows), "best_epoch": int(best["epoch"])}
    summary.update({f"best_{key}": value for key, value in best.items() if key != "epoch"})
    return summary


def plot_learning_curves(rows: list[dict], path: Path) -> Path:
    """Loss and the first other metric, train vs validation, per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [key for key in rows[0] if key != "epoch" and not key.startswith("val_") and key != "learning_rate"]
    figure, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 4), squeeze=False)
    epochs = [int(row["epoch"]) + 1 for row in rows]
    for axis, name in zip(axes[0], names, strict=True):
        axis.plot(epochs, [row[name] for row in rows], label=f"train {name}")
        if f"val_{name}" in rows[0]:
            axis.plot(epochs, [row[f"val_{name}"] for row in rows], label=f"validation {name}")
        axis.set_xlabel("epoch")
        axis.set_title(name)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def epoch_logging_callback(prefix: str = "", first_step: int = 0):
    """A Keras callback that logs every epoch's metrics to the active MLflow run.

    `prefix` names a second model's curves (`finetune_val_loss`); `first_step` continues a curve
    across several `fit` calls (the fine-tuning phases)."""
    import keras
    import mlflow

    class MlflowEpochLogger(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if logs:
                metrics = {f"{prefix}{name}": float(value) for name, value in logs.items()}
                mlflow.log_metrics(metrics, step=first_step + epoch)

    return MlflowEpochLogger()
