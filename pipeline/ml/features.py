"""Reading the prepared TFRecord shards with tf.data, and the model's raw-input preprocessing.

The preprocessing layers take their statistics from `spec.json` (computed on the training
split by the preprocess stage), so the same layers run in training and in the exported model.
"""

from __future__ import annotations

import json
from pathlib import Path

import keras
import tensorflow as tf

from pipeline.data.preparation import SPEC_FILE


def load_spec(prepared_dir: str | Path) -> dict:
    path = Path(prepared_dir) / SPEC_FILE
    if not path.is_file():
        from pipeline.core.runner import StageError

        raise StageError(f"{path}: missing; run the preprocess stage first (dvc repro preprocess).")
    return json.loads(path.read_text())


def is_binary(spec: dict) -> bool:
    return spec["task"] == "classification" and len(spec["classes"]) == 2


def _parse_batch(spec: dict):
    if spec["kind"] == "image":
        description = {"image": tf.io.FixedLenFeature([], tf.string)}
    else:
        description = {
            feature["name"]: tf.io.FixedLenFeature([1], tf.float32 if feature["type"] == "numeric" else tf.string)
            for feature in spec["features"]
        }
    label_type = tf.float32 if spec["task"] == "regression" else tf.int64
    description["label"] = tf.io.FixedLenFeature([], label_type)
    image = spec.get("image")
    binary = is_binary(spec)

    def parse(serialized):
        parsed = tf.io.parse_example(serialized, description)
        label = parsed.pop("label")
        if binary or spec["task"] == "regression":
            label = tf.cast(tf.reshape(label, [-1, 1]), tf.float32)
        if image is not None:
            pixels = tf.io.decode_raw(parsed["image"], tf.uint8)
            shape = [-1, image["height"], image["width"], image["channels"]]
            return tf.cast(tf.reshape(pixels, shape), tf.float32), label
        return parsed, label

    return parse


def make_dataset(
    prepared_dir: str | Path,
    spec: dict,
    split: str,
    batch_size: int,
    shuffle: bool = False,
    seed: int | None = None,
    cache_limit_mb: float = 0,
) -> tf.data.Dataset:
    """Streams a split from its shards: (shuffle) -> batch -> parse -> prefetch.

    A split whose shards are smaller than `cache_limit_mb` is parsed once and kept in memory
    (then shuffled and batched every epoch); larger splits stream from disk every epoch.
    Parsing a whole batch of records in one op is much faster than example by example.
    """
    files = [str(Path(prepared_dir) / name) for name in spec["splits"][split]["files"]]
    dataset = tf.data.TFRecordDataset(files, num_parallel_reads=tf.data.AUTOTUNE if len(files) > 1 else None)
    parse = _parse_batch(spec)
    cached = sum(Path(file).stat().st_size for file in files) <= cache_limit_mb * 2**20
    if cached:
        dataset = dataset.batch(1024).map(parse, num_parallel_calls=tf.data.AUTOTUNE).unbatch().cache()
    if shuffle:
        buffer = min(spec["splits"][split]["num_examples"], 10_000)
        dataset = dataset.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    if not cached:
        dataset = dataset.map(parse, num_parallel_calls=tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = True
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)


@keras.saving.register_keras_serializable(package="pipeline")
class ImputeMissing(keras.layers.Layer):
    """Replaces NaN with a constant (the training median), inside the model."""

    def __init__(self, value: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.value = float(value)

    def call(self, inputs):
        return keras.ops.where(keras.ops.isnan(inputs), self.value, inputs)

    def get_config(self):
        return {**super().get_config(), "value": self.value}


def build_inputs(spec: dict) -> dict[str, keras.KerasTensor] | keras.KerasTensor:
    """The model's raw inputs: one image tensor, or one named (1,) input per table column."""
    if spec["kind"] == "image":
        image = spec["image"]
        return keras.Input(shape=(image["height"], image["width"], image["channels"]), name="image")
    return {
        feature["name"]: keras.Input(
            shape=(1,), name=feature["name"], dtype="float32" if feature["type"] == "numeric" else "string"
        )
        for feature in spec["features"]
    }


def preprocess_inputs(spec: dict, inputs) -> keras.KerasTensor:
    """Raw inputs -> model-ready features: normalised pixels, or normalised numbers + one-hot categories."""
    if spec["kind"] == "image":
        image = spec["image"]
        return keras.layers.Normalization(
            axis=-1, mean=image["mean"], variance=[max(value, 1e-6) for value in image["variance"]], name="normalize"
        )(inputs)
    encoded = []
    for feature in spec["features"]:
        raw = inputs[feature["name"]]
        if feature["type"] == "numeric":
            filled = ImputeMissing(feature["median"], name=f"impute_{feature['name']}")(raw)
            encoded.append(
                keras.layers.Normalization(
                    mean=feature["mean"], variance=max(feature["variance"], 1e-6), name=f"normalize_{feature['name']}"
                )(filled)
            )
        else:
            # Missing and unseen categories share the out-of-vocabulary slot.
            encoded.append(
                keras.layers.StringLookup(
                    vocabulary=feature["vocabulary"] or ["<none>"],
                    output_mode="one_hot",
                    name=f"lookup_{feature['name']}",
                )(raw)
            )
    return keras.layers.Concatenate(name="features")(encoded) if len(encoded) > 1 else encoded[0]
