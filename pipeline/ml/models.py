"""Config-driven Functional Keras models: MLP, CNN, RNN (LSTM/GRU) and a small Transformer encoder.

`build_model(hyperparameters, spec)` takes a plain mapping of hyperparameters (the `model`
and `train` settings, or a tuner's choices) and the dataset spec written by `preprocess`.
The kind of data's model side (`ModelModality.encode`) runs a family's body on what it reads: a CNN convolves
an image's grid or a text's sequence of word embeddings; the RNN and Transformer families read a sequence (an
image row by row, a text word by word).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras

from pipeline.core.spec import DataSpec
from pipeline.ml.features import build_inputs, preprocess_inputs
from pipeline.ml.modalities import model_modality


@keras.saving.register_keras_serializable(package="pipeline")
class PositionEmbedding(keras.layers.Layer):
    """Adds a learned embedding of each position to a sequence (batch, length, width)."""

    def __init__(self, sequence_length: int, width: int, **kwargs):
        super().__init__(**kwargs)
        self.sequence_length = sequence_length
        self.width = width
        # in this layer's own dtype policy: a float32 model loaded while a mixed-precision policy is global (the
        # gate judging a float32 champion in a mixed_bfloat16 run) must not mix bfloat16 positions into it
        self.embedding = keras.layers.Embedding(sequence_length, width, dtype=self.dtype_policy)

    def build(self, input_shape):
        self.embedding.build((None, self.sequence_length))
        super().build(input_shape)

    def call(self, inputs):
        positions = keras.ops.arange(self.sequence_length)
        return inputs + self.embedding(positions)[None, :, :]

    def get_config(self):
        return {**super().get_config(), "sequence_length": self.sequence_length, "width": self.width}


@keras.saving.register_keras_serializable(package="pipeline")
class ImagenetPreprocess(keras.layers.Layer):
    """Scales 0-255 RGB pixels as a keras.applications backbone's weights expect (`tf`: to [-1, 1];
    `caffe`: BGR minus the ImageNet channel means)."""

    def __init__(self, mode: str, **kwargs):
        super().__init__(**kwargs)
        self.mode = mode

    def call(self, inputs):
        return keras.applications.imagenet_utils.preprocess_input(inputs, mode=self.mode)

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


def _regularizer(hyperparameters: Mapping[str, Any]):
    l1, l2 = float(hyperparameters["l1"]), float(hyperparameters["l2"])
    return keras.regularizers.L1L2(l1=l1, l2=l2) if (l1 or l2) else None


def _dense_block(features, units: int, hyperparameters: Mapping[str, Any], name: str):
    features = keras.layers.Dense(
        units,
        activation=None if hyperparameters["batch_norm"] else hyperparameters["activation"],
        kernel_regularizer=_regularizer(hyperparameters),
        name=f"{name}_dense",
    )(features)
    if hyperparameters["batch_norm"]:
        features = keras.layers.BatchNormalization(name=f"{name}_batch_norm")(features)
        features = keras.layers.Activation(hyperparameters["activation"], name=f"{name}_activation")(features)
    if hyperparameters["dropout"]:
        features = keras.layers.Dropout(hyperparameters["dropout"], name=f"{name}_dropout")(features)
    return features


def _cnn_body(features, hyperparameters: Mapping[str, Any], ordered: bool = False):
    """Convolution blocks over a grid (batch, height, width, channels), or a sequence (batch, steps, width);
    `ordered`: a sequence whose steps keep their place (a series' window) is flattened, not pooled."""
    sequence = len(features.shape) == 3
    convolution = keras.layers.Conv1D if sequence else keras.layers.Conv2D
    pooling = keras.layers.MaxPooling1D if sequence else keras.layers.MaxPooling2D
    for index, filters in enumerate(hyperparameters["filters"]):
        features = convolution(
            filters,
            hyperparameters["kernel_size"],
            padding="same",
            activation=None if hyperparameters["batch_norm"] else hyperparameters["activation"],
            kernel_regularizer=_regularizer(hyperparameters),
            name=f"conv_{index}",
        )(features)
        if hyperparameters["batch_norm"]:
            features = keras.layers.BatchNormalization(name=f"conv_{index}_batch_norm")(features)
            features = keras.layers.Activation(hyperparameters["activation"], name=f"conv_{index}_activation")(features)
        if min(features.shape[1 : len(features.shape) - 1]) >= 4:
            features = pooling(name=f"conv_{index}_pool")(features)
    if sequence and not ordered:  # a text's length varies: the strongest match of each filter, wherever it is
        return keras.layers.GlobalMaxPooling1D(name="pool")(features)
    return keras.layers.Flatten(name="flatten")(features)


def _rnn_body(sequence, hyperparameters: Mapping[str, Any], unroll: bool = False):
    """An LSTM or GRU over the sequence; `unroll`ed over a short window of fixed length, it converts to TFLite
    builtin ops (a loop over the steps needs TensorFlow's tensor lists, which TFLite builtins lack)."""
    cell = {"lstm": keras.layers.LSTM, "gru": keras.layers.GRU}[hyperparameters["rnn_cell"]]
    layer = cell(hyperparameters["rnn_units"], unroll=unroll, name=hyperparameters["rnn_cell"])
    if hyperparameters.get("rnn_bidirectional"):
        layer = keras.layers.Bidirectional(layer, name=f"bidirectional_{hyperparameters['rnn_cell']}")
    return layer(sequence)


def _transformer_body(sequence, hyperparameters: Mapping[str, Any]):
    width = hyperparameters["num_heads"] * hyperparameters["key_dim"]
    sequence = keras.layers.Dense(width, name="token_projection")(sequence)
    sequence = PositionEmbedding(sequence.shape[1], width, name="position_embedding")(sequence)
    for index in range(hyperparameters["transformer_blocks"]):
        attended = keras.layers.MultiHeadAttention(
            hyperparameters["num_heads"],
            hyperparameters["key_dim"],
            dropout=hyperparameters["dropout"],
            name=f"block_{index}_attention",
        )(sequence, sequence)
        residual = keras.layers.Add(name=f"block_{index}_residual_1")([sequence, attended])
        sequence = keras.layers.LayerNormalization(name=f"block_{index}_norm_1")(residual)
        feed_forward = keras.layers.Dense(
            width * 2, activation=hyperparameters["activation"], name=f"block_{index}_ff_1"
        )(sequence)
        feed_forward = keras.layers.Dense(width, name=f"block_{index}_ff_2")(feed_forward)
        residual = keras.layers.Add(name=f"block_{index}_residual_2")([sequence, feed_forward])
        sequence = keras.layers.LayerNormalization(name=f"block_{index}_norm_2")(residual)
    return keras.layers.GlobalAveragePooling1D(name="pool")(sequence)


# model.family -> the feature extractor between the preprocessed inputs and the dense layers, given the kind of
# data's model side (`modality`), which says what a dense network and a sequence model read of its features.
BODIES = {
    "mlp": lambda features, hyperparameters, modality: modality.mlp_features(features),
    "cnn": lambda features, hyperparameters, modality: _cnn_body(
        modality.grid(features), hyperparameters, modality.ordered_steps
    ),
    "rnn": lambda features, hyperparameters, modality: _rnn_body(
        modality.sequence(features), hyperparameters, modality.ordered_steps
    ),
    "transformer": lambda features, hyperparameters, modality: _transformer_body(
        modality.sequence(features), hyperparameters
    ),
}


def build_optimizer(hyperparameters: Mapping[str, Any]) -> keras.optimizers.Optimizer:
    name, learning_rate = hyperparameters["optimizer"], float(hyperparameters["learning_rate"])
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate=learning_rate, momentum=float(hyperparameters["momentum"]))
    if name == "adam":
        return keras.optimizers.Adam(learning_rate=learning_rate)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate=learning_rate)
    raise ValueError(f"unknown optimizer {name!r}; expected sgd, adam or rmsprop")


def classification_head(spec: DataSpec) -> tuple[int, str, keras.losses.Loss, list]:
    if spec.is_binary:
        return 1, "sigmoid", keras.losses.BinaryCrossentropy(), [keras.metrics.BinaryAccuracy(name="accuracy")]
    return (
        len(spec.classes),
        "softmax",
        keras.losses.SparseCategoricalCrossentropy(),
        [keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )


def regression_head(spec: DataSpec) -> tuple[int, str, keras.losses.Loss, list]:
    metrics = [keras.metrics.MeanAbsoluteError(name="mae"), keras.metrics.RootMeanSquaredError(name="rmse")]
    return 1, "linear", keras.losses.MeanSquaredError(), metrics


# Each task's Keras side (`pipeline.core.tasks`), found by the task's name.
def forecast_head(spec: DataSpec) -> tuple[int, str, keras.losses.Loss, list]:
    metrics = [keras.metrics.MeanAbsoluteError(name="mae"), keras.metrics.RootMeanSquaredError(name="rmse")]
    return spec.series.horizon, "linear", keras.losses.MeanSquaredError(), metrics


HEADS = {"classification": classification_head, "regression": regression_head, "forecast": forecast_head}


def head_for_task(spec: DataSpec) -> tuple[int, str, keras.losses.Loss, list]:
    """(units, output activation, loss, metrics) chosen from the task."""
    return HEADS[spec.task](spec)


AUGMENTATION_SEED = 1337


@keras.saving.register_keras_serializable(package="pipeline")
class Augmentation(keras.layers.Layer):
    """Random flips, rotations, translations, zooms and contrast changes of raw images, in training only.

    Keras' random preprocessing layers default to `training=True` when called without it, which is
    how an exported SavedModel or a plain `model(images)` calls them: unwrapped, they would augment
    every served image. This layer applies them only when Keras says it is training (`fit`)."""

    def __init__(self, flip="none", rotation=0.0, translation=0.0, zoom=0.0, contrast=0.0, **kwargs):
        super().__init__(**kwargs)
        self.settings = dict(flip=flip, rotation=rotation, translation=translation, zoom=zoom, contrast=contrast)
        seed = AUGMENTATION_SEED
        self.steps = []
        if flip != "none":
            self.steps.append(keras.layers.RandomFlip(flip, seed=seed))
        if rotation:
            self.steps.append(keras.layers.RandomRotation(rotation, fill_mode="nearest", seed=seed))
        if translation:
            self.steps.append(keras.layers.RandomTranslation(translation, translation, fill_mode="nearest", seed=seed))
        if zoom:
            self.steps.append(keras.layers.RandomZoom(zoom, fill_mode="nearest", seed=seed))
        if contrast:
            self.steps.append(keras.layers.RandomContrast(contrast, value_range=(0, 255), seed=seed))

    def build(self, input_shape):
        for step in self.steps:  # shape-preserving: each sees the input's shape
            step.build(input_shape)
        self.built = True

    def call(self, inputs, training=None):
        if not training:
            return inputs
        for step in self.steps:
            inputs = step(inputs, training=True)
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), **self.settings}


def augment(images, hyperparameters: Mapping[str, Any]):
    """The `augment_*` hyperparameters as an `Augmentation` layer (none when all are off, the default:
    a flipped 2 is no longer a 2)."""
    settings = {name: hyperparameters.get(f"augment_{name}", off) for name, off in AUGMENTATION_OFF.items()}
    if settings == AUGMENTATION_OFF:
        return images
    return Augmentation(**settings, name="augmentation")(images)


AUGMENTATION_OFF = {"flip": "none", "rotation": 0.0, "translation": 0.0, "zoom": 0.0, "contrast": 0.0}


def build_model(hyperparameters: Mapping[str, Any], spec: DataSpec, jit_compile: bool = False) -> keras.Model:
    """Builds and compiles the Functional model for `spec` with `hyperparameters`.

    Raises:
        ValueError: if the family cannot read this kind of data.
    """
    from pipeline.core.kinds import kind

    family, facts = hyperparameters["family"], kind(spec.kind)
    if family not in BODIES:
        raise ValueError(f"unknown model family {family!r}; expected {', '.join(BODIES)}")
    if family not in facts.families:
        raise ValueError(
            f"model family {family!r} cannot read {spec.kind} data;"
            f" use {' or '.join(facts.families)} for {spec.kind} data"
        )
    inputs = build_inputs(spec)
    preprocessed = preprocess_inputs(spec, inputs, hyperparameters)
    features = model_modality(spec.kind).encode(family, BODIES[family], preprocessed, hyperparameters)
    for index, units in enumerate(hyperparameters["hidden_units"]):
        features = _dense_block(features, units, hyperparameters, name=f"hidden_{index}")
    outputs = model_modality(spec.kind).outputs(output_layer(features, spec), inputs, spec)
    model = keras.Model(inputs, outputs, name=f"{family}_{spec.kind}")
    compile_for_task(model, spec, build_optimizer(hyperparameters), jit_compile=jit_compile)
    return model


def output_layer(features, spec: DataSpec):
    """The task's output: class probabilities, or a value in the target's own units."""
    units, activation, _, _ = head_for_task(spec)
    start = "zeros" if spec.task_type.corrects_a_base else "glorot_uniform"
    outputs = keras.layers.Dense(
        units, activation=activation, kernel_initializer=start, dtype="float32", name="predictions"
    )(features)
    statistics = spec.label_statistics
    if statistics is not None:
        # The network predicts values near 0; this layer maps them to the target's own units.
        outputs = keras.layers.Rescaling(
            scale=max(statistics.variance, 1e-12) ** 0.5, offset=statistics.mean, name="target_units"
        )(outputs)
    return outputs


def compile_for_task(
    model: keras.Model, spec: DataSpec, optimizer: keras.optimizers.Optimizer, jit_compile: bool = False
) -> keras.Model:
    from pipeline.ml.distribute import build_from_one_replica

    _, _, loss, metrics = head_for_task(spec)
    model.compile(optimizer=optimizer, loss=loss, metrics=metrics, jit_compile=jit_compile)
    build_from_one_replica(model)  # a string input (text, a category) under MirroredStrategy
    return model


def feature_extractor(model: keras.Model) -> keras.Model:
    """The model up to (not including) its output layer, as a model of its own: the penultimate-layer
    embeddings (monitoring) and the base of a fine-tuned model share its weights."""
    return keras.Model(model.input, model.get_layer("predictions").input, name="base")


def load_trained_model(path) -> keras.Model:
    """Loads a `.keras` model saved by the pipeline (its custom layers are registered by this module)."""
    return keras.saving.load_model(path)


FLOAT32_POLICY = {
    "module": "keras",
    "class_name": "DTypePolicy",
    "config": {"name": "float32"},
    "registered_name": None,
}


def float32_copy(model: keras.Model) -> keras.Model:
    """The same network and weights computing in float32: what is exported for serving and TFLite
    when the model was trained in mixed precision (TFLite has no float16 kernels for most ops, and a
    CPU server gains nothing from float16). A float32 model is returned as it is."""

    def to_float32(item: Any) -> Any:
        if isinstance(item, dict):
            if item.get("class_name") == "DTypePolicy" and str(item["config"]["name"]).startswith("mixed_"):
                return dict(FLOAT32_POLICY)
            return {key: to_float32(value) for key, value in item.items()}
        if isinstance(item, list):
            return [to_float32(value) for value in item]
        return item

    if all(getattr(layer.dtype_policy, "compute_dtype", "float32") == "float32" for layer in model.layers):
        return model
    copy = model.__class__.from_config(to_float32(model.get_config()))
    copy.set_weights(model.get_weights())  # mixed-precision variables are float32 already
    return copy
