"""Reading the prepared TFRecord shards with tf.data, and the model's raw-input preprocessing.

The preprocessing layers take their statistics from the data spec (computed on the training
split by the preprocess stage), so the same layers run in training and in the exported model.
"""

from __future__ import annotations

from pathlib import Path

import keras
import tensorflow as tf

from pipeline.core.config import Config
from pipeline.core.spec import DataSpec
from pipeline.ml.modalities import model_modality


def _parse_batch(spec: DataSpec):
    modality = model_modality(spec.kind)
    description = modality.record_features(spec)
    task = spec.task_type
    description["label"] = tf.io.FixedLenFeature(task.label_shape(spec), tf.dtypes.as_dtype(task.label_dtype))
    scalar_labels = spec.task_type.scalar_labels(spec)

    def parse(serialized):
        parsed = tf.io.parse_example(serialized, description)
        label = parsed.pop("label")
        if scalar_labels:
            label = tf.cast(tf.reshape(label, [-1, 1]), tf.float32)
        return modality.decode(parsed, spec), label

    return parse


def make_dataset(
    prepared_dir: str | Path,
    spec: DataSpec,
    split: str,
    batch_size: int,
    shuffle: bool = False,
    seed: int | None = None,
    cache_limit_mb: float = 0,
    transform=None,
) -> tf.data.Dataset:
    """Streams a split from its shards: (shuffle) -> batch -> parse (-> `transform` the features) -> prefetch.

    A split whose shards are smaller than `cache_limit_mb` is parsed (and transformed) once and kept in memory
    (then shuffled and batched every epoch); larger splits stream from disk every epoch.
    Parsing a whole batch of records in one op is much faster than example by example.
    """
    files = [str(Path(prepared_dir) / name) for name in spec.split(split).files]
    dataset = tf.data.TFRecordDataset(files, num_parallel_reads=tf.data.AUTOTUNE if len(files) > 1 else None)
    parse = _parse_batch(spec)
    if transform is not None:
        parse_only = parse

        def parse(serialized):
            features, label = parse_only(serialized)
            return transform(features), label

    cached = sum(Path(file).stat().st_size for file in files) <= cache_limit_mb * 2**20
    if cached:
        dataset = dataset.batch(1024).map(parse, num_parallel_calls=tf.data.AUTOTUNE).unbatch().cache()
    if shuffle:
        buffer = min(spec.split(split).num_examples, 10_000)
        dataset = dataset.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    if not cached:
        dataset = dataset.map(parse, num_parallel_calls=tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = True
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)


def training_datasets(config: Config, spec: DataSpec, batch_size: int, transform=None) -> tuple:
    """(train, validation) as the train stage and the search read them: the training split shuffled with the run's
    seed, each split parsed (and transformed) once and kept in memory up to `train.cache_limit_mb` (a resumed run
    reads the same order: the shuffle is seeded and the cache holds the records, not their order)."""
    prepared, cache = config.paths.prepared, config.train.cache_limit_mb
    seed = config.base.seed
    return (
        make_dataset(
            prepared, spec, "train", batch_size, shuffle=True, seed=seed, cache_limit_mb=cache, transform=transform
        ),
        make_dataset(prepared, spec, "validation", batch_size, cache_limit_mb=cache, transform=transform),
    )


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


def build_inputs(spec: DataSpec) -> dict[str, keras.KerasTensor]:
    """The model's raw inputs, by name (`ModelModality.inputs`)."""
    return model_modality(spec.kind).inputs(spec)


def preprocess_inputs(spec: DataSpec, inputs: dict, hyperparameters=None) -> keras.KerasTensor:
    """Raw inputs -> model-ready features (`ModelModality.preprocess`)."""
    return model_modality(spec.kind).preprocess(spec, inputs, hyperparameters or {})


def numeric_layers(feature, raw, hyperparameters):
    """A number: missing values imputed with the training median, then normalised."""
    filled = ImputeMissing(feature.median, name=f"impute_{feature.name}")(raw)
    return keras.layers.Normalization(
        mean=feature.mean, variance=max(feature.variance, 1e-6), name=f"normalize_{feature.name}"
    )(filled)


def categorical_layers(feature, raw, hyperparameters):
    """A category: one-hot over the training vocabulary; missing and unseen values share the out-of-vocabulary
    slot."""
    return keras.layers.StringLookup(
        vocabulary=feature.vocabulary or ["<none>"], output_mode="one_hot", name=f"lookup_{feature.name}"
    )(raw)


def text_layer_names(name: str) -> dict[str, str]:
    """The names of a text column's layers: its bag-of-n-grams vectoriser, that vector flattened (the MLP) and
    weighted (`log_tf_idf`), or its word ids (the sequence families); the edge model reads the text from the
    vectoriser's (flattened) output (`ModelModality.edge_model`)."""
    return {
        "terms": f"terms_{name}",
        "terms_flat": f"terms_{name}_flat",
        "terms_weighted": f"terms_{name}_weighted",
        "words": f"words_{name}",
    }


def most_common(values: list, hyperparameters) -> list:
    """The first `text_max_tokens` of `values` (most common first), or all of them for `auto`."""
    setting = hyperparameters.get("text_max_tokens", "auto")
    return values if setting == "auto" else values[: int(setting)]


# `model.text_weighting` -> TextVectorization's output_mode (log_tf_idf: the counts, then `LogTfIdf`)
TERM_WEIGHTS = {"presence": "multi_hot", "tf_idf": "tf_idf", "log_tf_idf": "count"}


def term_weighting(hyperparameters) -> str:
    """`text_weighting`, or for `auto` what measured best for the model's depth (docs/benchmarks.md): log_tf_idf
    for a linear model (no hidden layer), presence under hidden layers."""
    setting = hyperparameters.get("text_weighting", "auto")
    if setting != "auto":
        return setting
    return "presence" if hyperparameters.get("hidden_units") else "log_tf_idf"


def known_terms(feature, hyperparameters) -> int:
    """How many of the spec's terms (those in most texts first) a bag of n-grams may know, for the model's depth
    (docs/benchmarks.md): a linear model all of them, as TF-IDF + logistic regression does (Rotten Tomatoes, test
    accuracy 0.7425 against 0.7304 with the terms in two texts or more); under hidden layers those in two training
    texts or more (a term seen once teaches them little they can use on new text, and each costs a row of
    `hidden_units` weights)."""
    if hyperparameters.get("hidden_units") and feature.shared_terms is not None:
        return feature.shared_terms
    return len(feature.terms or [])


def text_layers(feature, raw, hyperparameters):
    """Free text as a bag of n-grams over the training split's words (and word pairs with `text_ngrams: 2`) the
    model's depth keeps (`known_terms`), or the `text_max_tokens` of them in most texts: each term present or not
    (`text_weighting: presence`), counted and weighted by its inverse document frequency (`tf_idf`), or its
    count's logarithm so weighted and the text's vector scaled to unit length (`log_tf_idf`). The vocabulary is a
    SavedModel asset."""
    ngrams = int(hyperparameters.get("text_ngrams", 2))
    candidates = (feature.terms or [])[: known_terms(feature, hyperparameters)]
    kept = most_common(
        [position for position, term in enumerate(candidates) if term.count(" ") < ngrams], hyperparameters
    )
    terms = [feature.terms[position] for position in kept] or ["<none>"]
    weighting = term_weighting(hyperparameters)
    idf = [feature.idf[position] for position in kept] or [1.0]
    weights = {"idf_weights": idf} if weighting == "tf_idf" else {}
    vectorizer = keras.layers.TextVectorization(
        output_mode=TERM_WEIGHTS[weighting],
        ngrams=ngrams if ngrams > 1 else None,
        vocabulary=terms,
        # A text holds tens of the vocabulary's terms: the layers after a sparse vector touch only those. Keras
        # 3.15's sparse tf_idf fails (GatherNd on the idf weights' rank), so that weighting stays dense.
        sparse=weighting != "tf_idf",
        name=text_layer_names(feature.name)["terms"],
        **weights,
    )
    flat = TermVector(
        vectorizer.vocabulary_size(), sparse=weighting != "tf_idf", name=text_layer_names(feature.name)["terms_flat"]
    )
    vector = flat(vectorizer(raw))
    if weighting == "log_tf_idf":  # the unknown terms' count comes first: weighted 0, as scikit-learn ignores them
        return LogTfIdf([0.0, *idf], name=text_layer_names(feature.name)["terms_weighted"])(vector)
    return vector


@keras.saving.register_keras_serializable(package="pipeline")
class TermVector(keras.layers.Layer):
    """A text's bag of n-grams as (batch, terms). Keras declares (batch, 1, terms) for a (batch, 1) input and
    computes (batch, terms): one shape for both. A sparse vector stays sparse, except on a GPU under op
    determinism (`base.deterministic`), where TensorFlow has no deterministic sparse-times-dense product
    (SparseTensorDenseMatmulOp raises): there it is made dense, when the graph is traced, so a model saved on one
    machine runs on the other. `sparse`: whether the vectoriser's output is sparse, which Keras 3.15 does not
    declare; declared here, so that a model taking this layer's output keeps it sparse (the train stage's,
    `pipeline.ml.training.fixed_layers_outside`)."""

    def __init__(self, terms: int, sparse: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.terms = int(terms)
        self.sparse = bool(sparse)

    def call(self, vector):
        if isinstance(vector, tf.SparseTensor):
            vector = tf.sparse.reshape(vector, (-1, self.terms))
            return tf.sparse.to_dense(vector) if sparse_product_raises() else vector
        return keras.ops.reshape(vector, (-1, self.terms))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.terms)

    def compute_output_spec(self, vector):
        sparse = self.sparse and not sparse_product_raises()
        return keras.KerasTensor((vector.shape[0], self.terms), dtype=vector.dtype, sparse=sparse)

    def get_config(self):
        return {**super().get_config(), "terms": self.terms, "sparse": self.sparse}


@keras.saving.register_keras_serializable(package="pipeline")
class Dropout(keras.layers.Dropout):
    """`keras.layers.Dropout` that also takes a sparse vector (a linear text model's terms, the base of a fine-tuned
    one): its stored values are dropped and scaled as the dense vector's would be; a zero stays zero either way."""

    def call(self, inputs, training=False):
        if not isinstance(inputs, tf.SparseTensor):
            return super().call(inputs, training=training)
        return tf.SparseTensor(inputs.indices, super().call(inputs.values, training=training), inputs.dense_shape)


def sparse_product_raises() -> bool:
    """Whether a sparse-times-dense product would raise here: op determinism on, and a GPU to run it."""
    from tensorflow.python.framework.config import is_op_determinism_enabled  # where Keras' trainer reads it

    return is_op_determinism_enabled() and bool(tf.config.list_logical_devices("GPU"))


@keras.saving.register_keras_serializable(package="pipeline")
class LogTfIdf(keras.layers.Layer):
    """Term counts as log(1 + count) times each term's idf, the vector scaled to unit length (as scikit-learn's
    `TfidfVectorizer(sublinear_tf=True)`, which takes 1 + log(count), and TextVectorization's idf); a text without
    known terms stays 0. Sparse counts (the vectoriser's, in training and serving) stay sparse; dense ones (the
    edge model's, which the app computes) use builtin TFLite ops only."""

    def __init__(self, idf: list[float], **kwargs):
        # float32 under a mixed precision policy too: 1e-12 is 0 in float16, and an empty text's vector 0 / 0
        super().__init__(**{"dtype": "float32", **kwargs})
        self.idf = [float(weight) for weight in idf]

    def call(self, counts):
        if isinstance(counts, tf.SparseTensor):
            rows, terms = counts.indices[:, 0], counts.indices[:, -1]
            weighted = tf.math.log1p(tf.cast(counts.values, self.compute_dtype)) * tf.gather(self.idf, terms)
            squares = tf.math.unsorted_segment_sum(weighted * weighted, rows, counts.dense_shape[0])
            length = tf.gather(tf.sqrt(squares), rows)
            return tf.SparseTensor(counts.indices, weighted / tf.maximum(length, 1e-12), counts.dense_shape)
        counts = keras.ops.cast(counts, self.compute_dtype)  # TextVectorization counts in int64
        weighted = keras.ops.log(1.0 + counts) * keras.ops.convert_to_tensor(self.idf, dtype=counts.dtype)
        length = keras.ops.sqrt(keras.ops.sum(weighted * weighted, axis=-1, keepdims=True))
        return weighted / keras.ops.maximum(length, 1e-12)

    def compute_output_spec(self, counts):
        return keras.KerasTensor(counts.shape, dtype=self.compute_dtype, sparse=counts.sparse)

    def get_config(self):
        return {**super().get_config(), "idf": self.idf}


def sequence_length(feature, hyperparameters) -> int:
    """`text_sequence_length`, or for `auto` the training split's 95th percentile of words in a text (at least 8):
    a Transformer over 128 positions of which 19 hold words learnt nothing on the Rotten Tomatoes reviews (test
    accuracy 0.50), over 34 it did (0.64, the same three epochs)."""
    setting = hyperparameters.get("text_sequence_length", "auto")
    return max(8, int(feature.words_p95 or 0)) if setting == "auto" else int(setting)


def word_sequence_layers(feature, raw, hyperparameters, mask: bool = False):
    """Free text as a sequence of word embeddings (batch, text_sequence_length, text_embedding_dim) over the
    training split's most frequent words (`text_max_tokens` of them, or all that the spec keeps for `auto`;
    longer texts are cut, shorter ones padded)."""
    vocabulary = most_common(feature.vocabulary or [], hyperparameters) or ["<none>"]
    word_ids = keras.layers.TextVectorization(
        output_mode="int",
        output_sequence_length=sequence_length(feature, hyperparameters),
        vocabulary=vocabulary,
        name=text_layer_names(feature.name)["words"],
    )(raw)
    return keras.layers.Embedding(
        len(vocabulary) + 2,  # the padding and out-of-vocabulary ids come first
        int(hyperparameters.get("text_embedding_dim", 64)),
        mask_zero=mask,
        name=f"embed_{feature.name}",
    )(word_ids)


# Each column type's Keras layers (`pipeline.core.column_types`), found by the type's name.
PREPROCESSING = {"numeric": numeric_layers, "categorical": categorical_layers, "text": text_layers}
