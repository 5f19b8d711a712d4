"""The data contract: what `preprocess` hands to every later stage, as typed objects (`DataSpec`).

`preprocess` writes it as `spec.json` beside the TFRecord shards; tune, train, evaluate, finetune, export,
serving and the monitor read it with `load` and ask its fields, never a raw dict. The exported SavedModel
carries it without the split file lists (`DataSpec.for_serving`) in `assets.extra/pipeline_spec.json`, and
the MLflow model in its metadata (`pipeline_spec`), so clients read the same contract.

The JSON form is versioned: a file written by another version of the contract is refused with a clear
error (run `dvc repro preprocess` to rewrite it). A file without a version is of version 1, the format the
contract had before it was versioned (the same fields).

This is the only module that reads or writes `spec.json` (tests/code/test_layout.py checks it). No TensorFlow.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Optional

from pipeline.core.errors import StageError

SPEC_FILE = "spec.json"
SERVING_SPEC_FILE = "pipeline_spec.json"  # in an exported SavedModel's assets.extra/
SPEC_VERSION = 1
SPLITS = ("train", "validation", "test")


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """One column of a table, as the model reads it."""

    column: str
    """The column's name in the user's data (requests, `pipeline predict` and the monitor use it)."""
    name: str
    """The model's input key for the column (a valid SavedModel signature name, `pipeline.data.columns`)."""
    type: str
    """The column type's name (`pipeline.core.column_types`): numeric, categorical or text."""
    mean: Optional[float] = None
    """Numeric: the training split's mean (normalisation)."""
    variance: Optional[float] = None
    """Numeric: the training split's variance (normalisation)."""
    median: Optional[float] = None
    """Numeric: the training split's median (imputes missing values inside the model)."""
    vocabulary: Optional[list[str]] = None
    """Categorical: the training split's values, sorted (the one-hot lookup; others share one slot).
    Text: the training split's words, most frequent first (the sequence models' vocabulary)."""
    most_frequent: Optional[str] = None
    """Categorical: the training split's most frequent value."""
    terms: Optional[list[str]] = None
    """Text: the training split's words and word pairs, in most texts first (the bag-of-n-grams vocabulary)."""
    idf: Optional[list[float]] = None
    """Text: each term's inverse document frequency on the training split, log(1 + texts / (1 + texts with it))."""
    shared_terms: Optional[int] = None
    """Text: how many of `terms`, the first, are in at least two training texts (the rest are in one)."""
    words_mean: Optional[float] = None
    """Text: the training split's mean number of words in a text."""
    words_p95: Optional[int] = None
    """Text: the 95th percentile of the number of words in a text (a sequence length that cuts 5 % of texts)."""

    @property
    def column_type(self):
        from pipeline.core.column_types import column_type

        return column_type(self.type)


@dataclasses.dataclass(frozen=True)
class ImageSpec:
    """The images' shape and the training split's pixel statistics."""

    name: str
    """The model's input key for the image ("image")."""
    height: int
    """Rows of pixels every image is resized to."""
    width: int
    """Columns of pixels every image is resized to."""
    channels: int
    """1 (grayscale) or 3 (RGB)."""
    mean: list[float]
    """Per channel: the training split's pixel mean on the raw 0-255 scale."""
    variance: list[float]
    """Per channel: the training split's pixel variance on the raw 0-255 scale."""

    @property
    def shape(self) -> tuple[int, int, int]:
        """(height, width, channels): one image as the model takes it."""
        return (self.height, self.width, self.channels)

    @property
    def color_mode(self) -> str:
        return "grayscale" if self.channels == 1 else "rgb"


@dataclasses.dataclass(frozen=True)
class SeriesSpec:
    """A time series: how it is cut into windows, and what the forecast is compared with."""

    time_column: str
    """The column of timestamps (or step numbers) in the user's data."""
    window: int
    """Steps of the past every input column holds (the oldest first)."""
    horizon: int
    """Steps forecast after a window's last step (a direct multi-step forecast, step 1 first)."""
    seasonal_period: int
    """Steps in a season: the seasonal-naive forecast repeats the last season (1: the last value)."""
    frequency: str
    """The steps' frequency as pandas names it (`MS`, `W-SUN`, `YS-JAN`), or `steps` for numbered steps."""
    base: str = "seasonal_naive"
    """The forecast the model corrects: `last_value`, `seasonal_naive` or `autoregression`, whichever errs least
    on the validation block (`pipeline.core.forecasts`)."""
    autoregression: Optional[dict] = None
    """With `base: autoregression`: the linear autoregression fitted on the training block, `coefficients`
    ((window x columns) x horizon, on each window's changes from its columns' last values, window-major),
    `intercept` (horizon) and `strength` (the ridge penalty chosen on the validation block)."""
    id_column: Optional[str] = None
    """The column that tells several series in one table apart (windows never mix two), or None."""
    blocks: Optional[dict[str, list[str]]] = None
    """Each split's first and last timestamp (of its first series): training, then validation, then test."""


@dataclasses.dataclass(frozen=True)
class SplitSpec:
    """One split's shards and size."""

    num_examples: int
    """Examples in the split."""
    files: list[str]
    """The split's TFRecord shard files, relative to the prepared folder, in reading order."""
    class_counts: Optional[list[int]] = None
    """Classification: examples of each class, in the order of `DataSpec.classes`."""


@dataclasses.dataclass(frozen=True)
class LabelStatistics:
    """Regression: the training split's target statistics (the output layer maps to the target's units)."""

    mean: float
    """The training split's mean target."""
    variance: float
    """The training split's target variance."""


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """What preprocess hands on: the kind of data, the task, the inputs and the splits."""

    kind: str
    """The kind of data (`pipeline.data.modalities`): image, table, text or series."""
    task: str
    """The task (`pipeline.core.tasks`): classification, regression or forecast."""
    label: str
    """The label column (tables) or "label" (image folders: the class folder)."""
    classes: Optional[list[str]]
    """Classification: the class names; the model's output i is the probability of classes[i]. Else None."""
    fingerprint: str
    """A hash of the ingested data's content (the search's cache key and the MLflow data version)."""
    schema: Optional[dict]
    """The per-example schema learnt by validation (ranges, categories, image shape): requests are checked
    against it."""
    splits: dict[str, SplitSpec] = dataclasses.field(default_factory=dict)
    """train, validation and test; absent from the serving form (`for_serving`)."""
    features: Optional[list[FeatureSpec]] = None
    """Tables: one entry per model input column, in the table's order. Else None."""
    image: Optional[ImageSpec] = None
    """Images: the shape and pixel statistics. Else None."""
    dropped_columns: Optional[list[str]] = None
    """Tables: `data.drop_columns` (requests may carry them; they are ignored). Else None."""
    label_statistics: Optional[LabelStatistics] = None
    """Regression: the training split's target statistics. Forecast: those of the change from a window's last
    value to each forecast step. Else None."""
    series: Optional[SeriesSpec] = None
    """Time series: the windows and the seasonal period. Else None."""
    version: int = SPEC_VERSION
    """The contract's version (SPEC_VERSION when written)."""

    @property
    def task_type(self):
        """The task's behaviour (`pipeline.core.tasks.Task`)."""
        from pipeline.core.tasks import task

        return task(self.task)

    @property
    def is_binary(self) -> bool:
        """A classification of exactly two classes (one sigmoid output)."""
        return self.task_type.is_binary(self)

    def split(self, name: str) -> SplitSpec:
        if name not in self.splits:
            raise StageError(f"the data spec has no {name!r} split (it has {sorted(self.splits)}).")
        return self.splits[name]

    def for_serving(self) -> DataSpec:
        """The spec without its split file lists: what a client of the exported model needs."""
        return dataclasses.replace(self, splits={})

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: fields that do not apply to this kind or task are left out."""
        raw = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        raw["splits"] = {name: _present(split) for name, split in self.splits.items()}
        raw["features"] = None if self.features is None else [_present(feature) for feature in self.features]
        raw["image"] = None if self.image is None else dataclasses.asdict(self.image)
        raw["label_statistics"] = None if self.label_statistics is None else dataclasses.asdict(self.label_statistics)
        raw["series"] = None if self.series is None else _present(self.series)
        return {key: value for key, value in raw.items() if value is not None}

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "the data spec") -> DataSpec:
        """Raises StageError for another version of the contract or a malformed one, naming `source`."""
        if not isinstance(raw, dict):
            raise StageError(f"{source}: expected a JSON object, got {type(raw).__name__}.")
        version = raw.get("version", 1)
        if version != SPEC_VERSION:
            raise StageError(
                f"{source}: a data spec of version {version!r}; this pipeline reads version {SPEC_VERSION}."
                " Run the preprocess stage again (dvc repro preprocess), or export the model again."
            )
        try:
            return cls(
                kind=raw["kind"],
                task=raw["task"],
                label=raw["label"],
                classes=raw.get("classes"),
                fingerprint=raw["fingerprint"],
                schema=raw.get("schema"),
                splits={name: SplitSpec(**split) for name, split in (raw.get("splits") or {}).items()},
                features=None if raw.get("features") is None else [FeatureSpec(**f) for f in raw["features"]],
                image=None if raw.get("image") is None else ImageSpec(**raw["image"]),
                dropped_columns=raw.get("dropped_columns"),
                label_statistics=None
                if raw.get("label_statistics") is None
                else LabelStatistics(**raw["label_statistics"]),
                series=None if raw.get("series") is None else SeriesSpec(**raw["series"]),
                version=version,
            )
        except (KeyError, TypeError) as error:
            raise StageError(f"{source}: not a data spec of version {SPEC_VERSION} ({error}).") from None


def _present(entry: Any) -> dict[str, Any]:
    """A dataclass's fields that apply (not None), as a dict (the schema inside a spec is kept whole)."""
    return {key: value for key, value in dataclasses.asdict(entry).items() if value is not None}


def load(prepared_dir: str | Path) -> DataSpec:
    """The spec written by preprocess into `prepared_dir`."""
    path = Path(prepared_dir) / SPEC_FILE
    if not path.is_file():
        raise StageError(f"{path}: missing; run the preprocess stage first (dvc repro preprocess).")
    return read(path)


def read(path: str | Path) -> DataSpec:
    """A spec from its JSON file (`spec.json`, or an export's `pipeline_spec.json`)."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise StageError(f"{path}: cannot be read as a data spec ({error}).") from None
    return DataSpec.from_dict(raw, str(path))


def write(spec: DataSpec, path: str | Path) -> Path:
    """Writes `spec` as JSON at `path` (atomically)."""
    from pipeline.core.outputs import write_json_atomic

    return write_json_atomic(Path(path), spec.to_dict())
