"""Stage `tune`: hyperparameter search with Keras Tuner, every trial a nested MLflow run.

The search space is declared in `params.yaml` (`tune.space`), apart from the model builder;
each trial builds the model with `models.build_model` from the defaults plus the trial's
values. The best hyperparameters go to `paths.hyperparameters`, which `train` reads. With
`tune.enabled: false` the stage writes the defaults there instead, without importing TensorFlow.

Resumable: the tuner's folder (under `paths.work`) is keyed by a hash of the search space,
budget, model family, data and seed, so rerunning an interrupted search continues it without
redoing finished trials, and a changed search starts afresh.
"""

from __future__ import annotations

import csv
import gc
import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pipeline.core.config import Config, TuneConfig
from pipeline.core.outputs import write_json_atomic
from pipeline.core.runner import StageResult, run_stage
from pipeline.ml import hyperparameters as hyperparameter_file
from pipeline.ml import tuning

log = logging.getLogger(__name__)


def search_key(settings: TuneConfig, defaults: dict[str, Any], fingerprint: str, seed: int) -> str:
    """Names the tuner folder: the same space, budget, defaults, data and seed resume one search."""
    budget = {
        key: value
        for key, value in vars(settings).items()
        if key not in ("enabled", "max_seconds", "budget_trainings", "min_seconds")
    }
    payload = json.dumps(
        {"budget": budget, "defaults": defaults, "data": fingerprint, "seed": seed}, sort_keys=True, default=str
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def trial_rows(tuner, directory: Path) -> list[dict]:
    """One row per trial: id, status, score, epochs run, and its hyperparameter values."""
    epochs = tuning.recorded_epochs(directory)
    rows = []
    for trial in tuner.oracle.trials.values():
        rows.append(
            {
                "trial": trial.trial_id,
                "status": trial.status,
                "score": trial.score,
                "epochs": epochs.get(trial.trial_id, 0),
                **{name: value for name, value in trial.hyperparameters.values.items()},
            }
        )
    return rows


def write_trials_csv(path: Path, rows: list[dict]) -> Path:
    fields = list(dict.fromkeys(key for row in rows for key in row)) or ["trial", "status", "score", "epochs"]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return path


def search(config: Config, spec, defaults: dict[str, Any]) -> tuple[dict[str, Any], dict, list[dict]]:
    """Runs (or resumes) the search; returns (best hyperparameters, summary, trial rows)."""
    import mlflow

    from pipeline.ml.features import training_datasets

    settings = config.tune
    key = search_key(settings, defaults, spec.fingerprint, config.base.seed)
    directory = Path(config.paths.work) / "tune" / key
    resumed = (directory / "search" / "oracle.json").is_file()
    if resumed:
        log.info("resuming the search in %s", directory)

    def datasets(batch_size: int | None, transform):
        return training_datasets(config, spec, batch_size or int(defaults["batch_size"]), transform)

    budget = tuning.Budget(settings, config.train.epochs, directory)
    tuner = tuning.open_tuner(
        lambda: tuning.make_tuner(
            settings,
            tuning.SearchModels(settings.space, defaults, spec),
            datasets,
            directory,
            config.base.seed,
            budget,
            config.train.steps_per_execution,
        ),
        directory,
    )
    # `launch_distributed` settles the runs for its processes
    if mlflow.active_run() is not None and tuning.tuner_id() is None:
        completed = {trial.trial_id for trial in tuner.oracle.trials.values() if trial.status == "COMPLETED"}
        killed = tuning.mark_interrupted_trials(mlflow.active_run().info.run_id, completed)
        if killed:
            log.info("marked %d trial run(s) of an interrupted search as KILLED", killed)
    started = time.perf_counter()
    try:
        tuner.search(epochs=settings.max_epochs, verbose=1 if sys.stdout.isatty() else 2)
    finally:
        gc.unfreeze()  # what `collect_and_freeze` kept from the collector can be collected again
    seconds = time.perf_counter() - started
    if tuning.is_worker():
        return None, {"search_seconds": round(seconds, 1)}, []
    winner = tuning.best_trial(tuner.oracle)
    best = winner.hyperparameters.values
    names = hyperparameter_file.searched_names(settings.space, defaults["family"])
    best_hyperparameters = hyperparameter_file.apply_search_values(
        defaults, {name: best[name] for name in names if name in best}
    )
    rows = trial_rows(tuner, directory)
    completed = [row for row in rows if row["status"] == "COMPLETED"]
    summary = {
        "algorithm": settings.algorithm,
        "objective": settings.objective,
        "best_score": winner.score,
        "best_trial": winner.trial_id,
        "trials_completed": len(completed),
        "total_epochs": sum(row["epochs"] for row in completed),
        "search_seconds": round(seconds, 1),
        "resumed": resumed,
        "stopped_early": getattr(tuner, "stopped", None),
        "budget_seconds": None if budget.seconds() is None else round(budget.seconds(), 1),
    }
    return best_hyperparameters, summary, rows


def run(config: Config) -> StageResult:
    defaults = hyperparameter_file.defaults_from_config(config)
    target = Path(config.paths.hyperparameters)
    reports = Path(config.paths.reports) / "tune"
    if not config.tune.enabled:
        hyperparameter_file.save(target, defaults, source="params.yaml (tune.enabled: false)")
        # The stage's DVC outputs exist either way: no trials, and a summary that says why.
        write_trials_csv(reports / "trials.csv", [])
        write_json_atomic(reports / "summary.json", {"enabled": False, "trials_completed": 0})
        write_json_atomic(reports / "metrics.json", {"trials_completed": 0})
        return StageResult(summary=f"search disabled: the defaults from params.yaml -> {target}")

    from pipeline.core.spec import load as load_spec
    from pipeline.ml.distribute import setup_tensorflow

    setup_tensorflow(config)
    spec = load_spec(config.paths.prepared)
    best, summary, rows = search(config, spec, defaults)
    if best is None:
        return StageResult(summary=f"worker {tuning.tuner_id()}: no trials left ({summary['search_seconds']} s)")
    hyperparameter_file.save(
        target, best, source=f"{config.tune.algorithm} search, {config.tune.objective} {summary['best_score']:.4f}"
    )
    trials = write_trials_csv(reports / "trials.csv", rows)
    details = write_json_atomic(reports / "summary.json", summary)
    write_json_atomic(  # the DVC metrics: what people compare across experiments
        reports / "metrics.json", {key: summary[key] for key in ("trials_completed", "best_score", "search_seconds")}
    )
    import mlflow

    mlflow.set_tags({f"tune.best.{name}": json.dumps(value) for name, value in best.items()})
    mlflow.log_dict({"hyperparameters": best}, "tune/best_hyperparameters.json")
    return StageResult(
        summary=f"{config.tune.algorithm}: {summary['trials_completed']} trials, {summary['total_epochs']} epochs,"
        f" best {config.tune.objective}={summary['best_score']:.4f} in {summary['search_seconds']} s -> {target}",
        metrics={
            "tune_best_score": summary["best_score"],
            "tune_trials": summary["trials_completed"],
            "tune_total_epochs": summary["total_epochs"],
        },
        artifacts=[trials, details],
    )


def launch_distributed(params_file: str, workers: int, host: str = "127.0.0.1", port: int | None = None) -> int:
    """Runs the tune stage as Keras Tuner's chief plus `workers` worker processes on this machine.

    The chief serves the oracle on `host:port` and writes the stage's outputs; workers run trials.
    Returns the first non-zero exit status, or 0.
    """
    from pipeline.core import tracking
    from pipeline.core.config import load_config
    from pipeline.core.processes import free_port

    config = load_config(params_file)
    # Open the pipeline's MLflow run first, so that the processes find it rather than racing to create it.
    with tracking.pipeline_run(config, "tune") as run:
        killed = tuning.mark_interrupted_trials(run.info.run_id)
    if killed:
        log.info("marked %d trial run(s) of an interrupted search as KILLED", killed)
    environment = {**os.environ, "KERASTUNER_ORACLE_IP": host, "KERASTUNER_ORACLE_PORT": str(port or free_port())}
    command = [sys.executable, "-m", "pipeline", "run", "tune", "--params", str(params_file)]
    chief = subprocess.Popen(command, env={**environment, "KERASTUNER_TUNER_ID": "chief"})
    others = [
        subprocess.Popen(command, env={**environment, "KERASTUNER_TUNER_ID": f"tuner{index}"})
        for index in range(workers)
    ]
    statuses = [process.wait() for process in others]
    if any(statuses):  # the chief waits for every worker to ask for a last trial: it would wait forever
        log.error("a tune worker failed (exit status %s): stopping the chief", next(filter(None, statuses)))
        chief.terminate()
        try:
            chief.wait(timeout=30)
        except subprocess.TimeoutExpired:
            chief.kill()
    statuses.append(chief.wait())
    return next((status for status in statuses if status), 0)


def main(params_file: str = "params.yaml") -> None:
    run_stage("tune", params_file, run, track=searches)


def searches(config: Config) -> bool:
    """Whether the stage searches (and so opens the pipeline's MLflow run), or only writes the defaults."""
    return config.tune.enabled
