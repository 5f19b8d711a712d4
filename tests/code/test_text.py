"""Text as a kind of data, in small parts: words counted in Python exactly as Keras' TextVectorization splits them,
the text column type's statistics and request checks, the configuration's rules, and every model family on a text
column beside a number."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from pipeline.core import kinds
from pipeline.core.column_types import InvalidValueError, column_type
from pipeline.core.config import config_from_dict
from pipeline.core.errors import ConfigError
from pipeline.core.tokens import terms, words
from pipeline.data.modalities.table import feature_specs, table_statistics, typed_features
from pipeline.data.validation import column_notes
from pipeline.ml.hyperparameters import searched_names
from tests.specs import make_spec

TEXT = column_type("text")
HOSTILE = [
    "Hello, World! It's   GREAT.",
    "ÉCOLE école Zürich ZÜRICH",  # non-ASCII capitals stay capitals, as tf.strings.lower leaves them
    "emoji 😀😡 stay words 🙂",
    "مرحبا بالعالم right-to-left",
    "<p>HTML&amp;remnants</p><br/>",
    "tabs\tand\nnewlines\r\nand\u00a0no-break space",  # U+00A0 is not a separator for TensorFlow
    "under_score hy-phen dot.ted (brackets) [square] {curly} back\\slash",
    "",
]


def test_words_and_word_pairs_are_those_textvectorization_makes():
    import tensorflow as tf

    vocabulary = sorted({term for text in HOSTILE for term in terms(text, 2)})
    layer = tf.keras.layers.TextVectorization(output_mode="multi_hot", ngrams=2, vocabulary=vocabulary)
    for text in HOSTILE:
        hot = layer(tf.constant([text])).numpy()[0]
        assert hot[0] == 0, f"{text!r}: Keras found a term this module does not make"
        found = {vocabulary[index - 1] for index in np.flatnonzero(hot)}
        assert found == set(terms(text, 2)), text
    sequence = tf.keras.layers.TextVectorization(output_mode="int", vocabulary=sorted(set(words(" ".join(HOSTILE)))))
    inverse = ["", "[UNK]", *sequence.get_vocabulary()[2:]]
    for text in HOSTILE:
        ids = [int(index) for index in sequence(tf.constant([text])).numpy()[0] if index]
        assert [inverse[index] for index in ids] == words(text), text


def test_the_training_splits_words_are_ranked_and_weighted_and_parts_merge_as_one():
    values = pd.Series(["good film good", "bad film", "good", "bad good film", ""])
    whole = TEXT.merge_statistics([TEXT.partial_statistics(values)], "review")
    parts = TEXT.merge_statistics([TEXT.partial_statistics(values[:2]), TEXT.partial_statistics(values[2:])], "r")
    assert whole == parts
    assert whole["vocabulary"] == ["good", "film", "bad"]  # by count (4, 3, 2), then by the word
    # in most texts (3, 3, 2, 2, then 1, 1, 1), then by term; the first four are in two texts or more
    assert whole["terms"] == ["film", "good", "bad", "good film", "bad film", "bad good", "film good"]
    assert whole["shared_terms"] == 4
    idf = dict(zip(whole["terms"], whole["idf"], strict=True))
    assert idf["good"] < idf["bad"]  # in three of the four texts against two
    assert whole["words_mean"] == pytest.approx(2.25) and whole["words_p95"] == 3
    with pytest.raises(Exception, match="no texts in the training split"):
        TEXT.merge_statistics([TEXT.partial_statistics(pd.Series(["", ""]))], "review")


def test_a_linear_model_knows_every_training_term_and_hidden_layers_those_in_two_texts_or_more():
    import keras

    from pipeline.ml.features import text_layer_names, text_layers

    values = pd.Series(["good film good", "bad film", "good", "bad good film", ""])
    spec = dataclasses.replace(
        feature_specs(pd.DataFrame({"review": values}), ["review"])[0],
        **TEXT.merge_statistics([TEXT.partial_statistics(values)], "review"),
    )

    def vocabulary(**hyperparameters):
        raw = keras.Input(shape=(1,), dtype="string")
        model = keras.Model(raw, text_layers(spec, raw, hyperparameters))
        return model.get_layer(text_layer_names(spec.name)["terms"]).get_vocabulary()[1:]  # after [UNK]

    assert vocabulary(hidden_units=[]) == spec.terms  # all seven, as TF-IDF + logistic regression
    assert vocabulary(hidden_units=[8]) == ["film", "good", "bad", "good film"]
    assert vocabulary(hidden_units=[], text_max_tokens=2) == ["film", "good"]
    assert vocabulary(hidden_units=[], text_ngrams=1) == ["film", "good", "bad"]


def test_the_terms_vector_stays_sparse_unless_a_gpu_runs_under_op_determinism(monkeypatch):
    """TensorFlow has no deterministic GPU kernel for a sparse-times-dense product (SparseTensorDenseMatmulOp
    raises): there the vector is made dense. This machine has no GPU: its device list is the one stand-in."""
    import tensorflow as tf
    from tensorflow.python.framework.config import disable_op_determinism, is_op_determinism_enabled

    from pipeline.ml.features import TermVector

    counts = tf.sparse.from_dense(tf.constant([[0, 2, 0], [1, 0, 0]], dtype=tf.int64))
    layer = TermVector(3)
    listed = tf.config.list_logical_devices
    # an earlier test in this process may have turned op determinism on (a stage's setup does): set, then restore
    was_deterministic = is_op_determinism_enabled()
    try:
        tf.config.experimental.enable_op_determinism()
        assert isinstance(layer(counts), tf.SparseTensor)  # no GPU: the CPU's sparse product is deterministic
        monkeypatch.setattr(
            tf.config, "list_logical_devices", lambda kind=None: ["GPU:0"] if kind == "GPU" else listed(kind)
        )
        dense = layer(counts)
        disable_op_determinism()
        assert isinstance(layer(counts), tf.SparseTensor)  # a GPU, no determinism: the sparse product is allowed
    finally:
        (tf.config.experimental.enable_op_determinism if was_deterministic else disable_op_determinism)()
    assert not isinstance(dense, tf.SparseTensor)
    np.testing.assert_array_equal(dense.numpy(), [[0, 2, 0], [1, 0, 0]])
    assert layer(tf.reshape(tf.sparse.to_dense(counts), (2, 1, 3))).shape == (2, 3)  # Keras' declared shape


def test_a_request_text_is_a_string_within_the_trained_length():
    assert TEXT.request_value("fine", "instances[0].review", {"max_length": 10}, False) == "fine"
    assert TEXT.request_value(None, "instances[0].review", {}, True) == ""
    with pytest.raises(InvalidValueError, match=r"instances\[0\].review: expected a string of text, got 3"):
        TEXT.request_value(3, "instances[0].review", {}, True)
    with pytest.raises(InvalidValueError, match=r"got \[\[\[\[.*\.\.\. \(list\)"):
        TEXT.request_value([[[[0] * 100]]], "instances[0].review", {}, True)  # a long value is shown cut
    with pytest.raises(InvalidValueError, match="a text of 11 characters; this model takes at most 10"):
        TEXT.request_value("x" * 11, "instances[0].review", {"max_length": 10}, False)


def test_a_declared_text_column_is_text_and_the_profile_suggests_undeclared_ones():
    table = pd.DataFrame(
        {
            "comment": [f"the parcel number {index} arrived late and broken" for index in range(60)],
            "city": ["Zürich", "Basel"] * 30,
            "label": ["a", "b"] * 30,
        }
    )
    specs = feature_specs(table.drop(columns=["label"]), ["comment"])
    assert [spec.type for spec in specs] == ["text", "categorical"]
    (note,) = column_notes(table, "label")
    assert "reads like free text" in note and "data.text_columns: [comment]" in note
    assert column_notes(table, "label", ["comment"]) == []


def test_text_columns_make_a_table_text_data_and_are_checked(tmp_path):
    (tmp_path / "t.csv").write_text("a,b\n")
    data = {"source": "csv", "path": str(tmp_path / "t.csv"), "label": "b"}
    assert config_from_dict({"data": data}).data.kind == "table"
    config = config_from_dict({"data": {**data, "text_columns": ["a"]}, "model": {"family": "rnn"}})
    assert config.data.kind == "text" and config.model_family == "rnn"
    assert config_from_dict({"data": {"source": "rotten_tomatoes"}}).data.text_column_names == ["review"]
    assert kinds.kind_of_source("rotten_tomatoes").name == "text"
    with pytest.raises(ConfigError, match="neither the label 'b'"):
        config_from_dict({"data": {**data, "text_columns": ["b"]}})
    with pytest.raises(ConfigError, match=r"data.text_columns = \['a'\] is not valid; expected \[\] for image data"):
        config_from_dict({"data": {"source": "digits", "text_columns": ["a"]}})
    with pytest.raises(ConfigError, match="model.text_ngrams"):
        config_from_dict({"data": data, "model": {"text_ngrams": 3}})
    with pytest.raises(ConfigError, match="mlp or auto for table data"):
        config_from_dict({"data": data, "model": {"family": "rnn"}})


def test_the_search_varies_only_what_the_family_reads():
    space = {"text_ngrams": {}, "text_weighting": {}, "text_sequence_length": {}, "rnn_bidirectional": {}, "units": {}}
    assert searched_names(space, "mlp") == ["text_ngrams", "text_weighting", "units"]
    assert searched_names(space, "rnn") == ["text_sequence_length", "rnn_bidirectional", "units"]
    assert searched_names(space, "transformer") == ["text_sequence_length", "units"]


@pytest.mark.parametrize(
    ("family", "weighting", "hidden_units"),
    [
        ("mlp", "presence", [4]),
        ("mlp", "tf_idf", [4]),
        ("mlp", "log_tf_idf", [4]),
        ("mlp", "log_tf_idf", []),  # text's default: a linear model, its sparse terms joined to dense columns
        ("cnn", "presence", [4]),
        ("rnn", "presence", [4]),
        ("transformer", "presence", [4]),
    ],  # fmt: skip
)
def test_every_family_reads_raw_strings_beside_other_columns_and_runs_in_tflite_from_vectorised_text(
    family, weighting, hidden_units, tmp_path
):
    import tensorflow as tf

    from pipeline.core.config import Config
    from pipeline.ml.hyperparameters import defaults_from_config
    from pipeline.ml.modalities import model_modality
    from pipeline.ml.models import build_model
    from pipeline.serving.checks import convert_tflite, tflite_predict

    table = pd.DataFrame(
        {
            "text": ["a good film", "a bad film", "good", "Zürich 😀"],
            "stars": [5.0, 1.0, 4.0, 3.0],
            "shop": ["north", "south", "north", "east"],  # a category: looked up inside the TFLite graph
        }
    )
    specs = feature_specs(table, ["text"])
    specs = table_statistics(typed_features(table, specs), specs)
    features = [dataclasses.asdict(spec) for spec in specs]
    spec = make_spec({"kind": "text", "classes": ["no", "yes"], "features": features})
    hyperparameters = {
        **defaults_from_config(Config()),
        "family": family,
        "text_weighting": weighting,  # the bag of n-grams (mlp): each term present or not, or TF-IDF
        "text_sequence_length": 6,
        "text_embedding_dim": 4,
        "filters": [4],
        "rnn_units": 4,
        "num_heads": 1,
        "key_dim": 4,
        "transformer_blocks": 1,
        "hidden_units": hidden_units,
    }
    model = build_model(hyperparameters, spec)
    shops = tf.constant([["north"], ["west"]])
    outputs = model({"text": tf.constant([["a good film"], [""]]), "stars": tf.constant([[5.0], [1.0]]), "shop": shops})
    assert outputs.shape == (2, 1) and np.all((0 <= outputs.numpy()) & (outputs.numpy() <= 1))
    vectorizers = [layer for layer in model.layers if isinstance(layer, tf.keras.layers.TextVectorization)]
    assert len(vectorizers) == 1 and "film" in vectorizers[0].get_vocabulary()
    # The edge: the TFLite model (builtin ops only) reads the texts as vectorised in plain Python
    modality = model_modality("text")
    edge, outside = modality.edge_model(model, spec)
    edge.export(str(tmp_path / "edge"), verbose=False)
    batch = {
        "text": np.array([[text] for text in HOSTILE], dtype=object),
        "stars": np.full((len(HOSTILE), 1), 3.0),
        "shop": np.array(
            [[("north", "south", "", "Zürich")[index % 4]] for index in range(len(HOSTILE))], dtype=object
        ),
    }
    expected = model(
        {name: tf.constant(values.astype(str) if values.dtype == object else values) for name, values in batch.items()}
    ).numpy()
    vectorised = modality.edge_inputs(batch, spec, outside)
    assert set(outside) == {"text"} and vectorised["text"].shape[0] == len(HOSTILE)
    on_the_edge = tflite_predict(convert_tflite(tmp_path / "edge", quantize=False), [vectorised])
    np.testing.assert_allclose(on_the_edge, expected, atol=1e-5)
    model.save(tmp_path / "model.keras")  # the model itself is untouched: the export stage saves it after


def test_a_linear_text_model_fine_tunes_a_new_head_over_its_sparse_terms_and_reloads(tmp_path):
    """The base of a fine-tuned linear text model ends in the sparse weighted terms: the head's dropout takes them
    (Keras' own Dropout raised on a SparseTensor)."""
    import keras
    import tensorflow as tf

    from pipeline.core.config import Config, FinetuneConfig
    from pipeline.ml import transfer
    from pipeline.ml.hyperparameters import defaults_from_config
    from pipeline.ml.models import build_model, compile_for_task, load_trained_model

    table = pd.DataFrame({"text": ["a good film", "a bad film", "good fun", "bad acting", "Zürich 😀", ""] * 4})
    specs = feature_specs(table, ["text"])
    features = [dataclasses.asdict(spec) for spec in table_statistics(typed_features(table, specs), specs)]
    source = build_model(
        {**defaults_from_config(Config()), "family": "mlp", "hidden_units": []},  # text's default: linear
        make_spec({"kind": "text", "classes": ["no", "yes"], "features": features}),
    )
    target = make_spec({"kind": "text", "classes": ["x", "y", "z"], "features": features})
    settings = FinetuneConfig()
    assert settings.head_dropout > 0
    model, base = transfer.build_transfer_model(settings, target, source=source)
    assert isinstance(base({"text": tf.constant([["a good film"]])}), tf.SparseTensor)
    transfer.freeze(base)
    compile_for_task(model, target, keras.optimizers.Adam(0.01))
    texts = tf.constant(table[["text"]].to_numpy().astype(str))
    labels = np.arange(len(table)) % 3
    model.fit({"text": texts}, labels, epochs=2, batch_size=8, verbose=0)  # training: the dropout runs
    model.save(tmp_path / "finetuned.keras")
    reloaded = load_trained_model(tmp_path / "finetuned.keras")
    np.testing.assert_allclose(reloaded({"text": texts}).numpy(), model({"text": texts}).numpy(), atol=1e-6)


def test_log_tf_idf_is_the_baselines_weighting_and_auto_chooses_it_for_a_linear_model():
    """log(1 + count) times idf, scaled to unit length (scikit-learn's TfidfVectorizer(sublinear_tf=True) takes
    1 + log(count), the rest alike); a text without known terms stays 0."""
    from pipeline.ml.features import LogTfIdf, term_weighting

    counts = np.array([[0, 2, 1, 0], [0, 0, 0, 0], [3, 1, 0, 5]], dtype="int64")  # TextVectorization's dtype
    idf = [0.0, 1.5, 0.7, 2.0]  # the unknown terms' count first, weighted 0
    weighted = np.log1p(counts) * idf
    expected = weighted / np.maximum(np.linalg.norm(weighted, axis=1, keepdims=True), 1e-12)
    np.testing.assert_allclose(np.asarray(LogTfIdf(idf)(counts)), expected, atol=1e-6)
    assert not np.asarray(LogTfIdf(idf)(counts))[1].any()
    import keras
    import tensorflow as tf

    sparse = LogTfIdf(idf)(tf.sparse.from_dense(counts))  # the vectoriser's counts in training and serving
    assert isinstance(sparse, tf.SparseTensor)
    np.testing.assert_allclose(tf.sparse.to_dense(sparse).numpy(), expected, atol=1e-6)

    keras.mixed_precision.set_global_policy("mixed_float16")  # train.mixed_precision: an empty text was 0 / 0, NaN
    try:
        half = np.asarray(LogTfIdf(idf)(counts))
        sparse_half = tf.sparse.to_dense(LogTfIdf(idf)(tf.sparse.from_dense(counts))).numpy()
    finally:
        keras.mixed_precision.set_global_policy("float32")
    np.testing.assert_allclose(half, expected, atol=1e-6)
    np.testing.assert_allclose(sparse_half, expected, atol=1e-6)
    assert term_weighting({"text_weighting": "auto", "hidden_units": []}) == "log_tf_idf"
    assert term_weighting({"text_weighting": "auto", "hidden_units": [128]}) == "presence"
    assert term_weighting({"text_weighting": "tf_idf", "hidden_units": []}) == "tf_idf"


def test_a_folder_of_texts_becomes_a_table_and_a_file_that_is_not_utf8_is_named_with_its_line(tmp_path):
    from pipeline.core.errors import DataError
    from pipeline.data.sources import read_text_dir

    files = (("pos", "a.txt", "Très bien 😀"), ("neg", "b.txt", "awful\nreally"), ("neg", "c.txt", ""))
    for label, name, text in files:
        (tmp_path / "texts" / label).mkdir(parents=True, exist_ok=True)
        (tmp_path / "texts" / label / name).write_text(text, encoding="utf-8")
    path, classes = read_text_dir(tmp_path / "texts", tmp_path / "table.csv")
    table = pd.read_csv(path, keep_default_na=False)
    assert classes == ["neg", "pos"] and list(table.columns) == ["text", "label"]
    assert sorted(table["text"]) == ["", "Très bien 😀", "awful\nreally"]
    (tmp_path / "texts" / "neg" / "d.txt").write_bytes(b"line one\nline two \xff\xfe\n")
    with pytest.raises(DataError, match=r"d.txt: line 2 is not valid UTF-8 \(byte 0xff at offset 18\)"):
        read_text_dir(tmp_path / "texts", tmp_path / "table.csv")
    (tmp_path / "texts" / "neg" / "d.txt").unlink()
    (tmp_path / "texts" / "neg" / "e.md").write_text("not a text file")
    with pytest.raises(DataError, match="e.md: not a .txt file"):
        read_text_dir(tmp_path / "texts", tmp_path / "table.csv")


def test_an_auto_sequence_is_as_long_as_most_training_texts():
    from pipeline.core.spec import FeatureSpec
    from pipeline.ml.features import sequence_length

    feature = FeatureSpec(column="review", name="review", type="text", words_p95=34)
    assert sequence_length(feature, {"text_sequence_length": "auto"}) == 34
    assert sequence_length(dataclasses.replace(feature, words_p95=3), {}) == 8  # never shorter than 8 words
    assert sequence_length(feature, {"text_sequence_length": 100}) == 100


def test_unknown_words_are_judged_against_held_out_texts_and_another_language_is_drift():
    """Every training word is in the vocabulary: against the training split, any new text has more unknown words
    (a false alarm on the holdout itself, measured at 100 % on the reviews); against the validation split, not."""
    from types import SimpleNamespace

    from pipeline.ml.modalities import model_modality

    generator = np.random.default_rng(0)
    lexicon = [f"word{index}" for index in range(3000)]

    def texts(count):
        return np.array([" ".join(generator.choice(lexicon, 12)) for _ in range(count)], dtype=object)

    train, validation, fresh = texts(400), texts(200), texts(200)
    specs = feature_specs(pd.DataFrame({"review": train}), ["review"])
    specs = table_statistics(typed_features(pd.DataFrame({"review": train}), specs), specs)
    spec = make_spec({"kind": "text", "classes": ["a", "b"], "features": [dataclasses.asdict(specs[0])]})
    settings = SimpleNamespace(p_value=0.01, psi_threshold=0.25, missing_rate_tolerance=0.1)
    modality = model_modality("text")

    def drifted(current, held_out):
        reference, new = {"review": train}, {"review": current}
        families = modality.drift_families(reference, new, spec, settings, (None, None), held_out)
        return families["features"]["drifted"]

    assert drifted(fresh, None) == ["review (unknown words)"]  # the training split as the reference
    assert drifted(fresh, {"review": validation}) == []
    other = np.array(["这是 另一种 语言 的 文本 " * 2 for _ in range(200)], dtype=object)
    assert set(drifted(other, {"review": validation})) == {"review (words)", "review (unknown words)"}


def test_a_new_mix_of_known_words_moves_the_frequent_words_alone():
    """Texts of the same length from the same vocabulary, its most common words now rare: neither the lengths nor
    the unknown words move; the frequent words do, and a fresh sample of the training mix does not."""
    from types import SimpleNamespace

    from pipeline.ml.modalities import model_modality

    generator = np.random.default_rng(1)
    lexicon = np.array([f"word{index}" for index in range(300)])
    zipf = 1.0 / np.arange(1, 301)

    def texts(count, weights):
        return np.array(
            [" ".join(generator.choice(lexicon, 12, p=weights / weights.sum())) for _ in range(count)], dtype=object
        )

    train, validation, fresh = texts(600, zipf), texts(300, zipf), texts(300, zipf)
    shifted = texts(300, zipf[::-1])  # the same words, the most common now the rarest
    specs = feature_specs(pd.DataFrame({"review": train}), ["review"])
    specs = table_statistics(typed_features(pd.DataFrame({"review": train}), specs), specs)
    spec = make_spec({"kind": "text", "classes": ["a", "b"], "features": [dataclasses.asdict(specs[0])]})
    settings = SimpleNamespace(p_value=0.01, psi_threshold=0.25, missing_rate_tolerance=0.1)
    modality = model_modality("text")

    def features(current):
        held_out = {"review": validation}
        return modality.drift_families({"review": train}, {"review": current}, spec, settings, (None, None), held_out)[
            "features"
        ]

    assert features(fresh)["drifted"] == []
    found = features(shifted)
    assert found["drifted"] == ["review (frequent words)"], found["tests"]
    moved = found["tests"]["review (frequent words)"]["moved"]
    assert moved["word0"]["reference"] > 0.5 > 0.05 > moved["word0"]["current"], moved


def reviews_and_stars(count: int = 96):
    """(the spec, a tf.data.Dataset of (features, label)) of `count` short texts beside a number: the label is
    whether the text holds "good"."""
    import tensorflow as tf

    generator = np.random.default_rng(0)
    words = "good bad film great awful plot actor boring fun dull Zürich 😀".split()
    table = pd.DataFrame(
        {
            "text": [" ".join(generator.choice(words, generator.integers(0, 8))) for _ in range(count)],
            "stars": generator.normal(size=count).round(1),
        }
    )
    labels = np.array(["good" in text for text in table["text"]], dtype="int64")
    specs = feature_specs(table, ["text"])
    features = [dataclasses.asdict(spec) for spec in table_statistics(typed_features(table, specs), specs)]
    spec = make_spec({"kind": "text", "classes": ["no", "yes"], "features": features})
    raw = tf.data.Dataset.from_tensor_slices(
        ({"text": table[["text"]].to_numpy().astype(str), "stars": table[["stars"]].to_numpy("float32")}, labels)
    )
    return spec, raw


@pytest.mark.parametrize(("family", "weighting"), [("mlp", "auto"), ("mlp", "tf_idf"), ("rnn", "auto")])
def test_the_vectorisers_run_once_in_tf_data_and_training_from_their_output_ends_where_the_whole_model_does(
    family, weighting, tmp_path, monkeypatch, recwarn
):
    """The train stage computes the texts' vectors once (`fixed_layers_outside`) and trains the layers after them:
    the same weights, and the same optimizer state in the saved model, as the whole model trained on raw strings,
    with op determinism on or off. A dense vector wider than the limit (TF-IDF) is not kept: that model trains
    whole."""
    import keras
    import tensorflow as tf

    from pipeline.core.config import Config
    from pipeline.ml import training
    from pipeline.ml.hyperparameters import defaults_from_config
    from pipeline.ml.models import build_model, load_trained_model

    spec, raw = reviews_and_stars()
    hyperparameters = {
        **defaults_from_config(Config()),
        **{"family": family, "text_weighting": weighting, "hidden_units": [], "dropout": 0.0, "learning_rate": 0.05},
        **{"text_sequence_length": 6, "text_embedding_dim": 4, "rnn_units": 4},
    }

    def fitted(work_dir, split: bool):
        keras.utils.set_random_seed(3)
        model = build_model(hyperparameters, spec)
        fixed = training.fixed_layers_outside(model, spec) if split else None
        data = raw.batch(32)
        if fixed:  # as make_dataset does: on each parsed batch, before the cache
            data = data.map(lambda features, label: (fixed.transform(features), label))
        data = data.unbatch().cache()
        train, validation = data.shuffle(96, seed=1).batch(16), data.take(32).batch(16)  # as the train stage's
        training.train_model(fixed.head if fixed else model, train, validation, 3, 5, "val_loss", work_dir)
        return fixed.finish() if fixed else model

    monkeypatch.setattr(training, "DENSE_FIXED_OUTPUT_LIMIT", 16)  # the test's vocabulary is smaller than a user's
    kept = training.fixed_layers_outside(build_model(hyperparameters, spec), spec)
    assert (kept is None) == (weighting == "tf_idf")  # TF-IDF's vector is dense: the model trains whole
    if kept is None:
        return
    vectors = kept.transform({"text": tf.constant([["good film"]]), "stars": tf.constant([[1.0]])})
    assert isinstance(vectors["text"], tf.SparseTensor) == (family == "mlp")  # kept sparse: a text's few terms
    # and declared sparse all the way: a model whose input is declared dense makes a sparse one dense (10x slower)
    (inner,) = [layer for layer in kept.head.layers if isinstance(layer, keras.Model)]
    assert [tensor.sparse for tensor in inner.inputs] == [family == "mlp", False]
    whole = fitted(tmp_path / "whole", split=False)
    split = fitted(tmp_path / "split", split=True)
    for left, right in zip(whole.get_weights(), split.get_weights(), strict=True):
        np.testing.assert_allclose(left, right, atol=1e-6)
    split.save(tmp_path / "model.keras")
    reloaded = load_trained_model(tmp_path / "model.keras")
    assert not [warning for warning in recwarn if "Skipping variable loading" in str(warning.message)]
    assert len(reloaded.optimizer.variables) == len(whole.optimizer.variables)
    for left, right in zip(whole.optimizer.variables, reloaded.optimizer.variables, strict=True):
        np.testing.assert_allclose(np.asarray(left), np.asarray(right), atol=1e-6)


def test_a_text_search_fits_each_trial_on_its_own_models_vectors_and_hyperband_continues_them(tmp_path, monkeypatch):
    """The search fits each trial's model from its fixed layers' outputs, as the train stage does: a trial with
    hidden layers knows fewer terms and weighs them otherwise (`known_terms`, `term_weighting`), so each trial's
    datasets are made for the model it built. Hyperband continues a trial from its checkpoint: the part fitted."""
    import tensorflow as tf

    from pipeline.core.config import Config
    from pipeline.ml.hyperparameters import defaults_from_config
    from pipeline.ml.tuning import SearchModels, make_tuner

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    spec, raw = reviews_and_stars()
    defaults = {**defaults_from_config(Config()), "family": "mlp", "hidden_units": [], "learning_rate": 0.05}
    space = {"num_layers": {"choice": [0, 1]}, "units": {"choice": [4]}, "batch_size": {"choice": [16, 32]}}
    vectors = []

    def datasets(batch_size, transform):
        data = raw.batch(32).map(lambda features, label: (transform(features), label))
        vectors.append(data.element_spec[0]["text"])
        data = data.unbatch().cache().batch(batch_size or 16)
        return data, data

    settings = dataclasses.replace(
        Config().tune, algorithm="hyperband", max_epochs=3, hyperband_factor=3, objective="val_loss"
    )
    tuner = make_tuner(settings, SearchModels(space, defaults, spec), datasets, tmp_path / "search", 1, None)
    tuner.search(epochs=settings.max_epochs, verbose=0)
    trials = list(tuner.oracle.trials.values())
    assert trials and all(trial.status == "COMPLETED" for trial in trials)
    assert any("tuner/trial_id" in trial.hyperparameters.values for trial in trials)  # continued from a checkpoint
    assert {trial.hyperparameters.values["num_layers"] for trial in trials} == {0, 1}
    assert all(isinstance(vector, tf.SparseTensorSpec) for vector in vectors)  # the terms, vectorised once, sparse
