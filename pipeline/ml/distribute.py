"""Choosing a `tf.distribute` strategy from `base.strategy`.

Asking for a strategy the machine cannot provide is an error, never a silent fallback.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from pipeline.core.config import Config
from pipeline.core.errors import StageError
from pipeline.core.processes import leave_loaded_objects_out_of_collections
from pipeline.core.runner import quiet_tensorflow

log = logging.getLogger(__name__)


def split_cpu(count: int) -> None:
    """Makes `count` logical CPU devices (before TensorFlow starts its runtime), so that
    MirroredStrategy can be tried, and tested, on a machine without GPUs."""
    import tensorflow as tf

    (cpu,) = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
    except RuntimeError as error:  # the runtime already started in this process (tests, notebooks)
        log.warning("base.logical_cpus=%d ignored: %s", count, error)


def _resolve_tpu():
    """A TPU cluster resolver, or None when no TPU can be found (that answer is immediate)."""
    import tensorflow as tf

    try:
        return tf.distribute.cluster_resolver.TPUClusterResolver()
    except (ValueError, tf.errors.NotFoundError):
        return None


def _tpu_strategy(resolver):
    import tensorflow as tf

    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def apply_precision(setting: str, strategy, large_model: bool = False) -> str:
    """Sets Keras' global dtype policy from `train.mixed_precision`; returns the policy's name.

    `auto` is chosen by measurement: on an H100 the pipeline's default CNN trained 26 % slower in
    mixed_float16 than in float32 (too small to be bound by arithmetic), so float16 is used on GPUs only
    for `large_model`s (keras.applications backbones); TPUs get mixed_bfloat16, CPUs float32.
    """
    import keras
    import tensorflow as tf

    policy = setting
    if setting == "auto":
        if isinstance(strategy, tf.distribute.TPUStrategy):
            policy = "mixed_bfloat16"
        elif tf.config.list_logical_devices("GPU") and large_model:
            policy = "mixed_float16"
        else:
            policy = "float32"
    elif setting == "off":
        policy = "float32"
    elif not tf.config.list_logical_devices("GPU") and not isinstance(strategy, tf.distribute.TPUStrategy):
        log.warning("train.mixed_precision=%s on a CPU: it works, but is usually slower than float32", setting)
    keras.mixed_precision.set_global_policy(policy)
    if policy != "float32":
        log.info("mixed precision: %s (the output layer stays float32)", policy)
    return policy


def get_strategy(name: str):
    """Returns the strategy named by `base.strategy` (see params.yaml for the choices)."""
    import tensorflow as tf

    from pipeline.ml import multiworker

    # MultiWorkerMirroredStrategy must exist before TensorFlow's runtime starts (listing devices starts it).
    if name in ("auto", "multi_worker") and multiworker.worker_count() > 1:
        multiworker.apply_keras_workarounds()
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        log.info(
            "strategy %s -> MultiWorkerMirroredStrategy: %s of %d workers",
            name,
            multiworker.task_name(),
            multiworker.worker_count(),
        )
        return strategy
    gpus = tf.config.list_logical_devices("GPU")
    if name == "auto":
        resolver = _resolve_tpu()
        if resolver is not None:
            strategy = _tpu_strategy(resolver)
        elif len(gpus) >= 2:
            strategy = tf.distribute.MirroredStrategy()
        elif len(gpus) == 1:
            strategy = tf.distribute.OneDeviceStrategy("/gpu:0")
        else:
            strategy = tf.distribute.get_strategy()
        log.info(
            "strategy auto -> %s (%d GPU(s), %d replica(s) in sync)",
            type(strategy).__name__,
            len(gpus),
            strategy.num_replicas_in_sync,
        )
        return strategy
    if name == "cpu":
        return tf.distribute.OneDeviceStrategy("/cpu:0")
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")
    if name == "mirrored":
        devices = [device.name for device in gpus] or [device.name for device in tf.config.list_logical_devices("CPU")]
        if len(devices) < 2:
            raise StageError(
                f"base.strategy=mirrored needs two or more devices; this machine has {len(gpus)} GPU(s)."
                " Use auto, cpu or one_device (or base.logical_cpus: 2 to try it on the CPU)."
            )
        strategy = tf.distribute.MirroredStrategy(devices)
        log.info("strategy mirrored over %s", ", ".join(devices))
        return strategy
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise StageError(
                "base.strategy=multi_worker needs TF_CONFIG describing the cluster and this worker's task"
                ' (e.g. {"cluster": {"worker": ["host1:port", "host2:port"]}, "task": {"type": "worker", "index": 0}}).'
            )
        json.loads(os.environ["TF_CONFIG"])
        multiworker.apply_keras_workarounds()  # a one-worker cluster
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        resolver = _resolve_tpu()
        if resolver is None:
            raise StageError(
                "base.strategy=tpu, but no TPU could be resolved on this machine (set TPU_NAME on a TPU VM)."
                " Use auto or cpu on machines without a TPU."
            )
        return _tpu_strategy(resolver)
    raise StageError(f"unknown strategy {name!r}")


def configure_gpus(memory_limit_mb: int | None) -> int:
    """Memory growth on every GPU (or a fixed cap per GPU), before TensorFlow's runtime starts, so that
    several pipeline processes (stages, a server, queued experiments) can share one GPU. Returns the count."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            if memory_limit_mb:
                tf.config.set_logical_device_configuration(
                    gpu, [tf.config.LogicalDeviceConfiguration(memory_limit=memory_limit_mb)]
                )
            else:
                tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError as error:  # the runtime already started in this process (tests, notebooks)
            log.warning("GPU memory settings not applied to %s: %s", gpu.name, error)
    return len(gpus)


def setup_tensorflow(config: Config, large_model: bool = False) -> Any:
    """Sets GPU memory growth, splits the CPU into logical devices if asked, seeds every generator,
    applies op determinism, picks the distribution strategy and the mixed-precision policy, and logs
    the effective choices to the active MLflow run; returns the strategy."""
    quiet_tensorflow()
    import keras
    import tensorflow as tf

    configure_gpus(config.base.gpu_memory_limit_mb)
    if config.base.logical_cpus:
        split_cpu(config.base.logical_cpus)
    strategy = get_strategy(config.base.strategy)  # first: a multi-worker strategy needs a fresh runtime
    keras.utils.set_random_seed(config.base.seed)
    if config.base.deterministic:
        tf.config.experimental.enable_op_determinism()
    policy = apply_precision(config.train.mixed_precision, strategy, large_model)
    log_runtime(
        {
            "strategy": type(strategy).__name__,
            "replicas": strategy.num_replicas_in_sync,
            "gpus": len(tf.config.list_logical_devices("GPU")),
            "precision": policy,
            "jit_compile": config.train.jit_compile,
            "deterministic": config.base.deterministic,
        }
    )
    leave_loaded_objects_out_of_collections()
    return strategy


def log_runtime(effective: dict[str, Any]) -> None:
    """The effective strategy, precision, XLA and determinism, as `runtime.*` params of the active run
    (a stage that differs, such as a fine-tuned backbone in mixed precision, records its own as tags)."""
    log.info("runtime: %s", ", ".join(f"{name}={value}" for name, value in effective.items()))
    import mlflow

    active = mlflow.active_run()
    if active is None:
        return
    tags = mlflow.get_run(active.info.run_id).data.tags
    stages = [
        key.removeprefix("pipeline.stage.")
        for key, value in tags.items()
        if key.startswith("pipeline.stage.") and value == "running"
    ]
    for name, value in effective.items():
        try:
            mlflow.log_param(f"runtime.{name}", value)
        except mlflow.exceptions.MlflowException:  # an earlier stage logged another value
            mlflow.set_tag(f"runtime.{name}.{'.'.join(stages) or 'stage'}", str(value))


def build_from_one_replica(model) -> None:
    """Keras 3.15's `fit` and `evaluate` under a distribution strategy build the model's loss and metrics from the
    first batch averaged across the replicas (`strategy.reduce("MEAN", ...)` of every input), which fails for a
    string input: a text, or a table's category ("Value for attr 'T' of string is not in the list of allowed
    values", AddN; keras-team/keras#21172, still so in Keras 3.16). Only the batch's shapes and dtypes are read, so
    `model` builds from the first replica's part of it instead."""
    import tensorflow as tf

    keras_method = getattr(type(model), "_maybe_symbolic_build", None)
    if keras_method is None:  # another Keras: nothing to mend
        return
    keras_build = keras_method.__get__(model)  # the class's own: a second compile replaces, never nests

    def first_replica(value):
        if isinstance(value, tf.distribute.DistributedValues):
            return model.distribute_strategy.experimental_local_results(value)[0]
        return value

    def build(iterator=None, data_batch=None):
        if iterator is not None and model._distribute_strategy is not None:  # Keras' own condition
            for _, _, batches in iterator:  # fit and evaluate reset the iterator afterwards
                data_batch = tf.nest.map_structure(first_replica, next(batches))
                break
            iterator = None
        return keras_build(iterator=iterator, data_batch=data_batch)

    model._maybe_symbolic_build = build
