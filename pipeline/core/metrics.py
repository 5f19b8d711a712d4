"""Reading model outputs and comparing metrics: one definition each, used by every stage and app.

No TensorFlow: numpy arrays in, numbers out.
"""

from __future__ import annotations

import numpy as np

# Metrics where a larger value is better; every other (loss, rmse, mae) is better smaller.
HIGHER_IS_BETTER = frozenset({"accuracy", "precision", "recall", "f1", "roc_auc", "r2"})


def class_probabilities(outputs: np.ndarray) -> np.ndarray:
    """(N, classes) probabilities from the model output; a sigmoid (N, 1) becomes two columns."""
    outputs = np.asarray(outputs, dtype=np.float64)
    if outputs.ndim == 2 and outputs.shape[1] == 1:
        return np.hstack([1.0 - outputs, outputs])
    return outputs


def predicted_classes(outputs: np.ndarray) -> np.ndarray:
    """The predicted class index of each example: the most probable class (a sigmoid of exactly 0.5 is
    the first class, as a two-column argmax says; everywhere the same)."""
    return class_probabilities(outputs).argmax(axis=1)


def higher_is_better(metric: str) -> bool:
    """Whether a larger `metric` is better; Keras' `val_` prefix is ignored (`val_accuracy`)."""
    return metric.removeprefix("val_") in HIGHER_IS_BETTER


def direction(metric: str) -> str:
    """ "max" or "min", as Keras callbacks and Keras Tuner objectives spell it."""
    return "max" if higher_is_better(metric) else "min"
