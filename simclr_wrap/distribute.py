"""Training on several devices: the contrastive batch gathered across replicas.

Under a `tf.distribute` strategy each replica runs the model on its share
of the global batch. SimCLR's negatives must come from the whole global
batch (the official SimCLR's cross-replica concatenation), so
`SoftmaxCosineSim` and `NearestNeighbourQueue` gather the projections of
every replica with `gather_replicas`. Outside a strategy, or with one
replica, it returns its input unchanged, so the single-device graph is the
same as ever.

The gathering uses TensorFlow's `ReplicaContext.all_gather`, whose gradient
sums the upstream gradients of all replicas before taking this replica's
rows: the gradient of a replica's loss reaches the projections of the
others, and the summed gradients equal those of the single-device loss on
the global batch.
"""

import contextlib
import json
import os

import keras
from keras import ops


def _replica_context():
    """TensorFlow's replica context when several replicas run in sync, else None."""
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return None
    return context


def _replicas_of_symbolic_build():
    """The replicas of the strategy whose scope is open while Keras traces the model for shapes, else 1.

    Before the first step, Keras builds the loss and metrics by tracing the
    model on one replica's input spec inside the strategy's scope but outside
    the replica function (a cross-replica context, in a graph), where nothing
    can be gathered; the output must still have a replica's shape. An eager
    call inside the scope computes on the rows it is given, as on one device.
    """
    if keras.backend.backend() != "tensorflow":
        return 1
    import tensorflow as tf

    if not tf.distribute.in_cross_replica_context() or tf.executing_eagerly():
        return 1
    return tf.distribute.get_strategy().num_replicas_in_sync


def gather_replicas(rows):
    """Concatenate `rows` of every replica in replica order, and say where ours start.

    Args:
        rows: this replica's (n, ...) tensor; every replica's has the same n.

    Returns:
        `(gathered, first_row)`: the (replicas·n, ...) tensor and the index
        of this replica's first row in it. Without several replicas in sync,
        `(rows, 0)`.

    Example:
    >>> import numpy as np
    >>> gathered, first_row = gather_replicas(np.ones((2, 3), "float32"))
    >>> tuple(gathered.shape), first_row
    ((2, 3), 0)
    """
    context = _replica_context()
    if context is None:
        replicas = _replicas_of_symbolic_build()
        if replicas > 1:
            # Shapes only: copies of our rows stand in for the other replicas'.
            return ops.concatenate([rows] * replicas, axis=0), 0
        return rows, 0
    first_row = context.replica_id_in_sync_group * ops.shape(rows)[0]
    return context.all_gather(rows, axis=0), first_row


def current_strategy(strategy=None):
    """`strategy`, else the strategy whose scope is open, else TensorFlow's default (one device).

    Returns None with backends other than TensorFlow, where `tf.distribute`
    does not apply.
    """
    if strategy is not None:
        return strategy
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    return tf.distribute.get_strategy()


def strategy_scope(strategy):
    """`strategy.scope()`, or a scope that does nothing for None."""
    return contextlib.nullcontext() if strategy is None else strategy.scope()


def check_model_in_scope(strategy, model):
    """Raise when `model`'s weights were not created under `strategy` (several replicas only).

    Variables made outside a strategy's scope live on one device and are
    not kept in sync, so training would silently diverge between replicas or
    fail deep inside TensorFlow.

    Raises:
        ValueError: naming the model and how to build it.
    """
    if strategy is None or strategy.num_replicas_in_sync == 1:
        return
    outside = [w.path for w in model.weights if not strategy.extended.variable_created_in_scope(_tf_variable(w))]
    if outside:
        raise ValueError(
            f"backbone {model.name!r} was built outside the scope of the distribution strategy "
            f"({len(outside)} of its weights, e.g. {outside[0]!r}, are not replicated); build it inside "
            "`with strategy.scope():` (or load it there), then wrap it"
        )


def _tf_variable(weight):
    return getattr(weight, "value", weight)


def check_global_batch(strategy, batch_size):
    """Raise unless the global batch splits into equal per-replica batches of at least one image."""
    replicas = 1 if strategy is None else strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise ValueError(
            f"Expected batch_size to be a multiple of {replicas} (it is the global batch, split evenly over the "
            f"strategy's {replicas} replicas). Received: batch_size={batch_size}"
        )


def synchronise_batchnorm(model):
    """Make the BatchNormalization layers of `model` compute batch statistics across replicas.

    Keras' `BatchNormalization(synchronized=True)` (TensorFlow only); it
    matters only where the layers train (`unfreeze_batchnorm=True`), since
    frozen ones use their moving statistics.

    Returns:
        The number of layers changed.
    """
    if keras.backend.backend() != "tensorflow":
        raise ValueError("sync_batchnorm=True needs the TensorFlow backend (Keras' synchronized BatchNormalization)")
    changed = 0
    for layer in _all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization) and not layer.synchronized:
            layer.synchronized = True
            changed += 1
    return changed


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


def multi_worker_strategy():
    """A `tf.distribute.MultiWorkerMirroredStrategy` of the cluster in `TF_CONFIG`, checked first.

    Raises:
        ValueError: `TF_CONFIG` is unset, not JSON, or lacks the cluster
            or this process's task, saying what it must hold.
    """
    example = ('TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
               '"task": {"type": "worker", "index": 0}}\'')
    text = os.environ.get("TF_CONFIG")
    if not text:
        raise ValueError(f"multi-worker training reads the cluster from the TF_CONFIG environment variable, which "
                         f"is not set: set it on every worker, e.g. {example} (index 1 on the second)")
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"TF_CONFIG is not valid JSON ({error}); expected e.g. {example}") from None
    cluster, task = (config.get("cluster"), config.get("task")) if isinstance(config, dict) else (None, None)
    if not isinstance(cluster, dict) or not cluster or not isinstance(task, dict) or \
            task.get("type") not in cluster or not isinstance(task.get("index"), int) or \
            not 0 <= task["index"] < len(cluster[task["type"]]):
        raise ValueError(f"TF_CONFIG must hold the cluster and this worker's task in it; expected e.g. {example}. "
                         f"Received: TF_CONFIG={text!r}")
    import tensorflow as tf

    return tf.distribute.MultiWorkerMirroredStrategy()
