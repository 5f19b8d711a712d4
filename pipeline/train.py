"""Stage 2, `train`: fit the model over mini-batches and epochs with validation every epoch.

EarlyStopping restores the best weights; ModelCheckpoint keeps the best model so far; and
BackupAndRestore lets a run killed mid-training resume at the epoch it reached. The learning
curves go to a DVC plots file, a PNG and MLflow.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import shutil
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.config import Config
from pipeline.files import write_json_atomic
from pipeline.runtime import StageResult, run_stage, setup_tensorflow

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


def _stage(config: Config) -> StageResult:
    strategy = setup_tensorflow(config)
    from pipeline import hyperparameters as hyperparameter_file
    from pipeline import multiworker, tracking
    from pipeline.features import load_spec, make_dataset
    from pipeline.models import build_model

    spec = load_spec(config.paths.prepared)
    hyperparameters = hyperparameter_file.load(config.paths.hyperparameters)
    chief = multiworker.is_chief()  # in a multi-worker run only the chief logs and writes outputs
    if chief:
        tracking.log_hyperparameters(hyperparameters)
    batch_size = int(hyperparameters["batch_size"]) * strategy.num_replicas_in_sync
    train_dataset = make_dataset(config.paths.prepared, spec, "train", batch_size, shuffle=True, seed=config.base.seed)
    validation_dataset = make_dataset(config.paths.prepared, spec, "validation", batch_size)
    with strategy.scope():
        model = build_model(hyperparameters, spec, jit_compile=config.train.jit_compile)
    model.summary(print_fn=log.info)

    work_dir = Path(config.paths.work) / "train" / training_key(hyperparameters, config, spec)
    if multiworker.cluster():
        work_dir = work_dir / multiworker.task_name()  # each worker keeps its own backup and checkpoint
    rows, epochs_this_run, fit_seconds = train_model(
        model,
        train_dataset,
        validation_dataset,
        epochs=config.train.epochs,
        patience=config.train.early_stopping_patience,
        monitor=config.train.monitor,
        work_dir=work_dir,
        extra_callbacks=[tracking.epoch_logging_callback()] if chief else [],
    )
    if not chief:
        shutil.rmtree(work_dir, ignore_errors=True)
        return StageResult(summary=f"{multiworker.task_name()} done ({len(rows)} epochs); the chief writes the outputs")

    model_path = Path(config.paths.model)
    model_path.parent.mkdir(parents=True, exist_ok=True)
    temporary = model_path.with_name(f".{model_path.stem}.tmp.keras")
    model.save(temporary)
    temporary.replace(model_path)

    reports = Path(config.paths.reports) / "train"
    reports.mkdir(parents=True, exist_ok=True)
    write_history(reports / HISTORY_FILE, rows)
    plot = plot_learning_curves(rows, reports / "learning_curves.png")
    summary = summarise_history(rows, config.train.monitor)
    summary["train_seconds"] = round(fit_seconds, 3)
    summary["train_examples_per_second"] = round(
        spec["splits"]["train"]["num_examples"] * max(epochs_this_run, 1) / max(fit_seconds, 1e-9), 1
    )
    summary["parameters"] = int(model.count_params())
    write_json_atomic(reports / "metrics.json", summary)
    shutil.rmtree(work_dir, ignore_errors=True)

    key_metric = "best_val_accuracy" if "best_val_accuracy" in summary else "best_val_loss"
    return StageResult(
        summary=f"{hyperparameters['family']} trained {summary['epochs_run']} epochs,"
        f" {key_metric}={summary[key_metric]:.4f} -> {model_path}",
        metrics={f"train_{key}": value for key, value in summary.items()},
        artifacts=[plot, reports / HISTORY_FILE],
    )


def main(params_file: str = "params.yaml") -> None:
    from pipeline import multiworker

    run_stage("train", params_file, _stage, track=multiworker.is_chief())


def launch_workers(params_file: str, workers: int) -> int:
    """`pipeline train --workers N`: the train stage on N local worker processes (MultiWorkerMirroredStrategy)."""
    from pipeline import multiworker
    from pipeline.config import load_config

    strategy = load_config(params_file).base.strategy
    if strategy not in ("auto", "multi_worker"):
        print(
            f"pipeline train: error: --workers needs base.strategy auto or multi_worker (it is {strategy}).",
            file=sys.stderr,
        )
        return 2
    return multiworker.launch([sys.executable, "-m", "pipeline", "run", "train", "--params", params_file], workers)
