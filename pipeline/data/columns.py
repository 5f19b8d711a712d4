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

from pipeline.core.errors import DataError

RESERVED = {"label", "self"}  # the label's own key; `self` cannot be a signature argument


def input_name(column: str) -> str:
    """A key for `column`: ASCII lower case, [a-z0-9_], not starting with a digit, not a Python keyword."""
    text = unicodedata.normalize("NFKD", str(column)).encode("ascii", "ignore").decode()
    name = re.sub(r"[^0-9a-z_]+", "_", text.strip().lower()).strip("_")
    if not name:  # nothing ASCII in it ("λ", "数量", "   "): a key derived from the name itself, stable
        name = f"column_{hashlib.sha256(str(column).encode()).hexdigest()[:8]}"
    if name[0].isdigit():
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
