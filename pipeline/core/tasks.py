"""Tasks: what is predicted, and everything that follows from it, in one class per task.

A stage, the API or the monitor asks the spec's task (`spec.task_type`, or `task(name)`) how to encode,
split, score and gate; it never compares a task's name to a literal. The Keras side of a task (its output
layer, loss and metrics) is `pipeline.ml.heads`. No TensorFlow.

Adding a task: a subclass here, registered in TASKS, and its head in `pipeline.ml.heads`.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from pipeline.core.errors import ConfigError


class Task:
    """The behaviour shared by every task; each task overrides what differs."""

    name: str = ""
    has_classes: bool = False
    """Labels are class names (a class list, class counts, per-class reports)."""
    headline_metric: str = ""
    """The metric people compare (finetune's transfer gain, the monitor's live check, `gate.metric: auto`)."""
    default_objective: str = "val_loss"
    """`tune.objective: auto`."""
    default_thresholds: dict[str, float] = {}
    """`gate.thresholds: auto`: absolute bars a candidate must pass, beside the baselines (`gate.baselines`)."""
    label_dtype: str = ""
    """How a label is stored in the TFRecords: int64 (a class index) or float32 (a value)."""
    metric_names: frozenset[str] = frozenset()
    """The holdout metrics this task reports (what gate.metric, thresholds and monitors may name)."""
    minimum_per_class: int = 1
    """Examples of each class needed to stratify the split."""
    corrects_a_base: bool = False
    """Whether the head's output is a correction added to a base forecast: it starts at zero, so an untrained
    model is its base (a forecast's naive forecast or autoregression) and training moves it only to do better."""

    def label_shape(self, spec) -> list[int]:
        """The shape of one example's label in the TFRecords ([]: a scalar)."""
        return []

    def is_binary(self, spec) -> bool:
        """A two-class classification (one sigmoid output)."""
        return False

    def scalar_labels(self, spec) -> bool:
        """Whether the model's labels are (N, 1) floats (a sigmoid or a value), not (N,) class indices."""
        return True

    def encode_labels(self, values, classes: Optional[list[str]]) -> np.ndarray:
        raise NotImplementedError

    def stratify(self, labels: np.ndarray) -> Optional[np.ndarray]:
        """What the split is stratified by (None: a plain random split)."""
        return None

    def class_counts(self, labels: np.ndarray, classes: Optional[list[str]]) -> Optional[list[int]]:
        """Examples of each class (for the spec), or None when the task has no classes."""
        return None

    def label_statistics(self, labels: np.ndarray) -> Optional[dict[str, float]]:
        """Training-split target statistics the model needs (regression's mean and variance), or None."""
        return None

    def limit_per_class(self, indices: np.ndarray, labels: np.ndarray, per_class: Optional[int], seed: int):
        """A few-labels training split (finetune's target); tasks without classes keep every example."""
        return indices

    def worse_than_holdout(self, live: float, holdout: float, tolerance: float) -> bool:
        """Whether a live `headline_metric` means retrain: an error (RMSE) higher than the holdout's by more than
        the fraction `tolerance` of it."""
        return live - holdout > tolerance * max(holdout, 1e-12)

    def check_settings(self, monitor: str, objective: str, gate_metric: str) -> list[tuple[str, str, str]]:
        """(key, value, what is allowed) for each of train.monitor, tune.objective and gate.metric that cannot
        apply to this task."""
        return []


class Classification(Task):
    name = "classification"
    has_classes = True
    headline_metric = "accuracy"
    # val_loss: on a validation split of a few hundred examples accuracy moves in steps of a few tenths of a
    # percent, so trials tie (digits: 2 of 23 at the top; penguins: many at 1.0) and the tie goes to the
    # earliest trial; the loss tells them apart (digits test accuracy 0.9815 -> 0.9852).
    default_objective = "val_loss"
    default_thresholds: dict[str, float] = {}  # the baselines decide (`pipeline.ml.baselines`): no one bar fits all
    label_dtype = "int64"
    metric_names = frozenset({"accuracy", "precision", "recall", "f1", "roc_auc", "loss"})
    minimum_per_class = 3

    def is_binary(self, spec) -> bool:
        return len(spec.classes) == 2

    def scalar_labels(self, spec) -> bool:
        return self.is_binary(spec)

    def worse_than_holdout(self, live: float, holdout: float, tolerance: float) -> bool:
        return holdout - live > tolerance  # accuracy lower by more than `tolerance`

    def encode_labels(self, values, classes: Optional[list[str]]) -> np.ndarray:
        index = {name: position for position, name in enumerate(classes)}
        return np.array([index[str(value)] for value in values], dtype=np.int64)

    def stratify(self, labels: np.ndarray) -> Optional[np.ndarray]:
        return labels

    def class_counts(self, labels: np.ndarray, classes: Optional[list[str]]) -> Optional[list[int]]:
        return np.bincount(labels, minlength=len(classes)).tolist()

    def limit_per_class(self, indices: np.ndarray, labels: np.ndarray, per_class: Optional[int], seed: int):
        if per_class is None:
            return indices
        generator = np.random.default_rng(seed)
        kept = []
        for label in np.unique(labels[indices]):
            members = indices[labels[indices] == label]
            kept.append(generator.choice(members, size=min(per_class, len(members)), replace=False))
        return np.sort(np.concatenate(kept))


class Regression(Task):
    name = "regression"
    headline_metric = "rmse"
    default_thresholds = {"r2": 0.0}  # beat the mean
    label_dtype = "float32"
    metric_names = frozenset({"rmse", "mae", "r2", "loss"})

    def encode_labels(self, values, classes: Optional[list[str]]) -> np.ndarray:
        return values.astype("float64").to_numpy(dtype=np.float32)

    def label_statistics(self, labels: np.ndarray) -> Optional[dict[str, float]]:
        return {"mean": float(labels.mean()), "variance": float(labels.var())}

    def check_settings(self, monitor: str, objective: str, gate_metric: str) -> list[tuple[str, str, str]]:
        wrong = [
            (key, value, "val_loss for a regression task (accuracy is for classification)")
            for key, value in (("train.monitor", monitor), ("tune.objective", objective))
            if value == "val_accuracy"
        ]
        if gate_metric in Classification.metric_names - self.metric_names:
            wrong.append(("gate.metric", gate_metric, "rmse or mae for a regression task"))
        return wrong


class Forecast(Regression):
    """The next `data.horizon` values of a series' target from a window of its past (a direct multi-step
    forecast), scored against naive forecasts of the same windows."""

    name = "forecast"
    headline_metric = "mase"
    corrects_a_base = True
    default_thresholds = {"mase": 1.0}  # better than the seasonal-naive forecast of the same test windows
    metric_names = frozenset({"mase", "smape", "rmse", "mae", "loss"})

    def label_shape(self, spec) -> list[int]:
        return [spec.series.horizon]

    def worse_than_holdout(self, live: float, holdout: float, tolerance: float) -> bool:
        """Worse than on the test block and no better than the seasonal-naive forecast: a MASE measured on a few
        dozen overlapping windows moves by a tenth from one stretch of a series to the next (sunspots: 0.90 on
        the test block, 0.99 on the 60 years up to it), so the error alone would call for retraining a model that
        still beats the baseline."""
        return super().worse_than_holdout(live, holdout, tolerance) and live > 1.0

    def scalar_labels(self, spec) -> bool:
        return False  # (N, horizon) floats as they are read

    def label_statistics(self, labels: np.ndarray) -> Optional[dict[str, float]]:
        return None  # the statistics of the changes from a window's last value, computed with the windows

    def check_settings(self, monitor: str, objective: str, gate_metric: str) -> list[tuple[str, str, str]]:
        wrong = super().check_settings(monitor, objective, "")
        if gate_metric not in self.metric_names:
            wrong.append(("gate.metric", gate_metric, "mase, smape, rmse or mae for a forecast"))
        return wrong


TASKS: dict[str, Task] = {task.name: task for task in (Classification(), Regression(), Forecast())}
DEFAULT_TASK = "classification"


def task(name: Optional[str]) -> Task:
    """The task called `name` (None: the default, classification)."""
    name = name or DEFAULT_TASK
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}; expected one of {', '.join(TASKS)}.")
    return TASKS[name]
