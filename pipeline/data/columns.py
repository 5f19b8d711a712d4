"""Model input names for a table's columns: whatever a CSV or Parquet header holds (keywords, spaces,
dots, slashes, brackets, unicode, leading digits) becomes a valid, stable SavedModel signature key.

The user's own column names stay the names everyone sees: requests, `pipeline predict`, the MLflow
model and the monitor read and report columns by their original names; only the signature uses keys.
"""

from __future__ import annotations

import hashlib
import keyword
import re
import unicodedata
import warnings

import pandas as pd

from pipeline.core.errors import DataError

# The model's own layers with fixed names (pipeline/ml/models.py and pipeline/ml/modalities): an input named the
# same cannot be built ("The name ... is used 2 times in the model"; a table column named `features` failed). A key
# named so ends with _ (as a keyword's does).
MODEL_LAYER_NAMES = frozenset(
    {
        "augmentation", "autoregression", "base_changes", "base_target_last",
        "base_target_steps", "base_window", "bidirectional_gru", "bidirectional_lstm", "features", "flatten",
        "forecast", "gru", "lookback", "lstm", "naive_forecast", "normalize", "other_features", "pool",
        "position_embedding", "predictions", "rows_as_sequence", "target_last_value", "target_steps",
        "target_units", "token_projection", "window", "words",
    }
)  # fmt: skip
# ...and the names of the layers built per input or per position (`normalize_<key>`, `hidden_<n>_dense`; Keras'
# own `not_equal` for a text mask): a key named so starts with f_ (a column `x_` and a column `normalize_x` would
# otherwise meet at `normalize_x_`). `tests/code/test_models.py` builds every family and checks no layer is
# named as a key can be.
MODEL_LAYER_PATTERN = re.compile(
    r"(?:impute|normalize|lookup|terms|words|embed|window|autoregression)_.+"
    r"|(?:hidden|conv|block|step)_[0-9]+(?:_.*)?|not_equal(?:_[0-9]+)?"
)
RESERVED = {"label", "self", *MODEL_LAYER_NAMES}  # the label's own key; `self` cannot be a signature argument


def input_name(column: str) -> str:
    """A key for `column`: ASCII lower case, [a-z0-9_], not starting with a digit, not a Python keyword, not the
    name of one of the model's own layers."""
    text = unicodedata.normalize("NFKD", str(column)).encode("ascii", "ignore").decode()
    name = re.sub(r"[^0-9a-z_]+", "_", text.strip().lower()).strip("_")
    if not name:  # nothing ASCII in it ("λ", "数量", "   "): a key derived from the name itself, stable
        name = f"column_{hashlib.sha256(str(column).encode()).hexdigest()[:8]}"
    if name[0].isdigit() or MODEL_LAYER_PATTERN.fullmatch(name):
        name = f"f_{name}"
    if keyword.iskeyword(name) or keyword.issoftkeyword(name) or name in RESERVED:
        name = f"{name}_"
    return name


def input_names(columns: list) -> dict[str, str]:
    """{column: key} for every column; two columns that would share a key are an error naming both."""
    names: dict[str, str] = {}
    owners: dict[str, str] = {}
    for column in columns:
        name = input_name(column)
        if name in owners:
            raise DataError(
                f"columns {owners[name]!r} and {column!r} would both become the model input {name!r};"
                " rename one of them in the data (or drop it), then run the pipeline again."
            )
        names[str(column)], owners[name] = name, str(column)
    return names


def suspicious_columns(table: pd.DataFrame, label: str, min_values: int = 20) -> dict[str, str]:
    """{column: why} for columns a model learns nothing lasting from, which a profile should point out:
    dates and times (every future value is new), identifiers (every value differs) and text with more
    distinct values than categories usually have. Judged on columns with at least `min_values` values."""
    found = {}
    for column in table.columns:
        values = table[column].dropna()
        if column == label or len(values) < min_values:
            continue
        text = pd.api.types.is_string_dtype(values) or values.dtype == object
        distinct = values.nunique()
        if text and _mostly_dates(values):
            found[str(column)] = "holds dates or times"
        elif text and (words := _median_words(values)) >= FREE_TEXT_WORDS:
            found[str(column)] = f"{FREE_TEXT} (a median of {words:g} words a value)"
        elif distinct == len(values) and (text or _dense_integers(values) or IDENTIFIER.search(str(column))):
            found[str(column)] = f"looks like an identifier (all {len(values)} values differ)"
        elif text and distinct > max(50, len(values) // 2):
            found[str(column)] = f"has {distinct} distinct texts in {len(values)} rows (free text or an identifier?)"
    return found


FREE_TEXT = "reads like free text"
FREE_TEXT_WORDS = 4  # a median of this many words or more: sentences, not category names


def _median_words(values: pd.Series, sample: int = 500) -> float:
    head = values.head(sample).astype(str)
    return float(head.str.split().str.len().median())


IDENTIFIER = re.compile(r"(^|[^a-z])(id|uuid|guid|key)$", re.IGNORECASE)


def _dense_integers(values: pd.Series) -> bool:
    """Whole numbers filling most of their range (1, 2, 3, ...): row numbers, not measurements."""
    if not pd.api.types.is_integer_dtype(values):
        return False
    return bool(values.max() - values.min() + 1 <= 2 * len(values))


def _mostly_dates(values: pd.Series, sample: int = 200) -> bool:
    """At least 90 % of (a sample of) the texts parse as dates or times, and they are not plain numbers."""
    texts = values.astype(str).head(sample)
    if pd.to_numeric(texts, errors="coerce").notna().mean() > 0.5:
        return False
    with warnings.catch_warnings():  # "could not infer format": expected for mixed formats
        warnings.simplefilter("ignore")
        parsed = pd.to_datetime(texts, errors="coerce", format="mixed")
    return bool(parsed.notna().mean() >= 0.9)
