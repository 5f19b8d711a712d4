"""The data side of each kind of data: one module per kind, found by the kind's name.

`data_modality(kind)` returns the kind's `DataModality`: how the kind is ingested, put in a frame for
validation, profiled into a starting suite, written once validated, read and split by preprocess on the data
engine, and how new examples of it are read (the monitor, `pipeline predict`, feedback batches). Ingestion,
validation, preparation and the ops ask it; none of them tests a kind's name.

The modules are imported when first asked for (`importlib`): they use the generic modules (ingestion,
validation, preparation) that ask this registry, and a static import would be a cycle.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

from pipeline.core.kinds import kind as kind_facts


class DataModality:
    """What every kind of data provides on the data side (each module defines `MODALITY`, a subclass)."""

    kind: str = ""
    validated_file: str = ""
    """The file name of the validated data in `paths.validated` (a Parquet table or image manifest)."""
    chunked_validation: bool = False
    """Whether a large snapshot is validated chunk by chunk (`validate.chunk_rows`)."""

    def ingest(self, data, output_dir: Path, final_dir: Path, batches: list[Path], runner) -> dict:
        """Snapshots `data` (and the feedback `batches`) into `output_dir`; the description's fields."""
        raise NotImplementedError

    def ingest_summary(self, description: dict) -> str:
        raise NotImplementedError

    def read_ingested(self, description: dict, path: Path) -> pd.DataFrame:
        raise NotImplementedError

    def validation_frame(self, description: dict, path: Path, runner=None) -> pd.DataFrame:
        """The frame the suite judges: the parsed table, or the image manifest with per-image facts."""
        raise NotImplementedError

    def profile(self, frame: pd.DataFrame, description: dict) -> tuple[Any, list[str]]:
        """(a starting suite derived from trusted data, notes on columns worth a look)."""
        raise NotImplementedError

    def check_validated(self, frame: pd.DataFrame, description: dict) -> list[str]:
        """Checks that only passed data needs (raising DataError); returns warnings to log."""
        return []

    def validated_fields(self, description: dict) -> dict:
        """Fields of the validated description that only this kind has."""
        return {}

    def example_schema(self, suite) -> dict:
        """What a single example must look like (saved with the exported model; requests are checked on it)."""
        raise NotImplementedError

    def write_validated(self, frame: pd.DataFrame, output_dir: Path, table_written: bool) -> None:
        raise NotImplementedError

    def prepare(self, description: dict, data_path: Path, data, split, folder: str, runner) -> tuple:
        """Reads and splits the validated data into the shuffle: (labels, chosen rows per split, shard
        layout, reading tasks, the spec's fields for this kind)."""
        raise NotImplementedError

    def read_examples(self, path: Path, spec) -> tuple[list[str], dict[str, np.ndarray], Optional[np.ndarray]]:
        """New examples in the training data's form: (ids, {input name: values}, labels if every example has
        one, else None). Raises DataError naming the path and what is wrong."""
        raise NotImplementedError

    def read_requests(self, path: Path, spec) -> tuple[list[str], dict[str, np.ndarray]]:
        """What `pipeline predict` answers for new data at `path`: (ids, {input name: values}); by default
        every example `read_examples` reads (a series: the window that ends each series)."""
        ids, features, _ = self.read_examples(path, spec)
        return ids, features

    def feedback_data(self, data, path: Path):
        """A labelled feedback batch at `path` as a data source of this kind (a DataConfig)."""
        raise NotImplementedError

    def copy_feedback(self, path: Path, staging: Path) -> None:
        """Copies a feedback batch into the empty folder `staging`."""
        raise NotImplementedError


def data_modality(kind: str) -> DataModality:
    """The data side of the kind of data named `kind` (an unknown name is a ConfigError)."""
    kind_facts(kind)
    return importlib.import_module(f"{__name__}.{kind}").MODALITY
