"""One reading of model outputs and one metric direction, for every stage and app."""

import numpy as np
import pytest

from pipeline.core.metrics import class_probabilities, direction, higher_is_better, predicted_classes


def test_a_sigmoid_and_a_softmax_give_classes_the_same_way_even_at_one_half():
    sigmoid = np.array([[0.2], [0.5], [0.9]])
    assert predicted_classes(sigmoid).tolist() == [0, 0, 1]  # the export checks said > 0.5, the monitor >= 0.5
    assert predicted_classes(class_probabilities(sigmoid)).tolist() == [0, 0, 1]
    assert predicted_classes(np.array([[0.1, 0.7, 0.2]])).tolist() == [1]


@pytest.mark.parametrize(
    ("metric", "expected"),
    [
        ("accuracy", "max"),
        ("val_accuracy", "max"),
        ("roc_auc", "max"),
        ("r2", "max"),
        ("val_loss", "min"),
        ("rmse", "min"),
    ],
)
def test_metric_direction(metric, expected):
    assert direction(metric) == expected and higher_is_better(metric) == (expected == "max")
