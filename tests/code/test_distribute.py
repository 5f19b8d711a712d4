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


class FakeGpu:
    """A physical GPU device as TensorFlow lists it (no GPU can exist on the CI machine)."""

    def __init__(self, index: int):
        self.name = f"/physical_device:GPU:{index}"
        self.device_type = "GPU"


def test_every_gpu_grows_its_memory_unless_a_cap_is_set(monkeypatch):
    import tensorflow as tf

    from pipeline.ml.distribute import configure_gpus

    calls = []
    monkeypatch.setattr(
        tf.config, "list_physical_devices", lambda kind=None: [FakeGpu(0), FakeGpu(1)] if kind == "GPU" else []
    )
    monkeypatch.setattr(
        tf.config.experimental, "set_memory_growth", lambda gpu, on: calls.append(("growth", gpu.name, on))
    )
    monkeypatch.setattr(
        tf.config,
        "set_logical_device_configuration",
        lambda gpu, configs: calls.append(("limit", gpu.name, configs[0].memory_limit)),
    )
    assert configure_gpus(None) == 2
    assert calls == [("growth", "/physical_device:GPU:0", True), ("growth", "/physical_device:GPU:1", True)]
    calls.clear()
    configure_gpus(4096)
    assert calls == [("limit", "/physical_device:GPU:0", 4096), ("limit", "/physical_device:GPU:1", 4096)]


def test_auto_precision_on_a_gpu_is_float32_for_small_models_and_float16_for_backbones(monkeypatch):
    import keras
    import tensorflow as tf

    strategy = tf.distribute.get_strategy()
    real = tf.config.list_logical_devices
    monkeypatch.setattr(tf.config, "list_logical_devices", lambda kind=None: ["GPU:0"] if kind == "GPU" else real(kind))
    try:
        assert apply_precision("auto", strategy) == "float32"  # the default CNN: measured slower in float16
        assert apply_precision("auto", strategy, large_model=True) == "mixed_float16"
        assert apply_precision("off", strategy, large_model=True) == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_export_parity_is_judged_in_the_precision_the_model_computes_in():
    import keras

    from pipeline.serving.saved_model import compute_dtype, parity_tolerance

    def model(policy: str):
        inputs = keras.Input((4,))
        hidden = keras.layers.Dense(8, dtype=policy)(inputs)
        return keras.Model(inputs, keras.layers.Dense(2, activation="softmax", dtype="float32")(hidden))

    assert (compute_dtype(model("float32")), parity_tolerance(model("float32"), 1e-5)) == ("float32", 1e-5)
    assert (compute_dtype(model("mixed_float16")), parity_tolerance(model("mixed_float16"), 1e-5)) == ("float16", 1e-2)
    assert compute_dtype(model("mixed_bfloat16")) == "bfloat16"
    assert parity_tolerance(model("mixed_bfloat16"), 0.1) == 0.1  # a wider configured tolerance stands
