"""Typed, validated configuration loaded once from `params.yaml`.

This module must stay light: it imports neither TensorFlow nor MLflow, so that a bad
setting is reported in well under a second, before any heavy import.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml

from pipeline.core import kinds, search_space, tasks
from pipeline.core.coercion import build_section, fail
from pipeline.core.column_types import MAX_NGRAMS
from pipeline.core.errors import ConfigError
from pipeline.core.locations import OBJECT_STORE_PACKAGES, is_address, project_root, sqlite_file
from pipeline.core.search_space import Activation, AugmentFlip, Family, Optimizer, RnnCell, TextWeighting

DEFAULT_PARAMS_FILE = "params.yaml"

Source = Literal[kinds.SOURCES]
TaskName = Literal[tuple(tasks.TASKS)]
FinetuneBase = Literal[
    "trained", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0", "resnet50"
]


@dataclasses.dataclass(frozen=True)
class BaseConfig:
    seed: int = 42
    deterministic: bool = True
    strategy: Literal["auto", "cpu", "one_device", "mirrored", "multi_worker", "tpu"] = "auto"
    logical_cpus: Optional[int] = None
    gpu_memory_limit_mb: Optional[int] = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    def _validate(self, section: str) -> None:
        if self.logical_cpus is not None and not 1 <= self.logical_cpus <= 64:
            fail(f"{section}.logical_cpus", self.logical_cpus, "null, or 1 to 64 logical CPU devices")
        if self.gpu_memory_limit_mb is not None and self.gpu_memory_limit_mb < 256:
            fail(
                f"{section}.gpu_memory_limit_mb", self.gpu_memory_limit_mb, "null (grow as needed) or at least 256 MiB"
            )


@dataclasses.dataclass(frozen=True)
class PathsConfig:
    ingested: str = "data/ingested"
    validated: str = "data/validated"
    expectations: str = "expectations"
    feedback: str = "data/feedback"
    prepared: str = "data/prepared"
    hyperparameters: str = "models/hyperparameters.json"
    model: str = "models/model.keras"
    finetune_data: str = "data/finetune"
    finetuned: str = "models/finetuned"
    serving: str = "models/serving"
    edge: str = "models/edge"
    reports: str = "reports"
    work: str = ".pipeline"

    def _validate(self, section: str) -> None:
        for field in dataclasses.fields(self):
            if not getattr(self, field.name).strip():
                fail(f"{section}.{field.name}", "", "a non-empty relative or absolute path")
        if not self.model.endswith(".keras"):
            fail(f"{section}.model", self.model, "a file name ending in .keras")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    source: Source = "digits"
    path: str = "data/user"
    label: Optional[str] = None
    task: Optional[TaskName] = None
    image_size: Optional[list[int]] = None
    color_mode: Literal["grayscale", "rgb"] = "grayscale"
    drop_columns: list[str] = dataclasses.field(default_factory=list)
    text_columns: list[str] = dataclasses.field(default_factory=list)
    time_column: Optional[str] = None
    series_id_column: Optional[str] = None
    horizon: int = 3
    seasonal_period: Union[int, Literal["auto"]] = "auto"
    engine: Literal["local", "beam"] = "local"
    engine_workers: Optional[int] = None
    engine_options: list[str] = dataclasses.field(default_factory=list)

    def _validate(self, section: str) -> None:
        if self.engine_workers is not None and self.engine_workers < 1:
            fail(f"{section}.engine_workers", self.engine_workers, "null (one per core) or a positive number")
        if self.engine == "beam" and importlib.util.find_spec("apache_beam") is None:
            fail(f"{section}.engine", self.engine, "local, or install Apache Beam first: pip install -e '.[beam]'")
        if any(not str(option).startswith("--") for option in self.engine_options):
            fail(f"{section}.engine_options", self.engine_options, "Beam pipeline options, e.g. [--runner=FlinkRunner]")
        if self.image_size is not None and (len(self.image_size) != 2 or any(side < 1 for side in self.image_size)):
            fail(f"{section}.image_size", self.image_size, "null or [height, width] with positive sides")
        if self.drop_columns and not self.kind_facts.has_columns:
            fail(f"{section}.drop_columns", self.drop_columns, f"[] for {self.kind} data (columns are a table's)")
        if self.text_columns and not self.kind_facts.has_columns:
            fail(f"{section}.text_columns", self.text_columns, f"[] for {self.kind} data (columns are a table's)")
        if self.label_column in self.text_column_names or set(self.text_column_names) & set(self.drop_columns):
            fail(
                f"{section}.text_columns",
                self.text_columns,
                f"feature columns of free text, neither the label {self.label_column!r} nor a dropped column",
            )
        if self.label_column in self.drop_columns:
            fail(f"{section}.drop_columns", self.drop_columns, f"columns other than the label {self.label_column!r}")
        if self.time_column and self.kind_facts.sources == kinds.kind_of_source(self.source).sources:
            fail(f"{section}.time_column", self.time_column, f"null for {self.source} (a csv or parquet file has one)")
        if self.series_id_column and not self.time_column_name:
            fail(f"{section}.series_id_column", self.series_id_column, "null, or set data.time_column too")
        if self.time_column_name and self.text_columns:
            fail(f"{section}.text_columns", self.text_columns, "[] for a time series (its columns are numbers)")
        if self.horizon < 1:
            fail(f"{section}.horizon", self.horizon, "a positive number of steps to forecast")
        if self.seasonal_period != "auto" and self.seasonal_period < 1:
            fail(f"{section}.seasonal_period", self.seasonal_period, "auto or a positive number of steps")
        if self.source in kinds.FILE_SOURCES and not self.label:
            fail(f"{section}.label", self.label, f"the name of the target column of your {self.source} file")
        if self.task_name not in self.kind_facts.tasks:
            allowed = " or ".join(self.kind_facts.tasks)
            fail(f"{section}.task", self.task, f"{allowed} ({self.kind} data like {self.source} cannot be {self.task})")
        if self.source not in kinds.BUILTIN_SOURCES and is_address(self.path):  # in an object store: read at ingest
            scheme = self.path.split("://", 1)[0]
            package = OBJECT_STORE_PACKAGES.get(scheme)
            if package is not None and importlib.util.find_spec(package) is None:
                fix = f"a local path, or install {package} first: pip install -e '.[cloud]'"
                fail(f"{section}.path", self.path, fix)
        elif self.source not in kinds.BUILTIN_SOURCES:
            path = Path(self.path)
            if not path.exists():
                fail(
                    f"{section}.path",
                    self.path,
                    f"an existing {'folder' if self.source in kinds.FOLDER_SOURCES else 'file'}"
                    f" (no such path; relative paths start at {Path.cwd()})",
                )
            if self.source in kinds.FOLDER_SOURCES and not path.is_dir():
                what = "image files" if self.kind_facts.images else ".txt files"
                fail(f"{section}.path", self.path, f"a folder with one sub-folder of {what} per class")
            if self.source in kinds.FILE_SOURCES and not path.is_file():
                fail(f"{section}.path", self.path, f"a {self.source} file")

    @property
    def kind(self) -> str:
        """The kind of data (`pipeline.core.kinds`): image or table."""
        return self.kind_facts.name

    @property
    def kind_facts(self) -> kinds.Kind:
        return kinds.kind_of_source(self.source, self.text_columns, self.time_column)

    @property
    def time_column_name(self) -> Optional[str]:
        """A time series' time column: `data.time_column`, or a built-in series' own."""
        return self.time_column or kinds.TIME_COLUMNS.get(self.source)

    @property
    def text_column_names(self) -> list[str]:
        """The free-text columns: `data.text_columns`, or those of a source that has them."""
        return list(self.text_columns) or kinds.TEXT_COLUMNS.get(self.source, [])

    @property
    def label_column(self) -> str:
        return self.label or kinds.BUILTIN_LABELS.get(self.source, "label")

    @property
    def task_name(self) -> str:
        """`data.task`, or the kind's first task (classification, forecast for a time series)."""
        return tasks.task(self.task or self.kind_facts.tasks[0]).name

    @property
    def dataset_name(self) -> str:
        """What the files written for this data are named after: a built-in source, or the data file's (folder's)
        name without its extension (`<paths.expectations>/<name>.yaml`, `<name>.behaviour.yaml`)."""
        return self.source if self.source in kinds.BUILTIN_SOURCES else Path(self.path).stem


@dataclasses.dataclass(frozen=True)
class ValidateConfig:
    suite: str = "auto"
    extra_columns: Literal["error", "warning", "ignore"] = "error"
    max_examples: int = 5
    chunk_rows: int = 250_000

    def _validate(self, section: str) -> None:
        if self.suite != "auto" and not self.suite.endswith((".yaml", ".yml")):
            fail(f"{section}.suite", self.suite, "auto, or the path of a suite file (.yaml)")
        if self.max_examples < 0:
            fail(f"{section}.max_examples", self.max_examples, "0 or more example rows per failed expectation")
        if self.chunk_rows < 1:
            fail(f"{section}.chunk_rows", self.chunk_rows, "a positive number of rows")


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
    missing_values: Literal["impute", "drop"] = "impute"
    validation_fraction: float = 0.15
    test_fraction: float = 0.15
    shard_size: int = 2048
    window: Union[int, Literal["auto"]] = "auto"
    missing_steps: Literal["interpolate", "drop"] = "interpolate"

    def _validate(self, section: str) -> None:
        if self.window != "auto" and self.window < 2:
            fail(f"{section}.window", self.window, "auto or at least 2 steps")
        for name in ("validation_fraction", "test_fraction"):
            value = getattr(self, name)
            if not 0.0 < value < 0.5:
                fail(f"{section}.{name}", value, "a fraction strictly between 0 and 0.5")
        if self.shard_size < 1:
            fail(f"{section}.shard_size", self.shard_size, "a positive number of examples")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    name: str = "auto"
    family: Union[Literal["auto"], Family] = "auto"
    hidden_units: Union[list[int], Literal["auto"]] = "auto"
    filters: list[int] = dataclasses.field(default_factory=lambda: [32, 64])
    kernel_size: int = 3
    rnn_cell: RnnCell = "lstm"
    rnn_units: int = 64
    rnn_bidirectional: bool = False
    num_heads: int = 4
    key_dim: int = 16
    transformer_blocks: int = 2
    activation: Activation = "relu"
    dropout: float = 0.2
    l1: float = 0.0
    l2: float = 0.0001
    batch_norm: bool = False
    augment_flip: AugmentFlip = "none"
    augment_rotation: float = 0.0
    augment_translation: float = 0.0
    augment_zoom: float = 0.0
    augment_contrast: float = 0.0
    text_max_tokens: Union[int, Literal["auto"]] = "auto"
    text_ngrams: int = 2
    text_weighting: TextWeighting = "auto"
    text_sequence_length: Union[int, Literal["auto"]] = "auto"
    text_embedding_dim: int = 64
    series_lookback: Union[int, Literal["auto"]] = "auto"

    def _validate(self, section: str) -> None:
        if self.series_lookback != "auto" and self.series_lookback < 2:
            fail(f"{section}.series_lookback", self.series_lookback, "auto (the whole window) or at least 2 steps")
        if self.text_max_tokens != "auto" and self.text_max_tokens < 1:
            fail(f"{section}.text_max_tokens", self.text_max_tokens, "auto or a positive number of terms")
        if self.text_sequence_length != "auto" and self.text_sequence_length < 1:
            fail(f"{section}.text_sequence_length", self.text_sequence_length, "auto or a positive number of words")
        if not 1 <= self.text_ngrams <= MAX_NGRAMS:
            fail(f"{section}.text_ngrams", self.text_ngrams, f"1 (words) to {MAX_NGRAMS} (word pairs too)")
        if not 0.0 <= self.dropout < 1.0:
            fail(f"{section}.dropout", self.dropout, "a rate in [0, 1)")
        for name in ("augment_rotation", "augment_translation", "augment_zoom", "augment_contrast"):
            if not 0.0 <= getattr(self, name) < 1.0:
                fail(f"{section}.{name}", getattr(self, name), "0 (off) or a fraction in (0, 1)")
        for name in ("l1", "l2"):
            if getattr(self, name) < 0:
                fail(f"{section}.{name}", getattr(self, name), "a non-negative regularisation factor")
        for name in ("hidden_units", "filters"):
            if getattr(self, name) != "auto" and any(width < 1 for width in getattr(self, name)):
                fail(f"{section}.{name}", getattr(self, name), "a list of positive layer widths")
        for name in (
            "kernel_size", "rnn_units", "num_heads", "key_dim", "transformer_blocks",
            "text_embedding_dim",
        ):  # fmt: skip
            if getattr(self, name) < 1:
                fail(f"{section}.{name}", getattr(self, name), "a positive integer")
        if self.name != "auto" and (not self.name or not self.name.replace("-", "").replace("_", "").isalnum()):
            fail(f"{section}.name", self.name, "auto, or letters, digits, '-' and '_' (it becomes a URL path)")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    optimizer: Optimizer = "adam"
    learning_rate: Union[float, Literal["auto"]] = "auto"
    momentum: float = 0.9
    batch_size: int = 64
    epochs: int = 30
    early_stopping_patience: int = 5
    monitor: Literal["val_loss", "val_accuracy"] = "val_loss"
    cache_limit_mb: float = 512.0
    mixed_precision: Literal["auto", "off", "mixed_float16", "mixed_bfloat16"] = "auto"
    jit_compile: bool = False
    steps_per_execution: int = 32

    def _validate(self, section: str) -> None:
        if self.cache_limit_mb < 0:
            fail(f"{section}.cache_limit_mb", self.cache_limit_mb, "0 (never cache) or a size in MiB")
        if self.learning_rate != "auto" and not 0.0 < self.learning_rate <= 10.0:
            fail(f"{section}.learning_rate", self.learning_rate, "a positive number (typically 1e-4 to 1e-1)")
        if not 0.0 <= self.momentum < 1.0:
            fail(f"{section}.momentum", self.momentum, "a value in [0, 1)")
        for name in ("batch_size", "epochs", "steps_per_execution"):
            if getattr(self, name) < 1:
                fail(f"{section}.{name}", getattr(self, name), "a positive integer")
        if self.early_stopping_patience < 0:
            fail(f"{section}.early_stopping_patience", self.early_stopping_patience, "0 or more epochs")


@dataclasses.dataclass(frozen=True)
class TuneConfig:
    enabled: bool = True
    algorithm: Literal["hyperband", "random", "bayesian", "grid"] = "hyperband"
    objective: Literal["auto", "val_accuracy", "val_loss"] = "auto"
    max_trials: int = 30
    max_epochs: int = 9
    hyperband_factor: int = 3
    executions_per_trial: int = 1
    max_seconds: Union[int, None, Literal["auto"]] = "auto"
    budget_trainings: float = 1.0
    min_seconds: float = 60.0
    early_stopping_patience: int = 3
    space: dict = dataclasses.field(default_factory=dict)

    def _validate(self, section: str) -> None:
        for name in ("max_trials", "max_epochs", "executions_per_trial"):
            if getattr(self, name) < 1:
                fail(f"{section}.{name}", getattr(self, name), "a positive integer")
        if self.hyperband_factor < 2:
            fail(f"{section}.hyperband_factor", self.hyperband_factor, "an integer of 2 or more")
        if self.max_seconds not in (None, "auto") and self.max_seconds < 1:
            fail(f"{section}.max_seconds", self.max_seconds, "auto, null (no limit) or a positive number of seconds")
        if self.budget_trainings <= 0:
            fail(f"{section}.budget_trainings", self.budget_trainings, "a positive number of trainings")
        if self.min_seconds < 0:
            fail(f"{section}.min_seconds", self.min_seconds, "0 or more seconds")
        if self.early_stopping_patience < 0:
            fail(f"{section}.early_stopping_patience", self.early_stopping_patience, "0 or more epochs")
        for name, entry in self.space.items():
            search_space.validate_entry(f"{section}.space.{name}", name, entry, self.algorithm)


@dataclasses.dataclass(frozen=True)
class EvaluateConfig:
    roc_curve_points: int = 101
    slices: Union[Literal["auto"], list[str]] = "auto"
    min_slice_examples: int = 10
    baselines: bool = True
    behaviour: bool = True
    invariance_rate: float = 0.9
    behaviour_cases: Optional[str] = "auto"

    def _validate(self, section: str) -> None:
        if self.roc_curve_points < 2:
            fail(f"{section}.roc_curve_points", self.roc_curve_points, "2 or more points")
        if not 0 <= self.invariance_rate <= 1:
            fail(f"{section}.invariance_rate", self.invariance_rate, "a share from 0 to 1, e.g. 0.9")
        if self.min_slice_examples < 1:
            fail(f"{section}.min_slice_examples", self.min_slice_examples, "a positive number of test examples")


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    version: Union[int, str] = "auto"
    tolerance: float = 1e-5
    tflite: bool = True
    infra_validation: bool = True
    warmup_examples: int = 16

    def _validate(self, section: str) -> None:
        if self.version != "auto" and not (isinstance(self.version, int) and self.version >= 1):
            fail(f"{section}.version", self.version, "auto, or a positive integer")
        if not self.tolerance > 0:
            fail(f"{section}.tolerance", self.tolerance, "a positive number")
        if self.warmup_examples < 1:
            fail(f"{section}.warmup_examples", self.warmup_examples, "a positive number of examples per request")


@dataclasses.dataclass(frozen=True)
class GateConfig:
    metric: Literal["auto", "accuracy", "f1", "roc_auc", "rmse", "mae", "mase", "smape"] = "auto"
    min_improvement: float = 0.0
    thresholds: Union[Literal["auto"], dict] = "auto"
    slice_thresholds: dict = dataclasses.field(default_factory=dict)
    max_slice_drop: Optional[float] = None
    baselines: Literal["auto", "judge", "report"] = "auto"
    baseline_confidence: float = 0.95
    behaviour: Literal["auto", "judge", "report"] = "auto"

    def _validate(self, section: str) -> None:
        if not 0.5 <= self.baseline_confidence < 1:
            fail(f"{section}.baseline_confidence", self.baseline_confidence, "a share from 0.5 to under 1, e.g. 0.95")
        if self.min_improvement < 0:
            fail(f"{section}.min_improvement", self.min_improvement, "0 or a positive margin")
        if self.max_slice_drop is not None and self.max_slice_drop < 0:
            fail(f"{section}.max_slice_drop", self.max_slice_drop, "null (off) or 0 or a positive margin")
        bars = dict(self.thresholds) if isinstance(self.thresholds, dict) else {}
        bars.update({f"slice_thresholds.{name}": value for name, value in self.slice_thresholds.items()})
        metrics = ("accuracy", "precision", "recall", "f1", "roc_auc", "r2", "rmse", "mae", "loss", "mase", "smape")
        for key, value in bars.items():
            name = key.removeprefix("slice_thresholds.")
            key = key if key.startswith("slice_thresholds.") else f"thresholds.{key}"
            if name not in metrics:
                fail(
                    f"{section}.{key}",
                    value,
                    "a holdout metric: accuracy, precision, recall, f1, roc_auc,"
                    " r2 (minimums) or rmse, mae, loss, mase, smape (maximums)",
                )
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                fail(f"{section}.{key}", value, "a number")


@dataclasses.dataclass(frozen=True)
class CardConfig:
    intended_use: str = "auto"
    limitations: str = "auto"

    def _validate(self, section: str) -> None:
        for name in ("intended_use", "limitations"):
            if not getattr(self, name).strip():
                fail(f"{section}.{name}", "", "auto, or a sentence or two for the model card")


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
    enabled: Union[bool, Literal["auto"]] = "auto"
    base: FinetuneBase = "trained"
    weights: Optional[str] = "imagenet"
    backbone_input_size: int = 32
    data: dict = dataclasses.field(default_factory=lambda: {"source": "digits_noisy"})
    labelled_per_class: Optional[int] = 10
    unfreeze_layers: int = 2
    head_dropout: float = 0.2
    batch_size: int = 32
    min_steps_per_epoch: int = 10
    head_epochs: int = 20
    head_learning_rate: float = 0.003
    fine_tune_epochs: int = 30
    fine_tune_learning_rate: float = 0.0003
    early_stopping_patience: int = 5

    def _validate(self, section: str) -> None:
        self.target_data  # noqa: B018 - builds and validates the nested data section
        if self.weights not in (None, "imagenet") and self.base != "trained" and not Path(self.weights).is_file():
            fail(
                f"{section}.weights",
                self.weights,
                f"imagenet (downloads), null (random), or an existing weights file (no such file: {self.weights})",
            )
        if self.backbone_input_size < 32:
            fail(f"{section}.backbone_input_size", self.backbone_input_size, "32 or more pixels (keras.applications)")
        if self.labelled_per_class is not None and self.labelled_per_class < 1:
            fail(f"{section}.labelled_per_class", self.labelled_per_class, "null (all) or a positive number")
        if not 0.0 <= self.head_dropout < 1.0:
            fail(f"{section}.head_dropout", self.head_dropout, "a rate in [0, 1)")
        for name in ("batch_size", "min_steps_per_epoch", "head_epochs"):
            if getattr(self, name) < 1:
                fail(f"{section}.{name}", getattr(self, name), "a positive integer")
        for name in ("unfreeze_layers", "fine_tune_epochs", "early_stopping_patience"):
            if getattr(self, name) < 0:
                fail(f"{section}.{name}", getattr(self, name), "0 or a positive integer")
        for name in ("head_learning_rate", "fine_tune_learning_rate"):
            if not 0.0 < getattr(self, name) <= 10.0:
                fail(f"{section}.{name}", getattr(self, name), "a positive learning rate")

    @property
    def target_data(self) -> DataConfig:
        """`finetune.data`: the target dataset, in the same form as the `data` section."""
        return build_section("finetune.data", DataConfig, self.data)


@dataclasses.dataclass(frozen=True)
class MonitorConfig:
    data: Optional[str] = None
    p_value: float = 0.01
    psi_threshold: float = 0.25
    missing_rate_tolerance: float = 0.1
    max_accuracy_drop: float = 0.05
    embedding_components: int = 5
    min_examples: int = 30
    series_change_shift: float = 0.5
    series_spread_ratio: float = 2.5

    def _validate(self, section: str) -> None:
        if not 0.0 < self.p_value < 0.5:
            fail(f"{section}.p_value", self.p_value, "a significance level such as 0.01")
        if self.series_spread_ratio <= 1.0:
            fail(f"{section}.series_spread_ratio", self.series_spread_ratio, "a factor above 1, such as 2.5")
        for name in ("psi_threshold", "missing_rate_tolerance", "max_accuracy_drop", "series_change_shift"):
            if getattr(self, name) < 0:
                fail(f"{section}.{name}", getattr(self, name), "0 or a positive number")
        for name in ("embedding_components", "min_examples"):
            if getattr(self, name) < 1:
                fail(f"{section}.{name}", getattr(self, name), "a positive integer")


@dataclasses.dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8501
    max_batch_size: int = 256
    max_body_bytes: int = 10_485_760

    def _validate(self, section: str) -> None:
        if not 0 < self.port < 65536:
            fail(f"{section}.port", self.port, "a TCP port between 1 and 65535")
        for name in ("max_batch_size", "max_body_bytes"):
            if getattr(self, name) < 1:
                fail(f"{section}.{name}", getattr(self, name), "a positive integer")


@dataclasses.dataclass(frozen=True)
class TrackingConfig:
    uri: str = "sqlite:///mlflow.db"
    experiment: str = "keras-pipeline"
    system_metrics_interval_s: Optional[float] = 5.0

    def _validate(self, section: str) -> None:
        interval = self.system_metrics_interval_s
        if interval is not None and interval <= 0:
            fail(f"{section}.system_metrics_interval_s", interval, "a positive number of seconds, or null (off)")

    @property
    def resolved_uri(self) -> str:
        """The tracking URI in force: `MLFLOW_TRACKING_URI` wins over params.yaml.

        A relative SQLite path is anchored at the project the user works in (`project_root`), not at
        the current folder: `dvc exp run --queue` and `--temp` run stages in a temporary copy that DVC
        deletes afterwards, and their runs must land in the project's store. SQLite waits up to 60 s for
        a lock, so parallel queue workers writing one store wait instead of failing."""
        uri = os.environ.get("MLFLOW_TRACKING_URI") or self.uri
        if not uri.startswith("sqlite:///"):
            return uri
        path, _, query = uri.removeprefix("sqlite:///").partition("?")
        if not Path(path).is_absolute():
            path = str(project_root() / path)
        return f"sqlite:///{path}?{query or 'timeout=60'}"

    @property
    def artifact_location(self) -> str | None:
        """Where a new experiment keeps its artifacts: beside a local store, in the project (else the server's)."""
        store = sqlite_file(self.resolved_uri)
        return (store.parent / "mlruns").as_uri() if store else None


@dataclasses.dataclass(frozen=True)
class Config:
    base: BaseConfig = dataclasses.field(default_factory=BaseConfig)
    paths: PathsConfig = dataclasses.field(default_factory=PathsConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    validate: ValidateConfig = dataclasses.field(default_factory=ValidateConfig)
    preprocess: PreprocessConfig = dataclasses.field(default_factory=PreprocessConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    tune: TuneConfig = dataclasses.field(default_factory=TuneConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = dataclasses.field(default_factory=EvaluateConfig)
    export: ExportConfig = dataclasses.field(default_factory=ExportConfig)
    gate: GateConfig = dataclasses.field(default_factory=GateConfig)
    card: CardConfig = dataclasses.field(default_factory=CardConfig)
    finetune: FinetuneConfig = dataclasses.field(default_factory=FinetuneConfig)
    monitor: MonitorConfig = dataclasses.field(default_factory=MonitorConfig)
    serve: ServeConfig = dataclasses.field(default_factory=ServeConfig)
    tracking: TrackingConfig = dataclasses.field(default_factory=TrackingConfig)

    def _validate(self, section: str) -> None:
        task = tasks.task(self.data.task_name)
        for key, value, allowed in task.check_settings(self.train.monitor, self.tune.objective, self.gate.metric):
            fail(key, value, allowed)
        if self.finetune.enabled is True and self.finetune_mismatch:
            fail("finetune.data", self.finetune.data, self.finetune_mismatch)
        if self.train.jit_compile and self.base.deterministic:
            # Keras drops XLA under op determinism with only a warning: the setting would silently do nothing.
            fail(
                "train.jit_compile",
                True,
                "false while base.deterministic is true (TensorFlow's op determinism turns XLA off);"
                " set base.deterministic: false to compile with XLA",
            )
        family, facts = self.model.family, self.data.kind_facts
        searched = [name for name in self.tune.space.get("family", {}).get("choice", []) if name not in facts.families]
        if searched:
            fail(
                "tune.space.family",
                self.tune.space["family"],
                f"choices among {', '.join(facts.families)} ({facts.name} data cannot be read by {searched[0]})",
            )
        if family != "auto" and family not in facts.families:
            fail(
                "model.family",
                family,
                f"{' or '.join(facts.families)} or auto for {facts.name} data (data.source={self.data.source});"
                f" {family} reads {' or '.join(kind.name for kind in kinds.KINDS.values() if family in kind.families)}"
                " data",
            )

    @property
    def model_family(self) -> str:
        if self.model.family != "auto":
            return self.model.family
        return self.data.kind_facts.default_family

    @property
    def model_defaults(self) -> kinds.Defaults:
        """What `auto` means for the hidden layers and the learning rate: the kind's for the model's family."""
        return self.data.kind_facts.defaults(self.model_family)

    @property
    def hidden_units(self) -> list[int]:
        if self.model.hidden_units != "auto":
            return list(self.model.hidden_units)
        return list(self.model_defaults.hidden_units)

    @property
    def learning_rate(self) -> float:
        if self.train.learning_rate != "auto":
            return self.train.learning_rate
        return self.model_defaults.learning_rate

    @property
    def model_name(self) -> str:
        if self.model.name != "auto":
            return self.model.name
        if self.data.source in kinds.BUILTIN_SOURCES:
            return self.data.source
        return Path(self.data.path).stem.replace(" ", "_") or "model"

    @property
    def finetune_mismatch(self) -> Optional[str]:
        """Why the configured base cannot read the fine-tuning target, or None."""
        target = self.finetune.target_data
        if self.finetune.base == "trained" and target.kind != self.data.kind:
            return (
                f"{self.data.kind} data like data.source={self.data.source}: finetune.base=trained reuses the trained"
                f" model, which reads {self.data.kind} inputs (or set finetune.enabled: false)"
            )
        if self.finetune.base != "trained" and not target.kind_facts.images:
            return "image data: keras.applications bases read images (use finetune.base: trained for tables)"
        return None

    @property
    def finetune_skip_reason(self) -> Optional[str]:
        """Why the fine-tuning stages do nothing this run, or None when they run."""
        if self.finetune.enabled is False:
            return "finetune.enabled is false"
        if self.finetune_mismatch:  # only reachable with enabled: auto
            return (
                f"finetune.enabled is auto and finetune.data ({self.finetune.target_data.source}) is not "
                + (self.finetune_mismatch.split(" (or set")[0])
            )
        return None

    def target_config(self) -> Config:
        """This config with `data` = `finetune.data` and the data paths under `paths.finetune_data`:
        the ingest, validate and preprocess functions then prepare the fine-tuning target as they
        prepare the main dataset (the target's validation reports go to <reports>/finetune/data; its
        suite is <paths.expectations>/<target source or file name>.yaml)."""
        root = self.paths.finetune_data
        paths = dataclasses.replace(
            self.paths,
            ingested=f"{root}/ingested",
            validated=f"{root}/validated",
            prepared=f"{root}/prepared",
            feedback=f"{root}/feedback",  # the main data's feedback batches are not the target's
            reports=f"{self.paths.reports}/finetune/data",
        )
        validate = dataclasses.replace(self.validate, suite="auto")
        return dataclasses.replace(self, data=self.finetune.target_data, paths=paths, validate=validate)

    def to_flat_dict(self) -> dict[str, Any]:
        """`{"train.learning_rate": 0.001, ...}`: the form MLflow params take."""
        flat = {}
        for section, values in dataclasses.asdict(self).items():
            for key, value in values.items():
                flat[f"{section}.{key}"] = value
        return flat


def config_from_dict(raw: Mapping[str, Any]) -> Config:
    """Builds and validates a `Config` from a parsed params mapping.

    Raises:
        ConfigError: naming the key, the value and what is allowed.
    """
    if not isinstance(raw, Mapping):
        raise ConfigError("params.yaml: expected a mapping of sections (base, paths, data, ...) at the top level.")
    sections = {field.name: field for field in dataclasses.fields(Config)}
    unknown = sorted(set(raw) - set(sections))
    if unknown:
        raise ConfigError(f"params.yaml: unknown section {unknown[0]!r}; sections are: {', '.join(sections)}.")
    hints = typing.get_type_hints(Config)
    built = {name: build_section(name, hints[name], raw.get(name)) for name in sections}
    config = with_task_defaults(Config(**built))
    config._validate("")
    return config


def with_task_defaults(config: Config) -> Config:
    """`tune.objective`, `gate.metric` and `gate.thresholds` left on `auto` follow `data.task`, so that
    `data.task: regression` alone gives a working regression run; `gate.baselines` and `gate.behaviour` left on `auto`
    judge the baselines and the behavioural checks when the thresholds are `auto`, and only report them beside a
    user's thresholds."""
    task = tasks.task(config.data.task_name)  # what `auto` means for it: pipeline.core.tasks
    tune = config.tune
    if tune.objective == "auto":
        tune = dataclasses.replace(tune, objective=task.default_objective)
    gate = config.gate
    if gate.metric == "auto":
        gate = dataclasses.replace(gate, metric=task.headline_metric)
    judged = "judge" if gate.thresholds == "auto" else "report"
    if gate.baselines == "auto":
        gate = dataclasses.replace(gate, baselines=judged)
    if gate.behaviour == "auto":
        gate = dataclasses.replace(gate, behaviour=judged)
    if gate.thresholds == "auto":
        gate = dataclasses.replace(gate, thresholds=dict(task.default_thresholds))
    return dataclasses.replace(config, tune=tune, gate=gate)


def load_config(params_file: Union[str, Path] = DEFAULT_PARAMS_FILE) -> Config:
    """Reads `params_file` and returns the validated `Config`.

    Raises:
        ConfigError: if the file is missing, is not YAML, or holds an invalid setting.
    """
    path = Path(params_file)
    if not path.is_file():
        raise ConfigError(f"{path}: no such params file (run from the project root, or pass --params PATH).")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from error
    return config_from_dict(raw or {})
