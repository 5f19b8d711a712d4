"""Strategy selection and precision: clear errors for what this machine cannot provide."""

import pytest

pytest.importorskip("tensorflow")

from pipeline.core.runner import StageError  # noqa: E402
from pipeline.ml.distribute import apply_precision, get_strategy  # noqa: E402


def test_a_tpu_asked_for_on_a_machine_without_one_is_a_clear_error():
    with pytest.raises(StageError, match="base.strategy=tpu, but no TPU could be resolved on this machine"):
        get_strategy("tpu")


def test_mirrored_on_a_single_device_says_how_to_try_it(monkeypatch):
    import tensorflow as tf

    if len(tf.config.list_logical_devices("CPU")) > 1 or tf.config.list_logical_devices("GPU"):
        pytest.skip("this process has several devices")
    with pytest.raises(StageError, match="base.logical_cpus: 2"):
        get_strategy("mirrored")


def test_multi_worker_without_a_cluster_description_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(StageError, match="needs TF_CONFIG"):
        get_strategy("multi_worker")


def test_auto_on_a_cpu_machine_is_the_default_strategy_in_float32():
    import keras
    import tensorflow as tf

    strategy = get_strategy("auto")
    if tf.config.list_logical_devices("GPU"):
        pytest.skip("a GPU is present")
    assert strategy.num_replicas_in_sync == 1
    assert apply_precision("auto", strategy) == "float32"
    try:
        assert apply_precision("mixed_bfloat16", strategy) == "mixed_bfloat16"
        assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
    finally:
        keras.mixed_precision.set_global_policy("float32")
