"""Evaluation per slice of the test split: the task's metrics on each group of examples a user names
(`evaluate.slices`), as TFX's Evaluator does, so that a model better overall but worse for one group shows.

- `auto`: per class of the true label for a classification, and each free-text column's length quartiles;
- a list of input columns: a categorical column's values (missing values are their own slice), a numeric
  column's quartiles on the test split, a text column's quartiles of length in words.

Slices with fewer than `evaluate.min_slice_examples` test examples are reported with `judged: false` (too small to
judge), never hidden; the gate judges only the others.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from pipeline.core.errors import StageError

SLICES_FILE = "slices.json"


def _buckets(name: str, values: np.ndarray, unit: str = "", whole: bool = False) -> dict[str, np.ndarray]:
    """Quartile buckets of numbers (NaN: a slice of its own); `whole`: counts, cut at whole numbers."""
    values = np.asarray(values, dtype=np.float64)
    present = ~np.isnan(values)
    masks = {}
    if present.any():
        edges = np.quantile(values[present], [0.0, 0.25, 0.5, 0.75, 1.0])
        edges = np.unique(np.ceil(edges) if whole else edges)
        if len(edges) == 1:
            masks[f"{name}{unit} = {edges[0]:g}"] = present.copy()
        for position in range(len(edges) - 1):
            low, high = edges[position], edges[position + 1]
            last = position == len(edges) - 2
            inside = present & (values >= low) & ((values <= high) if last else (values < high))
            masks[f"{name}{unit} in [{low:g}, {high:g}{']' if last else ')'}"] = inside
    if not present.all():
        masks[f"{name} missing"] = ~present
    return masks


def slice_masks(spec, features: dict[str, np.ndarray], labels: np.ndarray, slices) -> dict[str, np.ndarray]:
    """{slice name: which test examples are in it}. `features` are in `DataModality.read_examples`' form."""
    from pipeline.core.tokens import words

    masks: dict[str, np.ndarray] = {}
    if slices == "auto":
        if spec.task_type.has_classes:
            classes = np.asarray(labels).reshape(len(labels), -1)[:, 0].astype(int)
            for index, name in enumerate(spec.classes):
                masks[f"{spec.label} = {name}"] = classes == index
        # and every free-text column's length quartiles (a model of short reviews may fail long ones)
        slices = [feature.column for feature in spec.features or [] if feature.column_type.free_text]
        if not slices or features is None:
            return masks
    by_column = {feature.column: feature for feature in spec.features or []}
    for column in slices:
        feature = by_column.get(column)
        if feature is None:
            raise StageError(
                f"evaluate.slices: {column!r} is not an input column of this model; it reads {sorted(by_column)}"
                " (auto: per class)."
            )
        values = np.asarray(features[feature.name]).reshape(len(labels), -1)[:, 0]
        kind = feature.column_type
        if kind.free_text:
            lengths = np.array([len(words(str(value))) for value in values], dtype=np.float64)
            masks.update(_buckets(column, lengths, " (words)", whole=True))
        elif kind.numbers:
            masks.update(_buckets(column, values))
        else:
            missing = np.asarray(kind.missing(values), dtype=bool)
            for value in sorted({str(value) for value in values[~missing]}):
                masks[f"{column} = {value}"] = (values.astype(str) == value) & ~missing
            if missing.any():
                masks[f"{column} missing"] = missing
    return masks


def read_test_split(model, prepared_dir: Path, spec, with_features: bool = True):
    """(features in `read_examples`' form or None, labels, model outputs, the forecast's history or None) of the
    test split, in one pass: the overall metrics and the slices' are computed from it."""
    from pipeline.ml.evaluation import history_input
    from pipeline.ml.features import make_dataset
    from pipeline.ml.modalities import model_modality

    batches, labels, outputs = [], [], []
    for inputs, batch_labels in make_dataset(prepared_dir, spec, "test", 256):
        batches.append(inputs)
        labels.append(np.asarray(batch_labels))
        outputs.append(np.asarray(model(inputs, training=False)))
    features = model_modality(spec.kind).reference_values(batches, spec) if with_features else None
    keep = history_input(spec)
    history = None if keep is None else np.concatenate([np.asarray(batch[keep]) for batch in batches])
    return features, np.concatenate(labels), np.concatenate(outputs), history


def sliced(spec, slices) -> bool:
    """Whether `evaluate.slices` names any slice for this task (auto: classes, text lengths)."""
    if slices != "auto":
        return bool(slices)
    texts = any(feature.column_type.free_text for feature in spec.features or [])
    return spec.task_type.has_classes or texts


def slice_results(spec, split: tuple, slices, minimum: int) -> list[dict]:
    """Each slice's name, test examples, whether it is judged and the task's metrics on it; `split` is
    `read_test_split`'s."""
    from pipeline.ml.evaluation import holdout_metrics

    features, labels, outputs, history = split
    if features is None:
        return []
    results = []
    for name, mask in slice_masks(spec, features, labels, slices).items():
        count = int(mask.sum())
        entry = {"slice": name, "examples": count, "judged": count >= minimum, "metrics": {}}
        if count:
            part = None if history is None else history[mask]
            metrics = holdout_metrics(spec, labels[mask], outputs[mask], part)
            entry["metrics"] = {key: value for key, value in metrics.items() if key != "num_examples"}
        results.append(entry)
    return results


def metric_name(slice_name: str, metric: str) -> str:
    """An MLflow metric name for a slice's metric (letters, digits, `_`, `-`, `.`, spaces and `/` only), after the
    test split's own metrics in the UI's alphabetical lists: `island = Biscoe` -> `test_slice/island/Biscoe/accuracy`,
    `bill in [35, 39)` -> `test_slice/bill in 35 to 39/accuracy`."""
    name = slice_name.replace(" = ", "/").replace(", ", " to ")
    return f"test_slice/{re.sub(r'[^0-9A-Za-z_. /-]+', '', name).strip()}/{metric}"


def judge(candidate: list[dict], champion: list[dict] | None, metric: str, thresholds: dict, max_drop) -> list[str]:
    """The gate's per-slice failures, one reason each: a judged slice under `thresholds`, or (with a champion and
    `max_drop`) more than `max_drop` worse on `metric` than the champion on the same slice."""
    from pipeline.core.metrics import higher_is_better

    failures = []
    theirs = {entry["slice"]: entry for entry in champion or []}
    for entry in candidate:
        if not entry["judged"]:
            continue
        for name, bar in thresholds.items():
            value = entry["metrics"].get(name)
            if value is None:
                continue
            higher = higher_is_better(name)
            if not (value >= bar if higher else value <= bar):
                failures.append(
                    f"slice {entry['slice']} ({entry['examples']} examples): {name} {value:.4f}"
                    f" {'<' if higher else '>'} {bar}: FAILS"
                )
        other = theirs.get(entry["slice"])
        if max_drop is None or other is None or metric not in entry["metrics"] or metric not in other["metrics"]:
            continue
        mine, before = entry["metrics"][metric], other["metrics"][metric]
        loss = (before - mine) * (1 if higher_is_better(metric) else -1)
        if loss > max_drop + 1e-12:
            failures.append(
                f"slice {entry['slice']} ({entry['examples']} examples): {metric} {mine:.4f} vs champion"
                f" {before:.4f} (worse by {loss:.4f}, at most {max_drop} allowed): FAILS"
            )
    return failures
