"""Stage `evaluate`: holdout metrics, a per-class report and plots on the test split.

Classification: loss, accuracy, macro precision / recall / F1, ROC-AUC (one-vs-rest for
several classes), a confusion matrix and ROC curves. Regression: loss (MSE), MAE, RMSE, R².
"""

from __future__ import annotations

from pathlib import Path

from pipeline.core.config import Config
from pipeline.core.runner import StageResult, format_metrics, run_stage
from pipeline.ml.distribute import setup_tensorflow
from pipeline.ml.evaluation import evaluate_model


def run(config: Config) -> StageResult:
    setup_tensorflow(config)
    from pipeline.core.spec import load as load_spec
    from pipeline.ml.models import load_trained_model

    spec = load_spec(config.paths.prepared)
    model = load_trained_model(config.paths.model)
    reports = Path(config.paths.reports) / "evaluate"
    results, key = evaluate_model(model, config.paths.prepared, spec, reports, config.evaluate.roc_curve_points)
    return StageResult(
        summary=f"test split ({results['num_examples']} examples): {format_metrics(results, key)}"
        f" -> {reports / 'metrics.json'}",
        metrics={f"test_{name}": value for name, value in results.items()},
        artifacts=[reports / "metrics.json", reports / "per_class.json", reports / "figures"],
    )


def main(params_file: str = "params.yaml") -> None:
    run_stage("evaluate", params_file, run)
