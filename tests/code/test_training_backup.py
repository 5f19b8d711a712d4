"""The training backup: a resumed run ends where an uninterrupted one does, and a backup broken by a
kill in mid-write is set aside instead of failing every later run."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from pipeline.core.outputs import CORRUPT_PREFIX  # noqa: E402
from pipeline.ml.training import BACKUP_DIR, executed_together, train_model  # noqa: E402

EPOCHS = 5
STEPS_TOGETHER = 4  # of an epoch's 8 steps, as `train.steps_per_execution` runs them: a resume must still match


class InterruptError(Exception):
    pass


class InterruptAfter(keras.callbacks.Callback):
    """Stops `fit` at the end of epoch `epoch` (0-based), before its backup: `epoch` epochs are backed up."""

    def __init__(self, epoch: int):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise InterruptError


def fresh(seed: int = 7):
    """The same model and data every call: dropout (a seed state) and a reshuffled training set."""
    tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(seed)
    generator = np.random.default_rng(0)
    features = generator.normal(size=(256, 6)).astype("float32")
    labels = (features[:, 0] + features[:, 1] > 0).astype("float32")
    train = tf.data.Dataset.from_tensor_slices((features, labels)).shuffle(256, seed=seed).batch(32)
    validation = tf.data.Dataset.from_tensor_slices((features[:64], labels[:64])).batch(32)
    inputs = keras.Input((6,))
    hidden = keras.layers.Dropout(0.3)(keras.layers.Dense(16, activation="relu")(inputs))
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(hidden))
    model.compile(keras.optimizers.Adam(0.01), "binary_crossentropy", metrics=["accuracy"])
    return model, train, validation


def fit(work_dir: Path, interrupt_after: int | None = None):
    model, train, validation = fresh()
    extra = [InterruptAfter(interrupt_after)] if interrupt_after is not None else []
    rows, epochs_run, _ = train_model(
        model, train, validation, EPOCHS, 10, "val_loss", work_dir, extra, steps_per_execution=STEPS_TOGETHER
    )
    return model, rows, epochs_run


def assert_same_weights(first, second):
    for left, right in zip(first.get_weights(), second.get_weights(), strict=True):
        np.testing.assert_array_equal(left, right)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    model, rows, epochs_run = fit(tmp_path_factory.mktemp("uninterrupted"))
    assert epochs_run == EPOCHS
    return model, rows


def backups(work_dir: Path) -> list[str]:
    return sorted(path.name for path in (work_dir / BACKUP_DIR).iterdir())


def test_a_resumed_run_ends_with_the_uninterrupted_run_weights_and_history(tmp_path, uninterrupted):
    with pytest.raises(InterruptError):
        fit(tmp_path, interrupt_after=2)
    assert backups(tmp_path) == ["epoch-0002"]  # the older backup is gone once the newer is complete
    model, rows, epochs_run = fit(tmp_path)
    assert epochs_run == EPOCHS - 2
    assert_same_weights(model, uninterrupted[0])
    assert rows == uninterrupted[1]


def test_a_backup_truncated_in_mid_write_is_set_aside_and_training_starts_over(tmp_path, uninterrupted, caplog):
    with pytest.raises(InterruptError):
        fit(tmp_path, interrupt_after=3)
    state = tmp_path / BACKUP_DIR / "epoch-0003" / "variables.npz"
    state.write_bytes(state.read_bytes()[:96])  # what a SIGKILL in mid-write leaves
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        model, rows, epochs_run = fit(tmp_path)
    assert epochs_run == EPOCHS
    assert_same_weights(model, uninterrupted[0])
    (aside,) = [name for name in backups(tmp_path) if name.startswith(CORRUPT_PREFIX)]
    assert aside.startswith(f"{CORRUPT_PREFIX}epoch-0003")  # kept for inspection, not deleted
    assert any("is unreadable" in record.getMessage() and aside in record.getMessage() for record in caplog.records)


def test_an_older_good_backup_is_used_when_the_newest_is_broken(tmp_path, uninterrupted):
    with pytest.raises(InterruptError):
        fit(tmp_path, interrupt_after=2)
    backup = tmp_path / BACKUP_DIR
    good = backup / "epoch-0002"
    broken = backup / "epoch-0003"
    broken.mkdir()
    (broken / "state.json").write_text('{"epoch": 3')  # cut short
    model, rows, epochs_run = fit(tmp_path)
    assert epochs_run == EPOCHS - 2
    assert any(name.startswith(f"{CORRUPT_PREFIX}epoch-0003") for name in backups(tmp_path))
    assert not good.exists()  # superseded by the newer backups of the resumed run
    assert_same_weights(model, uninterrupted[0])


def test_an_unfinished_backup_folder_is_never_read(tmp_path, uninterrupted):
    partial = tmp_path / BACKUP_DIR / ".epoch-0004.partial-123"
    partial.mkdir(parents=True)
    (partial / "state.json").write_text("{}")
    model, _, epochs_run = fit(tmp_path)
    assert epochs_run == EPOCHS
    assert_same_weights(model, uninterrupted[0])


def test_a_backup_that_cannot_be_written_fails_the_training(tmp_path):
    """The backup is written beside the next epoch's training: its error still reaches the run."""
    (tmp_path / BACKUP_DIR).write_text("a file where the backup folder goes")
    with pytest.raises(FileExistsError):
        fit(tmp_path)


def test_fit_runs_several_steps_a_call_and_only_whole_epochs(tmp_path):
    """Keras 3.15 rounds an epoch up to whole calls of `steps_per_execution` steps: a divisor of the epoch's steps
    keeps every epoch, and a resumed run's skip, on the epochs' boundaries."""
    assert [executed_together(steps, 32) for steps in (2187, 2188, 2179, 40, 8)] == [27, 4, 1, 20, 8]
    model, train, validation = fresh()
    train_model(model, train, validation, 2, 10, "val_loss", tmp_path, steps_per_execution=3)
    assert model.steps_per_execution == 2
    assert int(model.optimizer.iterations.numpy()) == 2 * 8  # 8 batches an epoch, none more
