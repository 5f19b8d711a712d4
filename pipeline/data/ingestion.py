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
from pathlib import Path

import pandas as pd

from pipeline.core.config import Config, DataConfig
from pipeline.core.outputs import staged_directory
from pipeline.core.runner import StageResult
from pipeline.data import engine, sources
from pipeline.data.engine import Engine
from pipeline.data.modalities import data_modality

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
    description.update(data_modality(data.kind).ingest(data, output_dir, final_dir, batches, runner))
    if batches:
        description["feedback_batches"] = [batch.name for batch in batches]
    (output_dir / SOURCE_FILE).write_text(json.dumps(description, indent=2) + "\n")
    return description


def load_source(ingested_dir: Path) -> tuple[dict, Path]:
    """(the `source.json` description, the path of the snapshot file) written by `ingest`."""
    ingested_dir = Path(ingested_dir)
    description_path = ingested_dir / SOURCE_FILE
    if not description_path.is_file():
        raise sources.DataError(f"{description_path}: missing; run the ingest stage first (dvc repro ingest).")
    description = json.loads(description_path.read_text())
    return description, ingested_dir / description["file"]


def read_ingested(description: dict, path: Path) -> pd.DataFrame:
    """The ingested data in a frame: a table (parsed, without `data.drop_columns`), or an image manifest."""
    return data_modality(description["kind"]).read_ingested(description, path)


def snapshot(config: Config) -> StageResult:
    """The ingest stage's work: `data` (and any feedback batches) copied into `paths.ingested`."""
    target = Path(config.paths.ingested)
    with staged_directory(target) as staging:
        description = ingest(config.data, staging, target, Path(config.paths.feedback), engine.from_config(config))
    what = data_modality(description["kind"]).ingest_summary(description)
    if description.get("feedback_batches"):
        what += f", with {len(description['feedback_batches'])} feedback batch(es)"
    return StageResult(summary=f"snapshot of {config.data.source} ({what}) -> {target}")
