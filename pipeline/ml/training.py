"""Fitting a Keras model the pipeline's way: early stopping, the best checkpoint, and a backup that
lets a killed run resume at the epoch it reached; the per-epoch history as CSV and a PNG.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import shutil
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.core.config import Config
from pipeline.core.metrics import direction, higher_is_better
from pipeline.core.outputs import set_aside

log = logging.getLogger(__name__)


HISTORY_FILE = "history.csv"


def training_key(hyperparameters: Mapping[str, Any], config: Config, spec: dict) -> str:
    """Identifies a training job, so that a backup is only ever resumed by the same job."""
    payload = json.dumps(
        {
            "hyperparameters": dict(hyperparameters),
            "train": vars(config.train),
            "base": vars(config.base),
            "data": spec.fingerprint,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def history_recorder(path: Path):
    """A callback that rewrites the per-epoch history CSV after every epoch.

    The file shows progress while training runs; a resumed run takes its rows from the backup
    (see `training_backup`), so it keeps the curves of the epochs done before the interruption.
    """
    import keras

    class HistoryRecorder(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.rows = []  # the backup restores the rows of a resumed run

        def on_epoch_end(self, epoch, logs=None):
            self.rows = [row for row in self.rows if int(row["epoch"]) < epoch]
            self.rows.append({"epoch": epoch, **{key: float(value) for key, value in (logs or {}).items()}})
            write_history(path, self.rows)

    return HistoryRecorder()


def write_history(path: Path, rows: list[dict]) -> None:
    fields = list(dict.fromkeys(key for row in rows for key in row))
    temporary = Path(path).with_suffix(".tmp")
    with open(temporary, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({key: int(value) if key == "epoch" else value for key, value in row.items()})
    temporary.replace(path)


BACKUP_DIR = "backup"


def epoch_clock():
    """Where each epoch's wall time goes, as callbacks around the others: `start()` first in the list, then
    `after(name)` after each callback to time. `rows`: per epoch, `fit` (training and validation, until the first
    callback's epoch end), each named callback's seconds, and `epoch_seconds` (the epoch up to the last mark)."""
    import keras

    class Clock:
        def __init__(self):
            self.rows: list[dict] = []
            self.mark = 0.0

        def start(self):
            clock = self

            class Start(keras.callbacks.Callback):
                def on_epoch_begin(self, epoch, logs=None):
                    clock.mark = time.perf_counter()
                    clock.rows.append({"epoch": epoch, "started": clock.mark})

                def on_epoch_end(self, epoch, logs=None):
                    now = time.perf_counter()
                    clock.rows[-1]["fit"] = now - clock.mark
                    clock.mark = now

            return Start()

        def after(self, name: str):
            clock = self

            class After(keras.callbacks.Callback):
                def on_epoch_end(self, epoch, logs=None):
                    now = time.perf_counter()
                    row = clock.rows[-1]
                    row[name] = now - clock.mark
                    row["epoch_seconds"] = now - row["started"]
                    clock.mark = now

            return After()

        def summary(self) -> list[dict]:
            return [
                {key: (value if key == "epoch" else round(value, 4)) for key, value in row.items() if key != "started"}
                for row in self.rows
            ]

    return Clock()


def training_backup(directory: Path, early_stopping, recorder):
    """A callback that backs up the whole training state after every epoch; `restore()` resumes from it.

    Keras' BackupAndRestore writes its backup in place, so a kill in mid-write leaves a truncated file
    that fails every later run. Here each backup is a folder `epoch-NNNN` written under a temporary name
    and renamed once complete (a rename is atomic): every model variable (weights and the dropout
    layers' seed states), the optimizer's variables, the early-stopping state (best value and weights,
    patience count) and the history rows. A backup that does not load is set aside as `corrupt-...`
    (kept for inspection), reported in one line, and the next older one is tried; with none left,
    training starts from the beginning.

    The epoch's state is copied at its end and written to disk by a thread while the next epoch trains
    (one write at a time, in epoch order): the training waits only for the copy. `wait()` returns once the
    last backup is on disk and raises its write's error; the end of training waits, and so does `train_model`
    when `fit` raises. A kill during a write loses that backup only: the run resumes from the one before.

    It must come after `early_stopping` and `recorder` in the callback list: their `on_train_begin`
    resets the state this one restores.
    """
    import keras
    import numpy as np

    directory = Path(directory)

    class TrainingBackup(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.state: dict | None = None
            self.best_weights = None
            self.writer: threading.Thread | None = None
            self.write_error: BaseException | None = None

        def wait(self, raise_error: bool = True) -> None:
            """Until the last backup is on disk; its write's error is raised here (or dropped)."""
            if self.writer is not None:
                self.writer.join()
                self.writer = None
            error, self.write_error = self.write_error, None
            if error is not None and raise_error:
                raise error

        def restore(self, model) -> int:
            """Loads the newest readable backup into `model` (built and compiled); returns the number of
            epochs it holds (0: none), or -1 when that run had already stopped early."""
            optimizer = model.optimizer
            if optimizer is not None and not optimizer.built:
                optimizer.build(model.trainable_variables)
            initial = [
                np.asarray(variable).copy() for variables in _state_variables(model).values() for variable in variables
            ]
            for candidate in sorted(directory.glob("epoch-*"), reverse=True):
                try:
                    self._load(model, candidate)
                except Exception as error:  # any unreadable backup is set aside, never fatal
                    flat = [variable for variables in _state_variables(model).values() for variable in variables]
                    for variable, value in zip(flat, initial, strict=True):
                        variable.assign(value)
                    set_aside(candidate, "training backup", error, "trying an older one")
                    continue
                log.info(
                    "resuming an interrupted training run after epoch %d (backup %s)",
                    self.state["epoch"],
                    candidate.name,
                )
                return -1 if self.state["stopped"] else int(self.state["epoch"])
            return 0

        def _load(self, model, backup: Path) -> None:
            state = json.loads((backup / "state.json").read_text())
            with np.load(backup / "variables.npz") as arrays:
                for kind, variables in _state_variables(model).items():
                    if sum(name.startswith(f"{kind}_") for name in arrays.files) != len(variables):
                        raise ValueError(f"the backup's {kind} variables do not match this model")
                    for index, variable in enumerate(variables):
                        variable.assign(arrays[f"{kind}_{index}"])
            self.best_weights = None
            if (backup / "best_weights.npz").is_file():
                with np.load(backup / "best_weights.npz") as arrays:
                    self.best_weights = [arrays[f"arr_{index}"] for index in range(len(arrays.files))]
            self.state = state

        def on_train_begin(self, logs=None):
            if self.state is not None:
                early_stopping.wait = self.state["wait"]
                early_stopping.best = self.state["best"]
                early_stopping.best_epoch = self.state["best_epoch"]
                early_stopping.best_weights = self.best_weights
                recorder.rows = self.state["history"]

        def on_epoch_end(self, epoch, logs=None):
            self.wait()  # the previous epoch's write
            arrays = {  # copies: the next epoch changes the variables while this one is written
                f"{kind}_{index}": np.asarray(variable).copy()
                for kind, variables in _state_variables(self.model).items()
                for index, variable in enumerate(variables)
            }
            state = {
                "epoch": epoch + 1,
                "stopped": bool(self.model.stop_training),
                "wait": early_stopping.wait,
                "best": None if early_stopping.best is None else float(early_stopping.best),
                "best_epoch": early_stopping.best_epoch,
                "history": recorder.rows,
            }
            # EarlyStopping replaces its best weights (a new list of arrays), never changes them in place
            written = (epoch + 1, arrays, early_stopping.best_weights, json.dumps(state))
            self.writer = threading.Thread(target=self._write, args=written, name="training-backup", daemon=True)
            self.writer.start()

        def on_train_end(self, logs=None):
            self.wait()

        def _write(self, epoch: int, arrays: dict, best_weights, state: str) -> None:
            try:
                directory.mkdir(parents=True, exist_ok=True)
                final = directory / f"epoch-{epoch:04d}"
                staging = directory / f".{final.name}.partial-{os.getpid()}"
                shutil.rmtree(staging, ignore_errors=True)
                staging.mkdir()
                np.savez(staging / "variables.npz", **arrays)
                if best_weights is not None:
                    np.savez(staging / "best_weights.npz", *best_weights)
                (staging / "state.json").write_text(state)
                _sync_directory(staging)
                shutil.rmtree(final, ignore_errors=True)
                staging.rename(final)
                for older in directory.glob("epoch-*"):
                    if older.name < final.name:
                        shutil.rmtree(older, ignore_errors=True)
            except BaseException as error:  # raised in the training thread, by wait()
                self.write_error = error

    return TrainingBackup()


def _state_variables(model) -> dict[str, list]:
    """Everything training changes: the model's variables (weights and the dropout layers' seed
    states), and the optimizer's (iterations, moments)."""
    optimizer = model.optimizer
    return {"model": list(model.variables), "optimizer": list(optimizer.variables) if optimizer is not None else []}


def _sync_directory(directory: Path) -> None:
    """Flushes every file in `directory` to disk, so a rename after it never publishes unwritten data."""
    for path in directory.iterdir():
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())


def train_model(
    model,
    train_dataset,
    validation_dataset,
    epochs: int,
    patience: int,
    monitor: str,
    work_dir: Path,
    extra_callbacks: list | None = None,
    steps_per_epoch: int | None = None,
    clock=None,
    steps_per_execution: int = 1,
) -> tuple[list[dict], int, float]:
    """Fits `model` with early stopping and a crash-safe backup in `work_dir` (see `training_backup`).

    `train_dataset` is one pass over the (shuffled, batched) training split, of `steps_per_epoch`
    batches (counted once when not given). It is repeated, and a resumed run skips the batches of the
    epochs already done, so that the data order does not depend on how Keras creates iterators: with
    op determinism, a resumed run ends with the same weights as an uninterrupted one.

    `fit` runs up to `steps_per_execution` steps in each call of its compiled step (`executed_together`,
    `run_steps_together`): for a small model, Keras' work around each step is most of an epoch.

    Returns the per-epoch history rows (including epochs done before a resume), the number
    of epochs run by this call, and the seconds it spent in `fit`. `clock` (`epoch_clock()`) times each epoch's
    parts: fit's own work, the history file, the extra callbacks (MLflow's logging) and the backup.
    """
    import keras

    work_dir.mkdir(parents=True, exist_ok=True)
    mode = direction(monitor)
    recorder = history_recorder(work_dir / HISTORY_FILE)
    stopping = keras.callbacks.EarlyStopping(monitor=monitor, mode=mode, patience=patience, restore_best_weights=True)
    backup = training_backup(work_dir / BACKUP_DIR, stopping, recorder)
    with model.distribute_strategy.scope():  # the optimizer's slots must belong to the model's strategy
        done = backup.restore(model)
    initial_epoch = epochs if done < 0 else done
    if steps_per_epoch is None:
        steps_per_epoch = int(train_dataset.reduce(0, lambda count, _: count + 1))
    repeated = train_dataset.repeat().skip(initial_epoch * steps_per_epoch)
    run_steps_together(model, executed_together(steps_per_epoch, steps_per_execution))
    started = time.perf_counter()
    try:
        model.fit(
            repeated,
            validation_data=validation_dataset,
            epochs=epochs,
            initial_epoch=initial_epoch,
            steps_per_epoch=steps_per_epoch,
            callbacks=timed_callbacks(
                clock,
                [("early_stopping", stopping), ("history", recorder)]
                + [("logging", callback) for callback in extra_callbacks or []]
                + [("backup", backup)],
            ),  # fmt: skip
            shuffle=False,  # the dataset is shuffled already
            verbose=1 if sys.stdout.isatty() else 2,
        )
    except BaseException:
        backup.wait(raise_error=False)  # the last finished epoch's backup, on disk for the next run
        raise
    resumed_rows = len(backup.state["history"]) if backup.state else 0
    return recorder.rows, len(recorder.rows) - resumed_rows, time.perf_counter() - started


def run_steps_together(model, steps: int) -> None:
    """Makes `fit` (and its validation) run up to `steps` steps in each call of the compiled step. Over several
    replicas, one step a call: Keras 3.15's loop fails there ("You must feed a value for placeholder tensor").

    On a finite dataset, an epoch's last call runs the steps that are left, so any count runs the same steps. With
    `steps_per_epoch` given, Keras rounds an epoch up to whole calls: see `executed_together`."""
    if model.distribute_strategy.num_replicas_in_sync > 1:
        steps = 1
    model.steps_per_execution = steps
    model.make_train_function(force=True)  # functions made before hold the steps they were made with
    model.make_test_function(force=True)


def executed_together(steps_per_epoch: int, most: int) -> int:
    """How many training steps `fit` runs in each call of its compiled step: the largest divisor of an epoch's steps
    up to `most`. Keras 3.15 rounds an epoch up to whole calls (2,187 steps at 16 a call ran 2,192), which would
    move every later epoch's batches and a resumed run's skip (`train_model`) off the epochs' boundaries."""
    return max(count for count in range(1, min(most, steps_per_epoch) + 1) if steps_per_epoch % count == 0)


# A fixed layer's output kept dense in memory for every example (TF-IDF, whose sparse form Keras lacks): at most
# this many values an example, else the whole model trains on the raw inputs.
DENSE_FIXED_OUTPUT_LIMIT = 4096


class FixedLayersOutside:
    """`model` trained from the outputs of its first layers that learn nothing and draw nothing at random (a text
    column's vectoriser; `ModelModality.fixed_outputs`): `transform` computes them from a parsed batch, once, in
    `tf.data` (`make_dataset`, before its cache); `head` is `model` (or a copy of it) from them on, compiled with
    `model`'s optimizer, whose variables it builds in `model`'s order; `finish()` puts a copy's trained weights
    back in `model`, which is saved whole (raw inputs in) with its optimizer's state."""

    def __init__(self, model, prefix, head, copy):
        self.model, self.prefix, self.head, self.copy = model, prefix, head, copy

    def transform(self, features: dict) -> dict:
        return self.prefix(features, training=False)

    def finish(self):
        if self.copy is not self.model:
            self.model.set_weights(self.copy.get_weights())
        return self.model


def fixed_layers_outside(model, spec, keep_whole: bool = True) -> FixedLayersOutside | None:
    """`model`'s fixed first layers split off (call in `model`'s strategy scope), or None when it has none, or one
    of their outputs is dense and wider than `DENSE_FIXED_OUTPUT_LIMIT` values. `keep_whole`: cut a copy, so that
    `model` can still be saved whole (a model cut from its own tensors cannot be); the search, which never saves
    it, cuts `model` itself (a copy of the text model's vocabulary costs 0.7 s)."""
    import keras
    import numpy as np

    from pipeline.ml.modalities import model_modality
    from pipeline.ml.models import compile_for_task

    modality = model_modality(spec.kind)
    cut = modality.fixed_outputs(model, spec)
    # a model makes a sparse tensor dense where its input is declared dense (`TermVector` declares it)
    if cut is None or any(
        not tensor.sparse and int(np.prod(tensor.shape[1:])) > DENSE_FIXED_OUTPUT_LIMIT for tensor in cut.values()
    ):
        return None
    copy = model
    if keep_whole:
        copy = keras.models.clone_model(model)
        copy.set_weights(model.get_weights())
        cut = modality.fixed_outputs(copy, spec)
    inputs = {
        name: keras.Input(tensor.shape[1:], dtype=tensor.dtype, sparse=tensor.sparse, name=name)
        for name, tensor in cut.items()
    }
    prefix = keras.Model(copy.input, cut)
    inner = keras.Model(list(cut.values()), copy.outputs)
    head = keras.Model(inputs, inner(list(inputs.values())), name=model.name)
    compile_for_task(head, spec, model.optimizer, jit_compile=model.jit_compile)
    model.optimizer.build(copy.trainable_variables)  # `model`'s order (a copy's), for the saved model's optimizer
    return FixedLayersOutside(model, prefix, head, copy)


def timed_callbacks(clock, named: list[tuple[str, Any]]) -> list:
    """The callbacks in order, each followed by `clock`'s mark of its name (none without a clock)."""
    if clock is None:
        return [callback for _, callback in named]
    callbacks = [clock.start()]
    for name, callback in named:
        callbacks += [callback, clock.after(name)]
    return callbacks


def summarise_history(rows: list[dict], monitor: str) -> dict[str, float]:
    """The best epoch by `monitor` and its metrics, as `best_<name>` values."""
    pick = max if higher_is_better(monitor) else min
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
