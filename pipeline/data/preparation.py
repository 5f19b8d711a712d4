"""Stage 1b, `preprocess`: clean, split (stratified, seeded) and write TFRecord shards.

Statistics for normalisation, imputation and categorical encoding are computed on the
training split only and saved in `spec.json`; the model turns them into Keras
preprocessing layers, so the exported model takes raw input.

The work runs on the data engine (`data.engine`, `pipeline.data.engine`): the driver reads only
the labels, splits them and gives every example its shard and place; reading tasks type or decode
parts of the data, serialise the examples into a shuffle (`pipeline.data.shuffle`) and return
partial statistics, merged here in task order; writing tasks write the shards. The tasks are cut
by the data, never by the number of workers, so every engine writes the same bytes.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from pipeline.core import spec as data_spec
from pipeline.core.config import Config, DataConfig, PreprocessConfig
from pipeline.core.outputs import scratch_directory, staged_directory
from pipeline.core.progress import progress
from pipeline.core.runner import StageResult
from pipeline.core.spec import SPLITS, DataSpec, LabelStatistics, SplitSpec
from pipeline.core.tasks import Task, task
from pipeline.data import engine, records, shuffle, storage
from pipeline.data.engine import Engine
from pipeline.data.modalities import data_modality
from pipeline.data.sources import DataError
from pipeline.data.validation import validated_files

log = logging.getLogger(__name__)


def split_indices(
    labels: np.ndarray, task: Task, validation_fraction: float, test_fraction: float, seed: int
) -> dict[str, np.ndarray]:
    """Seeded train/validation/test index split, stratified by what the task stratifies by (classes)."""
    from sklearn.model_selection import train_test_split

    indices = np.arange(len(labels))
    minimum = task.minimum_per_class
    if len(labels) < 10:
        raise DataError(f"only {len(labels)} usable examples after cleaning; at least 10 are needed to split.")
    stratify = task.stratify(labels)
    counts = np.bincount(labels) if stratify is not None else np.array([minimum])
    if counts[counts > 0].min() < minimum:  # classes absent from the data do not matter
        log.warning("a class has fewer than %d examples: splitting without stratification", minimum)
        stratify = None
    rest, test = train_test_split(indices, test_size=test_fraction, random_state=seed, stratify=stratify)
    relative = validation_fraction / (1.0 - test_fraction)
    train, validation = train_test_split(
        rest, test_size=relative, random_state=seed, stratify=None if stratify is None else labels[rest]
    )
    return {"train": np.sort(train), "validation": np.sort(validation), "test": np.sort(test)}


def as_mode(image, mode: str):
    """`image` upright (its EXIF orientation applied, as photo viewers show it) in `mode` ("L" or "RGB");
    transparent pixels (RGBA, LA, palette with transparency) become white, not the hidden colour."""
    from PIL import Image, ImageOps

    image = ImageOps.exif_transpose(image)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    return image.convert(mode)


def load_images(paths: list[str], image_size: Optional[list[int]], color_mode: str) -> np.ndarray:
    """Decodes image files into one uint8 array (N, height, width, channels), resizing as configured."""
    from PIL import Image, UnidentifiedImageError

    mode = "L" if color_mode == "grayscale" else "RGB"
    size = tuple(image_size) if image_size else None
    images = []
    contents = storage.map_files(storage.read_bytes, paths)
    for path in paths:
        try:
            with Image.open(io.BytesIO(next(contents))) as image:
                image = as_mode(image, mode)
                if size is None:
                    size = (image.height, image.width)
                if (image.height, image.width) != size:
                    image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
                array = np.asarray(image, dtype=np.uint8)
        except (UnidentifiedImageError, OSError) as error:
            raise DataError(f"{path}: cannot be decoded as an image ({error}); remove or replace the file.") from error
        images.append(array.reshape(size[0], size[1], 1 if mode == "L" else 3))
    return np.stack(images)


def image_statistics(images: np.ndarray) -> dict:
    """Per-channel pixel mean and variance of the training split (raw 0-255 scale)."""
    return merged_image_statistics([image_partials(images)])


def image_partials(images: np.ndarray) -> tuple[int, list[int], list[int]]:
    """(pixels per channel, sum and sum of squares of each channel): exact integers, merged in any order."""
    pixels = images.reshape(-1, images.shape[-1]).astype(np.int64)
    return len(pixels), pixels.sum(axis=0).tolist(), (pixels * pixels).sum(axis=0).tolist()


def merged_image_statistics(parts: list[tuple[int, list[int], list[int]]]) -> dict:
    """Mean and variance from the parts' exact sums, each rounded once (the same for any split into parts)."""
    from fractions import Fraction

    count = sum(part[0] for part in parts)
    sums = [sum(values) for values in zip(*(part[1] for part in parts), strict=True)]
    squares = [sum(values) for values in zip(*(part[2] for part in parts), strict=True)]
    return {
        "mean": [float(Fraction(total, count)) for total in sums],
        "variance": [
            float(Fraction(square * count - total * total, count * count))
            for total, square in zip(sums, squares, strict=True)
        ],
    }


def serialise_examples(features: dict[str, np.ndarray], labels: np.ndarray, task_name: str) -> list[bytes]:
    """Each row as a serialised tf.train.Example (`pipeline.data.records`, no TensorFlow): images as raw uint8
    bytes, texts as UTF-8, numbers (and a series' windows) as floats, and the label (an integer class index, or
    floats)."""
    columns = {name: records.column_features(values) for name, values in features.items()}
    # by how the task stores a label: a class index, or a value (a forecast: several)
    label_feature = {"int64": records.int64_rows, "float32": records.float_rows}[task(task_name).label_dtype](labels)
    return records.examples({**columns, "label": label_feature}, len(labels))


# The work is cut into tasks of fixed sizes, never by the number of workers: the merged statistics then
# cannot depend on the engine or on how many workers it had. A table's reading task reads one row group of
# the validated table (validation.ROWS_PER_GROUP rows).
IMAGES_PER_TASK = 1_000  # images decoded and serialised by one reading task
EXAMPLES_PER_WRITE = 65_536  # examples per writing task (whole shards, at least one)


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where each example goes: `shards[row]` (numbered across the splits; -1: not written) at `positions[row]`."""

    shards: np.ndarray
    positions: np.ndarray
    names: tuple[str, ...]  # each shard's file name
    first_shard: dict[str, int]  # each split's first shard
    counts: np.ndarray  # examples per shard


def shard_layout(rows: int, chosen: dict[str, np.ndarray], shard_size: int) -> Layout:
    """Shards of `shard_size` examples for each split, in the order of `chosen[split]` (row numbers)."""
    shards, positions = np.full(rows, -1, dtype=np.int64), np.zeros(rows, dtype=np.int64)
    names, first_shard, counts = [], {}, []
    for split in SPLITS:
        order = chosen[split]
        number = max(1, -(-len(order) // shard_size))
        first_shard[split] = len(names)
        shards[order] = len(names) + np.arange(len(order)) // shard_size
        positions[order] = np.arange(len(order)) % shard_size
        names += [f"{split}-{shard:05d}-of-{number:05d}.tfrecord" for shard in range(number)]
        counts += [min(shard_size, len(order) - shard * shard_size) for shard in range(number)]
    return Layout(shards, positions, tuple(names), first_shard, np.array(counts, dtype=np.int64))


@dataclasses.dataclass(frozen=True)
class WriteShards:
    """A writing task: shards `first` to `end` - 1, one at a time (memory: one shard), each shard's examples
    gathered from every run and written in position order."""

    folder: str
    runs: int
    output_dir: str
    names: tuple[str, ...]
    counts: tuple[int, ...]

    def __call__(self, span: tuple[int, int]) -> int:
        for shard in range(*span):
            examples = sorted(
                (position, example)
                for _, position, example in shuffle.read_runs(Path(self.folder), self.runs, shard, shard + 1)
            )
            if [position for position, _ in examples] != list(range(self.counts[shard])):
                raise RuntimeError(f"shard {self.names[shard]}: the shuffle lost or repeated examples")
            path = Path(self.output_dir) / self.names[shard]
            partial = path.with_name(f".{path.name}.partial")  # a retried task rewrites it whole
            records.write_records(partial, (example for _, example in examples))
            os.replace(partial, path)
        return sum(self.counts[span[0] : span[1]])


def read_row_group(path: str, group: int, columns: list[str] | None) -> pd.DataFrame:
    import pyarrow.parquet as parquet

    return parquet.ParquetFile(path).read_row_group(group, columns=columns).to_pandas()


def row_groups(path: Path) -> list[int]:
    """The row count of each row group of a Parquet file."""
    import pyarrow.parquet as parquet

    metadata = parquet.ParquetFile(path).metadata
    return [metadata.row_group(group).num_rows for group in range(metadata.num_row_groups)]


def preprocess(
    description: dict,
    data_path: Path,
    data: DataConfig,
    settings: PreprocessConfig,
    seed: int,
    output_dir: Path,
    schema: dict | None = None,
    train_per_class: int | None = None,
    runner: Engine | None = None,
) -> DataSpec:
    """Cleans, splits and writes the dataset at `data_path` (the validated data of its kind); returns the
    spec (also written as spec.json).

    `train_per_class` keeps only that many labelled training examples per class (the fine-tuning
    target: few labels); validation and test keep their full size so the measurement stays fair.
    The work runs on `runner` (default: in this process): reading tasks type, decode and serialise parts
    of the data and return partial statistics; writing tasks gather each shard's examples (`shuffle`).
    """
    runner = runner or Engine()
    the_task, classes = task(description["task"]), description.get("classes")
    output_dir = Path(output_dir)
    scratch = Path(runner.scratch) if runner.scratch else output_dir.parent
    scratch.mkdir(parents=True, exist_ok=True)
    split = Splitter(the_task, settings, seed, train_per_class)
    modality = data_modality(description["kind"])
    with scratch_directory(scratch, "shuffle") as folder:
        labels, chosen, layout, runs, fields = modality.prepare(
            description, Path(data_path), data, split, folder, runner
        )
        spans, first = [], 0
        per_task = max(1, EXAMPLES_PER_WRITE // settings.shard_size)
        while first < len(layout.names):
            spans.append((first, min(len(layout.names), first + per_task)))
            first = spans[-1][1]
        writer = WriteShards(folder, runs, str(output_dir), layout.names, tuple(layout.counts.tolist()))
        list(progress(runner.map(writer, spans), "writing shards", total=len(spans), minimum=10))
    # a task's own (regression: the target's), unless the kind computes them (a forecast: the changes)
    label_statistics = fields.pop("label_statistics", None) or the_task.label_statistics(labels[chosen["train"]])
    splits = {}
    for position, name in enumerate(SPLITS):
        end = layout.first_shard[SPLITS[position + 1]] if position + 1 < len(SPLITS) else len(layout.names)
        splits[name] = SplitSpec(
            num_examples=int(len(chosen[name])),
            files=list(layout.names[layout.first_shard[name] : end]),
            class_counts=the_task.class_counts(labels[chosen[name]], classes),
        )
    spec = DataSpec(
        kind=description["kind"],
        task=the_task.name,
        label=description["label"],
        classes=classes,
        fingerprint=description["fingerprint"],
        schema=schema,
        splits=splits,
        label_statistics=None if label_statistics is None else LabelStatistics(**label_statistics),
        **fields,
    )
    data_spec.write(spec, output_dir / data_spec.SPEC_FILE)
    return spec


@dataclasses.dataclass(frozen=True)
class Splitter:
    """Each split's examples (numbers of the kept rows) in the order they are written: the seeded stratified
    split, the training split shuffled."""

    task: Task
    settings: PreprocessConfig
    seed: int
    train_per_class: int | None

    def __call__(self, labels: np.ndarray) -> dict[str, np.ndarray]:
        settings, seed = self.settings, self.seed
        indices = split_indices(labels, self.task, settings.validation_fraction, settings.test_fraction, seed)
        indices["train"] = self.task.limit_per_class(indices["train"], labels, self.train_per_class, seed)
        # Sources are often ordered by class (image folders are); the training shards must not be: tf.data
        # shuffles within a bounded buffer, which cannot mix a class-sorted split that outgrows it.
        indices["train"] = np.random.default_rng(seed).permutation(indices["train"])
        return indices


def prepare_configured(config: Config) -> StageResult:
    """The preprocess stage's work: clean, encode, split and write TFRecord shards to `paths.prepared`."""
    validated = Path(config.paths.validated)
    description, data_path, schema = validated_files(validated)
    target = Path(config.paths.prepared)
    with staged_directory(target) as staging:
        spec = preprocess(
            description, data_path, config.data, config.preprocess, config.base.seed, staging, schema,
            runner=engine.from_config(config),
        )  # fmt: skip
    counts = {split: spec.split(split).num_examples for split in SPLITS}
    return StageResult(
        summary=f"split {sum(counts.values())} examples into "
        + " / ".join(f"{split} {count}" for split, count in counts.items())
        + f" -> {target}",  # the split sizes go to MLflow with the datasets (train logs them: DVC may skip this)
    )
