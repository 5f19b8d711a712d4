"""Multi-worker training: the TF_CONFIG helpers, the local launcher, and the Keras workarounds.

Keras 3.15's `fit` does not run under `tf.distribute.MultiWorkerMirroredStrategy` as shipped:
1. building the model reduces the first distributed batch with `strategy.reduce(MEAN, axis=None)`,
   which under the collective all-reduce strategy hands a `PerReplica` to `convert_to_tensor`;
2. the epoch logs (scalars) are reduced with `strategy.reduce(MEAN, axis=0)`: "Invalid reduction
   dimension 0" for a scalar.
`apply_keras_workarounds()` patches exactly these two code paths, and only for multi-worker
strategies: the model is built from this worker's first local batch, and scalar logs are averaged
across workers with `axis=None`. tests/e2e/test_multiworker.py fails if Keras stops needing them
(plain `fit` works) or if they stop working. Everything else about multi-worker training is
TensorFlow's own.

`pipeline train --workers N` starts N local worker processes with generated `TF_CONFIG`s: the
same run as on N machines (one `TF_CONFIG` per machine or Kubernetes pod), on one machine.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

log = logging.getLogger(__name__)

_APPLIED = False


def cluster() -> dict | None:
    """The parsed `TF_CONFIG`, or None when unset."""
    raw = os.environ.get("TF_CONFIG")
    return json.loads(raw) if raw else None


def worker_count() -> int:
    description = cluster() or {}
    nodes = description.get("cluster", {})
    return len(nodes.get("worker", [])) + len(nodes.get("chief", []))


def is_chief() -> bool:
    """True for the process that writes outputs: the `chief` task, or worker 0 when there is no chief."""
    description = cluster()
    if not description:
        return True
    task = description.get("task", {})
    if "chief" in description.get("cluster", {}):
        return task.get("type") == "chief"
    return task.get("type", "worker") == "worker" and int(task.get("index", 0)) == 0


def task_name() -> str:
    task = (cluster() or {}).get("task", {})
    return f"{task.get('type', 'worker')}-{task.get('index', 0)}"


def _is_multi_worker(strategy) -> bool:
    from keras.src.backend.tensorflow import trainer

    return strategy is not None and trainer._collective_all_reduce_multi_worker(strategy)


def apply_keras_workarounds() -> None:
    """Patches the two Keras code paths that break `fit` under MultiWorkerMirroredStrategy (idempotent)."""
    global _APPLIED
    if _APPLIED:
        return
    import tensorflow as tf
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer

    original_reduce = trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and _is_multi_worker(strategy):
            return tree.map_structure(lambda value: strategy.reduce("MEAN", value, axis=None), values)
        return original_reduce(values, strategy, reduction)

    original_build = trainer.TensorFlowTrainer._maybe_symbolic_build

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        strategy = self._distribute_strategy
        if iterator is not None and _is_multi_worker(strategy):
            for _, _, batches in iterator:  # as Keras does: the first batch shapes the model
                first = next(batches)
                data_batch = tree.map_structure(
                    lambda value: (
                        strategy.experimental_local_results(value)[0]
                        if isinstance(value, tf.distribute.DistributedValues)
                        else value
                    ),
                    first,
                )
                break
            iterator = None
        return original_build(self, iterator=iterator, data_batch=data_batch)

    trainer.reduce_per_replica = reduce_per_replica
    trainer.TensorFlowTrainer._maybe_symbolic_build = _maybe_symbolic_build
    _APPLIED = True


def worker_configs(count: int, host: str = "127.0.0.1") -> list[dict]:
    """One TF_CONFIG per worker of a `count`-worker cluster on free ports of `host`."""
    from pipeline.core.processes import free_port

    addresses = [f"{host}:{free_port()}" for _ in range(count)]
    return [{"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}} for index in range(count)]


def launch(command: list[str], count: int, host: str = "127.0.0.1") -> int:
    """Runs `command` once per worker with its TF_CONFIG; returns the first non-zero status, or 0."""
    processes = []
    for config in worker_configs(count, host):
        environment = {**os.environ, "TF_CONFIG": json.dumps(config)}
        processes.append(subprocess.Popen(command, env=environment))
    statuses = [process.wait() for process in processes]
    return next((status for status in statuses if status), 0)


def self_check(with_workarounds: bool) -> None:
    """A tiny `fit` under MultiWorkerMirroredStrategy (run in each worker of a TF_CONFIG cluster)."""
    import numpy as np
    import tensorflow as tf

    if with_workarounds:
        apply_keras_workarounds()
    import keras

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    features = np.random.default_rng(0).normal(size=(256, 4)).astype("float32")
    labels = (features.sum(axis=1) > 0).astype("int64")
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    dataset = tf.data.Dataset.from_tensor_slices((features, labels)).batch(32).with_options(options)
    with strategy.scope():
        inputs = keras.Input((4,))
        model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(inputs))
        model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(dataset, validation_data=dataset, epochs=2, verbose=0)
    print(f"fit completed on {task_name()}: {sorted(history.history)}", flush=True)


if __name__ == "__main__":
    self_check(with_workarounds="--without-workarounds" not in sys.argv)
