"""Keras Tuner, made fit for the tune stage: the hypermodel over `tune.space`, a tuner that records every
trial as a nested MLflow run and keeps a time budget, crash-safe state, and a deterministic best trial.

The stage (`pipeline.stages.tune`) decides what to search and writes the results; this module holds what
patches or wraps Keras Tuner. TensorFlow, Keras Tuner and MLflow are imported inside the functions that
need them.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.core.config import TuneConfig
from pipeline.core.metrics import direction
from pipeline.core.outputs import set_aside, write_json_atomic, write_text_atomic
from pipeline.core.runner import StageError
from pipeline.ml import hyperparameters as hyperparameter_file

log = logging.getLogger(__name__)

TRIAL_TAG = "pipeline.trial_id"


def declare(hp, name: str, entry: dict, default: Any = None) -> Any:
    """Declares one search-space entry on a Keras Tuner `HyperParameters` and returns its value. A choice also
    holds the default (the search's first trial is the defaults: text's linear MLP has 0 layers, the space 1 or 2)
    where it is a value of the same type (not `auto` among numbers), in order among numbers (Bayesian search
    treats a numeric choice as ordered)."""
    if "choice" in entry:
        values = list(entry["choice"])
        if default is not None and default not in values and all(type(value) is type(default) for value in values):
            values = sorted([*values, default]) if isinstance(default, (int, float)) else [default, *values]
        return hp.Choice(name, values, default=default if default in values else None)
    low, high = entry["min"], entry["max"]
    sampling = "log" if entry.get("log") else "linear"
    inside = isinstance(default, (int, float)) and low <= default <= high  # not `auto`
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


class SearchModels:
    """The Keras Tuner hypermodel: called with a trial's `hp`, it declares the space and builds the model, or the
    part of it after its fixed layers (a text's vectoriser: `pipeline.ml.training.fixed_layers_outside`).
    `transform` is what the last built model's fixed layers compute (None for a model without them): the trial's
    datasets apply it, as the train stage does. The search never saves a whole model: Hyperband's checkpoints hold
    the part it fits."""

    def __init__(self, space: dict, defaults: dict[str, Any], spec):
        self.space, self.defaults, self.spec = space, defaults, spec
        self.names = hyperparameter_file.searched_names(space, defaults["family"])
        self.transform: Callable | None = None

    def __call__(self, hp):
        from pipeline.ml.models import build_model
        from pipeline.ml.training import fixed_layers_outside

        values = {name: declare(hp, name, self.space[name], default_for(name, self.defaults)) for name in self.names}
        model = build_model(hyperparameter_file.apply_search_values(self.defaults, values), self.spec)
        fixed = fixed_layers_outside(model, self.spec, keep_whole=False)
        self.transform = fixed.transform if fixed else None
        return fixed.head if fixed else model


class Budget:
    """The search's wall-clock budget from this process's start: `tune.max_seconds`, or for `auto`
    `tune.budget_trainings` times what training the defaults for `train.epochs` costs on this data and this
    machine, timed by the first trial that completes (the defaults: `make_tuner` runs them first), and at least
    `tune.min_seconds`. So the budget grows with the data and shrinks with faster hardware, in trainings rather
    than seconds; the timing is kept beside the search's state, for a resumed search."""

    def __init__(self, settings: TuneConfig, train_epochs: int, directory: Path | None):
        self.started = time.monotonic()
        self.settings, self.train_epochs = settings, train_epochs
        self.file = Path(directory) / "budget.json" if directory is not None else None

    @property
    def auto(self) -> bool:
        return self.settings.max_seconds == "auto"

    def seconds(self) -> float | None:
        """The budget in seconds; None for no limit, or (auto) before a trial has completed."""
        if not self.auto:
            return self.settings.max_seconds
        if self.file is None or not self.file.is_file():
            return None
        per_epoch = json.loads(self.file.read_text())["seconds_per_epoch"]
        return max(self.settings.min_seconds, self.settings.budget_trainings * per_epoch * self.train_epochs)

    def spent(self) -> bool:
        seconds = self.seconds()
        return seconds is not None and time.monotonic() - self.started > seconds

    def trial_timed(self, trial_id: str, seconds: float, epochs: int) -> None:
        """Keeps the first completed trial's seconds per epoch (auto)."""
        if self.auto and self.file is not None and epochs and not self.file.is_file():
            write_json_atomic(self.file, {"trial": trial_id, "seconds_per_epoch": seconds / epochs})

    def reason(self) -> str:
        if not self.auto:
            return "tune.max_seconds reached"
        return (
            f"tune.max_seconds reached (auto: {self.settings.budget_trainings:g} training(s) of the defaults,"
            f" at least {self.settings.min_seconds:g} s: {self.seconds():.0f} s)"
        )


def make_tuner(
    settings: TuneConfig,
    hypermodel: Callable,
    datasets: Callable,
    directory: Path,
    seed: int,
    budget: Budget | None,
    steps_per_execution: int = 1,
):
    """A Keras Tuner of the configured algorithm that records every trial as a nested MLflow run, whose first
    trial is the defaults (the values `params.yaml` sets, where the space holds them), then the algorithm's.

    `datasets(batch_size, transform)` returns the (train, validation) datasets for a trial's batch size, made
    after its model is built: `transform` is `hypermodel.transform` (`SearchModels`), or None. One pass each, so a
    trial runs `steps_per_execution` steps a call as the train stage does, and its epochs keep every batch
    (`run_steps_together`).
    """
    import keras
    import keras_tuner
    import mlflow

    from pipeline.ml.training import epoch_logging_callback, run_steps_together

    mode = direction(settings.objective)
    objective = keras_tuner.Objective(settings.objective, direction=mode)

    class TrialModel(keras_tuner.HyperModel):
        """`hypermodel`, fitted on datasets made for the model it built (Keras Tuner's way to tune the data)."""

        def build(self, hp):
            return hypermodel(hp)

        def fit(self, hp, model, *args, **kwargs):
            batch_size = int(hp.values.get("batch_size", 0)) or None
            train, validation = datasets(batch_size, getattr(hypermodel, "transform", None))
            run_steps_together(model, steps_per_execution)
            return model.fit(train, *args, validation_data=validation, **kwargs)

    class TrackedTrials:
        """Mixed into a Keras Tuner class: one nested MLflow run per trial, and the time budget."""

        def pre_create_trial(self):
            # A worker of a distributed search holds only a client of the chief's oracle (no trials, and
            # its max_trials is the chief's): the budget and the best-score stop are single-process only.
            reason = None if is_worker() else stop_reason(self.oracle, budget)
            if reason:
                self.stopped = reason
            if reason and self.oracle.max_trials != len(self.oracle.trials):
                log.warning("%s: no new trials are started", reason)
                self.oracle.max_trials = len(self.oracle.trials)
            return super().pre_create_trial()

        def run_trial(self, trial, *args, **kwargs):
            collect_and_freeze()
            values = trial.hyperparameters.values
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
            started = time.perf_counter()
            try:
                mlflow.log_params({name: value for name, value in values.items()})
                results = super().run_trial(trial, *args, callbacks=callbacks, **kwargs)
                histories = results if isinstance(results, list) else [results]
                pick = max if mode == "max" else min
                scores = [pick(history.history[settings.objective]) for history in histories]
                epochs = sum(len(history.history[settings.objective]) for history in histories)
                mlflow.log_metrics({"score": sum(scores) / len(scores), "epochs": epochs})
            except BaseException:
                self._end_trial_run("FAILED")
                raise
            record_epochs(directory, trial.trial_id, epochs)
            if budget is not None:
                budget.trial_timed(trial.trial_id, time.perf_counter() - started, epochs)
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
    tuner = tuner_class(hypermodel=TrialModel(), **arguments, **common)
    if not is_worker():  # the oracle itself, reloaded from `directory` (a worker holds only a client of it)
        settled = settle_reloaded_trials(getattr(tuner.oracle, "_oracle", tuner.oracle))
        if settled:
            log.warning("a search killed between Keras Tuner's writes: %s", "; ".join(settled))
    if settings.algorithm != "grid":  # a grid tries every combination, the defaults' included, in its own order
        # a worker of a distributed search asks the chief's oracle through a client: the oracle is the chief's
        oracle = getattr(tuner.oracle, "_oracle", tuner.oracle)
        oracle._random_values = defaults_first(oracle)
    return tuner


def settle_reloaded_trials(oracle) -> list[str]:
    """Repairs what a search killed between two of Keras Tuner's writes reloads; returns what was repaired.

    The oracle writes a trial's file, then its own state (which trials run, which wait for a retry), and a
    reload reads every trial file but takes the running ones from that state. So a kill in between:
    - in `create_trial`: the new trial reloads RUNNING, but no process runs it and nothing queues it; it
      counts towards `max_trials` and never completes (a resumed search of 4 trials ended with 3). It is
      queued for a retry, which runs it with its values;
    - in `end_trial`, which writes its state before it forgets the trial it ends: a COMPLETED trial reloads
      as running, and the reload queues it for a retry, which would train it again. It stays completed."""
    repaired = []
    queue = oracle._retry_queue
    for trial_id in list(queue):
        if oracle.trials[trial_id].status == "COMPLETED":
            queue.remove(trial_id)
            repaired.append(f"trial {trial_id} had completed: not run again")
    for trial_id, trial in oracle.trials.items():
        if trial.status == "RUNNING" and trial_id not in queue:
            queue.append(trial_id)
            repaired.append(f"trial {trial_id} was started but not recorded: run again")
    return repaired


def defaults_first(oracle) -> Callable:
    """The oracle's `_random_values`, which hands out the space's default values (`declare`'s defaults: the
    values `params.yaml` sets) the first time: the search then knows what the defaults score, and what they
    cost (`Budget`). Hyperband, random and Bayesian search draw their first values with it."""
    random_values = oracle._random_values

    def first_the_defaults():
        defaults = {
            parameter.name: parameter.default
            for parameter in oracle.hyperparameters.space
            if oracle.hyperparameters.is_active(parameter) and not parameter.name.startswith("tuner/")
        }
        # the trials' values, reloaded by a resumed search; Hyperband's own keys (tuner/epochs ...) left aside
        tried = [trial.hyperparameters.values for trial in oracle.trials.values()]
        if defaults and all({name: values.get(name) for name in defaults} != defaults for values in tried):
            return defaults
        return random_values()

    return first_the_defaults


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


def stop_reason(oracle, budget: Budget | None) -> str | None:
    """Why the search should start no more trials, or None: its time budget is spent, or a completed trial
    has the best possible score. The search keeps the earliest of equal scores (`best_trial`), so no later
    trial could be chosen over that one: on a small or easy dataset (penguins) the rest would be wasted."""
    if budget is not None and budget.spent():
        return budget.reason()
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
