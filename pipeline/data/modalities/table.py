"""Tables on the data side: a CSV or Parquet file (or the built-in penguins), one example per row, each column
typed by its column type (`pipeline.core.column_types`)."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from pipeline.core.column_types import column_type, type_of
from pipeline.core.errors import DataError
from pipeline.core.progress import progress
from pipeline.core.spec import FeatureSpec
from pipeline.data import expectations, ingestion, preparation, shuffle, sources, storage, validation
from pipeline.data.columns import input_names
from pipeline.data.engine import Engine
from pipeline.data.modalities import DataModality

TEXT = column_type("text")


def clean_table(
    table: pd.DataFrame, label: str, task, classes: Optional[list[str]], missing_values: str
) -> tuple[pd.DataFrame, np.ndarray, list[FeatureSpec]]:
    """Splits a raw table into typed features and encoded labels (`task`: a `pipeline.core.tasks.Task`).

    Rows without a label are dropped; rows with missing features are dropped (`drop`) or
    kept for in-model imputation (`impute`). Returns (features, labels, feature specs).
    """
    table = table[table[label].notna()].reset_index(drop=True)
    features = table.drop(columns=[label])
    specs = feature_specs(features)
    if missing_values == "drop":
        keep = features.notna().all(axis=1)
        features, table = features[keep].reset_index(drop=True), table[keep].reset_index(drop=True)
    return typed_features(features, specs), task.encode_labels(table[label], classes), specs


def feature_specs(features: pd.DataFrame, text_columns=()) -> list[FeatureSpec]:
    """Each column's spec: its name in the table, its input name in the model, its type (free text if declared in
    `text_columns`, else by the column's dtype, so a frame without rows, read from a file's schema, gives the same
    specs)."""
    names = input_names(list(features.columns))
    return [
        FeatureSpec(
            column=str(column),
            name=names[str(column)],
            type=TEXT.name if str(column) in text_columns else type_of(features[column].dtype).name,
        )
        for column in features.columns
    ]


def typed_features(features: pd.DataFrame, specs: list[FeatureSpec], where: str = "") -> pd.DataFrame:
    """The features as the model takes them (each column type's `typed` form: numbers as float32)."""
    typed = {}
    for spec in specs:
        values = spec.column_type.typed(features[spec.column], where)
        typed[spec.name] = values.astype(np.float32) if values.dtype.kind == "f" else values
    return pd.DataFrame(typed, index=features.index)


def table_partials(features: pd.DataFrame, specs: list[FeatureSpec]) -> list[dict]:
    """Per feature, what the statistics of a part of the training split need (its column type's partials)."""
    return [spec.column_type.partial_statistics(features[spec.name]) for spec in specs]


def merged_table_statistics(parts: list[list[dict]], specs: list[FeatureSpec]) -> list[FeatureSpec]:
    """Each feature spec with the whole training split's statistics, merged from its parts' in order."""
    return [
        dataclasses.replace(spec, **spec.column_type.merge_statistics([part[position] for part in parts], spec.column))
        for position, spec in enumerate(specs)
    ]


def table_statistics(features: pd.DataFrame, specs: list[FeatureSpec]) -> list[FeatureSpec]:
    return merged_table_statistics([table_partials(features, specs)], specs)


@dataclasses.dataclass(frozen=True)
class TableLabels:
    """A reading task's first pass over a row group of the validated table: which rows are kept (a label,
    and with missing_values=drop every feature) and their encoded labels."""

    path: str
    label: str
    task: str
    classes: tuple[str, ...] | None
    complete_only: bool

    def __call__(self, group: int) -> tuple[np.ndarray, np.ndarray]:
        from pipeline.core.tasks import task

        chunk = preparation.read_row_group(self.path, group, None if self.complete_only else [self.label])
        keep = chunk[self.label].notna()
        if self.complete_only:
            keep &= chunk.notna().all(axis=1)
        classes = list(self.classes) if self.classes is not None else None
        return keep.to_numpy(), task(self.task).encode_labels(chunk[self.label][keep], classes)


@dataclasses.dataclass(frozen=True)
class ShuffleTable:
    """A reading task: a row group of the validated table typed, serialised and written to the shuffle; returns
    the training rows' `table_partials`."""

    path: str
    label: str
    task: str
    classes: tuple[str, ...] | None
    specs: tuple[FeatureSpec, ...]
    folder: str
    total_shards: int
    train_shards: int

    def __call__(self, item: tuple[int, np.ndarray, np.ndarray]) -> list[dict]:
        from pipeline.core.tasks import task

        group, shards, positions = item
        chunk = preparation.read_row_group(self.path, group, None)
        written = shards >= 0
        chunk, shards, positions = chunk[written], shards[written], positions[written]
        features = typed_features(chunk.drop(columns=[self.label]), list(self.specs))
        classes = list(self.classes) if self.classes is not None else None
        labels = task(self.task).encode_labels(chunk[self.label], classes)
        columns = {name: features[name].to_numpy() for name in features.columns}
        examples = preparation.serialise_examples(columns, labels, self.task)
        shuffle.write_run(Path(self.folder), group, shards, positions, examples, self.total_shards)
        return table_partials(features[shards < self.train_shards], list(self.specs))


class TableData(DataModality):
    kind = "table"
    validated_file = validation.TABLE_FILE
    chunked_validation = True

    def write_snapshot(self, data, target: Path) -> None:
        """The source's table, as it is, at `target` (a CSV file, or Parquet for a Parquet source)."""
        if data.source == "penguins":
            sources.write_penguins_csv(target)
        elif storage.is_address(data.path):
            storage.copy_to_local(data.path, target)
        else:
            shutil.copyfile(data.path, target)

    def ingest(self, data, output_dir, final_dir, batches, runner) -> dict:
        file_format = "parquet" if data.source == "parquet" else "csv"
        target = output_dir / f"source.{file_format}"
        self.write_snapshot(data, target)
        if batches:  # the source and every feedback batch, as one Parquet table
            tables = [sources.load_table(target, file_format)]
            for batch in batches:
                rows = ingestion.feedback_table(batch)
                tables.append(sources.load_table(rows, "parquet" if rows.suffix == ".parquet" else "csv"))
            target.unlink()
            file_format, target = "parquet", output_dir / "source.parquet"
            pd.concat(tables, ignore_index=True).to_parquet(target, index=False)
        return dict(
            label=data.label_column,
            format=file_format,
            file=target.name,
            fingerprint=sources.fingerprint_files([str(target)]),
            dropped_columns=list(data.drop_columns),  # read past by every stage; the snapshot stays as it was
            text_columns=data.text_column_names,
        )

    def ingest_summary(self, description: dict) -> str:
        return f"{description['format']} file"

    def read_ingested(self, description, path) -> pd.DataFrame:
        table = sources.load_table(path, description["format"])
        return sources.drop_columns(table, description.get("dropped_columns", []))

    def validation_frame(self, description, path, runner=None) -> pd.DataFrame:
        table = self.read_ingested(description, path)
        table.index = pd.Index(np.arange(len(table)) + 2, name="line")  # line 1 is the header
        return table

    def profile(self, frame, description):
        text_columns = description.get("text_columns", [])
        suite = expectations.profile_table(
            frame, description["label"], description["task"], text_columns=text_columns, kind=self.kind
        )
        return suite, validation.column_notes(frame, description["label"], text_columns)

    def check_validated(self, frame, description) -> list[str]:
        label = description["label"]
        input_names([column for column in frame.columns if column != label])  # one model input key per column
        return validation.column_notes(frame, label, description.get("text_columns", []))

    def validated_fields(self, description: dict) -> dict:
        return {
            "dropped_columns": description.get("dropped_columns", []),
            "text_columns": description.get("text_columns", []),
        }

    def example_schema(self, suite) -> dict:
        return expectations.table_example_schema(suite)

    def write_validated(self, frame, output_dir, table_written) -> None:
        if not table_written:
            frame.reset_index(drop=True).to_parquet(
                output_dir / self.validated_file, index=False, row_group_size=validation.ROWS_PER_GROUP
            )

    def prepare(self, description, data_path, data, split, folder, runner) -> tuple:
        """A first pass over the validated table's row groups gives the kept rows' labels to split; a second
        types and serialises the rows into the shuffle."""
        import pyarrow.parquet as parquet

        task, label = split.task, description["label"]
        classes = tuple(description["classes"]) if description.get("classes") else None
        groups = preparation.row_groups(data_path)
        columns = parquet.read_schema(data_path).empty_table().to_pandas().drop(columns=[label])
        specs = feature_specs(columns, description.get("text_columns", []))
        complete_only = split.settings.missing_values == "drop"
        labeller = TableLabels(str(data_path), label, task.name, classes, complete_only)
        # Only the label column is read unless rows with a missing feature are dropped: that narrow pass runs here.
        passes = list((runner if complete_only else Engine()).map(labeller, list(range(len(groups)))))
        keep = np.concatenate([kept for kept, _ in passes])
        labels = np.concatenate([encoded for _, encoded in passes])
        chosen = split(labels)
        kept_rows = np.flatnonzero(keep)
        layout = preparation.shard_layout(
            len(keep), {name: kept_rows[rows] for name, rows in chosen.items()}, split.settings.shard_size
        )
        reader = ShuffleTable(
            str(data_path), label, task.name, classes, tuple(specs), folder, len(layout.names),
            layout.first_shard["validation"],
        )  # fmt: skip
        starts = np.concatenate([[0], np.cumsum(groups)])
        tasks = []
        for group in range(len(groups)):
            part = slice(starts[group], starts[group + 1])
            tasks.append((group, layout.shards[part], layout.positions[part]))
        partials = list(progress(runner.map(reader, tasks), "preparing rows", total=len(tasks), minimum=10))
        fields = {
            "features": merged_table_statistics(partials, specs),
            "dropped_columns": description.get("dropped_columns", []),  # requests may carry them: ignored
        }
        return labels, chosen, layout, len(tasks), fields

    @staticmethod
    def read_new_table(path) -> pd.DataFrame:
        """New data: a CSV or Parquet file (a DataError names what is wrong with the path)."""
        path = Path(path)
        if not path.exists():
            raise DataError(f"{path}: no such file or folder.")
        file_format = sources.TABLE_FORMATS.get(path.suffix.lower())
        if file_format is None or not path.is_file():
            raise DataError(f"{path}: expected a .csv or .parquet file like the training data.")
        return sources.load_table(path, file_format)

    def read_examples(self, path, spec):
        """A CSV or Parquet file with the model's columns (and the label column, if every row has one)."""
        path = Path(path)
        table = self.read_new_table(path)
        missing = [feature.column for feature in spec.features if feature.column not in table.columns]
        if missing:
            columns = ", ".join(feature.column for feature in spec.features)
            raise DataError(f"{path}: columns {missing} are missing; the model reads {columns}.")
        inputs = {
            feature.name: feature.column_type.typed(table[feature.column], str(path)) for feature in spec.features
        }
        labels = None
        if spec.label in table.columns:
            known = table[spec.label].dropna()
            if len(known) == len(table):
                labels = spec.task_type.encode_labels(known, spec.classes)
        return [str(index) for index in range(len(table))], inputs, labels

    def feedback_data(self, data, path):
        file_format = sources.TABLE_FORMATS.get(path.suffix.lower())
        if file_format is None or not path.is_file():
            raise DataError(f"{path}: expected a .csv or .parquet file with the label column {data.label_column}.")
        return dataclasses.replace(data, source=file_format, path=str(path), label=data.label_column)

    def copy_feedback(self, path, staging) -> None:
        shutil.copyfile(path, staging / f"{ingestion.FEEDBACK_TABLE}{path.suffix.lower()}")


MODALITY = TableData()
