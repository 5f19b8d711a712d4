import dataclasses

import pytest

keras_tuner = pytest.importorskip("keras_tuner")

from pipeline.core.config import load_config  # noqa: E402
from pipeline.ml.hyperparameters import apply_search_values, defaults_from_config, searched_names  # noqa: E402
from pipeline.ml.tuning import declare  # noqa: E402
from pipeline.stages.tune import search_key  # noqa: E402
from tests.conftest import ROOT  # noqa: E402


@pytest.fixture
def config():
    return load_config(ROOT / "params.yaml")


def test_entries_become_keras_tuner_hyperparameters_with_the_defaults():
    hp = keras_tuner.HyperParameters()
    assert declare(hp, "optimizer", {"choice": ["adam", "rmsprop"]}, "rmsprop") == "rmsprop"
    assert declare(hp, "units", {"min": 16, "max": 256, "step": 16}, 64) == 64
    assert declare(hp, "learning_rate", {"min": 1e-4, "max": 1e-2, "log": True}, 1e-3) == pytest.approx(1e-3)
    assert declare(hp, "dropout", {"min": 0.0, "max": 0.5, "step": 0.1}, 0.9) == 0.0  # out of range: range start
    assert declare(hp, "num_layers", {"choice": [1, 2]}, 0) == 0  # text's linear MLP: the defaults come first
    assert declare(hp, "batch_size", {"choice": [32, 128]}, 64) == 64  # in order: Bayesian search reads it so
    assert declare(hp, "activation", {"choice": ["relu", "gelu"]}, "tanh") == "tanh"
    assert declare(hp, "series_lookback", {"choice": [8, 16]}, "auto") == 8  # auto is no value of the choice
    kinds = {item.name: type(item).__name__ for item in hp.space}
    assert kinds == {
        "optimizer": "Choice", "units": "Int", "learning_rate": "Float", "dropout": "Float", "num_layers": "Choice",
        "batch_size": "Choice", "activation": "Choice", "series_lookback": "Choice",
    }  # fmt: skip
    assert hp.space[4].values == [0, 1, 2] and hp.space[5].values == [32, 64, 128]
    assert hp.space[6].values == ["tanh", "relu", "gelu"] and hp.space[7].values == [8, 16]
    assert hp.space[2].sampling == "log"


def test_search_values_replace_the_defaults(config):
    defaults = defaults_from_config(config)
    values = apply_search_values(defaults, {"num_layers": 2, "units": 32, "filters": 16, "learning_rate": 0.01})
    assert values["hidden_units"] == [32, 32]
    assert values["filters"] == [16, 32]  # doubling per block, as many blocks as the defaults
    assert values["learning_rate"] == 0.01 and values["optimizer"] == defaults["optimizer"]


def test_only_entries_the_family_reads_are_searched(config):
    assert "filters" in searched_names(config.tune.space, "cnn")
    assert "filters" not in searched_names(config.tune.space, "mlp")


def test_the_search_folder_changes_with_the_space_or_budget_only(config):
    defaults = defaults_from_config(config)
    key = search_key(config.tune, defaults, "data", 42)
    assert key == search_key(dataclasses.replace(config.tune, max_seconds=5), defaults, "data", 42)
    assert key != search_key(dataclasses.replace(config.tune, max_trials=3), defaults, "data", 42)
    smaller = {**config.tune.space, "units": {"choice": [8]}}
    assert key != search_key(dataclasses.replace(config.tune, space=smaller), defaults, "data", 42)
    assert key != search_key(config.tune, defaults, "other data", 42)


def test_the_tuner_state_is_written_by_rename_so_a_crash_never_leaves_half_a_file(tmp_path, monkeypatch):
    import os

    import keras_tuner.src.utils as tuner_utils

    from pipeline.ml.tuning import write_state_atomically

    write_state_atomically()
    path = tmp_path / "oracle.json"
    tuner_utils.save_json(str(path), {"trials": 1})
    assert path.read_text() == '{"trials": 1}'

    def crash(*_):
        raise OSError("killed")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        tuner_utils.save_json(str(path), {"trials": 2, "more": "x" * 10_000})
    assert path.read_text() == '{"trials": 1}'


def test_the_best_trial_is_the_earliest_of_equal_scores_whatever_the_dictionary_order():
    from types import SimpleNamespace

    from pipeline.ml.tuning import best_trial

    def trial(trial_id: str, score, status: str = "COMPLETED"):
        return SimpleNamespace(trial_id=trial_id, score=score, status=status)

    trials = [trial("0007", 0.98), trial("0002", 0.98), trial("0001", 0.95), trial("0009", 0.99, "RUNNING")]
    for order in (trials, trials[::-1]):  # a search that ran, and the same search reloaded
        oracle = SimpleNamespace(
            trials={item.trial_id: item for item in order}, objective=SimpleNamespace(direction="max")
        )
        assert best_trial(oracle).trial_id == "0002"
    losses = SimpleNamespace(
        trials={item.trial_id: item for item in trials}, objective=SimpleNamespace(direction="min")
    )
    assert best_trial(losses).trial_id == "0001"


def one_dense_layer(learning_rate: float, metrics: list | None = None):
    """The tests' trial model: one number in, two classes out."""
    import keras

    inputs = keras.Input((1,))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(inputs))
    model.compile(keras.optimizers.Adam(learning_rate), "sparse_categorical_crossentropy", metrics=metrics)
    return model


def in_memory(features, labels):
    """`datasets(batch_size, transform)` as `make_tuner` calls it: the same tiny examples for training and
    validation (the tests' models have no fixed layers: no transform)."""
    import tensorflow as tf

    def datasets(batch_size, transform):
        assert transform is None
        examples = tf.data.Dataset.from_tensor_slices((features, labels)).batch(16)
        return examples, examples

    return datasets


def test_the_search_stops_once_a_trial_has_the_best_possible_score(config, tmp_path, monkeypatch):
    """A later trial can at most tie a perfect validation accuracy, and ties go to the earliest trial:
    the search starts no more trials (penguins reached 1.0 in its first trials, then ran 20 more)."""
    import numpy as np

    from pipeline.ml.tuning import best_possible_score, make_tuner

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    features = np.array([[0.0], [1.0]] * 32, dtype="float32")
    labels = np.array([0, 1] * 32)

    datasets = in_memory(features, labels)

    def build(hp):
        return one_dense_layer(hp.Float("learning_rate", 0.1, 0.2), metrics=["accuracy"])

    settings = dataclasses.replace(
        config.tune, algorithm="random", max_trials=4, max_epochs=10, objective="val_accuracy"
    )
    tuner = make_tuner(settings, build, datasets, tmp_path / "search", seed=1, budget=None)
    tuner.search(epochs=settings.max_epochs, verbose=0)
    completed = [trial for trial in tuner.oracle.trials.values() if trial.status == "COMPLETED"]
    assert [trial.score for trial in completed] == [1.0]
    assert tuner.stopped == "trial 0 reached the best possible val_accuracy (1)"
    assert best_possible_score("val_loss") is None and best_possible_score("val_auc") == 1.0


def test_a_trial_runs_several_steps_a_call_and_every_batch(config, tmp_path, monkeypatch):
    """`train.steps_per_execution` reaches the trials: 3 steps a call on 4 batches an epoch, and the last call runs
    the batch that is left."""
    import keras
    import numpy as np

    from pipeline.ml.tuning import make_tuner

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    features = np.linspace(0.0, 1.0, 64, dtype="float32").reshape(-1, 1)
    labels = (features[:, 0] > 0.5).astype("int64")

    def build(hp):
        return one_dense_layer(hp.Float("learning_rate", 0.001, 0.1))

    class Ended(keras.callbacks.Callback):
        seen = []  # on the class: Keras Tuner gives each trial a deep copy of the callbacks

        def on_train_end(self, logs=None):
            Ended.seen.append((self.model.steps_per_execution, int(self.model.optimizer.iterations.numpy())))

    settings = dataclasses.replace(config.tune, algorithm="random", max_trials=1, objective="val_loss")
    tuner = make_tuner(
        settings, build, in_memory(features, labels), tmp_path / "search", 1, None, steps_per_execution=3
    )
    tuner.search(epochs=2, verbose=0, callbacks=[Ended()])
    assert Ended.seen == [(3, 2 * 4)]


def test_a_range_whose_default_is_auto_starts_from_the_range():
    import keras_tuner

    hp = keras_tuner.HyperParameters()
    value = declare(hp, "text_sequence_length", {"min": 16, "max": 64, "step": 16}, "auto")
    assert value == 16 and hp.values["text_sequence_length"] == 16


@pytest.mark.parametrize("algorithm", ["hyperband", "random", "bayesian"])
def test_the_first_trial_is_the_defaults_and_times_the_auto_budget(algorithm, config, tmp_path, monkeypatch):
    """`max_seconds: auto`: the search's budget is `budget_trainings` trainings of the defaults, timed by its
    first trial, which is the defaults whatever the algorithm (here a budget of almost nothing: one trial)."""
    import json

    import numpy as np

    from pipeline.ml.tuning import Budget, make_tuner

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    features = np.linspace(0.0, 1.0, 64, dtype="float32").reshape(-1, 1)
    labels = (features[:, 0] > 0.5).astype("int64")

    datasets = in_memory(features, labels)

    def build(hp):
        learning_rate = hp.Float("learning_rate", 0.001, 0.1, sampling="log", default=0.0123)
        hp.Choice("units", [16, 32, 64], default=32)  # a default that is not the first choice
        return one_dense_layer(learning_rate)

    settings = dataclasses.replace(
        config.tune, algorithm=algorithm, max_trials=4, max_epochs=3, objective="val_loss", max_seconds="auto"
    )
    budget = Budget(
        dataclasses.replace(settings, budget_trainings=1e-6, min_seconds=0), train_epochs=30, directory=tmp_path
    )
    assert budget.seconds() is None and not budget.spent()  # nothing timed yet: no limit
    tuner = make_tuner(settings, build, datasets, tmp_path / "search", seed=1, budget=budget)
    tuner.search(epochs=settings.max_epochs, verbose=0)
    (first, *others) = sorted(tuner.oracle.trials.values(), key=lambda trial: trial.trial_id)
    assert first.hyperparameters.values["learning_rate"] == pytest.approx(0.0123)
    assert first.hyperparameters.values["units"] == 32
    assert others == [] and tuner.stopped.startswith("tune.max_seconds reached (auto: 1e-06 training(s)")
    assert tuner.oracle._random_values()["learning_rate"] != pytest.approx(0.0123)  # once: then the algorithm's
    timed = json.loads((tmp_path / "budget.json").read_text())
    assert timed["trial"] == first.trial_id and timed["seconds_per_epoch"] > 0
    assert budget.seconds() == pytest.approx(1e-6 * timed["seconds_per_epoch"] * 30)
    floored = Budget(dataclasses.replace(settings, min_seconds=60), train_epochs=30, directory=tmp_path)
    assert floored.seconds() == pytest.approx(max(60, timed["seconds_per_epoch"] * 30))  # never under min_seconds


class Killed(BaseException):
    """Stands for a SIGKILL: no `except Exception` in Keras Tuner catches it, and the state on disk stays as it was."""


@pytest.mark.parametrize("instant", ["new trial written, not the oracle", "trial ended, still running in the oracle"])
def test_a_search_killed_between_keras_tuners_two_writes_finishes_every_trial_once(
    instant, config, tmp_path, monkeypatch
):
    """The oracle writes a trial's file, then its own state. Killed in between as a trial starts, a resumed search
    of 3 trials ended with 2, the third left RUNNING forever (seen once in CI); killed as a trial ends, the resume
    trained that trial again."""
    import keras
    import mlflow
    import numpy as np
    from keras_tuner.src.engine import oracle as oracle_module

    from pipeline.ml.tuning import make_tuner

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    features = np.linspace(0.0, 1.0, 64, dtype="float32").reshape(-1, 1)
    labels = (features[:, 0] > 0.5).astype("int64")
    trained = []
    in_memory_datasets = in_memory(features, labels)

    def datasets(batch_size, transform):
        trained.append(batch_size)
        return in_memory_datasets(batch_size, transform)

    def build(hp):
        inputs = keras.Input((1,))
        model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(inputs))
        model.compile(
            optimizer=keras.optimizers.Adam(hp.Float("learning_rate", 0.001, 0.1, sampling="log")),
            loss="sparse_categorical_crossentropy",
        )
        return model

    settings = dataclasses.replace(config.tune, algorithm="random", max_trials=3, max_epochs=1, objective="val_loss")
    with monkeypatch.context() as killing:
        if instant.startswith("new trial"):
            save_trial = oracle_module.Oracle._save_trial

            def write_then_die(oracle, trial):
                save_trial(oracle, trial)
                if trial.trial_id == "1" and trial.status == "RUNNING":
                    raise Killed

            killing.setattr(oracle_module.Oracle, "_save_trial", write_then_die)
            trained_before_kill = 1
        else:
            on_trial_end = oracle_module.Display.on_trial_end  # end_trial: after its writes, before it forgets it

            def end_then_die(display, trial):
                on_trial_end(display, trial)
                if trial.trial_id == "1":
                    raise Killed

            killing.setattr(oracle_module.Display, "on_trial_end", end_then_die)
            trained_before_kill = 2
        tuner = make_tuner(settings, build, datasets, tmp_path / "search", seed=1, budget=None)
        with pytest.raises(Killed):
            tuner.search(epochs=1, verbose=0)
    mlflow.end_run()  # the process that held the trial's run is gone
    assert len(trained) == trained_before_kill

    resumed = make_tuner(settings, build, datasets, tmp_path / "search", seed=1, budget=None)
    resumed.search(epochs=1, verbose=0)
    statuses = {trial.trial_id: trial.status for trial in resumed.oracle.trials.values()}
    assert statuses == {"0": "COMPLETED", "1": "COMPLETED", "2": "COMPLETED"}
    assert len(trained) == 3, "each trial trained once"
