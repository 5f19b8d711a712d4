"""Stage 2, `validate`: the data gate. Nothing trains on data that failed validation.

Reads the ingested snapshot (parsing it: an unreadable file stops here, with the reason),
judges it with the expectation suite (Great Expectations 1.x), and writes:
- `reports/validate/summary.json` (a DVC metrics file) and Data Docs HTML under
  `reports/validate/data_docs/`, whether the data passed or not;
- only if no `error` expectation failed: `paths.validated` (the parsed dataset, its
  description and the per-example schema that travels with the exported model).

Images are judged through a manifest built by walking the folder and decoding every file:
path, label, extension, file size, decodable, width, height, channels, content hash.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import itertools
import json
import logging
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core.config import Config
from pipeline.core.errors import StageError
from pipeline.core.kinds import BUILTIN_SOURCES
from pipeline.core.outputs import replace_directory, scratch_directory, staged_directory, write_json_atomic
from pipeline.core.progress import progress
from pipeline.core.runner import StageResult
from pipeline.core.tasks import task
from pipeline.data import engine, expectations, sources, storage
from pipeline.data.columns import FREE_TEXT, suspicious_columns
from pipeline.data.engine import Engine
from pipeline.data.ingestion import load_source
from pipeline.data.modalities import data_modality
from pipeline.data.sources import DataError

log = logging.getLogger(__name__)

DATASET_FILE = "dataset.json"
SCHEMA_FILE = "schema.json"
TABLE_FILE = "table.parquet"
MANIFEST_FILE = "manifest.parquet"
DOCS_DIR = "data_docs"
IMAGES_PER_TASK = 2000  # at most, per task of a data engine (decoding and hashing)
ROWS_PER_GROUP = 65_536  # rows per row group of the validated table: preprocess reads a group per task


def describe_image(path: str, content: bytes) -> dict[str, Any]:
    """One manifest row: size, decodability, shape and content hash of an image file (its bytes: `content`)."""
    from PIL import Image, UnidentifiedImageError

    row: dict[str, Any] = {
        "extension": PurePosixPath(path).suffix.lower(),
        "file_size": len(content),
        "decodable": False,
        "width": np.nan,
        "height": np.nan,
        "channels": np.nan,
        "content_hash": hashlib.sha256(content).hexdigest()[:20],
    }
    try:
        with Image.open(io.BytesIO(content)) as image:
            image.load()
            row.update(decodable=True, width=image.width, height=image.height, channels=len(image.getbands()))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        pass
    return row


def describe_images(paths: list[str]) -> list[dict[str, Any]]:
    """`describe_image` for a slice of the manifest: one task of a data engine."""
    return list(_described(paths))


def _described(paths: list[str]) -> Iterator[dict[str, Any]]:
    contents = storage.map_files(storage.read_bytes, paths)
    return (describe_image(path, content) for path, content in zip(paths, contents, strict=True))


def image_manifest(listing: pd.DataFrame, runner: Engine | None = None) -> pd.DataFrame:
    """The validation frame of an image folder: one row per file, indexed by path. Each file is opened,
    decoded and hashed here, or by `runner`'s workers (slices of the manifest, results in manifest order)."""
    paths = listing["path"].tolist()
    if runner is None or runner.name == "local":
        rows = list(progress(_described(paths), "decoding images", total=len(paths)))
    else:
        size = task_size(len(paths), runner, IMAGES_PER_TASK)
        slices = [paths[start : start + size] for start in range(0, len(paths), size)]
        rows = [row for part in runner.map(describe_images, slices) for row in part]
    manifest = pd.DataFrame(rows, index=pd.Index(listing["path"].tolist(), name="file"))
    manifest.insert(0, "label", listing["label"].to_numpy())
    return manifest[expectations.IMAGE_COLUMNS]


def task_size(items: int, runner: Engine, most: int) -> int:
    """Items per task: about four tasks per worker, so that a slow one does not hold up the rest."""
    workers = runner.workers or os.cpu_count() or 1
    return max(1, min(most, math.ceil(items / (4 * workers))))


def validation_frame(description: dict, path: Path, runner: Engine | None = None) -> pd.DataFrame:
    """The parsed table (indexed by file line number) or the image manifest (indexed by path)."""
    return data_modality(description["kind"]).validation_frame(description, path, runner)


def _plain(value: Any) -> Any:
    """numpy scalars as Python values, so that messages read `1500.0`, not `np.float64(1500.0)`."""
    return value.item() if isinstance(value, np.generic) else value


def _example(entry: Any) -> str:
    if isinstance(entry, dict):
        location = {key: value for key, value in entry.items() if key in ("line", "file")}
        value = {key: value for key, value in entry.items() if key not in ("line", "file")}
        where = ", ".join(f"{key} {value}" for key, value in location.items())
        what = ", ".join(f"{_plain(value)!r}" for value in value.values())
        return f"{what} at {where}" if where else what
    return repr(_plain(entry))


def _non_numeric_examples(frame: pd.DataFrame, column: str, limit: int) -> list[str]:
    """Values of `column` that do not read as numbers, with their line numbers."""
    values = frame[column]
    bad = values[values.notna() & pd.to_numeric(values, errors="coerce").isna()]
    return [f"{value!r} at line {line}" for line, value in bad.head(limit).items()]


def summarise_results(result, frame: pd.DataFrame, max_examples: int) -> dict:
    """The validation summary: counts and, for each failed expectation, what was seen where."""
    checks = []
    for item in result.results:
        configuration = item.expectation_config
        severity = (configuration.meta or {}).get("severity", "error")
        outcome = item.result or {}
        check = {
            "expectation": configuration.type,
            "column": configuration.kwargs.get("column") or configuration.kwargs.get("column_list"),
            "severity": severity,
            "success": bool(item.success),
        }
        if "unexpected_count" in outcome:
            check["unexpected_count"] = int(outcome["unexpected_count"])
            check["unexpected_percent"] = round(float(outcome.get("unexpected_percent") or 0.0), 3)
        if not item.success:
            if item.exception_info and item.exception_info.get("raised_exception"):
                check["error"] = str(item.exception_info.get("exception_message"))
            if "observed_value" in outcome:
                check["observed"] = outcome["observed_value"]
            details = outcome.get("details") or {}
            if "mismatched" in details:
                check["mismatched"] = details["mismatched"]
            examples = outcome.get("partial_unexpected_index_list") or outcome.get("partial_unexpected_list") or []
            check["examples"] = [_example(entry) for entry in examples[:max_examples]]
            if configuration.type == "expect_column_values_to_be_in_type_list" and check["column"] in frame:
                check["examples"] = _non_numeric_examples(frame, check["column"], max_examples)
            notes = configuration.notes
            if notes:
                check["notes"] = notes if isinstance(notes, str) else " ".join(notes)
        checks.append(check)
    return tally(checks, int(len(frame)))


def tally(checks: list[dict], rows: int) -> dict:
    """The summary of a list of checks: success, error and warning counts, the failures."""
    failures = [check for check in checks if not check["success"]]
    return {
        "success": not any(check["severity"] == "error" for check in failures),
        "errors": sum(check["severity"] == "error" for check in failures),
        "warnings": sum(check["severity"] == "warning" for check in failures),
        "expectations": len(checks),
        "rows": rows,
        "failures": failures,
        "checks": checks,
    }


def run_suite(
    frame: pd.DataFrame,
    suite: expectations.Suite,
    extra_columns: str,
    max_examples: int,
    docs_dir: Path | None = None,
) -> dict:
    """Validates `frame` with Great Expectations; builds Data Docs into `docs_dir` if given."""
    import great_expectations as gx

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = {"globally": False}
    asset = context.data_sources.add_pandas("pipeline").add_dataframe_asset("dataset")
    batch = asset.add_batch_definition_whole_dataframe("whole")
    gx_suite = context.suites.add(expectations.to_gx_suite(suite, "pipeline_suite", extra_columns))
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name="validate", data=batch, suite=gx_suite)
    )
    actions = []
    if docs_dir is not None:
        context.add_data_docs_site(
            site_name="pipeline",
            site_config={
                "class_name": "SiteBuilder",
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(Path(docs_dir).resolve()),
                },
            },
        )
        actions.append(gx.checkpoint.UpdateDataDocsAction(name="data_docs", site_names=["pipeline"]))
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name="gate",
            validation_definitions=[definition],
            actions=actions,
            result_format={"result_format": "SUMMARY", "partial_unexpected_count": max(max_examples, 1)},
        )
    )
    outcome = checkpoint.run(batch_parameters={"dataframe": frame})
    (result,) = outcome.run_results.values()
    return summarise_results(result, frame, max_examples)


# Expectations about the whole table: in chunked validation they run once, on a narrow frame of
# every row's label, content hash and the columns these expectations name, rather than on each chunk
# (a chunk alone cannot see a duplicate in another chunk, nor the whole distribution).
WHOLE_TABLE = (
    "expect_table_row_count_to_be_between",
    "expect_column_distinct_values_to_contain_set",
    "expect_column_kl_divergence_to_be_less_than",
    "expect_compound_columns_to_be_unique",
    "expect_column_values_to_be_unique",
)


def table_chunks(
    path: Path, file_format: str, chunk_rows: int, drop: list[str] | None = None
) -> Iterator[pd.DataFrame]:
    """The table in chunks of `chunk_rows` rows, each indexed by its file line numbers, without `drop`."""
    path = Path(path)
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty; expected a {file_format} file with a header row and data rows.")
    if file_format == "csv":
        sources.check_csv_field_counts(path)
        chunks = pd.read_csv(path, chunksize=chunk_rows)
    else:
        import pyarrow.parquet as parquet

        chunks = (batch.to_pandas() for batch in parquet.ParquetFile(path).iter_batches(batch_size=chunk_rows))
    first_line = 2
    try:
        for chunk in chunks:
            chunk = sources.drop_columns(sources.with_text_column_names(chunk, path), drop or [])
            chunk.index = pd.Index(np.arange(len(chunk)) + first_line, name="line")
            first_line += len(chunk)
            yield chunk
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 text ({error.reason}); re-save the file as UTF-8.") from error


def table_chunk(path: Path, file_format: str, chunk_rows: int, index: int, drop: list[str]) -> pd.DataFrame | None:
    """Chunk `index` of `table_chunks(path, file_format, chunk_rows, drop)` (None past the end), read by a
    worker of a data engine. A Parquet file is read from its row groups that hold the chunk's rows; a CSV
    file is read from the start up to the chunk (a CSV row may span lines, so its rows cannot be found by
    seeking): prefer Parquet for large tables."""
    path = Path(path)
    start = index * chunk_rows
    if file_format == "csv":
        try:
            reader = pd.read_csv(path, chunksize=chunk_rows)
            chunk = next(itertools.islice(reader, index, None), None)
        except UnicodeDecodeError as error:
            raise DataError(f"{path}: not UTF-8 text ({error.reason}); re-save the file as UTF-8.") from error
    else:
        import pyarrow as arrow
        import pyarrow.parquet as parquet

        file = parquet.ParquetFile(path)
        groups, first, offset = [], None, 0
        for group in range(file.metadata.num_row_groups):
            rows = file.metadata.row_group(group).num_rows
            if offset + rows > start and offset < start + chunk_rows:
                groups.append(group)
                first = offset if first is None else first
            offset += rows
        if not groups:
            return None
        table = file.read_row_groups(groups).slice(start - first, chunk_rows)
        chunk = arrow.Table.from_batches(table.to_batches(), schema=table.schema).to_pandas()
    if chunk is None or chunk.empty:
        return None
    chunk = sources.drop_columns(sources.with_text_column_names(chunk, path), drop or [])
    chunk.index = pd.Index(np.arange(len(chunk)) + start + 2, name="line")
    return chunk


@dataclasses.dataclass(frozen=True)
class ChunkCheck:
    """The per-chunk part of chunked validation: a summary of the chunk-wise expectations, and the narrow
    frame (label, row hash) that the whole-table expectations are judged on. Picklable: it is what a data
    engine's worker runs."""

    suite: expectations.Suite
    extra_columns: str
    max_examples: int
    label: str
    whole_table_columns: tuple[str, ...] = ()  # columns the whole-table expectations name, besides the label

    def __call__(self, chunk: pd.DataFrame) -> tuple[dict, pd.DataFrame]:
        missing = pd.Series(np.nan, index=chunk.index)
        narrow = pd.DataFrame(
            {
                **{
                    column: chunk[column] if column in chunk else missing
                    for column in (self.label, *self.whole_table_columns)
                },
                "row_hash": pd.util.hash_pandas_object(chunk, index=False).to_numpy(),
            },
            index=chunk.index,
        )
        return run_suite(chunk, self.suite, self.extra_columns, self.max_examples), narrow


@dataclasses.dataclass(frozen=True)
class ReadAndCheck:
    """One task of chunked validation on a data engine: read chunk `index`, check it; None past the end."""

    path: str
    file_format: str
    chunk_rows: int
    drop: tuple[str, ...]
    check: ChunkCheck

    def __call__(self, index: int) -> tuple[dict, pd.DataFrame, pd.DataFrame] | None:
        chunk = table_chunk(Path(self.path), self.file_format, self.chunk_rows, index, list(self.drop))
        return None if chunk is None else (*self.check(chunk), chunk)


def split_suite(suite: expectations.Suite) -> tuple[expectations.Suite, expectations.Suite]:
    """(expectations judged chunk by chunk, expectations judged on the narrow whole-table frame)."""
    per_chunk, whole = [], []
    for item in suite.expectations:
        if item["expectation"] not in WHOLE_TABLE:
            per_chunk.append(item)
        elif item["expectation"] == "expect_compound_columns_to_be_unique":
            whole.append(
                {
                    "expectation": "expect_column_values_to_be_unique",
                    "column": "row_hash",
                    "severity": item["severity"],
                    "notes": item.get("notes", "duplicate rows"),
                }
            )
        else:
            whole.append(item)
    return dataclasses.replace(suite, expectations=per_chunk), dataclasses.replace(suite, expectations=whole)


def merge_chunk_checks(chunk_summaries: list[dict], suite: expectations.Suite, rows: int, limit: int) -> list[dict]:
    """One check per expectation over all chunks: counts added up, `mostly` judged on the totals.

    Every chunk ran the same suite, so every chunk has the same checks; they are matched by expectation
    and column (Great Expectations does not list its results in the same order for every chunk: a chunk
    whose column holds a text among numbers came back in another order, and position-by-position merging
    paired unrelated checks).
    """

    def keyed(checks: list[dict]) -> dict[tuple, dict]:
        seen: dict[tuple, int] = {}
        result = {}
        for check in checks:
            key = (check["expectation"], json.dumps(check["column"]))
            seen[key] = seen.get(key, 0) + 1
            result[(*key, seen[key])] = check
        return result

    by_chunk = [keyed(summary["checks"]) for summary in chunk_summaries]
    mostly = {
        (item["expectation"], json.dumps(item.get("column"))): float(item["mostly"])
        for item in suite.expectations
        if "mostly" in item
    }
    merged = []
    for key in by_chunk[0] if by_chunk else []:
        parts = [checks[key] for checks in by_chunk]
        check = {**parts[0], "success": all(part["success"] for part in parts)}
        if "unexpected_count" in parts[0]:
            unexpected = sum(part.get("unexpected_count", 0) for part in parts)
            check["unexpected_count"] = unexpected
            check["unexpected_percent"] = round(100.0 * unexpected / max(rows, 1), 3)
            allowed = mostly.get((check["expectation"], json.dumps(check["column"])))
            if allowed is not None:
                check["success"] = unexpected <= (1.0 - allowed) * rows + 1e-9
        failed = [part for part in parts if not part["success"]]
        if check["success"]:
            for key in ("examples", "observed", "mismatched", "error"):
                check.pop(key, None)
        else:
            check.update({key: value for key, value in (failed or parts)[0].items() if key not in check})
            check["examples"] = [example for part in parts for example in part.get("examples", [])][:limit]
        merged.append(check)
    return merged


def table_rows(path: Path, file_format: str) -> int:
    """Data rows in a table file, counted without parsing it."""
    if file_format == "parquet":
        import pyarrow.parquet as parquet

        return parquet.ParquetFile(path).metadata.num_rows
    newlines, last = 0, b"\n"
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            newlines += block.count(b"\n")
            last = block[-1:]
    return max(0, newlines + (last != b"\n") - 1)


def validate_in_chunks(
    path: Path,
    description: dict,
    suite: expectations.Suite,
    extra_columns: str,
    max_examples: int,
    chunk_rows: int,
    docs_dir: Path | None,
    validated_file: Path | None = None,
    runner: Engine | None = None,
) -> tuple[dict, pd.DataFrame]:
    """Validates a table chunk by chunk, holding one chunk plus a label and a hash per row.

    The chunks are read and checked here, one after the other, or by `runner`'s workers (the results
    come back in chunk order, so the outcome is the same). Writes the rows to `validated_file` (Parquet)
    as it goes. Data Docs show the whole-table expectations; the summary has every expectation.
    Returns (summary, the narrow frame).
    """
    import pyarrow as arrow
    import pyarrow.parquet as parquet

    per_chunk, whole = split_suite(suite)
    label = description["label"]
    named = {item["column"] for item in whole.expectations if isinstance(item.get("column"), str)}
    check = ChunkCheck(per_chunk, extra_columns, max_examples, label, tuple(sorted(named - {label, "row_hash"})))
    drop = description.get("dropped_columns") or []
    summaries, narrow, writer, unwritable = [], [], None, ""
    if runner is None or runner.name == "local":
        chunks = table_chunks(path, description["format"], chunk_rows, drop)
        parts = ((*check(chunk), chunk) for chunk in progress(chunks, "validating chunks"))
    else:
        if description["format"] == "csv":
            sources.check_csv_field_counts(path)
        count = math.ceil(table_rows(path, description["format"]) / chunk_rows)  # lines: rows or more
        task = ReadAndCheck(str(path), description["format"], chunk_rows, tuple(drop), check)
        parts = (part for part in runner.map(task, list(range(count))) if part is not None)
    try:
        for chunk_summary, chunk_narrow, chunk in parts:
            summaries.append(chunk_summary)
            narrow.append(chunk_narrow)
            if validated_file is not None and not unwritable:
                table = arrow.Table.from_pandas(chunk.reset_index(drop=True), preserve_index=False)
                writer = writer or parquet.ParquetWriter(validated_file, table.schema)
                try:
                    writer.write_table(table.cast(writer.schema), row_group_size=ROWS_PER_GROUP)
                except (arrow.ArrowInvalid, arrow.ArrowTypeError, ValueError) as error:
                    # A column whose values change type from one chunk to the next (numbers, then a text):
                    # the verdict still comes from every chunk; the table is not written.
                    unwritable = f"rows from line {chunk.index[0]} on do not fit the types of the first rows ({error})"
    finally:
        if writer is not None:
            writer.close()
    frame = pd.concat(narrow)
    whole_summary = run_suite(frame, whole, extra_columns, max_examples, docs_dir)
    duplicates = suite.find("expect_compound_columns_to_be_unique")
    for check in whole_summary["checks"]:
        if check["column"] == "row_hash" and duplicates:  # report it as the suite names it
            check.update(expectation=duplicates[0]["expectation"], column=duplicates[0]["column_list"])
    checks = merge_chunk_checks(summaries, per_chunk, len(frame), max_examples) + whole_summary["checks"]
    summary = tally(checks, len(frame))
    summary["chunks"] = len(summaries)
    if unwritable and summary["success"]:
        raise DataError(
            f"{path}: {unwritable}. Give the column one type (or add an expectation on its type to the suite)."
        )
    return summary, frame


def describe_failure(check: dict) -> str:
    """One failed expectation on one line: severity, column, what was seen, examples."""
    where = f" {check['column']}" if check.get("column") else ""
    seen = []
    if "unexpected_count" in check:
        seen.append(f"{check['unexpected_count']} unexpected ({check['unexpected_percent']}%)")
    if "mismatched" in check:
        seen.append(f"columns {check['mismatched']}")
    elif "observed" in check:
        seen.append(f"observed {check['observed']!r}")
    if check.get("error"):
        seen.append(check["error"])
    line = f"  [{check['severity'].upper()}] {check['expectation']}{where}: {'; '.join(seen) or 'failed'}"
    if check.get("examples"):
        line += f"; e.g. {'; '.join(check['examples'])}"
    if check.get("notes"):
        line += f" ({check['notes']})"
    return line


def failure_message(summary: dict, summary_path: Path, docs_path: Path) -> str:
    """The stage's error: every failed expectation, then where the full report is."""
    lines = [describe_failure(check) for check in summary["failures"]]
    return (
        f"data validation failed: {summary['errors']} error(s), {summary['warnings']} warning(s)"
        f" in {summary['expectations']} expectations over {summary['rows']} rows\n"
        + "\n".join(lines)
        + f"\nFull report: {summary_path} and {docs_path / 'index.html'}"
    )


def suite_path(config: Config) -> Path:
    """`validate.suite`, or for `auto` the suite named after the data source."""
    if config.validate.suite != "auto":
        return Path(config.validate.suite)
    return Path(config.paths.expectations) / f"{config.data.dataset_name}.yaml"


def validated_description(description: dict, frame: pd.DataFrame, suite: expectations.Suite) -> dict:
    """What later stages read: kind, task, label, classes and a content fingerprint."""
    label = description["label"]
    result = {key: description[key] for key in ("source", "kind", "task", "label", "fingerprint")}
    result["num_examples"] = int(len(frame))
    result.update(data_modality(description["kind"]).validated_fields(description))
    if task(description["task"]).has_classes:
        observed = sorted(str(value) for value in frame[label].dropna().unique())
        result["classes"] = suite.classes if suite.classes and set(observed) <= set(suite.classes) else observed
    return result


def write_validated(
    description: dict, frame: pd.DataFrame, suite: expectations.Suite, output_dir: Path, table_written: bool = False
) -> dict:
    """Writes the dataset that passed (unless chunked validation already wrote the table), its description
    and the per-example schema."""
    dataset = validated_description(description, frame, suite)
    data_modality(description["kind"]).write_validated(frame, output_dir, table_written)
    write_json_atomic(output_dir / DATASET_FILE, dataset)
    write_json_atomic(output_dir / SCHEMA_FILE, data_modality(description["kind"]).example_schema(suite))
    return dataset


def load_validated(validated_dir: Path) -> tuple[dict, pd.DataFrame, dict]:
    """(description, table or manifest, per-example schema) written by a passing `validate` (the notebooks read
    it; the stages read the Parquet file in parts: `validated_files`)."""
    description, data_path, schema = validated_files(validated_dir)
    return description, pd.read_parquet(data_path), schema


def validated_files(validated_dir: Path) -> tuple[dict, Path, dict]:
    """(description, the table's or image manifest's Parquet file, per-example schema) written by a passing
    `validate`."""
    validated_dir = Path(validated_dir)
    path = validated_dir / DATASET_FILE
    if not path.is_file():
        raise DataError(f"{path}: missing; run the validate stage first (dvc repro validate).")
    description = json.loads(path.read_text())
    data_path = validated_dir / data_modality(description["kind"]).validated_file
    return description, data_path, json.loads((validated_dir / SCHEMA_FILE).read_text())


def validate_configured(config: Config) -> StageResult:
    """The validate stage's work: the ingested snapshot checked against its suite, written to `paths.validated`."""
    description, snapshot = load_source(Path(config.paths.ingested))
    suite_file = suite_path(config)
    dropped = description.get("dropped_columns", [])
    suite = expectations.without_columns(expectations.load_suite(suite_file), dropped)
    if dropped:
        sources.check_drop_columns(dropped, sources.table_header(snapshot, description["format"]), snapshot)
    if suite.kind != description["kind"]:
        raise StageError(
            f"{suite_file} is a suite for {suite.kind} data, but {config.data.source} is {description['kind']} data."
        )
    settings = config.validate
    runner = engine.from_config(config)
    modality = data_modality(description["kind"])
    chunked = modality.chunked_validation and table_rows(snapshot, description["format"]) > settings.chunk_rows
    reports = Path(config.paths.reports) / "validate"
    reports.mkdir(parents=True, exist_ok=True)
    target = Path(config.paths.validated)
    with scratch_directory(reports, DOCS_DIR) as docs_scratch, staged_directory(target) as staging:
        docs = Path(docs_scratch) / DOCS_DIR  # published before the verdict: a failed run's report is the point
        if chunked:
            log.info("validating in chunks of %d rows", settings.chunk_rows)
            summary, frame = validate_in_chunks(
                snapshot,
                description,
                suite,
                settings.extra_columns,
                settings.max_examples,
                settings.chunk_rows,
                docs,
                validated_file=staging / TABLE_FILE,
                runner=runner,
            )
        else:
            frame = validation_frame(description, snapshot, runner)
            summary = run_suite(frame, suite, settings.extra_columns, settings.max_examples, docs)
        replace_directory(docs, reports / DOCS_DIR)
        summary["suite"] = str(suite_file)
        summary_path = write_json_atomic(reports / "summary.json", summary)
        headline = ("success", "rows", "expectations", "errors", "warnings")
        write_json_atomic(reports / "metrics.json", {key: summary[key] for key in headline if key in summary})
        pages = sorted((reports / DOCS_DIR).rglob("*.html"))
        for check in summary["failures"]:
            if check["severity"] == "warning":
                log.warning("validation warning:%s", describe_failure(check))
        if not summary["success"]:
            _log_report(summary_path, pages)
            raise StageError(failure_message(summary, summary_path, reports / DOCS_DIR))
        for note in modality.check_validated(frame, description):
            log.warning(note)
        dataset = write_validated(description, frame, suite, staging, table_written=chunked)
    return StageResult(
        summary=f"{summary['expectations']} expectations passed on {summary['rows']} rows"
        f" ({summary['warnings']} warning(s)) with {suite_file} -> {target}",
        metrics={
            "validate_errors": summary["errors"],
            "validate_warnings": summary["warnings"],
            "data_examples": dataset["num_examples"],
        },
        artifacts=[summary_path, *pages],
    )


def _log_report(summary_path: Path, pages: list[Path]) -> None:
    """Logs the failed validation's reports to the MLflow run before the stage stops."""
    import mlflow

    if mlflow.active_run() is not None:
        mlflow.log_artifact(str(summary_path), artifact_path="validate")
        for page in pages:
            mlflow.log_artifact(str(page), artifact_path="validate/data_docs")
        mlflow.set_tag("pipeline.validation", "failed")


def profile(config: Config, output: Path | None = None, force: bool = False) -> tuple[Path, list[str]]:
    """Derives a starting suite from the configured (trusted) data and writes it for review; returns its
    path and what the user should look at first (columns a model learns nothing lasting from)."""
    from pipeline.data.ingestion import ingest

    target = Path(output) if output else suite_path(config)
    if target.exists() and not force:
        raise StageError(f"{target} exists; review and edit it, or pass --force to overwrite it.")
    notes = []
    with tempfile.TemporaryDirectory() as scratch:
        description = ingest(config.data, Path(scratch))
        snapshot = Path(scratch) / description["file"]
        if description.get("dropped_columns"):
            header = sources.table_header(snapshot, description["format"])
            sources.check_drop_columns(description["dropped_columns"], header, snapshot)
        frame = validation_frame(description, snapshot)
        suite, notes = data_modality(description["kind"]).profile(frame, description)
    source = config.data.source if config.data.source in BUILTIN_SOURCES else config.data.path
    header = "\n".join([expectations.profile_header(source), *notes])
    expectations.save_suite(suite, target, header)
    return target, notes


def column_notes(frame: pd.DataFrame, label: str, text_columns=()) -> list[str]:
    """One line per column that looks like dates, an identifier or free text, with the fix (columns declared as
    free text are read as text: not flagged)."""
    notes = []
    for column, why in suspicious_columns(frame.drop(columns=list(text_columns)), label).items():
        if why.startswith(FREE_TEXT):
            fix = (
                f"read as a category, a model learns little from it; declare it in data.text_columns: [{column}]"
                " to read its words (or add it to data.drop_columns)"
            )
        else:
            fix = "a model learns nothing lasting from it; add it to data.drop_columns"
        notes.append(f"Column {column!r} {why}: {fix}.")
    return notes
