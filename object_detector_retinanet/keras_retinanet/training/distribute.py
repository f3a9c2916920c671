"""Distributed training: the ``TF_CONFIG`` cluster, the chief, the tf.distribute strategy.

:func:`tf_config` and :func:`is_chief` need no TensorFlow (the argument checks use them); the
other functions import it when called.
"""

from __future__ import annotations

import json
import os


def tf_config():
    """The multi-worker cluster description ``$TF_CONFIG``, parsed (``{}`` when unset)."""
    raw = os.environ.get("TF_CONFIG")
    return json.loads(raw) if raw else {}


def is_chief():
    """Whether this process writes the run's snapshots and logs (no TensorFlow needed).

    Without ``TF_CONFIG`` there is one process and it is the chief. In a ``TF_CONFIG`` cluster,
    tf.distribute's convention: the task of type ``chief``, else worker 0 when the cluster has no
    ``chief`` entry.
    """
    config = tf_config()
    task = config.get("task") or {}
    kind, index = task.get("type"), int(task.get("index", 0))
    if kind in (None, "chief"):
        return True
    return kind == "worker" and index == 0 and not config.get("cluster", {}).get("chief")


def make_strategy(multi_gpu=0):
    """MultiWorkerMirroredStrategy when TF_CONFIG is set, MirroredStrategy for --multi-gpu N > 1,
    else the default (single-device) strategy."""
    import tensorflow as tf

    if os.environ.get("TF_CONFIG"):
        return tf.distribute.MultiWorkerMirroredStrategy()
    if multi_gpu > 1:
        gpus = tf.config.list_logical_devices("GPU")
        if len(gpus) < multi_gpu:
            raise RuntimeError(
                f"--multi-gpu {multi_gpu} asked for, but only {len(gpus)} GPU(s) visible."
            )
        return tf.distribute.MirroredStrategy([d.name for d in gpus[:multi_gpu]])
    return tf.distribute.get_strategy()


def patch_keras_multi_worker():
    """Make Keras 3's ``fit`` average the logged losses across workers without crashing.

    Under MultiWorkerMirroredStrategy, Keras (3.15 and earlier) averages every step's logs across
    workers with ``strategy.reduce("MEAN", value, axis=0)``, which fails on the scalar losses
    ("Invalid reduction dimension 0 for input with 0 dimensions"). Scalars are averaged with
    ``axis=None`` here; everything else goes to Keras' own function. The averaged loss is the same
    on every worker, so the NaN guard and ReduceLROnPlateau decide alike everywhere. Idempotent.
    """
    import keras
    import tensorflow as tf
    from keras.src.backend.tensorflow import trainer

    original = trainer.reduce_per_replica
    if getattr(original, "sku110k_patched", False):
        return

    def reduce_per_replica(values, strategy, reduction):
        multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
        if reduction not in ("auto", "mean") or not multi_worker:
            return original(values, strategy, reduction)

        def mean(value):
            if strategy.experimental_local_results(value)[0].shape.rank == 0:
                return strategy.reduce("MEAN", value, axis=None)
            return original(value, strategy, reduction)

        return keras.tree.map_structure(mean, values)

    reduce_per_replica.sku110k_patched = True
    trainer.reduce_per_replica = reduce_per_replica
