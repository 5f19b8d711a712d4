"""Stage `train`: fit the model over mini-batches and epochs with validation every epoch.

EarlyStopping restores the best weights, and a crash-safe backup after every epoch lets a run
killed at any instant resume at the epoch it reached (`pipeline.ml.training`). The learning
curves go to a DVC plots file, a PNG and MLflow.
"""

from __future__ import annotations

import logging
import math
import shutil
import sys
from pathlib import Path

from pipeline.core.config import Config
from pipeline.core.outputs import write_json_atomic
from pipeline.core.runner import StageResult, run_stage
from pipeline.ml.distribute import setup_tensorflow
from pipeline.ml.training import (
    HISTORY_FILE,
    epoch_clock,
    epoch_logging_callback,
    fixed_layers_outside,
    plot_learning_curves,
    summarise_history,
    train_model,
    training_key,
    write_history,
)

log = logging.getLogger(__name__)

EPOCH_TIMES_FILE = "epoch_times.json"


def run(config: Config) -> StageResult:
    strategy = setup_tensorflow(config)
    from pipeline.core import tracking
    from pipeline.core.spec import load as load_spec
    from pipeline.ml import hyperparameters as hyperparameter_file
    from pipeline.ml import multiworker
    from pipeline.ml.features import training_datasets
    from pipeline.ml.modalities import model_modality
    from pipeline.ml.models import build_model

    spec = load_spec(config.paths.prepared)
    hyperparameters = hyperparameter_file.load(config.paths.hyperparameters)
    chief = multiworker.is_chief()  # in a multi-worker run only the chief logs and writes outputs
    if chief:
        tracking.log_hyperparameters(hyperparameters)
        tracking.log_datasets(config, spec, model_modality(spec.kind).mlflow_schema(spec))
    batch_size = int(hyperparameters["batch_size"]) * strategy.num_replicas_in_sync
    with strategy.scope():
        model = build_model(hyperparameters, spec, jit_compile=config.train.jit_compile)
        fixed = fixed_layers_outside(model, spec)  # a text's vectoriser: run once, in tf.data
    model.summary(print_fn=log.info)
    train_dataset, validation_dataset = training_datasets(config, spec, batch_size, fixed.transform if fixed else None)

    work_dir = Path(config.paths.work) / "train" / training_key(hyperparameters, config, spec)
    if multiworker.cluster():
        work_dir = work_dir / multiworker.task_name()  # each worker keeps its own backup and checkpoint
    clock = epoch_clock()
    rows, epochs_this_run, fit_seconds = train_model(
        fixed.head if fixed else model,
        train_dataset,
        validation_dataset,
        epochs=config.train.epochs,
        patience=config.train.early_stopping_patience,
        monitor=config.train.monitor,
        work_dir=work_dir,
        extra_callbacks=[epoch_logging_callback()] if chief else [],
        steps_per_epoch=math.ceil(spec.split("train").num_examples / batch_size),
        clock=clock,
        steps_per_execution=config.train.steps_per_execution,
    )
    if fixed:
        fixed.finish()
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
        spec.split("train").num_examples * max(epochs_this_run, 1) / max(fit_seconds, 1e-9), 1
    )
    summary["parameters"] = int(model.count_params())
    write_json_atomic(reports / "summary.json", summary)
    # each epoch's seconds: fit's own work (training and validation), then each callback's (not in the summary,
    # which a rerun with the same seed reproduces exactly)
    write_json_atomic(reports / EPOCH_TIMES_FILE, clock.summary())
    write_json_atomic(  # the DVC metrics: what people compare across experiments (the holdout is evaluate's)
        reports / "metrics.json", {key: summary[key] for key in ("epochs_run", "train_seconds")}
    )
    shutil.rmtree(work_dir, ignore_errors=True)

    key_metric = "best_val_accuracy" if "best_val_accuracy" in summary else "best_val_loss"
    return StageResult(
        summary=f"{hyperparameters['family']} trained {summary['epochs_run']} epochs,"
        f" {key_metric}={summary[key_metric]:.4f} -> {model_path}",
        metrics={f"train_{key}": value for key, value in summary.items()},
        artifacts=[plot, reports / HISTORY_FILE],
    )


def main(params_file: str = "params.yaml") -> None:
    from pipeline.ml import multiworker

    run_stage("train", params_file, run, track=multiworker.is_chief())


def launch_workers(params_file: str, workers: int) -> int:
    """`pipeline train --workers N`: the train stage on N local worker processes (MultiWorkerMirroredStrategy)."""
    from pipeline.core.config import load_config
    from pipeline.ml import multiworker

    strategy = load_config(params_file).base.strategy
    if strategy not in ("auto", "multi_worker"):
        print(
            f"pipeline train: error: --workers needs base.strategy auto or multi_worker (it is {strategy}).",
            file=sys.stderr,
        )
        return 2
    return multiworker.launch([sys.executable, "-m", "pipeline", "run", "train", "--params", params_file], workers)
