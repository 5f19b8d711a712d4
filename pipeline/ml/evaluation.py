"""Holdout evaluation: metrics, a per-class report and plots on a test split.

Classification: loss, accuracy, macro precision / recall / F1, ROC-AUC (one-vs-rest for
several classes), a confusion matrix and ROC curves. Regression: loss (MSE), MAE, RMSE, R².
Forecast: MAE, RMSE, sMAPE and MASE, with the same scores of the last-value, seasonal-naive and
moving-average forecasts of the same test windows beside them, the error per step of the horizon,
and a plot of history, truth and forecast.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np

from pipeline.core.forecasts import naive_forecasts
from pipeline.core.metrics import class_probabilities
from pipeline.core.outputs import write_json_atomic

log = logging.getLogger(__name__)


def classification_metrics(labels: np.ndarray, probabilities: np.ndarray, classes: list[str]) -> tuple[dict, dict]:
    """Holdout metrics and the per-class report for integer `labels` and (N, classes) probabilities."""
    from sklearn import metrics

    labels = np.asarray(labels).reshape(-1).astype(int)
    predicted = probabilities.argmax(axis=1)
    everything = list(range(len(classes)))
    clipped = np.clip(probabilities, 1e-7, 1.0)
    results = {
        "loss": float(metrics.log_loss(labels, clipped / clipped.sum(axis=1, keepdims=True), labels=everything)),
        "accuracy": float(metrics.accuracy_score(labels, predicted)),
        "precision": float(metrics.precision_score(labels, predicted, average="macro", zero_division=0)),
        "recall": float(metrics.recall_score(labels, predicted, average="macro", zero_division=0)),
        "f1": float(metrics.f1_score(labels, predicted, average="macro", zero_division=0)),
        "num_examples": int(len(labels)),
    }
    present = np.unique(labels)
    if len(present) < 2:
        log.warning("ROC-AUC is undefined: the test split holds a single class")
    elif len(classes) == 2:
        results["roc_auc"] = float(metrics.roc_auc_score(labels, probabilities[:, 1]))
    else:
        results["roc_auc"] = float(
            metrics.roc_auc_score(labels, probabilities, multi_class="ovr", average="macro", labels=everything)
        )
    report = metrics.classification_report(
        labels, predicted, labels=everything, target_names=classes, output_dict=True, zero_division=0
    )
    return results, report


def regression_metrics(targets: np.ndarray, predictions: np.ndarray) -> dict:
    from sklearn import metrics

    targets, predictions = np.asarray(targets).reshape(-1), np.asarray(predictions).reshape(-1)
    mse = float(metrics.mean_squared_error(targets, predictions))
    return {
        "loss": mse,
        "mae": float(metrics.mean_absolute_error(targets, predictions)),
        "rmse": mse**0.5,
        "r2": float(metrics.r2_score(targets, predictions)),
        "num_examples": int(len(targets)),
    }


def _forecast_scores(targets: np.ndarray, forecast: np.ndarray, scale: float) -> dict:
    errors = forecast - targets
    denominator = np.abs(targets) + np.abs(forecast)
    ratios = np.divide(2.0 * np.abs(errors), denominator, out=np.zeros_like(errors), where=denominator > 0)
    mae = float(np.abs(errors).mean())
    return {
        "mae": mae,
        "rmse": float(np.sqrt((errors**2).mean())),
        "smape": float(100.0 * ratios.mean()),
        "mase": mae / scale if scale > 0 else float("inf"),
    }


def forecast_metrics(targets: np.ndarray, outputs: np.ndarray, history: np.ndarray, period: int) -> dict:
    """MAE, RMSE, sMAPE (percent) and MASE of (N, horizon) forecasts, and the same of each naive forecast
    (`<baseline>_<metric>`). MASE is the MAE over the seasonal-naive forecast's MAE on the same windows: below 1,
    better than repeating the last season."""
    targets = np.asarray(targets, dtype=np.float64).reshape(len(history), -1)
    outputs = np.asarray(outputs, dtype=np.float64).reshape(targets.shape)
    baselines = naive_forecasts(history, targets.shape[1], period)
    scale = float(np.abs(baselines["seasonal_naive"] - targets).mean())
    results = {"loss": float(((outputs - targets) ** 2).mean()), **_forecast_scores(targets, outputs, scale)}
    results["num_examples"] = int(len(targets))
    for name, forecast in baselines.items():
        results.update(
            {f"{name}_{metric}": value for metric, value in _forecast_scores(targets, forecast, scale).items()}
        )
    return results


def per_step_errors(targets: np.ndarray, outputs: np.ndarray, history: np.ndarray, period: int) -> list[dict]:
    """The mean absolute error at each step of the horizon, the model's and each naive forecast's."""
    targets = np.asarray(targets, dtype=np.float64).reshape(len(history), -1)
    outputs = np.asarray(outputs, dtype=np.float64).reshape(targets.shape)
    baselines = naive_forecasts(history, targets.shape[1], period)
    rows = []
    for step in range(targets.shape[1]):
        row = {"step": step + 1, "model": float(np.abs(outputs[:, step] - targets[:, step]).mean())}
        row.update(
            {name: float(np.abs(forecast[:, step] - targets[:, step]).mean()) for name, forecast in baselines.items()}
        )
        rows.append(row)
    return rows


def plot_forecasts(history: np.ndarray, targets: np.ndarray, outputs: np.ndarray, path: Path, panels: int = 4) -> Path:
    """History, truth and forecast of a few test windows spread over the test block (its last one included)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = np.unique(np.linspace(0, len(history) - 1, min(panels, len(history))).round().astype(int))
    figure, axes = plt.subplots(1, len(chosen), figsize=(4 * len(chosen), 3), squeeze=False)
    for axis, index in zip(axes[0], chosen, strict=True):
        past = np.arange(-history.shape[1] + 1, 1)
        future = np.arange(1, targets.shape[1] + 1)
        axis.plot(past, history[index], color="grey", label="history")
        axis.plot(future, targets[index], marker="o", color="black", label="truth")
        axis.plot(future, outputs[index], marker="x", color="tab:blue", label="forecast")
        axis.set_title(f"test window {index + 1} of {len(history)}")
        axis.set_xlabel("steps from the window's end")
    axes[0][0].legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def roc_points(labels: np.ndarray, probabilities: np.ndarray, classes: list[str], points: int) -> list[dict]:
    """One-vs-rest ROC curves resampled on `points` false-positive rates, one row per (class, fpr)."""
    from sklearn.metrics import roc_curve

    labels = np.asarray(labels).reshape(-1).astype(int)
    grid = np.linspace(0.0, 1.0, points)
    rows = []
    for index, name in enumerate(classes):
        positives = labels == index
        if positives.all() or not positives.any():
            continue
        fpr, tpr, _ = roc_curve(positives, probabilities[:, index])
        for x, y in zip(grid, np.interp(grid, fpr, tpr), strict=True):
            rows.append({"class": name, "fpr": round(float(x), 6), "tpr": round(float(y), 6)})
    return rows


def plot_confusion_matrix(labels, predicted, classes: list[str], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    size = max(5, 0.5 * len(classes) + 3)
    figure, axis = plt.subplots(figsize=(size, size))
    ConfusionMatrixDisplay.from_predictions(
        labels, predicted, labels=list(range(len(classes))), display_labels=classes, ax=axis, colorbar=False
    )
    axis.set_title("Confusion matrix (test split)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def plot_roc_curves(rows: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 6))
    for name in dict.fromkeys(row["class"] for row in rows):
        curve = [row for row in rows if row["class"] == name]
        axis.plot([row["fpr"] for row in curve], [row["tpr"] for row in curve], label=name, linewidth=1)
    axis.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
    axis.set_xlabel("false positive rate")
    axis.set_ylabel("true positive rate")
    axis.set_title("ROC, one class against the rest (test split)")
    axis.legend(fontsize="small", ncol=2)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _write_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["empty"])
        writer.writeheader()
        writer.writerows(rows)
    return path


WRONG_FILE = "confidently_wrong.json"
SHOWN_INPUT_CHARACTERS = 2000
"""An example's input is shown in the confidently-wrong report when its JSON is at most this long (a text, a table
row, an 8x8 image; not a photo's pixels)."""


def confidently_wrong(spec, features: dict, labels: np.ndarray, outputs: np.ndarray, count: int = 10) -> list[dict]:
    """The test examples the model got wrong with the highest confidence, most confident first: their position in
    the test split, true and predicted class, the predicted class's probability and the input as a request (when
    short). Empty for tasks without classes."""
    import json

    from pipeline.ml.modalities import model_modality

    if not spec.task_type.has_classes:
        return []
    probabilities = class_probabilities(outputs)
    predicted = probabilities.argmax(axis=1)
    truth = np.asarray(labels).reshape(-1).astype(int)
    wrong = np.flatnonzero(predicted != truth)
    confidence = probabilities[wrong, predicted[wrong]]
    modality = model_modality(spec.kind)
    rows = []
    for index in wrong[np.argsort(-confidence, kind="stable")][:count]:
        row = {
            "example": int(index) + 1,
            "actual": spec.classes[truth[index]],
            "predicted": spec.classes[predicted[index]],
            "confidence": round(float(probabilities[index, predicted[index]]), 4),
        }
        if features is not None:
            (instance,) = modality.request_instances(modality.model_batch(features, int(index), int(index) + 1), spec)
            if len(json.dumps(instance)) <= SHOWN_INPUT_CHARACTERS:
                row["input"] = instance
        rows.append(row)
    return rows


def predict_split(model, dataset, keep: str | None = None):
    """(labels, model outputs) for every batch of `dataset`, in order; with `keep`, also that input's values."""
    labels, outputs, kept = [], [], []
    for inputs, batch_labels in dataset:
        outputs.append(np.asarray(model(inputs, training=False)))
        labels.append(np.asarray(batch_labels))
        if keep is not None:
            kept.append(np.asarray(inputs[keep]))
    if keep is not None:
        return np.concatenate(labels), np.concatenate(outputs), np.concatenate(kept)
    return np.concatenate(labels), np.concatenate(outputs)


def history_input(spec) -> str | None:
    """The input that holds the forecast column's past (a series' first column), or None."""
    return spec.features[0].name if spec.series is not None else None


def holdout_metrics(spec, labels: np.ndarray, outputs: np.ndarray, history: np.ndarray | None = None) -> dict:
    """The task's metrics of `outputs` against `labels` (a forecast's also need the windows' `history`)."""
    return SCORES[spec.task](spec, labels, outputs, history)


SCORES = {  # each task's metrics, by its name (`pipeline.core.tasks`)
    "classification": lambda spec, labels, outputs, history: classification_metrics(
        labels, class_probabilities(outputs), spec.classes
    )[0],
    "regression": lambda spec, labels, outputs, history: regression_metrics(labels, outputs),
    "forecast": lambda spec, labels, outputs, history: forecast_metrics(
        labels, outputs, history, spec.series.seasonal_period
    ),
}


def test_metrics(model, prepared_dir: Path, spec) -> dict:
    """Holdout metrics of `model` on the test split, without writing anything."""
    from pipeline.ml.features import make_dataset

    dataset = make_dataset(prepared_dir, spec, "test", 256)
    keep = history_input(spec)
    if keep is None:
        labels, outputs = predict_split(model, dataset)
        return holdout_metrics(spec, labels, outputs)
    return holdout_metrics(spec, *predict_split(model, dataset, keep))


def evaluate_model(
    model,
    prepared_dir: Path,
    spec,
    reports: Path,
    roc_curve_points: int,
    metrics_file: str = "metrics.json",
    predicted: tuple | None = None,
) -> tuple[dict, list]:
    """Scores `model` on the test split and writes `metrics_file`, per_class.json, predictions.csv,
    roc.csv and figures/ under `reports`; `predicted`: the split's (labels, outputs, history) when the caller
    already ran the model on it. Returns (metrics, the names worth printing)."""
    from pipeline.ml.features import make_dataset

    if predicted is None:
        keep = history_input(spec)
        dataset = make_dataset(prepared_dir, spec, "test", 256)
        predicted = predict_split(model, dataset, keep) if keep else (*predict_split(model, dataset), None)
    labels, outputs, history = predicted
    figures = reports / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    if history is not None:
        period = spec.series.seasonal_period
        results = forecast_metrics(labels, outputs, history, period)
        steps = labels.shape[1]
        rows = [
            {"window": window + 1, "step": step + 1, "actual": float(labels[window, step]),
             "predicted": float(outputs[window, step])}
            for window in range(len(labels))
            for step in range(steps)
        ]  # fmt: skip
        _write_csv(reports / "predictions.csv", rows)
        _write_csv(reports / "per_step.csv", per_step_errors(labels, outputs, history, period))
        write_json_atomic(reports / "per_class.json", {})
        _write_csv(reports / "roc.csv", [])
        plot_forecasts(history, labels, outputs, figures / "forecast.png")
        key = ["mase", "mae", "smape", "seasonal_naive_mae", "last_value_mae"]
    elif not spec.task_type.has_classes:
        results = regression_metrics(labels, outputs)
        pairs = zip(labels.reshape(-1), outputs.reshape(-1), strict=True)
        rows = [{"actual": float(actual), "predicted": float(predicted)} for actual, predicted in pairs]
        _write_csv(reports / "predictions.csv", rows)
        write_json_atomic(reports / "per_class.json", {})
        _write_csv(reports / "roc.csv", [])
        key = ["loss", "mae", "rmse", "r2"]
    else:
        classes = spec.classes
        probabilities = class_probabilities(outputs)
        results, report = classification_metrics(labels, probabilities, classes)
        predicted = probabilities.argmax(axis=1)
        labels = labels.reshape(-1).astype(int)
        _write_csv(
            reports / "predictions.csv",
            [{"actual": classes[a], "predicted": classes[p]} for a, p in zip(labels, predicted, strict=True)],
        )
        roc = roc_points(labels, probabilities, classes, roc_curve_points)
        _write_csv(reports / "roc.csv", roc)
        write_json_atomic(reports / "per_class.json", report)
        plot_confusion_matrix(labels, predicted, classes, figures / "confusion_matrix.png")
        plot_roc_curves(roc, figures / "roc.png")
        key = ["accuracy", "f1", "roc_auc"]
    write_json_atomic(reports / metrics_file, results)
    return results, key
