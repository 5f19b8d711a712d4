"""Builder tests on tiny specs: every family builds, runs a forward pass and saves."""

import dataclasses

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from pipeline.core.spec import LabelStatistics  # noqa: E402
from pipeline.ml.models import build_model, build_optimizer, load_trained_model  # noqa: E402
from tests.specs import make_spec  # noqa: E402

IMAGE_SPEC = make_spec(
    {
        "kind": "image",
        "task": "classification",
        "classes": ["a", "b", "c"],
        "image": {"name": "image", "height": 8, "width": 8, "channels": 1, "mean": [100.0], "variance": [900.0]},
    }
)
TABLE_SPEC = make_spec(
    {
        "kind": "table",
        "task": "classification",
        "classes": ["no", "yes"],
        "features": [
            {"column": "size", "name": "size", "type": "numeric", "mean": 10.0, "variance": 4.0, "median": 9.0},
            {"column": "colour", "name": "colour", "type": "categorical", "vocabulary": ["blue", "red"]},
        ],
    }
)
HYPERPARAMETERS = {
    "family": "cnn",
    "hidden_units": [16],
    "filters": [4, 8],
    "kernel_size": 3,
    "rnn_cell": "lstm",
    "rnn_units": 8,
    "num_heads": 2,
    "key_dim": 4,
    "transformer_blocks": 1,
    "activation": "relu",
    "dropout": 0.1,
    "l1": 0.0,
    "l2": 1e-4,
    "batch_norm": False,
    "optimizer": "adam",
    "learning_rate": 1e-3,
    "momentum": 0.9,
}


def table_batch():
    return {
        "size": np.array([[8.0], [np.nan], [12.0]], dtype=np.float32),
        "colour": np.array([["red"], [""], ["green"]], dtype=object),
    }


@pytest.mark.parametrize("family", ["mlp", "cnn", "rnn", "transformer"])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_every_family_builds_and_predicts_class_probabilities(family, activation):
    model = build_model({**HYPERPARAMETERS, "family": family, "activation": activation}, IMAGE_SPEC)
    outputs = model.predict(np.random.default_rng(0).uniform(0, 255, (5, 8, 8, 1)).astype("float32"), verbose=0)
    assert outputs.shape == (5, 3)
    np.testing.assert_allclose(outputs.sum(axis=1), 1.0, rtol=1e-5)
    assert sorted(model.input) == ["image"] and model.input["image"].name == "image"


def test_batch_norm_and_regularisation_are_applied():
    model = build_model({**HYPERPARAMETERS, "batch_norm": True, "l1": 1e-3}, IMAGE_SPEC)
    assert any(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)
    assert model.get_layer("conv_0").kernel_regularizer is not None


def test_table_model_takes_raw_columns_including_missing_and_unseen_values():
    model = build_model({**HYPERPARAMETERS, "family": "mlp"}, TABLE_SPEC)
    assert sorted(model.input) == ["colour", "size"]
    outputs = model(table_batch())
    assert outputs.shape == (3, 1)  # two classes: one sigmoid unit
    assert np.all(np.isfinite(np.asarray(outputs)))
    assert model.loss.name == "binary_crossentropy"


def test_regression_head_predicts_in_the_target_units():
    spec = dataclasses.replace(
        TABLE_SPEC, task="regression", classes=None, label_statistics=LabelStatistics(mean=4000.0, variance=1e4)
    )
    model = build_model({**HYPERPARAMETERS, "family": "mlp"}, spec)
    outputs = np.asarray(model(table_batch()))
    assert outputs.shape == (3, 1)
    assert np.all(np.abs(outputs - 4000.0) < 1000.0)


def test_image_families_are_refused_for_tables():
    with pytest.raises(ValueError, match="use mlp for table data"):
        build_model({**HYPERPARAMETERS, "family": "cnn"}, TABLE_SPEC)


@pytest.mark.parametrize(("name", "cls"), [("sgd", "SGD"), ("adam", "Adam"), ("rmsprop", "RMSprop")])
def test_optimizers(name, cls):
    optimizer = build_optimizer({"optimizer": name, "learning_rate": 0.01, "momentum": 0.5})
    assert type(optimizer).__name__ == cls
    assert float(optimizer.learning_rate) == pytest.approx(0.01)


@pytest.mark.parametrize("family", ["mlp", "transformer"])
def test_saved_model_reloads_with_identical_predictions(tmp_path, family):
    spec = TABLE_SPEC if family == "mlp" else IMAGE_SPEC
    model = build_model({**HYPERPARAMETERS, "family": family}, spec)
    inputs = table_batch() if family == "mlp" else np.ones((2, 8, 8, 1), dtype="float32")
    model.save(tmp_path / "model.keras")
    reloaded = load_trained_model(tmp_path / "model.keras")
    np.testing.assert_allclose(np.asarray(reloaded(inputs)), np.asarray(model(inputs)), atol=1e-6)


def test_augmentation_changes_images_in_training_only():
    hyperparameters = {
        **HYPERPARAMETERS,
        "augment_flip": "horizontal",
        "augment_rotation": 0.1,
        "augment_translation": 0.1,
        "augment_zoom": 0.1,
        "augment_contrast": 0.2,
    }
    model = build_model(hyperparameters, IMAGE_SPEC)
    assert len(model.get_layer("augmentation").steps) == 5
    images = np.random.default_rng(0).uniform(0, 255, (4, 8, 8, 1)).astype("float32")
    # Called as a SavedModel or a server calls it (no `training`), the model does not augment.
    np.testing.assert_array_equal(model(images), model(images, training=False))
    assert not np.allclose(model(images, training=True), model(images, training=False))
    plain = build_model(HYPERPARAMETERS, IMAGE_SPEC)
    assert not any(layer.name.startswith("augment") for layer in plain.layers)  # off by default


def test_a_float32_transformer_loads_while_a_mixed_precision_policy_is_global(tmp_path):
    """The gate of a mixed_bfloat16 run loads the float32 champion: its position embeddings stay float32 (they were
    built in the global policy and the load failed)."""
    import keras

    model = build_model({**HYPERPARAMETERS, "family": "transformer"}, IMAGE_SPEC)
    model.save(tmp_path / "model.keras")
    images = np.ones((2, 8, 8, 1), dtype="float32")
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        reloaded = load_trained_model(tmp_path / "model.keras")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    np.testing.assert_allclose(np.asarray(reloaded(images)), np.asarray(model(images)), atol=1e-6)


def every_model_of_every_kind():
    """Each family on each kind of data, with every optional layer (batch norm, augmentation, a bidirectional GRU,
    the lookback and the autoregressive base), on columns named after layers of the model (`normalize_size` beside
    `size`, `features`, `hidden_0_dense`)."""
    from pipeline.core.forecasts import AUTOREGRESSION
    from pipeline.data.columns import input_name

    def column(name, **fields):
        return {"column": name, "name": input_name(name), **fields}

    numbers = {"type": "numeric", "mean": 0.0, "variance": 1.0, "median": 0.0}
    table = [column(name, **numbers) for name in ("size", "normalize_size", "features", "hidden_0_dense")]
    text = [*table, column("review", type="text", terms=["good"], idf=[1.0], vocabulary=["good"], words_p95=4)]
    series = {"time_column": "t", "window": 4, "horizon": 2, "seasonal_period": 1, "frequency": "steps"}
    autoregression = {"coefficients": np.zeros((4 * len(table), 2)).tolist(), "intercept": [0.0, 0.0]}
    series_specs = [
        make_spec(
            {"kind": "series", "task": "forecast", "classes": None, "features": table, "series": {**series, **base},
             "label_statistics": {"mean": 0.0, "variance": 1.0}}
        )
        for base in ({"base": "last_value"}, {"base": AUTOREGRESSION, "autoregression": autoregression})
    ]  # fmt: skip
    all_layers = {
        **HYPERPARAMETERS, "batch_norm": True, "augment_flip": "horizontal", "rnn_cell": "gru",
        "rnn_bidirectional": True, "series_lookback": 2, "text_sequence_length": 4, "text_embedding_dim": 4,
    }  # fmt: skip
    specs = [
        IMAGE_SPEC,
        make_spec({"kind": "table", "classes": ["a", "b"], "features": table}),
        make_spec({"kind": "text", "classes": ["no", "yes"], "features": text}),
        *series_specs,
    ]
    for spec in specs:
        for family in ("mlp",) if spec.kind == "table" else ("mlp", "cnn", "rnn", "transformer"):
            yield build_model({**all_layers, "family": family}, spec)
    yield build_model({**all_layers, "family": "mlp", "hidden_units": []}, specs[2])  # text's linear log TF-IDF


def test_no_layer_of_any_model_is_named_as_an_input_can_be():
    """Keras refuses a model whose input and layer share a name: a column named `features` or `normalize_x`
    beside `x` failed to build. Every layer's name is one that no column's key can be."""
    from pipeline.data.columns import input_name

    for model in every_model_of_every_kind():
        inputs = {tensor.name for tensor in model.inputs}
        for operation in model.operations:
            if operation.name not in inputs:
                assert input_name(operation.name) != operation.name, (model.name, operation.name)
