"""`pipeline monitor`: is production data still like the training data, and is the model still right?

New data (an image folder, with or without class sub-folders; or a CSV/Parquet file, with or
without the label column) is compared with the training split (the reference):

- tables: each numeric feature with the two-sample Kolmogorov-Smirnov test, each categorical one
  with a chi-square test (and its population stability index), and missing-value rates;
- text: each text column's lengths in words and shares of unknown words (KS tests; the unknown words against the
  validation split, since every training word is known by construction), and how many texts hold each of the 20
  most frequent training words (Fisher's exact tests; words that frequent are as frequent in held-out text);
- images: simple per-image statistics (brightness, contrast, ink, edges) with KS tests, and the
  model's penultimate-layer embeddings (their top principal components, KS tests);
- predictions: the distribution of predicted classes (chi-square) or values (KS).

The model's own outputs (predictions, embeddings) are compared with its outputs on the validation split, not the
training split: a model that has memorised its training examples answers them more confidently and otherwise
than any new data (on the Rotten Tomatoes reviews, 46 % "fresh" on the training split against 37 % on the test
split: a false alarm on the holdout itself).
- feedback: with labels, the live accuracy (or RMSE) against the current holdout's.

Within each family of tests the p-values are Bonferroni-corrected, so that a fresh sample of the
training distribution raises a false alarm in at most about `monitor.p_value` of the runs per
family. The report (`drift.json`; its headline numbers in `metrics.json`, a DVC metrics file; and a
self-contained `report.html` with the plots) ends with `retrain: true/false` and the reasons;
`--fail-on-drift` exits 1 when retraining is due, for CI. A stage run on a holdout smaller than
`monitor.min_examples` skips the tests and says so (small data never fails `dvc repro`).
"""

from __future__ import annotations

import html
import logging
import time
from pathlib import Path

import numpy as np

from pipeline.core.config import Config, MonitorConfig
from pipeline.core.drift import category_test, figure_html, flag, ks_test
from pipeline.core.metrics import higher_is_better, predicted_classes
from pipeline.core.outputs import write_json_atomic, write_text_atomic
from pipeline.core.runner import StageError, StageResult, run_stage
from pipeline.data.modalities import data_modality
from pipeline.data.sources import DataError
from pipeline.ml.distribute import setup_tensorflow
from pipeline.ml.modalities import model_modality

log = logging.getLogger(__name__)

# --- reading data -----------------------------------------------------------------------------


def read_reference(prepared_dir: Path, spec, split: str = "train") -> tuple[dict[str, np.ndarray], np.ndarray]:
    """(features, labels) of a prepared split, features in `DataModality.read_examples`' form."""
    from pipeline.ml.features import make_dataset

    batches = list(make_dataset(prepared_dir, spec, split, 512))
    labels = np.concatenate([np.asarray(labels).reshape(len(labels), -1) for _, labels in batches])
    labels = labels[:, 0] if labels.shape[1] == 1 else labels  # a forecast's labels keep their steps
    return model_modality(spec.kind).reference_values([inputs for inputs, _ in batches], spec), labels


def read_batch(path: Path, spec) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """New data in the main data's form -> (features like `read_reference`'s, labels or None).

    Raises:
        DataError: naming the path and what is wrong with it.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder; pass the new data to monitor with --data PATH.")
    _, features, labels = data_modality(spec.kind).read_examples(path, spec)
    return features, labels


def count_examples(features: dict[str, np.ndarray]) -> int:
    return len(next(iter(features.values())))


# --- the monitor ------------------------------------------------------------------------------


def compare(
    reference: object,
    current: object,
    spec,
    settings: MonitorConfig,
    reference_outputs: np.ndarray,
    current_outputs: np.ndarray,
    reference_embeddings: np.ndarray | None = None,
    current_embeddings: np.ndarray | None = None,
    held_out: object = None,
) -> dict:
    """Every drift test and its verdict, without the model (outputs and embeddings are given)."""
    embeddings = (reference_embeddings, current_embeddings)
    families = model_modality(spec.kind).drift_families(reference, current, spec, settings, embeddings, held_out)
    report: dict = {"families": families}
    if spec.task_type.has_classes:
        classes = spec.classes
        ref_predicted = predicted_classes(reference_outputs)
        new_predicted = predicted_classes(current_outputs)
        test = category_test(np.array(classes)[ref_predicted], np.array(classes)[new_predicted])
    elif model_modality(spec.kind).outputs_comparable:
        test = ks_test(reference_outputs.reshape(-1), current_outputs.reshape(-1))
    else:  # a forecast follows its series' level: what it forecasts is judged by its error, not its values
        return report
    families["predictions"] = {"tests": {"predicted": test}, "drifted": flag({"predicted": test}, settings.p_value)}
    return report


def feedback_check(labels, outputs: np.ndarray, spec, holdout: dict, settings: MonitorConfig, history=None) -> dict:
    """Live performance on labelled production data against the current holdout's, on the task's headline
    metric (`Task.worse_than_holdout` judges it, with `max_accuracy_drop`)."""
    from pipeline.ml.evaluation import holdout_metrics

    task = spec.task_type
    metric = task.headline_metric
    live = holdout_metrics(spec, labels, outputs, history)[metric]
    drop = (
        holdout[metric] - live if higher_is_better(metric) else -(live - holdout[metric]) / max(holdout[metric], 1e-12)
    )
    degraded = task.worse_than_holdout(live, holdout[metric], settings.max_accuracy_drop)
    return {"metric": metric, "live": live, "holdout": holdout[metric], "drop": drop, "degraded": bool(degraded)}


def decide(report: dict) -> dict:
    reasons = []
    for family, result in report["families"].items():
        if result["drifted"]:
            reasons.append(f"{family.replace('_', ' ')} drifted: {', '.join(result['drifted'])}")
    feedback = report.get("feedback")
    if feedback and feedback["degraded"]:
        reasons.append(
            f"labelled feedback: live {feedback['metric']} {feedback['live']:.4f} vs holdout {feedback['holdout']:.4f}"
        )
    return {"retrain": bool(reasons), "reasons": reasons or ["no drift found; the model is as good as on its holdout"]}


def monitor(config: Config, data_path: Path | None) -> tuple[dict, dict]:
    """Runs every check of `data_path` (None: the test split) against the training split.

    Returns (the JSON report, the samples the HTML report plots)."""
    setup_tensorflow(config)
    import keras

    from pipeline.core.spec import load as load_spec
    from pipeline.ml.evaluation import history_input, holdout_metrics, test_metrics
    from pipeline.ml.models import feature_extractor, load_trained_model

    spec = load_spec(config.paths.prepared)
    model = load_trained_model(config.paths.model)
    reference, _ = read_reference(config.paths.prepared, spec)
    held_out, _ = read_reference(config.paths.prepared, spec, "validation")  # the model's outputs' reference
    if data_path is None:
        current, labels = read_reference(config.paths.prepared, spec, "test")
        source = "the test split (monitor.data is null)"
    else:
        current, labels = read_batch(Path(data_path), spec)
        source = str(data_path)
    examples = count_examples(current)
    if examples < config.monitor.min_examples and data_path is None:
        # The stage's sanity check of a small holdout: skipped with the reason, never a failed run.
        reason = (
            f"skipped: the test split has {examples} examples; drift tests need at least"
            f" monitor.min_examples = {config.monitor.min_examples}"
        )
        skipped = {"skipped": reason, "retrain": False, "reasons": [reason], "families": {}}
        return {**skipped, "data": source, "examples": examples, "reference_examples": count_examples(reference)}, {}
    if examples < config.monitor.min_examples:
        raise DataError(
            f"{source}: {examples} examples; drift tests need at least monitor.min_examples ="
            f" {config.monitor.min_examples}. Collect a larger batch."
        )

    uses_embeddings = model_modality(spec.kind).uses_embeddings
    # one pass per sample gives the outputs and, where the kind tests them, the penultimate-layer embeddings
    both = keras.Model(model.input, [model.output, feature_extractor(model).output]) if uses_embeddings else None

    def outputs_of(features):
        outputs, embedded = [], []
        for batch in _batches(features, 512, spec):
            if both is None:
                outputs.append(np.asarray(model(batch, training=False), dtype=np.float32))
                continue
            output, embedding = both(batch, training=False)
            outputs.append(np.asarray(output, dtype=np.float32))
            # float32: a mixed-precision model's hidden layers are float16, which numpy's linalg refuses
            embedded.append(np.asarray(embedding, dtype=np.float32))
        return np.concatenate(outputs), (np.concatenate(embedded) if embedded else None)

    (reference_outputs, reference_embeddings), (current_outputs, current_embeddings) = (
        outputs_of(held_out), outputs_of(current)
    )  # fmt: skip
    embeddings = (reference_embeddings, current_embeddings)
    report = compare(
        reference, current, spec, config.monitor, reference_outputs, current_outputs, *embeddings, held_out=held_out
    )
    if labels is not None:
        keep = history_input(spec)
        history = None if keep is None else current[keep]
        # the test split's metrics: of the outputs just computed when the batch is the test split itself
        if data_path is None:
            holdout = holdout_metrics(spec, labels, current_outputs, None if history is None else np.asarray(history))
        else:
            holdout = test_metrics(model, config.paths.prepared, spec)
        report["feedback"] = feedback_check(labels, current_outputs, spec, holdout, config.monitor, history)
    report.update(decide(report))
    report.update(data=source, examples=examples, reference_examples=count_examples(reference))
    samples = {
        "reference": reference,
        "current": current,
        "reference_outputs": reference_outputs,
        "current_outputs": current_outputs,
        "embeddings": embeddings,
    }
    return report, samples


def _batches(features: dict[str, np.ndarray], size: int, spec):
    modality = model_modality(spec.kind)
    for start in range(0, count_examples(features), size):
        yield modality.model_batch(features, start, start + size)


# --- the HTML report --------------------------------------------------------------------------


def render_html(report: dict, samples: dict, spec) -> str:
    """A self-contained page (plots inlined as PNG): it renders offline, unlike CDN-based reports."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    verdict = "RETRAIN" if report["retrain"] else "no action needed"
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>Drift report</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}td,th{padding:2px 8px;"
        "text-align:left}.bad{color:#b00;font-weight:bold}img{max-width:100%}</style></head><body>",
        f"<h1>Drift report: {html.escape(verdict)}</h1>",
        f"<p>{html.escape(report['data'])}: {report['examples']} examples against"
        f" {report['reference_examples']} training examples.</p><ul>",
        *[f"<li>{html.escape(reason)}</li>" for reason in report["reasons"]],
        "</ul>",
    ]
    for family, result in report["families"].items():
        parts.append(f"<h2>{html.escape(family.replace('_', ' '))}</h2><table><tr><th>name</th><th>test</th>")
        parts.append("<th>statistic</th><th>p-value</th><th>PSI</th></tr>")
        for name, test in result.get("tests", {}).items():
            css = " class='bad'" if name in result["drifted"] else ""
            statistic = "" if test.get("statistic") is None else f"{test['statistic']:.4f}"
            psi = f"{test['psi']:.4f}" if "psi" in test else ""
            p_value = f"{test['p_value']:.3g}" if "p_value" in test else f"bound {test.get('bound', '')}"
            parts.append(
                f"<tr{css}><td>{html.escape(name)}</td><td>{test['test']}</td><td>{statistic}</td>"
                f"<td>{p_value}</td><td>{psi}</td></tr>"
            )
        for name, rate in result.get("rates", {}).items():
            css = " class='bad'" if name in result["drifted"] else ""
            parts.append(
                f"<tr{css}><td>{html.escape(name)}</td><td>missing rate</td>"
                f"<td>{rate['reference']:.3f} -> {rate['current']:.3f}</td><td></td><td></td></tr>"
            )
        parts.append("</table>")
    parts += model_modality(spec.kind).report_plots(samples, spec)
    if spec.task_type.has_classes:
        classes = spec.classes
        shares = [
            np.bincount(predicted_classes(samples[key]), minlength=len(classes)) / len(samples[key])
            for key in ("reference_outputs", "current_outputs")
        ]
        figure, axis = plt.subplots(figsize=(max(5, len(classes) * 0.6), 3))
        positions = np.arange(len(classes))
        axis.bar(positions - 0.2, shares[0], width=0.4, label="training")
        axis.bar(positions + 0.2, shares[1], width=0.4, label="new data")
        axis.set_xticks(positions, classes)
        axis.set_ylabel("share of predictions")
        axis.legend()
        parts.append("<h2>Predicted classes</h2>" + figure_html(figure))
    if "feedback" in report:
        feedback = report["feedback"]
        parts.append(
            f"<h2>Feedback</h2><p>live {feedback['metric']} {feedback['live']:.4f}, holdout"
            f" {feedback['holdout']:.4f}{' (degraded)' if feedback['degraded'] else ''}</p>"
        )
    parts.append("</body></html>\n")
    return "\n".join(parts)


# --- entry points -----------------------------------------------------------------------------


def write_report(report: dict, samples: dict, spec, output_dir: Path) -> tuple[Path, Path]:
    output_dir.mkdir(parents=True, exist_ok=True)
    json_path = write_json_atomic(output_dir / "drift.json", report)
    if "skipped" in report:
        page = f"<!DOCTYPE html><html><body><h1>Monitor</h1><p>{html.escape(report['skipped'])}.</p></body></html>\n"
    else:
        page = render_html(report, samples, spec)
    html_path = write_text_atomic(output_dir / "report.html", page)
    # The few numbers people compare across runs (a DVC metrics file); every test's detail stays in drift.json.
    metrics = monitor_metrics(report)
    drifted = sum(value for name, value in metrics.items() if name.startswith("drifted_"))
    headline = {"retrain": metrics["retrain"], "drifted": drifted}
    headline.update({name: value for name, value in metrics.items() if name.startswith("live_")})
    write_json_atomic(output_dir / "metrics.json", headline)
    return json_path, html_path


def monitor_metrics(report: dict) -> dict[str, float]:
    metrics = {f"drifted_{family}": len(result["drifted"]) for family, result in report["families"].items()}
    metrics["retrain"] = float(report["retrain"])
    if "feedback" in report:
        metrics[f"live_{report['feedback']['metric']}"] = report["feedback"]["live"]
    return metrics


def log_to_mlflow(config: Config, report: dict, paths: tuple[Path, Path]) -> None:
    """One MLflow run per check of new data, in the experiment `<tracking.experiment>-monitor`
    (beside the pipeline's runs, not among them), tagged `pipeline.kind=monitor`."""
    import mlflow

    from pipeline.core import tracking

    tracking.configure(config, f"{config.tracking.experiment}-monitor")
    with mlflow.start_run(run_name=f"monitor {Path(report['data']).name}", tags={"pipeline.kind": "monitor"}):
        mlflow.log_params({"monitor.data": report["data"], "monitor.examples": report["examples"]})
        mlflow.set_tags({"pipeline.monitor.retrain": str(report["retrain"]).lower()})
        mlflow.log_metrics(monitor_metrics(report))
        for path in paths:
            mlflow.log_artifact(str(path), artifact_path="monitor")


def run_monitor(config: Config, data_path: Path | None, output_dir: Path) -> tuple[dict, tuple[Path, Path]]:
    from pipeline.core.spec import load as load_spec

    started = time.perf_counter()
    report, samples = monitor(config, data_path)
    report["seconds"] = round(time.perf_counter() - started, 2)
    return report, write_report(report, samples, load_spec(config.paths.prepared), output_dir)


def summary_line(report: dict, output_dir: Path) -> str:
    verdict = "retrain: true" if report["retrain"] else "retrain: false"
    return (
        f"{report['examples']} examples of {report['data']}: {verdict}; "
        + "; ".join(report["reasons"])
        + (f" -> {output_dir / 'drift.json'}, {output_dir / 'report.html'}")
    )


def check(config: Config, data: str | None, output: str | None, own_run: bool) -> tuple[StageResult, dict]:
    """Monitors `data` (default: `monitor.data`, else the test split); writes the report to `output`
    (default: `<paths.reports>/monitor`). With `own_run`, the check is logged as a run of its own."""
    output_dir = Path(output) if output else Path(config.paths.reports) / "monitor"
    path = data if data is not None else config.monitor.data
    if path is not None and not Path(path).exists():
        raise StageError(f"{path}: no such file or folder (the new data to monitor).")
    report, paths = run_monitor(config, None if path is None else Path(path), output_dir)
    if own_run:
        log_to_mlflow(config, report, paths)
    result = StageResult(
        summary=summary_line(report, output_dir),
        metrics={f"monitor_{name}": value for name, value in monitor_metrics(report).items()},
        artifacts=list(paths),
    )
    return result, report


def command(params_file: str, data: str | None, output: str | None, fail_on_drift: bool) -> int:
    """`pipeline monitor`: exit 0, or 1 with --fail-on-drift when retraining is due (2: bad input).

    A check of new data from the command line is a run of its own in the monitor experiment (the
    DVC stage's check belongs to the pipeline's MLflow run)."""
    outcome = {}

    def body(config: Config) -> StageResult:
        result, report = check(config, data, output, own_run=True)
        outcome.update(report)
        return result

    run_stage("monitor", params_file, body, track=False)
    return 1 if fail_on_drift and outcome.get("retrain") else 0
