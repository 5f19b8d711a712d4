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

from pipeline.core.config import Config, DataConfig, PreprocessConfig
from pipeline.core.outputs import replace_directory, scratch_directory, write_json_atomic
from pipeline.core.progress import progress
from pipeline.core.runner import StageResult
from pipeline.data import engine, shuffle, storage
from pipeline.data.columns import input_names
from pipeline.data.engine import Engine
from pipeline.data.sources import DataError
from pipeline.data.validation import validated_files

log = logging.getLogger(__name__)

SPEC_FILE = "spec.json"
SPLITS = ("train", "validation", "test")
MISSING_CATEGORY = ""


def clean_table(
    table: pd.DataFrame, label: str, task: str, classes: Optional[list[str]], missing_values: str
) -> tuple[pd.DataFrame, np.ndarray, list[dict]]:
    """Splits a raw table into typed features and encoded labels.

    Rows without a label are dropped; rows with missing features are dropped (`drop`) or
    kept for in-model imputation (`impute`). Returns (features, labels, feature specs).
    """
    table = table[table[label].notna()].reset_index(drop=True)
    features = table.drop(columns=[label])
    specs = feature_specs(features)
    if missing_values == "drop":
        keep = features.notna().all(axis=1)
        features, table = features[keep].reset_index(drop=True), table[keep].reset_index(drop=True)
    return typed_features(features, specs), encode_labels(table[label], task, classes), specs


def feature_specs(features: pd.DataFrame) -> list[dict]:
    """Each column's spec: its name in the table, its input name in the model, numeric or categorical (by
    the column's type, so a frame without rows, read from a file's schema, gives the same specs)."""
    names = input_names(list(features.columns))
    specs = []
    for column in features.columns:
        dtype = features[column].dtype
        is_numeric = pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)
        specs.append(
            {"column": str(column), "name": names[str(column)], "type": "numeric" if is_numeric else "categorical"}
        )
    return specs


def typed_features(features: pd.DataFrame, specs: list[dict]) -> pd.DataFrame:
    """The features as the model takes them: float32 numbers (NaN where missing) and texts ("" where missing)."""
    typed = {}
    for spec in specs:
        values = features[spec["column"]]
        if spec["type"] == "numeric":
            typed[spec["name"]] = values.astype("float64").to_numpy(dtype=np.float32, na_value=np.nan)
        else:
            typed[spec["name"]] = np.array(
                [MISSING_CATEGORY if pd.isna(value) else str(value) for value in values], dtype=object
            )
    return pd.DataFrame(typed, index=features.index)


def encode_labels(values: pd.Series, task: str, classes: Optional[list[str]]) -> np.ndarray:
    if task == "regression":
        return values.astype("float64").to_numpy(dtype=np.float32)
    index = {name: position for position, name in enumerate(classes)}
    return np.array([index[str(value)] for value in values], dtype=np.int64)


def split_indices(
    labels: np.ndarray, task: str, validation_fraction: float, test_fraction: float, seed: int
) -> dict[str, np.ndarray]:
    """Seeded train/validation/test index split, stratified by class for classification."""
    from sklearn.model_selection import train_test_split

    indices = np.arange(len(labels))
    minimum = 3 if task == "classification" else 1
    if len(labels) < 10:
        raise DataError(f"only {len(labels)} usable examples after cleaning; at least 10 are needed to split.")
    stratify = labels if task == "classification" else None
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


def limit_per_class(indices: np.ndarray, labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """At most `per_class` indices of each class, drawn with `seed`: a few-labels training split."""
    generator = np.random.default_rng(seed)
    kept = []
    for label in np.unique(labels[indices]):
        members = indices[labels[indices] == label]
        kept.append(generator.choice(members, size=min(per_class, len(members)), replace=False))
    return np.sort(np.concatenate(kept))


def table_statistics(features: pd.DataFrame, specs: list[dict]) -> list[dict]:
    """Adds training-split statistics to each feature spec: mean/variance/median or vocabulary."""
    return merged_table_statistics([table_partials(features, specs)], specs)


def table_partials(features: pd.DataFrame, specs: list[dict]) -> list[dict]:
    """Per feature, what the statistics of a part of the training split need, to be merged with the other
    parts' (`merged_table_statistics`): count, mean, variance and value counts of a number; counts of each
    text in the order of first appearance."""
    partials = []
    for spec in specs:
        values = features[spec["name"]]
        if spec["type"] == "numeric":
            present = values.to_numpy(dtype=np.float64)
            present = present[np.isfinite(present)]
            distinct, counts = np.unique(present, return_counts=True)
            partials.append(
                {
                    "count": int(present.size),
                    "mean": float(present.mean()) if present.size else 0.0,
                    "variance": float(present.var()) if present.size else 0.0,
                    "distinct": distinct,
                    "counts": counts,
                }
            )
        else:
            texts = values[values != MISSING_CATEGORY]
            partials.append({"texts": texts.value_counts(sort=False).to_dict()})  # first appearance first
    return partials


def merged_table_statistics(parts: list[list[dict]], specs: list[dict]) -> list[dict]:
    """The statistics of the whole training split from its parts' `table_partials`, merged in the parts' order:
    the median is exact (from the merged value counts), mean and variance merge by Chan's formula (a single
    part's are numpy's own); the most frequent text is the first to appear among the most frequent."""
    enriched = []
    for position, spec in enumerate(specs):
        spec = dict(spec)
        pieces = [part[position] for part in parts]
        if spec["type"] == "numeric":
            pieces = [piece for piece in pieces if piece["count"]]
            if not pieces:
                raise DataError(f"column {spec['column']!r} has no numeric values in the training split.")
            count, mean, squares = pieces[0]["count"], pieces[0]["mean"], pieces[0]["variance"] * pieces[0]["count"]
            variance = pieces[0]["variance"]
            for piece in pieces[1:]:
                delta, total = piece["mean"] - mean, count + piece["count"]
                mean += delta * piece["count"] / total
                squares += piece["variance"] * piece["count"] + delta * delta * count * piece["count"] / total
                count, variance = total, None
            distinct, inverse = np.unique(np.concatenate([piece["distinct"] for piece in pieces]), return_inverse=True)
            counts = np.bincount(inverse, weights=np.concatenate([piece["counts"] for piece in pieces]))
            ranks = np.cumsum(counts)  # values below rank r: those with ranks[i] <= r
            low, high = distinct[np.searchsorted(ranks, [(count - 1) // 2, count // 2], side="right")]
            spec.update(
                mean=float(mean),
                variance=float(squares / count if variance is None else variance),
                median=float(low if low == high else (low + high) / 2),
            )
        else:
            counts: dict[str, int] = {}
            for piece in pieces:
                for text, number in piece["texts"].items():
                    counts[text] = counts.get(text, 0) + number
            spec.update(
                vocabulary=sorted(str(value) for value in counts),
                most_frequent=str(max(counts, key=counts.get)) if counts else MISSING_CATEGORY,
            )
        enriched.append(spec)
    return enriched


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


def serialise_examples(features: dict[str, np.ndarray], labels: np.ndarray, task: str) -> list[bytes]:
    """Each row as a serialised tf.train.Example: images as raw uint8 bytes, texts as UTF-8, numbers as floats,
    and the label (an integer class index or a float)."""
    import tensorflow as tf

    examples = []
    for row in range(len(labels)):
        feature = {}
        for key, values in features.items():
            value = values[row]
            if isinstance(value, np.ndarray) and value.dtype == np.uint8:
                feature[key] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.tobytes()]))
            elif isinstance(value, str):
                feature[key] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.encode()]))
            else:
                feature[key] = tf.train.Feature(float_list=tf.train.FloatList(value=[float(value)]))
        if task == "regression":
            feature["label"] = tf.train.Feature(float_list=tf.train.FloatList(value=[float(labels[row])]))
        else:
            feature["label"] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(labels[row])]))
        example = tf.train.Example(features=tf.train.Features(feature=feature))
        examples.append(example.SerializeToString(deterministic=True))  # the same bytes in every process
    return examples


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
class TableLabels:
    """A reading task's first pass over a row group of the validated table: which rows are kept (a label,
    and with missing_values=drop every feature) and their encoded labels."""

    path: str
    label: str
    task: str
    classes: tuple[str, ...] | None
    complete_only: bool

    def __call__(self, group: int) -> tuple[np.ndarray, np.ndarray]:
        chunk = read_row_group(self.path, group, None if self.complete_only else [self.label])
        keep = chunk[self.label].notna()
        if self.complete_only:
            keep &= chunk.notna().all(axis=1)
        classes = list(self.classes) if self.classes is not None else None
        return keep.to_numpy(), encode_labels(chunk[self.label][keep], self.task, classes)


@dataclasses.dataclass(frozen=True)
class ShuffleTable:
    """A reading task: a row group of the validated table typed, serialised and written to the shuffle; returns
    the training rows' `table_partials`."""

    path: str
    label: str
    task: str
    classes: tuple[str, ...] | None
    specs: tuple[dict, ...]
    folder: str
    total_shards: int
    train_shards: int

    def __call__(self, item: tuple[int, np.ndarray, np.ndarray]) -> list[dict]:
        group, shards, positions = item
        chunk = read_row_group(self.path, group, None)
        written = shards >= 0
        chunk, shards, positions = chunk[written], shards[written], positions[written]
        features = typed_features(chunk.drop(columns=[self.label]), list(self.specs))
        classes = list(self.classes) if self.classes is not None else None
        labels = encode_labels(chunk[self.label], self.task, classes)
        columns = {name: features[name].to_numpy() for name in features.columns}
        examples = serialise_examples(columns, labels, self.task)
        shuffle.write_run(Path(self.folder), group, shards, positions, examples, self.total_shards)
        return table_partials(features[shards < self.train_shards], list(self.specs))


@dataclasses.dataclass(frozen=True)
class ShuffleImages:
    """A reading task: a slice of the image manifest decoded, serialised and written to the shuffle; returns
    the training images' `image_partials`."""

    size: tuple[int, int]
    color_mode: str
    task: str
    folder: str
    total_shards: int
    train_shards: int

    def __call__(self, item: tuple[int, list[str], np.ndarray, np.ndarray, np.ndarray]) -> tuple:
        run, paths, labels, shards, positions = item
        images = load_images(paths, list(self.size), self.color_mode)
        examples = serialise_examples({"image": images}, labels, self.task)
        shuffle.write_run(Path(self.folder), run, shards, positions, examples, self.total_shards)
        return image_partials(images[shards < self.train_shards])


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
        import tensorflow as tf

        for shard in range(*span):
            examples = sorted(
                (position, example)
                for _, position, example in shuffle.read_runs(Path(self.folder), self.runs, shard, shard + 1)
            )
            if [position for position, _ in examples] != list(range(self.counts[shard])):
                raise RuntimeError(f"shard {self.names[shard]}: the shuffle lost or repeated examples")
            path = Path(self.output_dir) / self.names[shard]
            partial = path.with_name(f".{path.name}.partial")  # a retried task rewrites it whole
            with tf.io.TFRecordWriter(str(partial)) as writer:
                for _, example in examples:
                    writer.write(example)
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
) -> dict:
    """Cleans, splits and writes the dataset at `data_path` (the validated table, or image manifest); returns
    the spec (also written as spec.json).

    `train_per_class` keeps only that many labelled training examples per class (the fine-tuning
    target: few labels); validation and test keep their full size so the measurement stays fair.
    The work runs on `runner` (default: in this process): reading tasks type, decode and serialise parts
    of the data and return partial statistics; writing tasks gather each shard's examples (`shuffle`).
    """
    runner = runner or Engine()
    task, classes = description["task"], description.get("classes")
    spec = {
        "kind": description["kind"],
        "task": task,
        "label": description["label"],
        "classes": classes,
        "fingerprint": description["fingerprint"],
        "schema": schema,
    }
    output_dir = Path(output_dir)
    scratch = Path(runner.scratch) if runner.scratch else output_dir.parent
    scratch.mkdir(parents=True, exist_ok=True)
    split = Splitter(task, settings, seed, train_per_class)
    with scratch_directory(scratch, "shuffle") as folder:
        if description["kind"] == "image":
            labels, chosen, layout, runs = _read_images(description, Path(data_path), data, split, folder, runner, spec)
        else:
            labels, chosen, layout, runs = _read_table(description, Path(data_path), split, folder, runner, spec)
        spans, first = [], 0
        per_task = max(1, EXAMPLES_PER_WRITE // settings.shard_size)
        while first < len(layout.names):
            spans.append((first, min(len(layout.names), first + per_task)))
            first = spans[-1][1]
        writer = WriteShards(folder, runs, str(output_dir), layout.names, tuple(layout.counts.tolist()))
        list(progress(runner.map(writer, spans), "writing shards", total=len(spans), minimum=10))
    if task == "regression":
        train_labels = labels[chosen["train"]]
        spec["label_statistics"] = {"mean": float(train_labels.mean()), "variance": float(train_labels.var())}
    spec["splits"] = {}
    for position, name in enumerate(SPLITS):
        end = layout.first_shard[SPLITS[position + 1]] if position + 1 < len(SPLITS) else len(layout.names)
        spec["splits"][name] = {
            "num_examples": int(len(chosen[name])),
            "files": list(layout.names[layout.first_shard[name] : end]),
        }
        if task == "classification":
            counts = np.bincount(labels[chosen[name]], minlength=len(classes))
            spec["splits"][name]["class_counts"] = counts.tolist()
    write_json_atomic(output_dir / SPEC_FILE, spec)
    return spec


@dataclasses.dataclass(frozen=True)
class Splitter:
    """Each split's examples (numbers of the kept rows) in the order they are written: the seeded stratified
    split, the training split shuffled."""

    task: str
    settings: PreprocessConfig
    seed: int
    train_per_class: int | None

    def __call__(self, labels: np.ndarray) -> dict[str, np.ndarray]:
        settings, seed = self.settings, self.seed
        indices = split_indices(labels, self.task, settings.validation_fraction, settings.test_fraction, seed)
        if self.train_per_class is not None and self.task == "classification":
            indices["train"] = limit_per_class(indices["train"], labels, self.train_per_class, seed)
        # Sources are often ordered by class (image folders are); the training shards must not be: tf.data
        # shuffles within a bounded buffer, which cannot mix a class-sorted split that outgrows it.
        indices["train"] = np.random.default_rng(seed).permutation(indices["train"])
        return indices


def _read_images(description, manifest_path, data, split, folder, runner, spec):
    """The image manifest's labels split; images decoded and serialised into the shuffle in slices."""
    manifest = pd.read_parquet(manifest_path)
    labels = encode_labels(manifest["label"], description["task"], description.get("classes"))
    chosen = split(labels)
    layout = shard_layout(len(labels), chosen, split.settings.shard_size)
    paths = manifest["path"].tolist()
    size = data.image_size or list(load_images(paths[:1], None, data.color_mode).shape[1:3])
    reader = ShuffleImages(
        tuple(size), data.color_mode, description["task"], folder, len(layout.names), layout.first_shard["validation"]
    )
    tasks = []
    for run, start in enumerate(range(0, len(paths), IMAGES_PER_TASK)):
        part = slice(start, start + IMAGES_PER_TASK)
        tasks.append((run, paths[part], labels[part], layout.shards[part], layout.positions[part]))
    partials = list(progress(runner.map(reader, tasks), "preparing images", total=len(tasks), minimum=10))
    channels = 1 if data.color_mode == "grayscale" else 3
    spec["image"] = {"name": "image", "height": size[0], "width": size[1], "channels": channels}
    spec["image"].update(merged_image_statistics(partials))
    return labels, chosen, layout, len(tasks)


def _read_table(description, table_path, split, folder, runner, spec):
    """A first pass over the validated table's row groups gives the kept rows' labels to split; a second
    types and serialises the rows into the shuffle."""
    import pyarrow.parquet as parquet

    task, label = description["task"], description["label"]
    classes = tuple(description["classes"]) if description.get("classes") else None
    groups = row_groups(table_path)
    specs = feature_specs(parquet.read_schema(table_path).empty_table().to_pandas().drop(columns=[label]))
    complete_only = split.settings.missing_values == "drop"
    labeller = TableLabels(str(table_path), label, task, classes, complete_only)
    # Only the label column is read unless rows with a missing feature are dropped: that narrow pass runs here.
    passes = list((runner if complete_only else Engine()).map(labeller, list(range(len(groups)))))
    keep = np.concatenate([kept for kept, _ in passes])
    labels = np.concatenate([encoded for _, encoded in passes])
    chosen = split(labels)
    kept_rows = np.flatnonzero(keep)
    layout = shard_layout(
        len(keep), {name: kept_rows[rows] for name, rows in chosen.items()}, split.settings.shard_size
    )
    reader = ShuffleTable(
        str(table_path), label, task, classes, tuple(specs), folder, len(layout.names), layout.first_shard["validation"]
    )
    starts = np.concatenate([[0], np.cumsum(groups)])
    tasks = []
    for group in range(len(groups)):
        part = slice(starts[group], starts[group + 1])
        tasks.append((group, layout.shards[part], layout.positions[part]))
    partials = list(progress(runner.map(reader, tasks), "preparing rows", total=len(tasks), minimum=10))
    spec["features"] = merged_table_statistics(partials, specs)
    spec["dropped_columns"] = description.get("dropped_columns", [])  # requests may carry them: ignored
    return labels, chosen, layout, len(tasks)


def prepare_configured(config: Config) -> StageResult:
    """The preprocess stage's work: clean, encode, split and write TFRecord shards to `paths.prepared`."""
    validated = Path(config.paths.validated)
    description, data_path, schema = validated_files(validated)
    target = Path(config.paths.prepared)
    target.parent.mkdir(parents=True, exist_ok=True)
    with scratch_directory(target.parent, target.name) as scratch:
        staging = Path(scratch) / "out"
        staging.mkdir()
        spec = preprocess(
            description, data_path, config.data, config.preprocess, config.base.seed, staging, schema,
            runner=engine.from_config(config),
        )  # fmt: skip
        replace_directory(staging, target)
    counts = {split: spec["splits"][split]["num_examples"] for split in SPLITS}
    return StageResult(
        summary=f"split {sum(counts.values())} examples into "
        + " / ".join(f"{split} {count}" for split, count in counts.items())
        + f" -> {target}",  # the split sizes go to MLflow with the datasets (train logs them: DVC may skip this)
    )
