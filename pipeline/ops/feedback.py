"""`pipeline feedback add PATH`: newly labelled production data becomes training data.

The batch (an image folder with one sub-folder per class, or a CSV/Parquet file with the label
column) is validated with the data's expectation suite, per example (the whole-table checks such
as row counts and class balance are left to the next `validate` stage, which judges the source and
every batch together). A batch that passes is copied to `<paths.feedback>/<name>/` and, inside a
DVC repository, tracked with `dvc add`: a new data version (`<name>.dvc` for git, the files for
`dvc push`). The `ingest` stage appends every batch, so the next `dvc repro` retrains on it.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from pipeline.core.config import Config, DataConfig
from pipeline.core.outputs import staged_directory, write_json_atomic
from pipeline.core.processes import tool
from pipeline.core.runner import StageError, StageResult, run_stage
from pipeline.data.modalities import data_modality
from pipeline.data.sources import DataError

log = logging.getLogger(__name__)


def batch_data(config: Config, path: Path) -> DataConfig:
    """The batch described as a data source of the same kind as the training data."""
    return data_modality(config.data.kind).feedback_data(config.data, path)


def validate_batch(config: Config, path: Path, reports: Path) -> dict:
    """Runs the per-example expectations of the data's suite on the batch; raises StageError on errors."""
    from pipeline.data import expectations
    from pipeline.data.ingestion import ingest
    from pipeline.data.validation import failure_message, run_suite, split_suite, suite_path, validation_frame

    data = batch_data(config, path)
    suite = expectations.without_columns(expectations.load_suite(suite_path(config)), config.data.drop_columns)
    per_example, _ = split_suite(suite)
    with tempfile.TemporaryDirectory() as scratch:
        description = ingest(data, Path(scratch))
        frame = validation_frame(description, Path(scratch) / description["file"])
        label = description["label"]
        if label not in frame.columns or frame[label].isna().any():
            raise DataError(f"{path}: every feedback example needs its label ({label}); unlabelled rows found.")
        summary = run_suite(frame, per_example, config.validate.extra_columns, config.validate.max_examples)
    summary["suite"] = f"{suite_path(config)} (per-example expectations)"
    summary_path = write_json_atomic(reports / "summary.json", summary)
    if not summary["success"]:
        raise StageError("feedback rejected, nothing added: " + failure_message(summary, summary_path, reports))
    return summary


def copy_batch(config: Config, path: Path, target: Path) -> None:
    """Copies the batch to `target` (atomically)."""
    with staged_directory(target) as staging:
        data_modality(config.data.kind).copy_feedback(path, staging)


def track_with_dvc(target: Path) -> bool:
    """`dvc add` the batch when the project is a DVC repository; True if it did."""
    if not Path(".dvc").is_dir():
        log.warning("not a DVC repository: %s is added but not versioned", target)
        return False
    completed = subprocess.run([tool("dvc"), "add", "--quiet", str(target)], capture_output=True, text=True)
    if completed.returncode != 0:
        shutil.rmtree(target, ignore_errors=True)
        raise StageError(f"dvc add {target} failed, the batch was removed again: {completed.stderr.strip()}")
    return True


def add(config: Config, path: Path, name: str | None = None) -> dict:
    name = name or time.strftime("feedback-%Y%m%dT%H%M%SZ", time.gmtime())
    if not name.replace("-", "").replace("_", "").isalnum():
        raise StageError(f"batch name {name!r}: use letters, digits, '-' and '_'.")
    target = Path(config.paths.feedback) / name
    if target.exists() or target.with_suffix(".dvc").exists():
        raise StageError(f"{target} exists already; pick another --name.")
    reports = Path(config.paths.reports) / "feedback" / name
    summary = validate_batch(config, Path(path), reports)
    copy_batch(config, Path(path), target)
    tracked = track_with_dvc(target)
    return {"batch": name, "path": str(target), "examples": summary["rows"], "dvc": tracked}


def command(params_file: str, path: str, name: str | None) -> int:
    def body(config: Config) -> StageResult:
        added = add(config, Path(path), name)
        follow_up = (
            f"; now `git add {added['path']}.dvc {Path(added['path']).parent / '.gitignore'} && git commit`,"
            " `dvc push`, and `dvc repro` retrains with it"
            if added["dvc"]
            else "; `dvc repro` retrains with it"
        )
        return StageResult(summary=f"{added['examples']} labelled examples validated -> {added['path']}{follow_up}")

    run_stage("feedback", params_file, body, track=False)
    return 0
