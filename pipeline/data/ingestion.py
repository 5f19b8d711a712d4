"""Stage 1, `ingest`: bring the configured data source into the project, as it is.

Output (`paths.ingested`):
- `source.json`: source, kind (table or image), task, label column, format, fingerprint;
- tables: `source.csv` / `source.parquet`, a byte-for-byte snapshot of the file (the built-in
  penguins are written there from the `palmerpenguins` package);
- images: `manifest.parquet` listing every file under the class folders (path, label); the
  built-in digits are first written as PNG class folders under `images/`.

Nothing is parsed or decoded here: the `validate` stage reads the data and judges it, so a
file that cannot be read stops the pipeline at validation, with the reason.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pandas as pd

from pipeline.core.config import BUILTIN_SOURCES, Config, DataConfig
from pipeline.core.outputs import replace_directory, scratch_directory
from pipeline.core.runner import StageResult
from pipeline.data import engine, sources, storage
from pipeline.data.engine import Engine

log = logging.getLogger(__name__)

SOURCE_FILE = "source.json"
MANIFEST_FILE = "manifest.parquet"


FEEDBACK_TABLE = "rows"  # <feedback>/<batch>/rows.csv or rows.parquet


def feedback_batches(feedback_dir: Path | None) -> list[Path]:
    """The labelled feedback batches added by `pipeline feedback add`, oldest name first.

    Raises:
        DataError: if a batch is tracked by DVC (`<batch>.dvc`) but absent: it was not pulled, and
            training without it would silently drop data.
    """
    if feedback_dir is None or not Path(feedback_dir).is_dir():
        return []
    feedback_dir = Path(feedback_dir)
    missing = sorted(
        pointer.with_suffix("").name for pointer in feedback_dir.glob("*.dvc") if not pointer.with_suffix("").exists()
    )
    if missing:
        raise sources.DataError(
            f"{feedback_dir}: feedback batches {missing} are tracked by DVC but not here; run `dvc pull` first."
        )
    return sorted(child for child in feedback_dir.iterdir() if child.is_dir() and not child.name.startswith("."))


def feedback_table(batch: Path) -> Path:
    files = sorted(batch.glob(f"{FEEDBACK_TABLE}.*"))
    if not files:
        raise sources.DataError(f"{batch}: a feedback batch of a table holds {FEEDBACK_TABLE}.csv or .parquet.")
    return files[0]


def ingest(
    data: DataConfig,
    output_dir: Path,
    final_dir: Path | None = None,
    feedback_dir: Path | None = None,
    runner: Engine | None = None,
) -> dict:
    """Snapshots the configured source into `output_dir`; returns the `source.json` description.

    `final_dir` is where `output_dir` will be moved once complete: manifest paths of images
    written inside it (the built-in digits) are recorded at their final place. The batches
    under `feedback_dir` (labelled production data) are appended to the source. The images'
    bytes are hashed for the fingerprint on `runner` (default: in this process).
    """
    batches = feedback_batches(feedback_dir)
    final_dir = Path(final_dir or output_dir)
    description = {"source": data.source, "kind": data.kind, "task": data.task_name}
    if data.kind == "image":
        if data.source in ("digits", "digits_noisy"):
            root = sources.write_digits_images(output_dir / "images", noisy=data.source == "digits_noisy")
        else:
            root = data.path if storage.is_address(data.path) else Path(data.path)
        manifest, class_folders = sources.scan_image_dir(root)
        if data.source in BUILTIN_SOURCES:
            manifest["path"] = [str(final_dir / Path(path).relative_to(output_dir)) for path in manifest["path"]]
        extra = [sources.scan_image_dir(batch)[0] for batch in batches]
        manifest = pd.concat([manifest, *extra], ignore_index=True)
        description["fingerprint"] = sources.fingerprint_files(
            [_written(path, output_dir, final_dir) for path in manifest["path"]], manifest["label"].tolist(), runner
        )
        manifest.to_parquet(output_dir / MANIFEST_FILE, index=False)
        description.update(
            label="label", format="images", file=MANIFEST_FILE, class_folders=class_folders, num_files=len(manifest)
        )
    else:
        file_format = "parquet" if data.source == "parquet" else "csv"
        target = output_dir / f"source.{file_format}"
        if data.source == "penguins":
            sources.write_penguins_csv(target)
        elif storage.is_address(data.path):
            storage.copy_to_local(data.path, target)
        else:
            shutil.copyfile(data.path, target)
        if batches:  # the source and every feedback batch, as one Parquet table
            tables = [sources.load_table(target, file_format)]
            for batch in batches:
                rows = feedback_table(batch)
                tables.append(sources.load_table(rows, "parquet" if rows.suffix == ".parquet" else "csv"))
            target.unlink()
            file_format, target = "parquet", output_dir / "source.parquet"
            pd.concat(tables, ignore_index=True).to_parquet(target, index=False)
        description.update(
            label=data.label_column,
            format=file_format,
            file=target.name,
            fingerprint=sources.fingerprint_files([str(target)]),
            dropped_columns=list(data.drop_columns),  # read past by every stage; the snapshot stays as it was
        )
    if batches:
        description["feedback_batches"] = [batch.name for batch in batches]
    (output_dir / SOURCE_FILE).write_text(json.dumps(description, indent=2) + "\n")
    return description


def _written(path: str, output_dir: Path, final_dir: Path) -> str:
    """Where a manifest path's bytes are now (built-in images are still in `output_dir`)."""
    if storage.is_address(path):
        return path
    local = Path(path)
    return str(output_dir / local.relative_to(final_dir)) if local.is_relative_to(final_dir) else path


def load_source(ingested_dir: Path) -> tuple[dict, Path]:
    """(the `source.json` description, the path of the snapshot file) written by `ingest`."""
    ingested_dir = Path(ingested_dir)
    description_path = ingested_dir / SOURCE_FILE
    if not description_path.is_file():
        raise sources.DataError(f"{description_path}: missing; run the ingest stage first (dvc repro ingest).")
    description = json.loads(description_path.read_text())
    return description, ingested_dir / description["file"]


def read_ingested(description: dict, path: Path) -> pd.DataFrame:
    """The ingested table (parsed, without `data.drop_columns`), or the image manifest (path, label)."""
    if description["kind"] == "image":
        return pd.read_parquet(path)
    table = sources.load_table(path, description["format"])
    return sources.drop_columns(table, description.get("dropped_columns", []))


def snapshot(config: Config) -> StageResult:
    """The ingest stage's work: `data` (and any feedback batches) copied into `paths.ingested`."""
    target = Path(config.paths.ingested)
    target.parent.mkdir(parents=True, exist_ok=True)
    with scratch_directory(target.parent, target.name) as scratch:
        staging = Path(scratch) / "out"
        staging.mkdir()
        description = ingest(config.data, staging, target, Path(config.paths.feedback), engine.from_config(config))
        replace_directory(staging, target)
    if description["kind"] == "image":
        what = f"{description['num_files']} files in {len(description['class_folders'])} class folders"
    else:
        what = f"{description['format']} file"
    if description.get("feedback_batches"):
        what += f", with {len(description['feedback_batches'])} feedback batch(es)"
    return StageResult(summary=f"snapshot of {config.data.source} ({what}) -> {target}")
