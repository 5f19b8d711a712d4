"""Choosing a `tf.distribute` strategy from `base.strategy`.

Asking for a strategy the machine cannot provide is an error, never a silent fallback.
"""

from __future__ import annotations

import json
import logging
import os

from pipeline.runtime import StageError

log = logging.getLogger(__name__)


def get_strategy(name: str):
    """Returns the strategy named by `base.strategy` (see params.yaml for the choices)."""
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    if name == "auto":
        if len(gpus) >= 2:
            strategy = tf.distribute.MirroredStrategy()
        elif len(gpus) == 1:
            strategy = tf.distribute.OneDeviceStrategy("/gpu:0")
        else:
            strategy = tf.distribute.get_strategy()
        log.info("strategy auto -> %s (%d GPU(s))", type(strategy).__name__, len(gpus))
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
                " Use auto, cpu or one_device."
            )
        return tf.distribute.MirroredStrategy(devices)
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise StageError(
                "base.strategy=multi_worker needs TF_CONFIG describing the cluster and this worker's task"
                ' (e.g. {"cluster": {"worker": ["host1:port", "host2:port"]}, "task": {"type": "worker", "index": 0}}).'
            )
        json.loads(os.environ["TF_CONFIG"])
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        except (ValueError, tf.errors.NotFoundError) as error:
            raise StageError(
                f"base.strategy=tpu, but no TPU could be resolved ({error}). Use auto on machines without a TPU."
            ) from error
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise StageError(f"unknown strategy {name!r}")
