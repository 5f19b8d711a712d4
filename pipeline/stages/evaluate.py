"""Stage `evaluate`: holdout metrics, a per-class report and plots on the test split, the metrics per slice
(`evaluate.slices`: `slices.json`, `slices.csv` for DVC's plots, `test_slice/...` metrics in MLflow), and simple
baselines on the same examples (`evaluate.baselines`: `baselines.json`, and `test_<trivial|linear>_baseline_<headline>`
in MLflow), behavioural checks (`evaluate.behaviour`, `evaluate.behaviour_cases`: `behaviour.json`), and a
classification's most confidently wrong test examples (`confidently_wrong.json`).

Classification: loss, accuracy, macro precision / recall / F1, ROC-AUC (one-vs-rest for
several classes), a confusion matrix and ROC curves. Regression: loss (MSE), MAE, RMSE, R².
"""

from __future__ import annotations

from pathlib import Path

from pipeline.core.config import Config
from pipeline.core.outputs import write_json_atomic
from pipeline.core.runner import StageResult, format_metrics, run_stage
from pipeline.ml import baselines, behaviour, slices
from pipeline.ml.distribute import setup_tensorflow
from pipeline.ml.evaluation import WRONG_FILE, confidently_wrong, evaluate_model


def run(config: Config) -> StageResult:
    setup_tensorflow(config)
    from pipeline.core.spec import load as load_spec
    from pipeline.ml.models import load_trained_model

    spec = load_spec(config.paths.prepared)
    model = load_trained_model(config.paths.model)
    reports = Path(config.paths.reports) / "evaluate"
    settings = config.evaluate
    with_features = slices.sliced(spec, settings.slices) or settings.baselines or settings.behaviour
    split = slices.read_test_split(model, config.paths.prepared, spec, with_features)
    results, key = evaluate_model(
        model, config.paths.prepared, spec, reports, settings.roc_curve_points, predicted=split[1:]
    )
    sliced = slices.slice_results(spec, split, settings.slices, settings.min_slice_examples)
    write_slices(reports, sliced, spec.task_type.headline_metric)
    write_json_atomic(reports / WRONG_FILE, confidently_wrong(spec, *split[:3]))
    headline = spec.task_type.headline_metric
    measured = {"metric": headline, "examples": results["num_examples"], "baselines": []}
    if settings.baselines:
        measured = baselines.measure(config.paths.prepared, spec, (split[0], split[1], split[3]), split[2])
    write_json_atomic(reports / baselines.BASELINES_FILE, measured)
    checks = []
    if settings.behaviour:
        checks += behaviour.invariance_checks(model, spec, *split[:3], settings.invariance_rate, config.base.seed)
    cases = behaviour.cases_path(settings.behaviour_cases, config.paths.expectations, config.data.dataset_name)
    if cases is not None:
        checks += behaviour.case_checks(model, spec, cases)
    write_json_atomic(reports / behaviour.BEHAVIOUR_FILE, checks)
    metrics = {f"test_{name}": value for name, value in {**results, **baselines.headline_scores(measured)}.items()}
    for (
        entry
    ) in sliced:  # the headline metric per slice in MLflow (a run's metric list stays readable); all in slices.json
        metrics[slices.metric_name(entry["slice"], "examples")] = entry["examples"]
        if headline in entry["metrics"]:
            metrics[slices.metric_name(entry["slice"], headline)] = entry["metrics"][headline]
    judged = [entry for entry in sliced if entry["judged"]]
    shown = "".join(
        f"; {entry['name']} {entry['metrics'][headline]:.4f}" for entry in measured["baselines"]
    )  # fmt: skip
    if checks:
        shown += f"; behaviour: {sum(check['passes'] for check in checks)} of {len(checks)} checks pass"
    return StageResult(
        summary=f"test split ({results['num_examples']} examples): {format_metrics(results, key)}{shown};"
        f" {len(sliced)} slices ({len(judged)} judged) -> {reports / 'metrics.json'}, {reports / slices.SLICES_FILE}",
        metrics=metrics,
        artifacts=[
            reports / "metrics.json",
            reports / "per_class.json",
            reports / slices.SLICES_FILE,
            reports / baselines.BASELINES_FILE,
            reports / behaviour.BEHAVIOUR_FILE,
            reports / WRONG_FILE,
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
