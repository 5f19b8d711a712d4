"""Stage 1b, `preprocess`: clean, split (stratified, seeded) and write TFRecord shards.

Statistics for normalisation, imputation and categorical encoding are computed on the
training split only and saved in `spec.json`; the model turns them into Keras
preprocessing layers, so the exported model takes raw input.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from pipeline.core.config import Config, DataConfig, PreprocessConfig
from pipeline.core.outputs import replace_directory, write_json_atomic
from pipeline.core.runner import StageResult
from pipeline.data.columns import input_names
from pipeline.data.sources import DataError
from pipeline.data.validation import load_validated

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
    specs, names = [], input_names(list(features.columns))
    for column in features.columns:
        is_numeric = pd.api.types.is_numeric_dtype(features[column]) and not pd.api.types.is_bool_dtype(
            features[column]
        )
        specs.append(
            {
                "column": str(column),
                "name": names[str(column)],
                "type": "numeric" if is_numeric else "categorical",
            }
        )
    if missing_values == "drop":
        keep = features.notna().all(axis=1)
        features, table = features[keep].reset_index(drop=True), table[keep].reset_index(drop=True)
    typed = {}
    for spec in specs:
        values = features[spec["column"]]
        if spec["type"] == "numeric":
            typed[spec["name"]] = values.astype("float64").to_numpy(dtype=np.float32, na_value=np.nan)
        else:
            typed[spec["name"]] = np.array(
                [MISSING_CATEGORY if pd.isna(value) else str(value) for value in values], dtype=object
            )
    labels = encode_labels(table[label], task, classes)
    return pd.DataFrame(typed), labels, specs


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
    enriched = []
    for spec in specs:
        values = features[spec["name"]]
        spec = dict(spec)
        if spec["type"] == "numeric":
            present = values.to_numpy(dtype=np.float64)
            present = present[np.isfinite(present)]
            if present.size == 0:
                raise DataError(f"column {spec['column']!r} has no numeric values in the training split.")
            spec.update(mean=float(present.mean()), variance=float(present.var()), median=float(np.median(present)))
        else:
            counts = values[values != MISSING_CATEGORY].value_counts()
            spec.update(
                vocabulary=sorted(str(value) for value in counts.index),
                most_frequent=str(counts.index[0]) if len(counts) else MISSING_CATEGORY,
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
    for path in paths:
        try:
            with Image.open(path) as image:
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
    pixels = images.reshape(-1, images.shape[-1]).astype(np.float64)
    return {"mean": pixels.mean(axis=0).tolist(), "variance": pixels.var(axis=0).tolist()}


def write_tfrecords(
    output_dir: Path, split: str, features: dict[str, np.ndarray], labels: np.ndarray, task: str, shard_size: int
) -> list[str]:
    """Writes `split-0000k-of-0000n.tfrecord` shards of tf.train.Example; returns the file names."""
    import tensorflow as tf

    count = len(labels)
    num_shards = max(1, -(-count // shard_size))
    names = []
    for shard in range(num_shards):
        name = f"{split}-{shard:05d}-of-{num_shards:05d}.tfrecord"
        with tf.io.TFRecordWriter(str(output_dir / name)) as writer:
            for row in range(shard * shard_size, min(count, (shard + 1) * shard_size)):
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
                writer.write(example.SerializeToString())
        names.append(name)
    return names


def preprocess(
    description: dict,
    table: pd.DataFrame,
    data: DataConfig,
    settings: PreprocessConfig,
    seed: int,
    output_dir: Path,
    schema: dict | None = None,
    train_per_class: int | None = None,
) -> dict:
    """Cleans, splits and writes the dataset; returns the spec (also written as spec.json).

    `train_per_class` keeps only that many labelled training examples per class (the fine-tuning
    target: few labels); validation and test keep their full size so the measurement stays fair.
    """
    task, classes = description["task"], description.get("classes")
    spec = {
        "kind": description["kind"],
        "task": task,
        "label": description["label"],
        "classes": classes,
        "fingerprint": description["fingerprint"],
        "schema": schema,
    }
    if description["kind"] == "image":
        labels = encode_labels(table["label"], task, classes)
        images = load_images(table["path"].tolist(), data.image_size, data.color_mode)
        indices = split_indices(labels, task, settings.validation_fraction, settings.test_fraction, seed)
        if train_per_class is not None:
            indices["train"] = limit_per_class(indices["train"], labels, train_per_class, seed)
        height, width, channels = images.shape[1:]
        spec["image"] = {"name": "image", "height": height, "width": width, "channels": channels}
        spec["image"].update(image_statistics(images[indices["train"]]))
        columns = {"image": images}
    else:
        features, labels, feature_specs = clean_table(
            table, description["label"], task, classes, settings.missing_values
        )
        indices = split_indices(labels, task, settings.validation_fraction, settings.test_fraction, seed)
        if train_per_class is not None and task == "classification":
            indices["train"] = limit_per_class(indices["train"], labels, train_per_class, seed)
        spec["features"] = table_statistics(features.iloc[indices["train"]], feature_specs)
        spec["dropped_columns"] = description.get("dropped_columns", [])  # requests may carry them: ignored
        columns = {name: features[name].to_numpy() for name in features.columns}
    if task == "regression":
        train_labels = labels[indices["train"]]
        spec["label_statistics"] = {"mean": float(train_labels.mean()), "variance": float(train_labels.var())}
    spec["splits"] = {}
    for split in SPLITS:
        chosen = indices[split]
        if split == "train":
            # Sources are often ordered by class (image folders are); the training shards must not be:
            # tf.data shuffles within a bounded buffer, which cannot mix a class-sorted split that outgrows it.
            chosen = np.random.default_rng(seed).permutation(chosen)
        files = write_tfrecords(
            output_dir,
            split,
            {name: values[chosen] for name, values in columns.items()},
            labels[chosen],
            task,
            settings.shard_size,
        )
        spec["splits"][split] = {"num_examples": int(len(chosen)), "files": files}
        if task == "classification":
            spec["splits"][split]["class_counts"] = np.bincount(labels[chosen], minlength=len(classes)).tolist()
    write_json_atomic(output_dir / SPEC_FILE, spec)
    return spec


def prepare_configured(config: Config) -> StageResult:
    """The preprocess stage's work: clean, encode, split and write TFRecord shards to `paths.prepared`."""
    description, table, schema = load_validated(Path(config.paths.validated))
    target = Path(config.paths.prepared)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}-") as scratch:
        staging = Path(scratch) / "out"
        staging.mkdir()
        spec = preprocess(description, table, config.data, config.preprocess, config.base.seed, staging, schema)
        replace_directory(staging, target)
    counts = {split: spec["splits"][split]["num_examples"] for split in SPLITS}
    return StageResult(
        summary=f"split {sum(counts.values())} examples into "
        + " / ".join(f"{split} {count}" for split, count in counts.items())
        + f" -> {target}",  # the split sizes go to MLflow with the datasets (train logs them: DVC may skip this)
    )
