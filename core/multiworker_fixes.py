"""Keras 3.15's fit() under MultiWorkerMirroredStrategy, made to work: two narrow workarounds.

Both are Keras bugs in code that only runs with more than one worker (one-worker clusters and
single machines never reach it), found by running the two-worker test (tests/test_multiworker.py):
1. fit() first reduces one distributed *input batch* across workers to learn its shapes, which fails
   ("Attempt to convert a value (PerReplica...) to a Tensor"). `build_locally` builds the same
   state (metrics, loss, optimizer) from one local batch and skips that step.
2. Each step then reduces its scalar logs with `strategy.reduce("MEAN", v, axis=0)`, which fails on
   rank-0 values ("Invalid reduction dimension 0 for input with 0 dimensions"). `patch_log_reduction`
   reduces scalars with axis=None (the mean over workers, what axis=0 means for them) and leaves
   everything else to Keras.
The training steps themselves are Keras' own, distributed by tf.distribute.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras.src.backend.tensorflow import trainer as tf_trainer

_original_reduce = tf_trainer.reduce_per_replica


def build_locally(model: keras.Model, dataset: tf.data.Dataset, strategy: tf.distribute.Strategy) -> None:
    """Build what fit() would build from one local batch, then make fit() skip its own build."""
    batch = next(iter(dataset.take(1)))
    with strategy.scope():
        model._symbolic_build(data_batch=batch)
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None


def _reduce_per_replica(values, strategy, reduction):
    if reduction not in ("auto", "mean") or not tf_trainer._collective_all_reduce_multi_worker(strategy):
        return _original_reduce(values, strategy, reduction)

    def reduce(value):
        local = strategy.experimental_local_results(value)[0] if tf_trainer._is_per_replica_instance(value) else value
        return strategy.reduce("MEAN", value, axis=0 if local.shape.rank else None)

    return tf.nest.map_structure(reduce, values)


def patch_log_reduction() -> None:
    """Install the scalar-safe reduction (idempotent)."""
    tf_trainer.reduce_per_replica = _reduce_per_replica
