"""Transfer learning: what is frozen and unfrozen, backbones from local weights, the few-labels split."""

import dataclasses

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from pipeline.core.config import ConfigError, FinetuneConfig, config_from_dict  # noqa: E402
from pipeline.core.runner import StageError  # noqa: E402
from pipeline.core.tasks import task  # noqa: E402
from pipeline.ml import transfer  # noqa: E402
from pipeline.ml.models import build_model  # noqa: E402
from pipeline.stages import finetune  # noqa: E402
from tests.code.test_models import HYPERPARAMETERS, IMAGE_SPEC, TABLE_SPEC  # noqa: E402
from tests.conftest import default_params, merged  # noqa: E402

TARGET_SPEC = dataclasses.replace(IMAGE_SPEC, classes=["x", "y", "z", "w"])


def trained_source(batch_norm: bool = True):
    return build_model({**HYPERPARAMETERS, "batch_norm": batch_norm, "hidden_units": [16, 8]}, IMAGE_SPEC)


def images(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (count, 8, 8, 1)).astype("float32")


def test_the_trained_base_keeps_every_layer_but_the_output_and_gets_a_new_head():
    source = trained_source()
    model, base = transfer.build_transfer_model(FinetuneConfig(), TARGET_SPEC, source=source)
    assert "predictions" not in [layer.name for layer in base.layers]
    assert base.output.shape[-1] == 8  # the last hidden layer
    assert model(images(3)).shape == (3, 4)  # the target's four classes
    np.testing.assert_array_equal(base.get_layer("conv_0").kernel.numpy(), source.get_layer("conv_0").kernel.numpy())


def test_phase_one_freezes_the_whole_base_and_phase_two_unfreezes_the_top_layers_but_not_batch_norm():
    model, base = transfer.build_transfer_model(FinetuneConfig(), TARGET_SPEC, source=trained_source())
    transfer.freeze(base)
    assert base.trainable_weights == []
    assert {weight.path.split("/")[0] for weight in model.trainable_weights} == {"predictions"}

    unfrozen = transfer.unfreeze_top(base, 2)
    assert unfrozen == ["hidden_0_dense", "hidden_1_dense"]
    trainable = {layer.name for layer in base.layers if layer.trainable_weights}
    assert trainable == set(unfrozen)
    batch_norms = [layer for layer in base.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert batch_norms and not any(layer.trainable for layer in batch_norms)

    assert transfer.unfreeze_top(base, 3) == ["conv_1", "hidden_0_dense", "hidden_1_dense"]
    everything = transfer.unfreeze_top(base, 99)  # more than there are: all of them, never batch norm
    assert everything == ["conv_0", "conv_1", "hidden_0_dense", "hidden_1_dense"]
    assert transfer.unfreeze_top(base, 0) == [] and base.trainable_weights == []


def test_fine_tuning_changes_only_the_unfrozen_layers_and_batch_norm_statistics_stay_put():
    source = trained_source()
    model, base = transfer.build_transfer_model(FinetuneConfig(), TARGET_SPEC, source=source)
    before = {layer.name: [weight.numpy().copy() for weight in layer.weights] for layer in base.layers}
    labels = np.arange(32) % 4
    dataset = tf.data.Dataset.from_tensor_slices((images(32), labels)).batch(8)
    settings = dataclasses.replace(
        FinetuneConfig(), head_epochs=2, fine_tune_epochs=2, unfreeze_layers=1, early_stopping_patience=5
    )
    rows, unfrozen = transfer.fine_tune(model, base, TARGET_SPEC, dataset, dataset, settings)
    assert [row["phase"] for row in rows] == [1, 1, 2, 2]
    assert unfrozen == ["hidden_1_dense"]
    for layer in base.layers:
        changed = any(
            not np.array_equal(old, new.numpy()) for old, new in zip(before[layer.name], layer.weights, strict=True)
        )
        assert changed == (layer.name == "hidden_1_dense"), layer.name


def test_a_target_with_other_inputs_than_the_trained_model_is_a_clear_error():
    other = dataclasses.replace(IMAGE_SPEC, image=dataclasses.replace(IMAGE_SPEC.image, height=16, width=16))
    with pytest.raises(StageError, match=r"reads 8x8x1 images, but the target \(mine\) has 16x16x1 images"):
        finetune.check_same_inputs(IMAGE_SPEC, other, "mine")
    with pytest.raises(StageError, match="columns size"):
        finetune.check_same_inputs(TABLE_SPEC, dataclasses.replace(TABLE_SPEC, features=TABLE_SPEC.features[:1]), "t")
    finetune.check_same_inputs(IMAGE_SPEC, TARGET_SPEC, "same shape, other classes")


def test_a_keras_applications_backbone_is_built_from_a_local_weights_file(tmp_path):
    reference = transfer.build_backbone("mobilenet_v2", 32, weights=None)
    weights_file = tmp_path / "mobilenet_v2_no_top.weights.h5"
    reference.save_weights(weights_file)
    loaded = transfer.build_backbone("mobilenet_v2", 32, weights=str(weights_file))
    for expected, actual in zip(reference.weights, loaded.weights, strict=True):
        np.testing.assert_array_equal(expected.numpy(), actual.numpy())
    fresh = transfer.build_backbone("mobilenet_v2", 32, weights=None)
    assert not all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(reference.weights, fresh.weights, strict=True))

    settings = dataclasses.replace(FinetuneConfig(), base="mobilenet_v2", weights=str(weights_file))
    model, base = transfer.build_transfer_model(settings, TARGET_SPEC, weights=settings.weights)
    assert model(images(2)).shape == (2, 4)  # 8x8 grey pixels resized to 32x32x3 inside the model
    transfer.freeze(base)
    unfrozen = transfer.unfreeze_top(base, 3)
    assert len(unfrozen) == 3
    assert not any(layer.trainable for layer in base.layers if isinstance(layer, keras.layers.BatchNormalization))


@pytest.mark.parametrize("name", ["mobilenet_v3_small", "efficientnet_b0"])
def test_other_backbones_build_without_downloading(name):
    settings = dataclasses.replace(FinetuneConfig(), base=name, weights=None)
    model, _ = transfer.build_transfer_model(settings, TARGET_SPEC, weights=None)
    assert model(images(1)).shape == (1, 4)


def test_fine_tuned_models_save_and_reload_with_identical_predictions(tmp_path):
    settings = dataclasses.replace(FinetuneConfig(), base="mobilenet_v2", weights=None)
    for model, _ in (
        transfer.build_transfer_model(FinetuneConfig(), TARGET_SPEC, source=trained_source()),
        transfer.build_transfer_model(settings, TARGET_SPEC, weights=None),
    ):
        model.save(tmp_path / "model.keras")
        reloaded = keras.saving.load_model(tmp_path / "model.keras")
        np.testing.assert_allclose(reloaded(images(4)), model(images(4)), atol=1e-6)


def test_few_labels_keeps_that_many_training_examples_per_class():
    labels = np.array([0] * 50 + [1] * 30 + [2] * 3)
    indices = np.arange(len(labels))
    kept = task("classification").limit_per_class(indices, labels, 10, seed=1)
    assert np.bincount(labels[kept]).tolist() == [10, 10, 3]
    np.testing.assert_array_equal(kept, task("classification").limit_per_class(indices, labels, 10, seed=1))


def test_finetune_settings_are_checked_before_anything_runs(tmp_path):
    params = default_params()
    with pytest.raises(ConfigError, match=r"finetune\.data\.colour"):
        config_from_dict(merged(params, {"finetune": {"data": {"source": "digits_noisy", "colour": "rgb"}}}))
    with pytest.raises(ConfigError, match="no such file"):
        config_from_dict(merged(params, {"finetune": {"base": "resnet50", "weights": str(tmp_path / "none.h5")}}))
    forced = merged(params, {"data": {"source": "penguins"}, "finetune": {"enabled": True}})
    with pytest.raises(ConfigError, match="finetune.base=trained reuses the trained model"):
        config_from_dict(forced)
    automatic = config_from_dict(merged(params, {"data": {"source": "penguins"}}))
    assert "not table data" in automatic.finetune_skip_reason
    assert config_from_dict(params).finetune_skip_reason is None
    target = config_from_dict(params).target_config()
    assert target.data.source == "digits_noisy" and target.paths.prepared == "data/finetune/prepared"
