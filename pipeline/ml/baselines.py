"""Simple baselines on the evaluate stage's test split, and whether the model is better than each.

Two baselines per task, fitted on the training split and scored on the same test examples as the model, in the
same stage (`evaluate.baselines`):

- **trivial**: the training split's class shares for every example (the majority class), the training mean for a
  regression, the seasonal-naive forecast for a forecast;
- **linear**: a scikit-learn linear model of the model's inputs (logistic regression, or ridge regression; for a
  forecast on each window's changes from its last value), its strength chosen on the validation split. The
  inputs are encoded by the kind of data (`ModelModality.linear_encoder`): pixels (averaged over blocks for large
  images), standardised numbers, one-hot categories, TF-IDF of words and word pairs, windows.

The comparison is paired, on the per-example error behind the task's headline metric (a wrong class, a squared
error, a forecast's absolute error): a bootstrap of the test examples says how often the baseline beats the model
(`baseline_better`) and the model the baseline (`model_better`). The gate (`gate.thresholds: auto`) blesses a first
model that beats the trivial baseline and is not beaten by the linear one, each at `gate.baseline_confidence`.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import numpy as np

from pipeline.core.forecasts import naive_forecasts
from pipeline.core.metrics import class_probabilities

BASELINES_FILE = "baselines.json"
VALUES_LIMIT = 50_000_000
"""Values of training examples the linear baseline reads at most (a large image set is subsampled)."""
EXAMPLES_LIMIT = 100_000
"""Training examples the linear baseline reads at most (a table of a million rows is subsampled)."""
STRENGTHS = (0.1, 1.0, 10.0)
"""The linear models' inverse regularisation strengths tried (C; ridge's alpha is 1 / C), chosen on validation."""
RESAMPLES = 2000


def read_split(prepared_dir: Path, spec, split: str, limit: int | None = None) -> tuple[dict, np.ndarray]:
    """(`read_examples`-form features, labels) of the first `limit` examples of a split (all: None)."""
    from pipeline.ml.features import make_dataset
    from pipeline.ml.modalities import model_modality

    batches, labels, count = [], [], 0
    for inputs, batch_labels in make_dataset(prepared_dir, spec, split, 512):
        batches.append(inputs)
        labels.append(np.asarray(batch_labels))
        count += len(labels[-1])
        if limit is not None and count >= limit:
            break
    features = model_modality(spec.kind).reference_values(batches, spec)
    labels = np.concatenate(labels)
    if limit is not None and count > limit:
        features = {name: values[:limit] for name, values in features.items()}
        labels = labels[:limit]
    return features, labels


def training_limit(spec) -> int:
    """How many training examples the linear baseline reads (every value of an example counts)."""
    from pipeline.ml.modalities import model_modality

    shapes = model_modality(spec.kind).record_features(spec).values()
    values = sum(max(1, int(np.prod(feature.shape))) for feature in shapes)
    return max(1, min(EXAMPLES_LIMIT, VALUES_LIMIT // values))


def history_of(spec, features: dict) -> np.ndarray | None:
    from pipeline.ml.evaluation import history_input

    keep = history_input(spec)
    return None if keep is None else np.asarray(features[keep], dtype=np.float64)


def _classifier(strength: float):
    from sklearn.linear_model import LogisticRegression

    # warm-started along STRENGTHS (each fit starts from the last one's weights: 6.7 -> 4.0 s on 5,600 images of
    # 192 pooled values), at most 300 iterations each (the validation accuracy moves in the fourth digit after)
    return LogisticRegression(C=strength, max_iter=300, warm_start=True)


def _regressor(strength: float):
    from sklearn.linear_model import Ridge

    return Ridge(alpha=1.0 / strength)


class _ClassificationBaselines:
    linear_name = "logistic regression"
    trivial_name = "majority class"

    def trivial(self, spec, train_labels, test_labels, test_history):
        shares = np.bincount(train_labels.reshape(-1).astype(int), minlength=len(spec.classes)).astype(np.float64)
        return np.tile(shares / shares.sum(), (len(test_labels), 1))

    def targets(self, labels, history):
        return labels.reshape(-1).astype(int)

    def estimator(self, strength):
        return _classifier(strength)

    def strengthen(self, estimator, strength):
        return estimator.set_params(C=strength)

    def outputs(self, spec, estimator, matrix, history):
        probabilities = np.zeros((matrix.shape[0], len(spec.classes)))
        probabilities[:, estimator.classes_] = estimator.predict_proba(matrix)
        return probabilities

    def errors(self, labels, outputs):
        return (class_probabilities(outputs).argmax(axis=1) != labels.reshape(-1).astype(int)).astype(np.float64)


class _RegressionBaselines:
    linear_name = "ridge regression"
    trivial_name = "training mean"

    def trivial(self, spec, train_labels, test_labels, test_history):
        return np.full((len(test_labels), 1), float(np.mean(train_labels)))

    def targets(self, labels, history):
        return labels.reshape(-1)

    def estimator(self, strength):
        return _regressor(strength)

    def strengthen(self, estimator, strength):
        return estimator.set_params(alpha=1.0 / strength)

    def outputs(self, spec, estimator, matrix, history):
        return estimator.predict(matrix).reshape(-1, 1)

    def errors(self, labels, outputs):
        return (np.asarray(outputs).reshape(-1) - labels.reshape(-1)) ** 2


class _ForecastBaselines(_RegressionBaselines):
    linear_name = "linear autoregression"
    trivial_name = "seasonal naive"

    def trivial(self, spec, train_labels, test_labels, test_history):
        return naive_forecasts(test_history, test_labels.shape[1], spec.series.seasonal_period)["seasonal_naive"]

    def targets(self, labels, history):
        return labels - history[:, -1:]  # the changes from the window's last value, like the inputs

    def outputs(self, spec, estimator, matrix, history):
        return estimator.predict(matrix).reshape(len(history), -1) + history[:, -1:]

    def errors(self, labels, outputs):
        return np.abs(np.asarray(outputs) - labels).mean(axis=1)  # MASE and MAE rank forecasts alike


TASK_BASELINES = {  # each task's baselines, by its name (`pipeline.core.tasks`)
    "classification": _ClassificationBaselines(),
    "regression": _RegressionBaselines(),
    "forecast": _ForecastBaselines(),
}


def one_blas_thread():
    """A block whose matrix products run on one BLAS thread. The linear models' products are tall and thin (up
    to 100,000 examples by a few hundred values): on two cores, OpenBLAS's two threads made the logistic
    regression on 5,600 images of 192 pooled values take 4.0 s instead of 0.8 s (the same coefficients), and
    100,000 rows of 256 values 11.7 s instead of 7.8 s."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def fit_linear(spec, train: tuple[dict, np.ndarray], validation: tuple[dict, np.ndarray]):
    """The linear baseline fitted on `train` with the strength that scores best on `validation`; returns
    (a function from features to outputs, the strength)."""
    from sklearn.exceptions import ConvergenceWarning

    from pipeline.ml.modalities import model_modality

    task = TASK_BASELINES[spec.task]
    modality = model_modality(spec.kind)
    encoder = modality.linear_encoder(spec)
    train_matrix = encoder.fit_transform(modality.linear_inputs(train[0], spec))
    validation_matrix = encoder.transform(modality.linear_inputs(validation[0], spec))
    train_history, validation_history = history_of(spec, train[0]), history_of(spec, validation[0])
    targets = task.targets(train[1], train_history)
    best, estimator = None, task.estimator(STRENGTHS[0])
    for strength in STRENGTHS:
        estimator = task.strengthen(estimator, strength)
        with warnings.catch_warnings(), one_blas_thread():
            warnings.simplefilter("ignore", ConvergenceWarning)  # a baseline, not a model to tune to the last digit
            estimator.fit(train_matrix, targets)
            outputs = task.outputs(spec, estimator, validation_matrix, validation_history)
        error = float(task.errors(validation[1], outputs).mean())
        if best is None or error < best[0]:
            best = (error, strength, copy.deepcopy(estimator))
    _, strength, estimator = best

    def predict(features: dict) -> np.ndarray:
        matrix = encoder.transform(modality.linear_inputs(features, spec))
        with one_blas_thread():
            return task.outputs(spec, estimator, matrix, history_of(spec, features))

    return predict, strength


def paired_bootstrap(model_errors: np.ndarray, baseline_errors: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """(share of resamples where the baseline's mean error is lower, share where the model's is lower) over
    `RESAMPLES` bootstrap resamples of the test examples, the same examples for both."""
    differences = np.asarray(model_errors, dtype=np.float64) - np.asarray(baseline_errors, dtype=np.float64)
    generator = np.random.default_rng(seed)
    count = len(differences)
    means = []
    chunk = max(1, 10_000_000 // max(count, 1))
    for start in range(0, RESAMPLES, chunk):
        size = min(chunk, RESAMPLES - start)
        means.append(differences[generator.integers(0, count, size=(size, count))].mean(axis=1))
    means = np.concatenate(means)
    return float((means > 1e-12).mean()), float((means < -1e-12).mean())


def measure(prepared_dir: Path, spec, test: tuple, outputs: np.ndarray) -> dict:
    """The baselines' metrics on the test split `test` (features, labels, history) beside the model's `outputs`,
    and the paired comparisons (`baselines.json`)."""
    from pipeline.ml.evaluation import holdout_metrics

    task = TASK_BASELINES[spec.task]
    features, labels, history = test
    model_errors = task.errors(labels, outputs)
    train = read_split(prepared_dir, spec, "train", training_limit(spec))
    validation = read_split(prepared_dir, spec, "validation")
    predict, strength = fit_linear(spec, train, validation)
    candidates = [
        ("trivial", task.trivial_name, task.trivial(spec, train[1], labels, history), ""),
        ("linear", task.linear_name, predict(features), f"C = {strength:g}, fitted on {len(train[1])} examples"),
    ]
    results = []
    for role, name, baseline_outputs, detail in candidates:
        metrics = holdout_metrics(spec, labels, baseline_outputs, history)
        baseline_better, model_better = paired_bootstrap(model_errors, task.errors(labels, baseline_outputs))
        results.append(
            {
                "role": role,
                "name": name,
                "detail": detail,
                "metrics": {key: value for key, value in metrics.items() if key != "num_examples"},
                "baseline_better": baseline_better,
                "model_better": model_better,
            }
        )
    return {"metric": spec.task_type.headline_metric, "examples": int(len(labels)), "baselines": results}


def headline_scores(measured: dict | None) -> dict[str, float]:
    """`<trivial|linear>_baseline_<headline metric>` of `baselines.json`: shown beside the model's metrics in MLflow
    and the model card (not DVC's metrics: they do not change from one experiment on the same data to the next)."""
    if not measured:
        return {}
    metric = measured["metric"]
    return {
        f"{entry['role']}_baseline_{metric}": entry["metrics"][metric]
        for entry in measured.get("baselines", [])
        if metric in entry["metrics"]
    }


def judge(baselines: dict | None, confidence: float) -> tuple[bool, list[str]]:
    """(passes, reasons): the model must beat the trivial baseline and not be beaten by the linear one, each in at
    least a `confidence` share of the bootstrap resamples."""
    if not baselines or not baselines.get("baselines"):
        return True, ["baselines: not measured (evaluate.baselines: false), not judged"]
    metric, passes, reasons = baselines["metric"], True, []
    resamples = f"{RESAMPLES} resamples of the {baselines['examples']} test examples"
    for entry in baselines["baselines"]:
        score = entry["metrics"].get(metric)
        shown = f"baseline {entry['name']} {metric} {score:.4f}" if score is not None else f"baseline {entry['name']}"
        if entry["role"] == "trivial":
            ok = entry["model_better"] >= confidence
            said = f"the model is better in {entry['model_better']:.0%} of {resamples} (needs {confidence:.0%})"
        else:
            ok = entry["baseline_better"] < confidence
            said = f"better than the model in {entry['baseline_better']:.0%} of {resamples} (fails at {confidence:.0%})"
        passes &= ok
        reasons.append(f"{shown}: {said}: {'passes' if ok else 'FAILS'}")
    return passes, reasons
