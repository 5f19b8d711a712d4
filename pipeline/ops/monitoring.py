"""`pipeline monitor`: is production data still like the training data, and is the model still right?

New data (an image folder, with or without class sub-folders; or a CSV/Parquet file, with or
without the label column) is compared with the training split (the reference):

- tables: each numeric feature with the two-sample Kolmogorov-Smirnov test, each categorical one
  with a chi-square test (and its population stability index), and missing-value rates;
- images: simple per-image statistics (brightness, contrast, ink, edges) with KS tests, and the
  model's penultimate-layer embeddings (their top principal components, KS tests);
- predictions: the distribution of predicted classes (chi-square) or values (KS);
- feedback: with labels, the live accuracy (or RMSE) against the current holdout's.

Within each family of tests the p-values are Bonferroni-corrected, so that a fresh sample of the
training distribution raises a false alarm in at most about `monitor.p_value` of the runs per
family. The report (`drift.json`; its headline numbers in `metrics.json`, a DVC metrics file; and a
self-contained `report.html` with the plots) ends with `retrain: true/false` and the reasons;
`--fail-on-drift` exits 1 when retraining is due, for CI. A stage run on a holdout smaller than
`monitor.min_examples` skips the tests and says so (small data never fails `dvc repro`).
"""

from __future__ import annotations

import base64
import html
import io
import logging
import time
from pathlib import Path

import numpy as np

from pipeline.core.config import Config, MonitorConfig
from pipeline.core.metrics import predicted_classes
from pipeline.core.outputs import write_json_atomic, write_text_atomic
from pipeline.core.runner import StageError, StageResult, run_stage
from pipeline.data.sources import DataError
from pipeline.ml.distribute import setup_tensorflow

log = logging.getLogger(__name__)

IMAGE_STATISTICS = ("brightness", "contrast", "ink", "edges")


# --- reading data -----------------------------------------------------------------------------


def read_reference(prepared_dir: Path, spec: dict, split: str = "train") -> tuple[object, np.ndarray]:
    """(features, labels) of a prepared split: an image array, or {input name: 1-D array}."""
    from pipeline.ml.features import make_dataset

    batches = list(make_dataset(prepared_dir, spec, split, 512))
    labels = np.concatenate([np.asarray(labels).reshape(-1) for _, labels in batches])
    if spec["kind"] == "image":
        return np.concatenate([np.asarray(inputs) for inputs, _ in batches]), labels
    features = {}
    for feature in spec["features"]:
        values = np.concatenate([np.asarray(inputs[feature["name"]]).reshape(-1) for inputs, _ in batches])
        features[feature["name"]] = values if feature["type"] == "numeric" else values.astype(str)
    return features, labels


def read_batch(path: Path, spec: dict, data_settings) -> tuple[object, np.ndarray | None]:
    """New data in the main data's form -> (features like `read_reference`'s, labels or None).

    Raises:
        DataError: naming the path and what is wrong with it.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder; pass the new data to monitor with --data PATH.")
    if spec["kind"] == "image":
        return _read_image_batch(path, spec, data_settings)
    return _read_table_batch(path, spec)


def _read_image_batch(path: Path, spec: dict, data_settings) -> tuple[np.ndarray, np.ndarray | None]:
    from pipeline.data.preparation import load_images
    from pipeline.data.sources import IMAGE_EXTENSIONS

    if not path.is_dir():
        raise DataError(f"{path}: expected a folder of images (with class sub-folders if labelled).")
    files = sorted(file for file in path.rglob("*") if file.is_file() and file.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise DataError(f"{path}: no image files ({', '.join(IMAGE_EXTENSIONS)}) found.")
    image = spec["image"]
    pixels = load_images([str(file) for file in files], [image["height"], image["width"]], data_settings.color_mode)
    folders = {file.parent for file in files}
    if folders == {path}:
        return pixels.astype(np.float32), None
    classes = {name: index for index, name in enumerate(spec["classes"])}
    unknown = sorted({file.parent.name for file in files} - set(classes))
    if unknown:
        raise DataError(
            f"{path}: class folders {unknown} are not classes the model knows ({', '.join(spec['classes'])});"
            " put unlabelled images directly in the folder."
        )
    labels = np.array([classes[file.parent.name] for file in files])
    return pixels.astype(np.float32), labels


def _read_table_batch(path: Path, spec: dict) -> tuple[dict, np.ndarray | None]:
    from pipeline.data.preparation import MISSING_CATEGORY, encode_labels
    from pipeline.data.sources import TABLE_FORMATS, load_table

    file_format = TABLE_FORMATS.get(path.suffix.lower())
    if file_format is None:
        raise DataError(f"{path}: expected a .csv or .parquet file like the training data.")
    table = load_table(path, file_format)
    missing = [feature["column"] for feature in spec["features"] if feature["column"] not in table.columns]
    if missing:
        raise DataError(f"{path}: columns {missing} are missing; the model reads {_columns(spec)}.")
    features = {}
    for feature in spec["features"]:
        values = table[feature["column"]]
        if feature["type"] == "numeric":
            features[feature["name"]] = _to_float(values, path, feature["column"])
        else:
            features[feature["name"]] = np.array(
                [MISSING_CATEGORY if value != value or value is None else str(value) for value in values]
            )
    labels = None
    if spec["label"] in table.columns:
        known = table[spec["label"]].dropna()
        if len(known) == len(table):
            labels = encode_labels(known, spec["task"], spec["classes"])
    return features, labels


def _to_float(values, path: Path, column: str) -> np.ndarray:
    import pandas as pd

    converted = pd.to_numeric(values, errors="coerce")
    bad = values.notna() & converted.isna()
    if bad.any():
        raise DataError(f"{path}: column {column} holds non-numbers, e.g. {values[bad].iloc[0]!r}.")
    return converted.to_numpy(dtype=np.float64, na_value=np.nan)


def _columns(spec: dict) -> str:
    return ", ".join(feature["column"] for feature in spec["features"])


def count_examples(features) -> int:
    return len(features) if isinstance(features, np.ndarray) else len(next(iter(features.values())))


# --- statistics -------------------------------------------------------------------------------


def ks_test(reference: np.ndarray, current: np.ndarray) -> dict:
    from scipy.stats import ks_2samp

    reference, current = reference[np.isfinite(reference)], current[np.isfinite(current)]
    if len(reference) == 0 or len(current) == 0:
        return {"test": "ks", "statistic": None, "p_value": 1.0}
    result = ks_2samp(reference, current)
    return {"test": "ks", "statistic": float(result.statistic), "p_value": float(result.pvalue)}


def population_stability_index(
    reference_counts: np.ndarray, current_counts: np.ndarray, smoothing: float = 0.5
) -> float:
    """PSI = sum((current - reference) * ln(current / reference)) over category shares.

    Shares are Laplace-smoothed (`smoothing` pseudo-examples per category): a category absent from a
    small sample is evidence of little, and a fixed floor such as 1e-4 turned one empty category of a
    52-row holdout into a PSI of 0.28, a false alarm."""
    reference_counts, current_counts = np.asarray(reference_counts, float), np.asarray(current_counts, float)
    reference = (reference_counts + smoothing) / (reference_counts.sum() + smoothing * len(reference_counts))
    current = (current_counts + smoothing) / (current_counts.sum() + smoothing * len(current_counts))
    return float(np.sum((current - reference) * np.log(current / reference)))


def psi_p_value(psi: float, reference_size: float, current_size: float, categories: int) -> float:
    """How likely a PSI this large is between two samples of one distribution: PSI times the effective
    sample size 1 / (1/n1 + 1/n2) is about chi-square with categories - 1 degrees of freedom. A small
    sample's PSI is noisy (about (k - 1) / n on its own), so a PSI above the threshold counts as drift
    only when it is also this unlikely."""
    from scipy.stats import chi2

    if categories < 2 or not reference_size or not current_size:
        return 1.0
    effective = 1.0 / (1.0 / reference_size + 1.0 / current_size)
    return float(chi2.sf(psi * effective, categories - 1))


def category_test(reference: np.ndarray, current: np.ndarray) -> dict:
    """Chi-square test of homogeneity of two categorical samples, plus the PSI and the shares."""
    from scipy.stats import chi2_contingency

    categories = sorted(set(reference.tolist()) | set(current.tolist()))
    counts = np.array([[np.sum(sample == category) for category in categories] for sample in (reference, current)])
    kept = counts.sum(axis=0) > 0
    psi = population_stability_index(counts[0], counts[1])
    result = {
        "test": "chi2",
        "psi": psi,
        "psi_p_value": psi_p_value(psi, counts[0].sum(), counts[1].sum(), len(categories)),
    }
    if kept.sum() < 2:
        result.update(statistic=0.0, p_value=1.0)
    else:
        statistic, p_value, _, _ = chi2_contingency(counts[:, kept])
        result.update(statistic=float(statistic), p_value=float(p_value))
    result["shares"] = {
        "reference": {str(c): float(n) for c, n in zip(categories, counts[0] / max(counts[0].sum(), 1), strict=True)},
        "current": {str(c): float(n) for c, n in zip(categories, counts[1] / max(counts[1].sum(), 1), strict=True)},
    }
    return result


def image_statistics(images: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image brightness (mean), contrast (std), ink (share of pixels above mid-grey), edges."""
    flat = images.reshape(len(images), -1).astype(np.float64)
    gradients = np.abs(np.diff(images.astype(np.float64), axis=1)).mean(axis=(1, 2, 3)) + np.abs(
        np.diff(images.astype(np.float64), axis=2)
    ).mean(axis=(1, 2, 3))
    return {
        "brightness": flat.mean(axis=1),
        "contrast": flat.std(axis=1),
        "ink": (flat > 127.5).mean(axis=1),
        "edges": gradients,
    }


def principal_components(reference: np.ndarray, current: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Both samples projected on the reference's top `count` principal components."""
    mean = reference.mean(axis=0)
    _, _, components = np.linalg.svd(reference - mean, full_matrices=False)
    components = components[: min(count, components.shape[0])]
    return (reference - mean) @ components.T, (current - mean) @ components.T


def flag(tests: dict[str, dict], p_value: float) -> list[str]:
    """Names whose test is significant after a Bonferroni correction over the family."""
    threshold = p_value / max(len(tests), 1)
    return [name for name, test in tests.items() if test["p_value"] < threshold]


# --- the monitor ------------------------------------------------------------------------------


def compare(
    reference: object,
    current: object,
    spec: dict,
    settings: MonitorConfig,
    reference_outputs: np.ndarray,
    current_outputs: np.ndarray,
    reference_embeddings: np.ndarray | None = None,
    current_embeddings: np.ndarray | None = None,
) -> dict:
    """Every drift test and its verdict, without the model (outputs and embeddings are given)."""
    report: dict = {"families": {}}
    families = report["families"]
    if spec["kind"] == "image":
        ref_stats, new_stats = image_statistics(reference), image_statistics(current)
        tests = {name: ks_test(ref_stats[name], new_stats[name]) for name in IMAGE_STATISTICS}
        families["image_statistics"] = {"tests": tests, "drifted": flag(tests, settings.p_value)}
        if reference_embeddings is not None:
            ref_pc, new_pc = principal_components(
                reference_embeddings, current_embeddings, settings.embedding_components
            )
            tests = {f"pc{index + 1}": ks_test(ref_pc[:, index], new_pc[:, index]) for index in range(ref_pc.shape[1])}
            families["embeddings"] = {"tests": tests, "drifted": flag(tests, settings.p_value)}
    else:
        tests, missing = {}, {}
        for feature in spec["features"]:
            name, ref_values, new_values = feature["name"], reference[feature["name"]], current[feature["name"]]
            if feature["type"] == "numeric":
                tests[name] = ks_test(ref_values, new_values)
                ref_missing, new_missing = float(np.mean(np.isnan(ref_values))), float(np.mean(np.isnan(new_values)))
            else:
                # Missing values are counted once, in their own family below: not as a category here too.
                tests[name] = category_test(ref_values[ref_values != ""], new_values[new_values != ""])
                ref_missing, new_missing = float(np.mean(ref_values == "")), float(np.mean(new_values == ""))
            missing[name] = {"reference": ref_missing, "current": new_missing}
        drifted = flag(tests, settings.p_value)
        drifted += [
            name
            for name, test in tests.items()
            if test.get("psi", 0.0) > settings.psi_threshold
            and test.get("psi_p_value", 0.0) < settings.p_value / len(tests)
            and name not in drifted
        ]
        families["features"] = {"tests": tests, "drifted": drifted}
        rates = [
            name
            for name, rate in missing.items()
            if rate["current"] - rate["reference"] > settings.missing_rate_tolerance
        ]
        families["missing_values"] = {"rates": missing, "drifted": rates}
    if spec["task"] == "classification":
        classes = spec["classes"]
        ref_predicted = predicted_classes(reference_outputs)
        new_predicted = predicted_classes(current_outputs)
        test = category_test(np.array(classes)[ref_predicted], np.array(classes)[new_predicted])
    else:
        test = ks_test(reference_outputs.reshape(-1), current_outputs.reshape(-1))
    families["predictions"] = {"tests": {"predicted": test}, "drifted": flag({"predicted": test}, settings.p_value)}
    return report


def feedback_check(labels, outputs: np.ndarray, spec: dict, holdout: dict, settings: MonitorConfig) -> dict:
    """Live performance on labelled production data against the current holdout's."""
    from pipeline.ml.evaluation import class_probabilities, classification_metrics, regression_metrics

    if spec["task"] == "classification":
        live = classification_metrics(labels, class_probabilities(outputs), spec["classes"])[0]
        drop = holdout["accuracy"] - live["accuracy"]
        return {
            "metric": "accuracy",
            "live": live["accuracy"],
            "holdout": holdout["accuracy"],
            "drop": drop,
            "degraded": bool(drop > settings.max_accuracy_drop),
        }
    live = regression_metrics(labels, outputs)
    increase = (live["rmse"] - holdout["rmse"]) / max(holdout["rmse"], 1e-12)
    return {
        "metric": "rmse",
        "live": live["rmse"],
        "holdout": holdout["rmse"],
        "drop": -increase,
        "degraded": bool(increase > settings.max_accuracy_drop),
    }


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
    from pipeline.ml.evaluation import test_metrics
    from pipeline.ml.features import load_spec
    from pipeline.ml.models import feature_extractor, load_trained_model

    spec = load_spec(config.paths.prepared)
    model = load_trained_model(config.paths.model)
    reference, _ = read_reference(config.paths.prepared, spec)
    if data_path is None:
        current, labels = read_reference(config.paths.prepared, spec, "test")
        source = "the test split (monitor.data is null)"
    else:
        current, labels = read_batch(Path(data_path), spec, config.data)
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

    def outputs_of(features):
        batches = _batches(features, 512)
        return np.concatenate([np.asarray(model(batch, training=False), dtype=np.float32) for batch in batches])

    reference_outputs, current_outputs = outputs_of(reference), outputs_of(current)
    embeddings = (None, None)
    if spec["kind"] == "image":
        extractor = feature_extractor(model)
        embeddings = tuple(
            # float32: a mixed-precision model's hidden layers are float16, which numpy's linalg refuses
            np.concatenate(
                [np.asarray(extractor(batch, training=False), dtype=np.float32) for batch in _batches(sample, 512)]
            )
            for sample in (reference, current)
        )
    report = compare(reference, current, spec, config.monitor, reference_outputs, current_outputs, *embeddings)
    if labels is not None:
        holdout = test_metrics(model, config.paths.prepared, spec)
        report["feedback"] = feedback_check(labels, current_outputs, spec, holdout, config.monitor)
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


def _batches(features, size: int):
    total = count_examples(features)
    for start in range(0, total, size):
        if isinstance(features, np.ndarray):
            yield features[start : start + size]
        else:
            yield {
                name: (values[start : start + size].reshape(-1, 1)).astype(
                    np.float32 if values.dtype.kind == "f" else object
                )
                for name, values in features.items()
            }


# --- the HTML report --------------------------------------------------------------------------


def _figure_html(figure) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=80)
    plt.close(figure)
    return f'<img alt="" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def render_html(report: dict, samples: dict, spec: dict) -> str:
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
            parts.append(
                f"<tr{css}><td>{html.escape(name)}</td><td>{test['test']}</td><td>{statistic}</td>"
                f"<td>{test['p_value']:.3g}</td><td>{psi}</td></tr>"
            )
        for name, rate in result.get("rates", {}).items():
            css = " class='bad'" if name in result["drifted"] else ""
            parts.append(
                f"<tr{css}><td>{html.escape(name)}</td><td>missing rate</td>"
                f"<td>{rate['reference']:.3f} -> {rate['current']:.3f}</td><td></td><td></td></tr>"
            )
        parts.append("</table>")
    if spec["kind"] == "image":
        ref_stats, new_stats = image_statistics(samples["reference"]), image_statistics(samples["current"])
        figure, axes = plt.subplots(1, len(IMAGE_STATISTICS), figsize=(4 * len(IMAGE_STATISTICS), 3))
        for axis, name in zip(axes, IMAGE_STATISTICS, strict=True):
            _histograms(axis, ref_stats[name], new_stats[name], name)
        parts.append("<h2>Image statistics</h2>" + _figure_html(figure))
        reference_embeddings, current_embeddings = samples["embeddings"]
        if reference_embeddings is not None:
            ref_pc, new_pc = principal_components(reference_embeddings, current_embeddings, 2)
            figure, axis = plt.subplots(figsize=(5, 5))
            axis.scatter(ref_pc[:, 0], ref_pc[:, 1], s=4, alpha=0.4, label="training")
            axis.scatter(new_pc[:, 0], new_pc[:, 1], s=4, alpha=0.4, label="new data")
            axis.set_xlabel("PC1")
            axis.set_ylabel("PC2")
            axis.legend()
            axis.set_title("Penultimate-layer embeddings")
            parts.append("<h2>Embeddings</h2>" + _figure_html(figure))
        new_images = samples["current"][:16]
        figure, axes = plt.subplots(1, len(new_images), figsize=(len(new_images), 1.3))
        for axis, image in zip(np.atleast_1d(axes), new_images, strict=True):
            axis.imshow(image.squeeze(), cmap="gray" if image.shape[-1] == 1 else None, vmin=0, vmax=255)
            axis.axis("off")
        parts.append("<h2>Examples of the new data</h2>" + _figure_html(figure))
    else:
        numeric = [feature for feature in spec["features"] if feature["type"] == "numeric"]
        if numeric:
            figure, axes = plt.subplots(1, len(numeric), figsize=(4 * len(numeric), 3), squeeze=False)
            for axis, feature in zip(axes[0], numeric, strict=True):
                name = feature["name"]
                _histograms(axis, samples["reference"][name], samples["current"][name], feature["column"])
            parts.append("<h2>Numeric features</h2>" + _figure_html(figure))
    if spec["task"] == "classification":
        classes = spec["classes"]
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
        parts.append("<h2>Predicted classes</h2>" + _figure_html(figure))
    if "feedback" in report:
        feedback = report["feedback"]
        parts.append(
            f"<h2>Feedback</h2><p>live {feedback['metric']} {feedback['live']:.4f}, holdout"
            f" {feedback['holdout']:.4f}{' (degraded)' if feedback['degraded'] else ''}</p>"
        )
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _histograms(axis, reference: np.ndarray, current: np.ndarray, title: str) -> None:
    reference, current = reference[np.isfinite(reference)], current[np.isfinite(current)]
    bins = np.histogram_bin_edges(np.concatenate([reference, current]), bins=30)
    axis.hist(reference, bins=bins, density=True, alpha=0.5, label="training")
    axis.hist(current, bins=bins, density=True, alpha=0.5, label="new data")
    axis.set_title(title)
    axis.legend(fontsize="small")


# --- entry points -----------------------------------------------------------------------------


def write_report(report: dict, samples: dict, spec: dict, output_dir: Path) -> tuple[Path, Path]:
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
    from pipeline.ml.features import load_spec

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
