"""Stage `evaluate`: holdout metrics, a per-class report and plots on the test split, and the metrics per slice
(`evaluate.slices`: `slices.json`, `slices.csv` for DVC's plots, `test_slice/...` metrics in MLflow).

Classification: loss, accuracy, macro precision / recall / F1, ROC-AUC (one-vs-rest for
several classes), a confusion matrix and ROC curves. Regression: loss (MSE), MAE, RMSE, R².
"""

from __future__ import annotations

from pathlib import Path

from pipeline.core.config import Config
from pipeline.core.outputs import write_json_atomic
from pipeline.core.runner import StageResult, format_metrics, run_stage
from pipeline.ml import slices
from pipeline.ml.distribute import setup_tensorflow
from pipeline.ml.evaluation import evaluate_model


def run(config: Config) -> StageResult:
    setup_tensorflow(config)
    from pipeline.core.spec import load as load_spec
    from pipeline.ml.models import load_trained_model

    spec = load_spec(config.paths.prepared)
    model = load_trained_model(config.paths.model)
    reports = Path(config.paths.reports) / "evaluate"
    settings = config.evaluate
    split = slices.read_test_split(model, config.paths.prepared, spec, slices.sliced(spec, settings.slices))
    results, key = evaluate_model(
        model, config.paths.prepared, spec, reports, settings.roc_curve_points, predicted=split[1:]
    )
    sliced = slices.slice_results(spec, split, settings.slices, settings.min_slice_examples)
    write_slices(reports, sliced, spec.task_type.headline_metric)
    metrics = {f"test_{name}": value for name, value in results.items()}
    headline = spec.task_type.headline_metric
    for (
        entry
    ) in sliced:  # the headline metric per slice in MLflow (a run's metric list stays readable); all in slices.json
        metrics[slices.metric_name(entry["slice"], "examples")] = entry["examples"]
        if headline in entry["metrics"]:
            metrics[slices.metric_name(entry["slice"], headline)] = entry["metrics"][headline]
    judged = [entry for entry in sliced if entry["judged"]]
    return StageResult(
        summary=f"test split ({results['num_examples']} examples): {format_metrics(results, key)};"
        f" {len(sliced)} slices ({len(judged)} judged) -> {reports / 'metrics.json'}, {reports / slices.SLICES_FILE}",
        metrics=metrics,
        artifacts=[
            reports / "metrics.json",
            reports / "per_class.json",
            reports / slices.SLICES_FILE,
            reports / "figures",
        ],
    )


def write_slices(reports: Path, sliced: list[dict], metric: str) -> None:
    """`slices.json` (every slice's metrics) and `slices.csv` (the DVC plot: the headline metric per slice, as
    `value`)."""
    import csv

    write_json_atomic(reports / slices.SLICES_FILE, sliced)
    with open(reports / "slices.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["slice", "examples", "judged", "metric", "value"])
        writer.writeheader()
        for entry in sliced:
            writer.writerow(
                {"slice": entry["slice"], "examples": entry["examples"], "judged": entry["judged"], "metric": metric,
                 "value": entry["metrics"].get(metric, "")}
            )  # fmt: skip


def main(params_file: str = "params.yaml") -> None:
    run_stage("evaluate", params_file, run)
