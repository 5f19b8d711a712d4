"""Expectation suites as reviewable YAML files, turned into Great Expectations 1.x suites.

A suite file lists expectations by their Great Expectations names and arguments, each with a
`severity`: `error` stops the pipeline, `warning` is reported and the run goes on.

```yaml
kind: table            # table | image (an image suite judges the manifest built from the folder)
label: species
expectations:
  - expectation: expect_column_values_to_be_in_set
    column: island
    value_set: [Biscoe, Dream, Torgersen]
    severity: error
```

`profile_table` / `profile_images` derive a starting suite from a trusted dataset (as TFX's
SchemaGen does) for a person to review and commit.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from pipeline.core.column_types import type_of
from pipeline.core.config import ConfigError
from pipeline.core.errors import MissingSuiteError
from pipeline.core.kinds import KINDS
from pipeline.core.tasks import task

SEVERITIES = ("error", "warning")
NUMERIC_TYPES = ["int8", "int16", "int32", "int64", "float32", "float64", "Int64", "Float64"]
IMAGE_COLUMNS = ["label", "extension", "file_size", "decodable", "width", "height", "channels", "content_hash"]
# Keys of a suite entry that are not arguments of the Great Expectations class.
META_KEYS = ("expectation", "severity")


@dataclasses.dataclass
class Suite:
    """An expectation suite read from (or written to) a YAML file."""

    kind: str
    label: str
    expectations: list[dict[str, Any]]
    classes: list[str] | None = None

    def find(self, expectation: str, column: str | None = None) -> list[dict[str, Any]]:
        return [
            item
            for item in self.expectations
            if item["expectation"] == expectation and (column is None or item.get("column") == column)
        ]


def _class_name(expectation: str) -> str:
    """`expect_column_values_to_be_between` -> `ExpectColumnValuesToBeBetween` (GX's class names)."""
    special = {"kl": "KL"}
    return "".join(special.get(part, part.capitalize()) for part in expectation.split("_"))


def load_suite(path: Path) -> Suite:
    """Reads and checks a suite file.

    Raises:
        ConfigError: if the file is missing or malformed, naming the entry at fault.
    """
    import great_expectations as gx

    path = Path(path)
    if not path.is_file():
        raise MissingSuiteError(
            f"{path}: no expectation suite. Derive one from data you trust with `pipeline validate --profile`,"
            " review it, commit it, and point validate.suite at it."
        )
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from error
    if raw.get("kind") not in KINDS or not isinstance(raw.get("expectations"), list):
        raise ConfigError(f"{path}: expected `kind: {'|'.join(KINDS)}`, `label:` and a list of `expectations:`.")
    for position, item in enumerate(raw["expectations"], start=1):
        name = item.get("expectation") if isinstance(item, dict) else None
        if not name or not hasattr(gx.expectations, _class_name(name)):
            raise ConfigError(f"{path}: expectation #{position} ({name!r}) is not a Great Expectations expectation.")
        item.setdefault("severity", "error")
        if item["severity"] not in SEVERITIES:
            raise ConfigError(
                f"{path}: expectation #{position} ({name}) has severity {item['severity']!r};"
                " expected error or warning."
            )
    return Suite(
        kind=raw["kind"], label=raw.get("label", "label"), expectations=raw["expectations"], classes=raw.get("classes")
    )


class _ReviewDumper(yaml.SafeDumper):
    """YAML for people: no anchors/aliases, lists of plain values on one line."""

    def ignore_aliases(self, data):
        return True


def _represent_list(dumper: yaml.SafeDumper, items: list):
    flow = all(isinstance(item, (str, int, float, bool)) for item in items)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", items, flow_style=flow)


_ReviewDumper.add_representer(list, _represent_list)


def save_suite(suite: Suite, path: Path, header: str) -> Path:
    from pipeline.core.outputs import write_text_atomic

    body = {"kind": suite.kind, "label": suite.label}
    if suite.classes is not None:
        body["classes"] = suite.classes
    body["expectations"] = suite.expectations
    comment = "".join(f"# {line}\n" for line in header.splitlines())
    text = yaml.dump(body, Dumper=_ReviewDumper, sort_keys=False, allow_unicode=True, width=110)
    return write_text_atomic(path, comment + text)


def without_columns(suite: Suite, columns: list[str]) -> Suite:
    """The suite with nothing to say about `columns` (`data.drop_columns`): their own expectations go,
    and they leave the column sets and lists of the others, so a suite profiled before a column was
    dropped still judges the rest."""
    if not columns:
        return suite
    dropped, kept = set(columns), []
    for item in suite.expectations:
        if item.get("column") in dropped:
            continue
        item = dict(item)
        for key in ("column_set", "column_list"):
            if key in item:
                item[key] = [column for column in item[key] if column not in dropped]
        kept.append(item)
    return dataclasses.replace(suite, expectations=kept)


def to_gx_suite(suite: Suite, name: str, extra_columns: str = "error"):
    """The Great Expectations `ExpectationSuite` for `suite`.

    `extra_columns` (from params.yaml) sets the severity of `expect_table_columns_to_match_set`
    (columns the suite does not list), or drops it (`ignore`).
    """
    import great_expectations as gx

    gx_suite = gx.ExpectationSuite(name=name)
    for item in suite.expectations:
        severity = item["severity"]
        if item["expectation"] == "expect_table_columns_to_match_set":
            if extra_columns == "ignore":
                continue
            severity = extra_columns
        arguments = {key: value for key, value in item.items() if key not in META_KEYS}
        if "partition_object" in arguments:
            # Weights in a reviewed file are rounded; GX wants them to sum to 1 within 1e-5.
            weights = [float(weight) for weight in arguments["partition_object"]["weights"]]
            total = sum(weights) or 1.0
            arguments["partition_object"] = {
                **arguments["partition_object"],
                "weights": [weight / total for weight in weights],
            }
        expectation_class = getattr(gx.expectations, _class_name(item["expectation"]))
        gx_suite.add_expectation(
            expectation_class(
                **arguments, severity="critical" if severity == "error" else "warning", meta={"severity": severity}
            )
        )
    return gx_suite


def _bounds(values: pd.Series, margin: float) -> tuple[float, float]:
    """Observed [min, max] widened by `margin` of the span on each side (rounded outwards)."""
    low, high = float(values.min()), float(values.max())
    span = (high - low) or abs(high) or 1.0
    low, high = low - margin * span, high + margin * span
    if float(values.min()) >= 0:
        low = max(low, 0.0)
    digits = max(0, 2 - int(math.floor(math.log10(span))))
    return math.floor(low * 10**digits) / 10**digits, math.ceil(high * 10**digits) / 10**digits


def _native(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def _label_values(labels: pd.Series) -> list:
    """The distinct labels as they appear in the data (ints stay ints), sorted."""
    return sorted((_native(value) for value in labels.dropna().unique()), key=lambda value: (str(type(value)), value))


def _class_balance(labels: pd.Series, classes: list, threshold: float, severity: str) -> dict:
    weights = labels.value_counts(normalize=True).reindex(classes, fill_value=0.0)
    return {
        "expectation": "expect_column_kl_divergence_to_be_less_than",
        "column": labels.name,
        "partition_object": {"values": classes, "weights": [round(float(w), 4) for w in weights]},
        "threshold": threshold,
        "severity": severity,
        "notes": "class balance: the label distribution may not drift far from the trusted data's",
    }


def _row_count(count: int) -> dict:
    return {
        "expectation": "expect_table_row_count_to_be_between",
        "min_value": max(10, count // 10),
        "max_value": count * 100,
        "severity": "error",
    }


def profile_table(
    table: pd.DataFrame, label: str, task_name: str, margin: float = 0.1, text_columns=(), kind: str = "table"
) -> Suite:
    """A starting suite for a trusted table: columns, types, ranges, categories, nulls, labels, size. Free-text
    columns (`text_columns`) get text checks instead of a set of categories (`text_expectations`)."""
    columns = [str(column) for column in table.columns]
    expectations: list[dict[str, Any]] = [
        {
            "expectation": "expect_table_columns_to_match_set",
            "column_set": columns,
            "exact_match": True,
            "severity": "error",
            "notes": "validate.extra_columns in params.yaml sets this one's severity",
        },
        _row_count(len(table)),
    ]
    for column in columns:
        values = table[column]
        expectations.append({"expectation": "expect_column_to_exist", "column": column, "severity": "error"})
        null_fraction = float(values.isna().mean())
        allowed_nulls = 0.0 if column == label else round(min(1.0, null_fraction + 0.05), 3)
        expectations.append(
            {
                "expectation": "expect_column_values_to_not_be_null",
                "column": column,
                "mostly": round(1.0 - allowed_nulls, 3),
                "severity": "error",
            }
        )
        numeric = type_of(values.dtype).numbers
        if column == label and task(task_name).has_classes:
            expectations.append(
                {
                    "expectation": "expect_column_values_to_be_in_set",
                    "column": column,
                    "value_set": _label_values(values),
                    "severity": "error",
                    "notes": "no unknown label",
                }
            )
        elif numeric:
            expectations.append(
                {
                    "expectation": "expect_column_values_to_be_in_type_list",
                    "column": column,
                    "type_list": NUMERIC_TYPES,
                    "severity": "error",
                }
            )
            if values.notna().any():
                low, high = _bounds(values.dropna(), margin)
                expectations.append(
                    {
                        "expectation": "expect_column_values_to_be_between",
                        "column": column,
                        "min_value": low,
                        "max_value": high,
                        "severity": "error",
                    }
                )
        else:
            expectations.append(
                {
                    "expectation": "expect_column_values_to_be_of_type",
                    "column": column,
                    "type_": "str",
                    "severity": "error",
                }
            )
            if column in text_columns:
                expectations += text_expectations(column, values)
            elif column != label:
                categories = sorted(str(value) for value in values.dropna().unique())
                expectations.append(
                    {
                        "expectation": "expect_column_values_to_be_in_set",
                        "column": column,
                        "value_set": categories,
                        "severity": "error",
                    }
                )
    classes = None
    if task(task_name).has_classes:
        values = _label_values(table[label])
        classes = [str(value) for value in values]
        expectations.append(
            {
                "expectation": "expect_column_distinct_values_to_contain_set",
                "column": label,
                "value_set": values,
                "severity": "error",
                "notes": "every class has examples",
            }
        )
        expectations.append(_class_balance(table[label].dropna(), values, threshold=0.2, severity="error"))
    expectations.append(
        {
            "expectation": "expect_compound_columns_to_be_unique",
            "column_list": columns,
            "severity": "warning",
            "notes": "duplicate rows are reported, not fatal",
        }
    )
    return Suite(kind=kind, label=label, expectations=expectations, classes=classes)


def profile_series(table: pd.DataFrame, label: str, time_column: str, id_column: str | None) -> Suite:
    """A starting suite for a trusted time series: the table's checks on the value (and id) columns, with bounds
    widened by half the observed span (a series moves on), and on the time column: present on every row, no time
    twice (in a series), and, for a single series, strictly increasing down the file."""
    values = table.drop(columns=[time_column])
    suite = profile_table(values, label, "forecast", margin=0.5, kind="series")
    for item in suite.find("expect_column_values_to_not_be_null", label):  # missing steps are interpolated or dropped
        item["mostly"] = round(max(0.0, float(table[label].notna().mean()) - 0.05), 3)
    suite.expectations[0]["column_set"] = [str(column) for column in table.columns]
    suite.expectations = [
        item for item in suite.expectations if item["expectation"] != "expect_compound_columns_to_be_unique"
    ]
    suite.expectations += [
        {"expectation": "expect_column_to_exist", "column": time_column, "severity": "error"},
        {"expectation": "expect_column_values_to_not_be_null", "column": time_column, "severity": "error"},
    ]
    if id_column is None:
        suite.expectations.append(
            {
                "expectation": "expect_column_values_to_be_increasing",
                "column": time_column,
                "strictly": True,
                "severity": "error",
                "notes": "one row per step, oldest first: a repeated or earlier time is an error",
            }
        )
    else:
        suite.expectations.append(
            {
                "expectation": "expect_compound_columns_to_be_unique",
                "column_list": [id_column, time_column],
                "severity": "error",
                "notes": "one row per step of each series",
            }
        )
    return suite


BLANK = r"^\s*$"


def text_expectations(column: str, values: pd.Series) -> list[dict[str, Any]]:
    """A free-text column: no blank text, lengths within what the trusted data has (a text up to four times the
    longest seen passes; requests are held to the same bound), and repeated texts reported (a text in two splits
    is a leak between them)."""
    lengths = values.dropna().astype(str).str.len()
    longest = int(lengths.max()) if len(lengths) else 1
    return [
        {
            "expectation": "expect_column_values_to_not_match_regex",
            "column": column,
            "regex": BLANK,
            "severity": "error",
            "notes": "no empty or whitespace-only text",
        },
        {
            "expectation": "expect_column_value_lengths_to_be_between",
            "column": column,
            "min_value": 1,
            "max_value": 4 * longest,
            "severity": "error",
            "notes": f"characters; the longest trusted text has {longest}",
        },
        {
            "expectation": "expect_column_values_to_be_unique",
            "column": column,
            "mostly": 0.99,
            "severity": "warning",
            "notes": "repeated texts can land in two splits (a leak): remove duplicates",
        },
    ]


def profile_images(manifest: pd.DataFrame) -> Suite:
    """A starting suite for a trusted image folder, judged through its manifest (see validate.py)."""
    decoded = manifest[manifest["decodable"]]
    classes = sorted(manifest["label"].unique().tolist())
    expectations: list[dict[str, Any]] = [
        _row_count(len(manifest)),
        {
            "expectation": "expect_column_values_to_be_in_set",
            "column": "extension",
            "value_set": sorted(manifest["extension"].unique().tolist()),
            "severity": "error",
            "notes": "files that are not images",
        },
        {
            "expectation": "expect_column_values_to_be_between",
            "column": "file_size",
            "min_value": 1,
            "severity": "error",
            "notes": "zero-byte files",
        },
        {
            "expectation": "expect_column_values_to_be_in_set",
            "column": "decodable",
            "value_set": [True],
            "severity": "error",
            "notes": "every file decodes as an image",
        },
    ]
    for column in ("width", "height"):
        expectations.append(
            {
                "expectation": "expect_column_values_to_be_between",
                "column": column,
                "min_value": int(decoded[column].min()),
                "max_value": int(decoded[column].max()),
                "severity": "error",
            }
        )
    expectations += [
        {
            "expectation": "expect_column_values_to_be_in_set",
            "column": "channels",
            "value_set": sorted(int(value) for value in decoded["channels"].unique()),
            "severity": "error",
        },
        {
            "expectation": "expect_column_values_to_be_in_set",
            "column": "label",
            "value_set": classes,
            "severity": "error",
            "notes": "no unknown class",
        },
        {
            "expectation": "expect_column_distinct_values_to_contain_set",
            "column": "label",
            "value_set": classes,
            "severity": "error",
            "notes": "no empty class",
        },
        _class_balance(manifest["label"], classes, threshold=0.2, severity="error"),
        {
            "expectation": "expect_column_values_to_be_unique",
            "column": "content_hash",
            "severity": "warning",
            "notes": "duplicate files are reported, not fatal",
        },
    ]
    return Suite(kind="image", label="label", expectations=expectations, classes=classes)


def profile_header(source: str) -> str:
    today = datetime.date.today().isoformat()
    return (
        f"Expectation suite derived by `pipeline validate --profile` from {source} on {today}.\n"
        "Review every bound before committing: it describes what data the pipeline may train on.\n"
        "severity: error stops the pipeline; warning is reported and the run goes on."
    )


def image_example_schema(suite: Suite) -> dict:
    """What a single image must look like (its shape and channels): `DataModality.example_schema`.

    Saved with the exported model so that a serving API can reject requests the model was
    never trained on.
    """
    shape = {}
    for column in ("width", "height"):
        (bounds,) = suite.find("expect_column_values_to_be_between", column) or [{}]
        shape[column] = [bounds.get("min_value"), bounds.get("max_value")]
    (channels,) = suite.find("expect_column_values_to_be_in_set", "channels") or [{"value_set": None}]
    return {"kind": "image", **shape, "channels": channels["value_set"], "classes": suite.classes}


def table_example_schema(suite: Suite) -> dict:
    """What a single row must look like (columns, types, ranges, categories): `DataModality.example_schema`."""
    columns = {}
    for item in suite.expectations:
        column = item.get("column")
        if column is None or column == suite.label:
            continue
        entry = columns.setdefault(column, {})
        if item["expectation"] == "expect_column_values_to_be_in_type_list":
            entry["type"] = "numeric"
        elif item["expectation"] == "expect_column_values_to_be_of_type":
            entry["type"] = "string"
        elif item["expectation"] == "expect_column_values_to_be_between":
            entry["range"] = [item.get("min_value"), item.get("max_value")]
        elif item["expectation"] == "expect_column_values_to_be_in_set":
            entry["categories"] = item["value_set"]
        elif item["expectation"] == "expect_column_values_to_not_be_null":
            entry["max_null_fraction"] = round(1.0 - item.get("mostly", 1.0), 6)
        elif item["expectation"] == "expect_column_value_lengths_to_be_between":
            entry["max_length"] = item.get("max_value")
    return {"kind": suite.kind, "label": suite.label, "columns": columns, "classes": suite.classes}
