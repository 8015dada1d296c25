"""`--strategy`: which `tf.distribute` strategy trains, and which process writes the run's files.

`auto` is MirroredStrategy when several GPUs are visible, else the default (one device). `multiworker`
reads the cluster from `TF_CONFIG`; every worker trains, only the chief (worker 0) writes artefacts.
`tpu` connects to the TPU of a Colab/Cloud TPU VM.
"""

from __future__ import annotations

import json
import os

from tltoolkit.errors import TltoolkitError, one_line

STRATEGIES = ("auto", "mirrored", "multiworker", "tpu", "none")


def make_strategy(name: str):
    import tensorflow as tf

    if name not in STRATEGIES:
        raise TltoolkitError(f"unknown --strategy {name!r}; use one of {', '.join(STRATEGIES)}")
    if name == "auto":
        name = "mirrored" if len(tf.config.list_logical_devices("GPU")) > 1 else "none"
    if name == "none":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        # Without GPUs, MirroredStrategy takes only CPU:0; logical CPUs (set up by the caller) all serve.
        cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.MirroredStrategy(None if gpus or len(cpus) < 2 else cpus)
    if name == "multiworker":
        if not os.environ.get("TF_CONFIG"):
            raise TltoolkitError("--strategy multiworker needs TF_CONFIG naming the cluster and this worker "
                                 "(see tf.distribute.MultiWorkerMirroredStrategy)")
        return _multi_worker_strategy()
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError) as error:
        raise TltoolkitError(f"--strategy tpu: no TPU found ({one_line(error, 120)}); "
                             f"use auto on GPU/CPU machines") from error
    return tf.distribute.TPUStrategy(resolver)


def _multi_worker_strategy():
    """MultiWorkerMirroredStrategy whose `reduce` takes what Keras 3's `fit` gives it.

    Keras 3.15 cannot fit under the stock strategy (keras-team/keras#20585): to build the model it
    reduces a per-replica (x, y) batch eagerly, which the strategy cannot do (only its shapes matter:
    this worker's batch serves), and in the train step it reduces scalar metrics along axis 0 (here:
    over the replicas, axis None, the same mean).
    """
    import tensorflow as tf

    class MultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
        def reduce(self, reduce_op, value, axis):
            if tf.executing_eagerly():
                return tf.nest.map_structure(lambda v: self.experimental_local_results(v)[0], value)
            parent = super()

            def one(v):
                first = self.experimental_local_results(v)[0]
                return parent.reduce(reduce_op, v, axis=None if axis is not None and first.shape.rank == 0 else axis)

            return tf.nest.map_structure(one, value)

    return MultiWorkerMirroredStrategy()


def is_chief() -> bool:
    """Whether this process writes the run's files: always, except on non-chief multi-worker tasks."""
    config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    task = config.get("task", {})
    if not task or "chief" in config.get("cluster", {}):
        return task.get("type", "chief") == "chief"
    return task.get("type") == "worker" and int(task.get("index", 0)) == 0


def shard_by_data(dataset):
    """Datasets built from tensors or generators cannot be sharded by file: shard their elements."""
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)
