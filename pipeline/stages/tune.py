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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.core.config import Config, TuneConfig
from pipeline.core.metrics import direction
from pipeline.core.outputs import set_aside, write_json_atomic, write_text_atomic
from pipeline.core.runner import StageError, StageResult, run_stage
from pipeline.ml import hyperparameters as hyperparameter_file

log = logging.getLogger(__name__)

TRIAL_TAG = "pipeline.trial_id"


def declare(hp, name: str, entry: dict, default: Any = None) -> Any:
    """Declares one search-space entry on a Keras Tuner `HyperParameters` and returns its value."""
    if "choice" in entry:
        values = entry["choice"]
        return hp.Choice(name, values, default=default if default in values else None)
    low, high = entry["min"], entry["max"]
    sampling = "log" if entry.get("log") else "linear"
    inside = default is not None and low <= default <= high
    if isinstance(low, int) and isinstance(high, int) and isinstance(entry.get("step", 1), int):
        return hp.Int(name, low, high, step=entry.get("step"), sampling=sampling, default=default if inside else None)
    return hp.Float(
        name,
        float(low),
        float(high),
        step=entry.get("step"),
        sampling=sampling,
        default=float(default) if inside else None,
    )


def default_for(name: str, defaults: dict[str, Any]) -> Any:
    if name == "num_layers":
        return len(defaults["hidden_units"])
    if name == "units":
        return defaults["hidden_units"][0] if defaults["hidden_units"] else None
    if name == "filters":
        return defaults["filters"][0] if defaults["filters"] else None
    return defaults.get(name)


def hypermodel_builder(space: dict, defaults: dict[str, Any], spec) -> Callable:
    """The Keras Tuner hypermodel: `build(hp)` declares the space and builds the model."""
    from pipeline.ml.models import build_model

    names = hyperparameter_file.searched_names(space, defaults["family"])

    def build(hp):
        values = {name: declare(hp, name, space[name], default_for(name, defaults)) for name in names}
        return build_model(hyperparameter_file.apply_search_values(defaults, values), spec)

    return build


def search_key(settings: TuneConfig, defaults: dict[str, Any], fingerprint: str, seed: int) -> str:
    """Names the tuner folder: the same space, budget, defaults, data and seed resume one search."""
    budget = {key: value for key, value in vars(settings).items() if key not in ("enabled", "max_seconds")}
    payload = json.dumps(
        {"budget": budget, "defaults": defaults, "data": fingerprint, "seed": seed}, sort_keys=True, default=str
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def make_tuner(
    settings: TuneConfig, hypermodel: Callable, datasets: Callable, directory: Path, seed: int, deadline: float | None
):
    """A Keras Tuner of the configured algorithm that records every trial as a nested MLflow run.

    `datasets(batch_size)` returns the (train, validation) datasets for a trial's batch size.
    """
    import keras
    import keras_tuner
    import mlflow

    from pipeline.ml.training import epoch_logging_callback

    mode = direction(settings.objective)
    objective = keras_tuner.Objective(settings.objective, direction=mode)

    class TrackedTrials:
        """Mixed into a Keras Tuner class: one nested MLflow run per trial, and the time budget."""

        def pre_create_trial(self):
            # A worker of a distributed search holds only a client of the chief's oracle (no trials, and
            # its max_trials is the chief's): the budget and the best-score stop are single-process only.
            reason = None if is_worker() else stop_reason(self.oracle, deadline)
            if reason:
                self.stopped = reason
            if reason and self.oracle.max_trials != len(self.oracle.trials):
                log.warning("%s: no new trials are started", reason)
                self.oracle.max_trials = len(self.oracle.trials)
            return super().pre_create_trial()

        def run_trial(self, trial, *args, **kwargs):
            collect_and_freeze()
            values = trial.hyperparameters.values
            train, validation = datasets(int(values.get("batch_size", 0)) or None)
            callbacks = [
                *kwargs.pop("callbacks", []),
                keras.callbacks.EarlyStopping(
                    monitor=settings.objective, mode=mode, patience=settings.early_stopping_patience
                ),
                epoch_logging_callback(),
            ]
            tags = {TRIAL_TAG: trial.trial_id, "pipeline.tuner_id": tuner_id() or "local"}
            # The trial's run stays open until the oracle has recorded the trial (`on_trial_end`): a
            # search killed in between leaves it RUNNING, and the resume settles it from the oracle.
            self._trial_run = mlflow.start_run(run_name=f"trial {trial.trial_id}", nested=True, tags=tags)
            try:
                mlflow.log_params({name: value for name, value in values.items()})
                results = super().run_trial(
                    trial, train, *args, validation_data=validation, callbacks=callbacks, **kwargs
                )
                histories = results if isinstance(results, list) else [results]
                pick = max if mode == "max" else min
                scores = [pick(history.history[settings.objective]) for history in histories]
                epochs = sum(len(history.history[settings.objective]) for history in histories)
                mlflow.log_metrics({"score": sum(scores) / len(scores), "epochs": epochs})
            except BaseException:
                self._end_trial_run("FAILED")
                raise
            record_epochs(directory, trial.trial_id, epochs)
            return results

        def on_trial_end(self, trial):
            super().on_trial_end(trial)
            self._end_trial_run("FINISHED" if trial.status == "COMPLETED" else "FAILED")

        def _end_trial_run(self, status: str) -> None:
            run = getattr(self, "_trial_run", None)
            active = mlflow.active_run()
            if run is not None and active is not None and active.info.run_id == run.info.run_id:
                mlflow.end_run(status=status)
            self._trial_run = None

    common = dict(
        objective=objective,
        executions_per_trial=settings.executions_per_trial,
        seed=seed,
        directory=str(directory),
        project_name="search",
        overwrite=False,
    )
    if settings.algorithm == "hyperband":
        base = keras_tuner.Hyperband
        arguments = dict(max_epochs=settings.max_epochs, factor=settings.hyperband_factor, hyperband_iterations=1)
    else:
        base = {
            "random": keras_tuner.RandomSearch,
            "bayesian": keras_tuner.BayesianOptimization,
            "grid": keras_tuner.GridSearch,
        }[settings.algorithm]
        arguments = dict(max_trials=settings.max_trials)
    tuner_class = type(f"Tracked{base.__name__}", (TrackedTrials, base), {})
    return tuner_class(hypermodel=hypermodel, **arguments, **common)


def collect_and_freeze() -> None:
    """Before a trial: one garbage collection, then everything that survived it is kept out of later ones.

    Keras Tuner runs two full collections before every trial (`clear_session()` and its own `gc.collect()`)
    to free the last trial's models. With TensorFlow, Keras and MLflow loaded, each walked every object in
    the process, and the graphs TensorFlow keeps of every trial's training step (about 14,000 objects a
    trial, never freed): 0.2-0.7 s apiece, growing, half of the search's time on digits. After a freeze
    they walk only what the trial creates. `gc.unfreeze()` after the search returns the survivors."""
    gc.collect()
    gc.freeze()


def best_possible_score(objective: str) -> float | None:
    """The score no trial can beat: 1.0 for an accuracy or AUC; None where there is none (a loss)."""
    name = objective.removeprefix("val_")
    return 1.0 if name in ("accuracy", "auc", "binary_accuracy", "sparse_categorical_accuracy") else None


def stop_reason(oracle, deadline: float | None) -> str | None:
    """Why the search should start no more trials, or None: its time budget is spent, or a completed trial
    has the best possible score. The search keeps the earliest of equal scores (`best_trial`), so no later
    trial could be chosen over that one: on a small or easy dataset (penguins) the rest would be wasted."""
    if deadline is not None and time.monotonic() > deadline:
        return "tune.max_seconds reached"
    ceiling = best_possible_score(oracle.objective.name)
    for trial in oracle.trials.values():
        if ceiling is not None and trial.status == "COMPLETED" and trial.score is not None and trial.score >= ceiling:
            return f"trial {trial.trial_id} reached the best possible {oracle.objective.name} ({ceiling:g})"
    return None


def write_state_atomically() -> None:
    """Keras Tuner writes its oracle and trial files in place, so a kill in mid-write leaves a truncated
    JSON file that fails every resume: route its one JSON writer through a temporary file and a rename."""
    import keras_tuner.src.utils as tuner_utils

    if getattr(tuner_utils.save_json, "atomic", False):
        return

    def save_json(path, obj):
        text = json.dumps(obj)
        if "://" in str(path):  # a remote file system (gs://, s3://): no rename there
            with tf_file(path) as handle:
                handle.write(text)
        else:
            write_text_atomic(Path(path), text)
        return text

    save_json.atomic = True
    tuner_utils.save_json = save_json


def tf_file(path: str):
    import keras_tuner.src.backend as tuner_backend

    return tuner_backend.io.File(path, "w")


def open_tuner(make: Callable, directory: Path):
    """`make()`, which reloads the search state in `directory`; state that does not load (a search killed
    before its writes were atomic, a disk error) is set aside as `corrupt-...` and the search starts over."""
    write_state_atomically()
    try:
        return make()
    except (ValueError, KeyError, TypeError, OSError) as error:
        if not directory.exists():
            raise
        set_aside(directory, "the search state in", error, "starting the search over")
        return make()


EPOCHS_DIR = "epochs"


def record_epochs(directory: Path, trial_id: str, epochs: int) -> None:
    """Keeps each finished trial's epoch count beside the tuner's state (it survives a resume).

    One file per trial: in a distributed search several workers finish trials at once.
    """
    write_json_atomic(Path(directory) / EPOCHS_DIR / f"{trial_id}.json", {"epochs": epochs})


def recorded_epochs(directory: Path) -> dict[str, int]:
    files = (Path(directory) / EPOCHS_DIR).glob("*.json")
    return {file.stem: json.loads(file.read_text())["epochs"] for file in files}


def tuner_id() -> str | None:
    """This process's Keras Tuner id in a distributed search (`chief`, `tuner0`, ...), else None."""
    return os.environ.get("KERASTUNER_TUNER_ID") if os.environ.get("KERASTUNER_ORACLE_IP") else None


def is_worker() -> bool:
    return tuner_id() is not None and "chief" not in tuner_id()


def mark_interrupted_trials(parent_run_id: str, completed: set[str] | None = None) -> int:
    """Trial runs left RUNNING by a killed search are settled: FINISHED if the oracle had recorded
    the trial as completed (`completed`: their ids), else KILLED (the trial will run again). With the
    oracle's list, a trial run FINISHED in MLflow that the oracle never recorded (the search was killed
    between the two writes) is KILLED too: the trial runs again, and would otherwise finish twice.
    Returns how many were marked KILLED."""
    import mlflow

    client = mlflow.tracking.MlflowClient()
    run = client.get_run(parent_run_id)
    settle = ("RUNNING", "FINISHED") if completed is not None else ("RUNNING",)
    children = client.search_runs(
        [run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'"
    )
    killed = 0
    for child in children:
        done = completed is not None and child.data.tags.get(TRIAL_TAG) in completed
        if child.info.status not in settle or (child.info.status == "FINISHED" and done):
            continue
        client.set_terminated(child.info.run_id, status="FINISHED" if done else "KILLED")
        killed += not done
    return killed


def best_trial(oracle):
    """The completed trial with the best score; among equal scores the earliest (the cheapest, in
    Hyperband's order). Keras Tuner breaks ties by dictionary order, which differs between a search
    that ran and the same search reloaded, so the winner depended on whether the state was reloaded."""
    completed = [trial for trial in oracle.trials.values() if trial.status == "COMPLETED" and trial.score is not None]
    if not completed:
        raise StageError("the search completed no trial: nothing to choose from (see the log above)")
    sign = -1 if oracle.objective.direction == "max" else 1
    return min(completed, key=lambda trial: (sign * trial.score, trial.trial_id))


def trial_rows(tuner, directory: Path) -> list[dict]:
    """One row per trial: id, status, score, epochs run, and its hyperparameter values."""
    epochs = recorded_epochs(directory)
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

    from pipeline.ml.features import make_dataset

    settings = config.tune
    key = search_key(settings, defaults, spec.fingerprint, config.base.seed)
    directory = Path(config.paths.work) / "tune" / key
    resumed = (directory / "search" / "oracle.json").is_file()
    if resumed:
        log.info("resuming the search in %s", directory)

    def datasets(batch_size: int | None):
        batch = batch_size or int(defaults["batch_size"])
        cache = config.train.cache_limit_mb
        return (
            make_dataset(
                config.paths.prepared, spec, "train", batch, shuffle=True, seed=config.base.seed, cache_limit_mb=cache
            ),
            make_dataset(config.paths.prepared, spec, "validation", batch, cache_limit_mb=cache),
        )

    deadline = time.monotonic() + settings.max_seconds if settings.max_seconds else None
    tuner = open_tuner(
        lambda: make_tuner(
            settings,
            hypermodel_builder(settings.space, defaults, spec),
            datasets,
            directory,
            config.base.seed,
            deadline,
        ),
        directory,
    )
    if mlflow.active_run() is not None and tuner_id() is None:  # `launch_distributed` does it for its processes
        completed = {trial.trial_id for trial in tuner.oracle.trials.values() if trial.status == "COMPLETED"}
        killed = mark_interrupted_trials(mlflow.active_run().info.run_id, completed)
        if killed:
            log.info("marked %d trial run(s) of an interrupted search as KILLED", killed)
    started = time.perf_counter()
    try:
        tuner.search(epochs=settings.max_epochs, verbose=1 if sys.stdout.isatty() else 2)
    finally:
        gc.unfreeze()  # what `collect_and_freeze` kept from the collector can be collected again
    seconds = time.perf_counter() - started
    if is_worker():
        return None, {"search_seconds": round(seconds, 1)}, []
    winner = best_trial(tuner.oracle)
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
        return StageResult(summary=f"worker {tuner_id()}: no trials left ({summary['search_seconds']} s)")
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
        killed = mark_interrupted_trials(run.info.run_id)
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
    run_stage("tune", params_file, run)
