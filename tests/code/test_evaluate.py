import numpy as np
import pytest

from pipeline.ml.evaluation import class_probabilities, classification_metrics, regression_metrics, roc_points


def test_perfect_and_imperfect_multiclass_predictions():
    labels = np.array([0, 1, 2, 2])
    probabilities = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.2, 0.7], [0.6, 0.3, 0.1]])
    results, report = classification_metrics(labels, probabilities, ["a", "b", "c"])
    assert results["accuracy"] == pytest.approx(0.75)
    assert results["recall"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert results["precision"] == pytest.approx((0.5 + 1 + 1) / 3)
    assert 0.0 < results["roc_auc"] <= 1.0
    assert report["c"]["support"] == 2


def test_binary_sigmoid_output_becomes_two_columns():
    probabilities = class_probabilities(np.array([[0.9], [0.2]]))
    np.testing.assert_allclose(probabilities, [[0.1, 0.9], [0.8, 0.2]])
    results, _ = classification_metrics(np.array([1, 0]), probabilities, ["no", "yes"])
    assert results["accuracy"] == 1.0 and results["roc_auc"] == 1.0


def test_regression_metrics():
    results = regression_metrics(np.array([1.0, 2.0, 3.0]), np.array([[1.0], [2.0], [4.0]]))
    assert results["mae"] == pytest.approx(1 / 3)
    assert results["rmse"] == pytest.approx((1 / 3) ** 0.5)
    assert results["r2"] == pytest.approx(0.5)


def test_roc_points_run_from_origin_to_one():
    labels = np.array([0, 1, 1, 0])
    rows = roc_points(labels, class_probabilities(np.array([[0.1], [0.9], [0.6], [0.4]])), ["no", "yes"], 11)
    assert len(rows) == 22
    assert rows[-1] == {"class": "yes", "fpr": 1.0, "tpr": 1.0}
