"""The model card of a registered version: what a person needs before using the model, written by the gate.

Markdown (the version's description in the MLflow registry, which its UI renders, and an artifact of the version's
run) and HTML for people without MLflow: the data (source, version, sizes, classes, range or series), the model
(family, hyperparameters, size), the test metrics with the champion's beside them, the gate's decision and its
reasons, intended use and limitations (`card` in params.yaml), and how to load and call it. No TensorFlow: the
caller hands in what it measured.
"""

from __future__ import annotations

import datetime
import html
import json
from typing import Any, Optional

CARD_FILE = "model_card.md"
HTML_FILE = "model_card.html"
DESCRIPTION_LIMIT = 5000  # MLflow's model version description column


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1e5 else f"{value:.4g}"
    return str(value)


def data_lines(spec, source: str) -> list[str]:
    """The data in a few lines: source, version, kind and task, split sizes, and what the label is."""
    sizes = ", ".join(f"{name} {split.num_examples}" for name, split in spec.splits.items())
    lines = [
        f"- Source: `{source}` ({spec.kind} data, task: {spec.task}); data version `{spec.fingerprint}`",
        f"- Examples: {sizes}",
    ]
    if spec.classes:
        counts = spec.splits["train"].class_counts if "train" in spec.splits else None
        shown = (
            [f"{name} ({count})" for name, count in zip(spec.classes, counts, strict=True)] if counts else spec.classes
        )
        lines.append(f"- Classes of `{spec.label}` (training examples): {', '.join(map(str, shown))}")
    elif spec.series is not None:
        series = spec.series
        blocks = "; ".join(f"{name} {first} to {last}" for name, (first, last) in (series.blocks or {}).items())
        lines.append(
            f"- Forecast: the next {series.horizon} values of `{spec.label}` from a window of {series.window} steps"
            f" ({series.frequency}; season {series.seasonal_period}); blocks in time order: {blocks}"
        )
    elif spec.label_statistics is not None:
        statistics = spec.label_statistics
        lines.append(
            f"- Target `{spec.label}`: training mean {_number(statistics.mean)},"
            f" standard deviation {_number(statistics.variance**0.5)}"
        )
    if spec.features:
        lines.append("- Inputs: " + ", ".join(f"`{feature.column}` ({feature.type})" for feature in spec.features))
    elif spec.image is not None:
        image = spec.image
        lines.append(f"- Inputs: {image.height}x{image.width} images, {image.channels} channel(s), raw 0-255 pixels")
    return lines


MODEL_KEYS = ("family", "hidden_units", "activation", "dropout", "l2", "optimizer", "learning_rate", "batch_size")


def metric_rows(candidate: dict, champion: Optional[dict], names: list[str]) -> list[str]:
    rows = ["| metric | this version | champion (same test split) |", "|---|---|---|"]
    for name in names:
        if name in candidate:
            theirs = "" if not champion or name not in champion else _number(champion[name])
            rows.append(f"| {name} | {_number(candidate[name])} | {theirs} |")
    return rows


def slice_rows(candidate: list[dict], champion: list[dict], metric: str) -> list[str]:
    """The metric per slice, the champion's beside it; slices too small to judge are marked, not left out."""
    if not candidate:
        return []
    theirs = {entry["slice"]: entry["metrics"].get(metric) for entry in champion}
    rows = [
        "",
        f"## {metric} per slice (test split)",
        "",
        f"| slice | examples | {metric} | champion |",
        "|---|---|---|---|",
    ]
    for entry in candidate:
        value = entry["metrics"].get(metric)
        shown = "" if value is None else _number(value)
        if not entry["judged"]:
            shown += " (too few to judge)"
        other = theirs.get(entry["slice"])
        rows.append(f"| {entry['slice']} | {entry['examples']} | {shown} | {'' if other is None else _number(other)} |")
    return rows


def behaviour_rows(checks: list[dict] | None) -> list[str]:
    """The behavioural checks (`pipeline.ml.behaviour`): what was checked, how many passed, what was needed."""
    if not checks:
        return []
    rows = ["", "## Behaviour (test split and written cases)", "", "| check | type | passed | needed | result |",
            "|---|---|---|---|---|"]  # fmt: skip
    for check in checks:
        share = check["passed"] / max(check["total"], 1)
        passed = f"{check['passed']} of {check['total']} ({share:.1%})" if check["total"] > 1 else check.get("said", "")
        needed = f"{check['needed']:.0%}" if check["type"] == "invariance" else "the expected result"
        verdict = "passes" if check["passes"] else "**fails**"
        rows.append(f"| {check['check']} | {check['type']} | {passed} | {needed} | {verdict} |")
    return rows


def build_card(
    *,
    name: str,
    version: int,
    spec,
    source: str,
    hyperparameters: dict,
    parameters: int,
    candidate: dict,
    champion: Optional[dict],
    champion_version: Optional[int],
    decision: dict,
    metric_names: list[str],
    intended_use: str,
    limitations: str,
    example_request: Optional[dict],
    slices: Optional[dict] = None,
    slice_metric: str = "",
) -> str:
    """The card in Markdown."""
    blessed = "blessed: the new champion" if decision.get("blessed") else "not blessed"
    forced = " (forced by hand)" if decision.get("forced") else ""
    today = datetime.date.today().isoformat()
    chosen = {key: hyperparameters[key] for key in MODEL_KEYS if key in hyperparameters}
    lines = [
        f"# Model card: {name} v{version}",
        "",
        f"Written by the pipeline's gate on {today}. Gate decision: **{blessed}**{forced}.",
        "",
        "## Data",
        *data_lines(spec, source),
        "",
        "## Model",
        f"- Family: {hyperparameters.get('family')}; {parameters:,} parameters",
        f"- Settings: `{json.dumps(chosen, sort_keys=True)}`",
        "",
        "## Test metrics",
        *metric_rows(candidate, champion, metric_names),
    ]
    if champion is None:
        lines.append("")
        lines.append(
            "No champion was compared" + (f" (v{champion_version} is this version)." if champion_version else ".")
        )
    lines += slice_rows((slices or {}).get("candidate", []), (slices or {}).get("champion", []), slice_metric)
    lines += behaviour_rows(decision.get("behaviour"))
    lines += ["", "## Gate decision", *[f"- {reason}" for reason in decision.get("reasons", [])]]
    lines += ["", "## Intended use", intended_use, "", "## Limitations", limitations]
    lines += [
        "",
        "## Load and call",
        "```python",
        "import mlflow",
        f'model = mlflow.pyfunc.load_model("models:/{name}@champion")  # or models:/{name}/{version}',
        "model.predict(model.input_example)",
        "```",
        f"HTTP (`pipeline serve`, TF Serving's REST API): `POST /v1/models/{name}:predict`",
    ]
    if example_request is not None and "body" in example_request:
        lines += ["```json", example_request["body"], "```"]
    elif example_request is not None:
        lines.append(
            f'with `{{"instances": [...]}}`: one example is {example_request["characters"]} characters of JSON.'
        )
    return "\n".join(lines) + "\n"


SHOWN_REQUEST_CHARACTERS = 600


def example_request(instances: list) -> dict:
    """A request of one example as the card shows it: `{"body": its JSON}`, or `{"characters": its length}` where
    it is too long to read (an image). The export stage writes it, which has the test split and the model at hand."""
    body = json.dumps({"instances": instances})
    return {"body": body} if len(body) <= SHOWN_REQUEST_CHARACTERS else {"characters": len(body)}


def default_intended_use(spec, source: str) -> str:
    what = {"forecast": "forecasting", "regression": "predicting", "classification": "classifying by"}
    return (
        f"{what.get(spec.task, 'predicting').capitalize()} `{spec.label}` for {spec.kind} data like `{source}`, in the"
        " form and ranges of its training data (requests outside the validated schema are refused)."
    )


def default_limitations(spec, sliced: bool = False) -> str:
    train = spec.splits["train"].num_examples if "train" in spec.splits else "?"
    test = spec.splits["test"].num_examples if "test" in spec.splits else "?"
    groups = (
        "the slices above are the groups that were measured (`evaluate.slices`); others may fare worse than the whole"
        if sliced
        else "no slice of it was measured (`evaluate.slices`): a group of examples may fare worse than the whole"
    )
    return (
        f"Trained on {train} examples of one data version; measured on a test split of {test} examples only; {groups}."
        " Check the monitor's drift report before trusting it on data collected later or elsewhere."
    )


def to_html(markdown_text: str, title: str) -> str:
    """A self-contained page of the card (no scripts, no external files)."""
    import markdown

    body = markdown.markdown(markdown_text, extensions=["tables", "fenced_code"])
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;max-width:900px;margin:2em auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 8px}code,pre{background:#f4f4f4}</style></head><body>"
        f"{body}</body></html>\n"
    )


def description(markdown_text: str) -> str:
    """The registry description: the card, cut to fit MLflow's column."""
    if len(markdown_text) <= DESCRIPTION_LIMIT:
        return markdown_text
    note = f"\n\n(cut: the whole card is the artifact model_card/{CARD_FILE})\n"
    return markdown_text[: DESCRIPTION_LIMIT - len(note)] + note
