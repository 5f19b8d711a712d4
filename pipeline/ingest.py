"""Stage 1a, `ingest`: bring the configured data source into one canonical form.

Output (`paths.ingested`):
- `dataset.json`: source, kind (table or image), task, label column, classes, row count, fingerprint;
- `table.parquet` for table sources, or `manifest.parquet` (path, label) for image sources;
- `images/` (digits only) and `source.csv` (penguins only): the built-in data written as a user's would be.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import pandas as pd

from pipeline import datasets
from pipeline.config import Config, DataConfig
from pipeline.files import replace_directory
from pipeline.runtime import StageResult, run_stage

log = logging.getLogger(__name__)

DATASET_FILE = "dataset.json"
TABLE_FILE = "table.parquet"
MANIFEST_FILE = "manifest.parquet"


def materialise_builtin(data: DataConfig, output_dir: Path) -> Path:
    """Writes a built-in dataset under `output_dir` as user data; returns the path to read it from."""
    if data.source == "digits":
        return datasets.write_digits_images(output_dir / "images")
    if data.source == "penguins":
        return datasets.write_penguins_csv(output_dir / "source.csv")
    raise ValueError(f"{data.source!r} is not a built-in source")


def read_source(data: DataConfig, path: Path) -> pd.DataFrame:
    """Reads `path` with the loader for `data.source`: a table, or an image manifest."""
    if data.kind == "image":
        return datasets.scan_image_dir(path)
    file_format = "parquet" if data.source == "parquet" else "csv"
    table = datasets.load_table(path, file_format)
    if data.label_column not in table.columns:
        raise datasets.DataError(
            f"{path}: no label column {data.label_column!r} (columns: {', '.join(map(str, table.columns))});"
            " set data.label to the target column."
        )
    return table


def describe_dataset(data: DataConfig, table: pd.DataFrame) -> dict:
    """The metadata every later stage reads: kind, task, label, classes and a content fingerprint."""
    label_column = "label" if data.kind == "image" else data.label_column
    labels = table[label_column].dropna()
    description = {
        "source": data.source,
        "kind": data.kind,
        "task": data.task_name,
        "label": label_column,
        "num_examples": len(table),
        "columns": [str(column) for column in table.columns],
    }
    if data.task_name == "classification":
        description["classes"] = sorted(str(value) for value in labels.unique())
    if data.kind == "image":
        description["fingerprint"] = datasets.fingerprint_files(table["path"].tolist())
    else:
        description["fingerprint"] = datasets.fingerprint_table(table)
    return description


def ingest(data: DataConfig, output_dir: Path) -> dict:
    """Reads the configured source and writes its canonical form into `output_dir` (which must be empty)."""
    path = materialise_builtin(data, output_dir) if data.source in ("digits", "penguins") else Path(data.path)
    table = read_source(data, path)
    if data.kind == "image":
        table.to_parquet(output_dir / MANIFEST_FILE, index=False)
    else:
        table.to_parquet(output_dir / TABLE_FILE, index=False)
    description = describe_dataset(data, table)
    (output_dir / DATASET_FILE).write_text(json.dumps(description, indent=2) + "\n")
    return description


def load_ingested(ingested_dir: Path) -> tuple[dict, pd.DataFrame]:
    """Reads `dataset.json` and the table or manifest written by `ingest`."""
    ingested_dir = Path(ingested_dir)
    description_path = ingested_dir / DATASET_FILE
    if not description_path.is_file():
        raise datasets.DataError(f"{description_path}: missing; run the ingest stage first (dvc repro ingest).")
    description = json.loads(description_path.read_text())
    file_name = MANIFEST_FILE if description["kind"] == "image" else TABLE_FILE
    return description, pd.read_parquet(ingested_dir / file_name)


def _stage(config: Config) -> StageResult:
    target = Path(config.paths.ingested)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}-") as scratch:
        staging = Path(scratch) / "out"
        staging.mkdir()
        description = ingest(config.data, staging)
        if description["kind"] == "image":
            # The manifest names files inside the staging folder; point it at the final place.
            manifest = pd.read_parquet(staging / MANIFEST_FILE)
            manifest["path"] = manifest["path"].str.replace(str(staging), str(target), regex=False)
            manifest.to_parquet(staging / MANIFEST_FILE, index=False)
        replace_directory(staging, target)
    classes = description.get("classes")
    what = f"{description['num_examples']} {'images' if description['kind'] == 'image' else 'rows'}"
    if classes:
        what += f", {len(classes)} classes"
    return StageResult(summary=f"read {config.data.source} ({what}) -> {target}")


def main(params_file: str = "params.yaml") -> None:
    run_stage("ingest", params_file, _stage, track=False)
