"""SimCLR's `fit` through a training step of our own, for strategies under which Keras' `fit` fails.

Keras 3's `Model.fit` fails under `tf.distribute.MultiWorkerMirroredStrategy`
before its first step (keras-team/keras#20585: its symbolic build converts a
`PerReplica` value, and its reduction of the logs asks for axis 0 of scalars).
`StrategyFit` does what `fit` does for a SimCLR model, without that machinery:
a `tf.function` step run with `strategy.run`, in which each replica computes
NT-Xent on its rows of the global batch (its negatives gathered from every
replica by `SoftmaxCosineSim`) and the optimizer all-reduces the gradients;
the logs are sums over the global batch, all-reduced, so every worker sees the
same `loss`, `nt_xent` and `contrastive_accuracy` (and their `val_` forms) and
its callbacks take the same decisions. The callbacks are the ones `fit` would
be given, called in `fit`'s order through `keras.callbacks.CallbackList`.

Each worker reads only its rows of every global batch (`StrategyFit.worker_batch`,
through `DataGeneratorSimCLR.shard_of_batch`, which draws the random numbers of
the whole batch from its (seed, epoch, batch) stream and makes only those rows'
views), so the global batch is the one a single device would train on. Other
indexable data is read whole and cut to the worker's rows.

TensorFlow only (`tf.distribute`).
"""

import json

import keras
import numpy as np

from simclr_wrap.losses import contrastive_accuracy, nt_xent

LOG_NAMES = ("loss", "nt_xent", "contrastive_accuracy")


def is_multi_worker(strategy):
    """Whether `strategy` is a `MultiWorkerMirroredStrategy` (with any number of workers)."""
    if strategy is None or keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def worker_of(strategy):
    """`(index, workers, is_chief)` of this process in `strategy`'s cluster (`(0, 1, True)` without one).

    The chief is the task of type "chief", else worker 0, as TensorFlow's
    multi-worker guide has it; the index counts the chief first.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    spec = resolver.cluster_spec().as_dict() if resolver is not None else {}
    if not spec:
        return 0, 1, True
    chiefs = len(spec.get("chief", []))
    workers = chiefs + len(spec.get("worker", []))
    if resolver.task_type == "chief":
        return 0, workers, True
    index = chiefs + int(resolver.task_id)
    return index, workers, index == 0


def broadcast_from_chief(strategy, variables):
    """Give every worker the chief's values of `variables` (the weights, the optimizer's state).

    The chief's values are summed with zeros from the other replicas, one
    all-reduce per variable, so it needs no shared file system.
    """
    variables = [getattr(variable, "value", variable) for variable in variables]
    values = _chief_values(strategy, lambda: [variable.read_value() for variable in variables])
    for variable, value in zip(variables, values):
        variable.assign(value)


def broadcast_arrays(strategy, arrays):
    """The chief's NumPy `arrays` on every worker, which give arrays of the same shapes and dtypes.

    Example:
    >>> import tensorflow as tf
    >>> [array.tolist() for array in broadcast_arrays(tf.distribute.get_strategy(), [np.arange(3)])]
    [[0, 1, 2]]
    """
    arrays = [np.asarray(array) for array in arrays]
    return [value.numpy() for value in _chief_values(strategy, lambda: [_constant(array) for array in arrays])]


def broadcast_json(strategy, value):
    """The chief's JSON-serialisable `value` on every worker (the others' values are ignored).

    Example:
    >>> import tensorflow as tf
    >>> broadcast_json(tf.distribute.get_strategy(), {"round": 2})
    {'round': 2}
    """
    text = np.frombuffer(json.dumps(value).encode(), np.uint8).astype(np.float32)
    length = int(broadcast_arrays(strategy, [np.float32(len(text))])[0])
    # Bytes as float32 (exact up to 255), a dtype every collective implementation reduces.
    padded = np.zeros(length, np.float32)
    padded[: min(length, len(text))] = text[:length]
    received = broadcast_arrays(strategy, [padded])[0]
    return json.loads(bytes(received.astype(np.uint8)).decode())


def _constant(array):
    import tensorflow as tf

    return tf.constant(array)


def _chief_values(strategy, read):
    """The tensors `read()` gives on the chief's first replica, on this worker (one all-reduce each)."""
    import tensorflow as tf

    if strategy.num_replicas_in_sync == 1:
        return read()

    def replica_values():
        context = tf.distribute.get_replica_context()
        chief = tf.equal(context.replica_id_in_sync_group, 0)
        return [context.all_reduce("SUM", tf.where(chief, value, tf.zeros_like(value))) for value in read()]

    values = tf.function(lambda: strategy.run(replica_values))()
    return [strategy.experimental_local_results(value)[0] for value in values]


class StrategyFit:
    """`Model.fit` for a compiled SimCLR model under a `tf.distribute` strategy, through our own step.

    Args:
        model: the SimCLR model (its output `SoftmaxCosineSim`'s), compiled:
            its optimizer trains it; built in `strategy`'s scope.
        strategy: the `tf.distribute` strategy.
        global_batch: images in a global batch (B).

    `fit` takes the arguments of `Model.fit` that `SimCLR` uses and returns
    the `keras.callbacks.History`.
    """

    def __init__(self, model, strategy, global_batch):
        self.model, self.strategy, self.global_batch = model, strategy, int(global_batch)
        self.worker, self.workers, self.is_chief = worker_of(strategy)
        self._train_step = self._test_step = None

    # Data

    def worker_batch(self, data, index):
        """This worker's rows of global batch `index`, split over its replicas, as distributed values."""
        replicas = self.strategy.num_replicas_in_sync
        per_replica = self.global_batch // replicas
        local = replicas // self.workers
        first = self.worker * local * per_replica
        rows = np.arange(first, first + local * per_replica)
        if hasattr(data, "shard_of_batch"):
            inputs, target = data.shard_of_batch(index, rows)
        else:  # any other indexable Keras data: the whole batch, then our rows
            inputs, target = data[index]
            inputs, target = [np.asarray(part)[rows] for part in inputs], np.asarray(target)[rows]
        inputs = [np.asarray(part) for part in inputs]
        target = np.asarray(target)

        def replica_rows(context):
            start = (context.replica_id_in_sync_group - self.worker * local) * per_replica
            return [part[start:start + per_replica] for part in inputs], target[start:start + per_replica]

        return self.strategy.experimental_distribute_values_from_function(replica_rows)

    # Steps

    def _sums(self, target, outputs):
        """Per-replica sums over its rows: NT-Xent, accuracy, and the loss with the head's penalty."""
        from keras import ops

        rows = ops.cast(ops.shape(target)[0], "float32")
        penalty = ops.cast(sum(self.model.losses), "float32") if self.model.losses else 0.0
        per_row = nt_xent(target, outputs)
        nt_xent_sum = ops.sum(per_row)
        return {"loss": nt_xent_sum + penalty * rows, "nt_xent": nt_xent_sum,
                "contrastive_accuracy": ops.sum(contrastive_accuracy(target, outputs))}, per_row, penalty

    def _replica_train(self, batch):
        import tensorflow as tf

        inputs, target = batch
        with tf.GradientTape() as tape:
            outputs = self.model(inputs, training=True)
            sums, per_row, penalty = self._sums(target, outputs)
            # Each replica's share of the global loss; the optimizer sums the replicas' gradients.
            loss = tf.reduce_sum(per_row) / self.global_batch + penalty / self.strategy.num_replicas_in_sync
            # A LossScaleOptimizer (mixed_float16) scales the loss up here and the gradients down as it applies them.
            loss = self.model.optimizer.scale_loss(loss)
        weights = self.model.trainable_weights
        self.model.optimizer.apply_gradients(zip(tape.gradient(loss, weights), weights))
        return sums

    def _replica_test(self, batch):
        inputs, target = batch
        return self._sums(target, self.model(inputs, training=False))[0]

    def _compiled(self, replica_function):
        import tensorflow as tf

        def step(batch):
            sums = self.strategy.run(replica_function, args=(batch,))
            return {name: self.strategy.reduce("SUM", value, axis=None) for name, value in sums.items()}

        return tf.function(step, reduce_retracing=True)

    def _run_epoch(self, data, step, callbacks, on_batch_end):
        totals = dict.fromkeys(LOG_NAMES, 0.0)
        logs = {}
        for index in range(len(data)):
            if on_batch_end is not None:
                callbacks.on_train_batch_begin(index)
            sums = step(self.worker_batch(data, index))
            for name in LOG_NAMES:
                totals[name] += float(sums[name])
            logs = {name: totals[name] / (self.global_batch * (index + 1)) for name in LOG_NAMES}
            if on_batch_end is not None:
                on_batch_end(index, logs)
                if self.model.stop_training:
                    break
        if hasattr(data, "on_epoch_end"):
            data.on_epoch_end()
        return logs

    def evaluate(self, data):
        """`{loss, nt_xent, contrastive_accuracy}` of `data` (means over its images), as every worker sees them."""
        if self._test_step is None:
            self._test_step = self._compiled(self._replica_test)
        return self._run_epoch(data, self._test_step, None, None)

    def fit(self, data, validation_data=None, epochs=1, initial_epoch=0, callbacks=None, verbose="auto", shuffle=False):
        """Train as `Model.fit(data, validation_data=..., epochs=..., initial_epoch=..., callbacks=...)` would.

        `shuffle` must be False, as `Model.fit` ignores it for such data too:
        the batches are read by index, and the data shuffles itself (seeded).
        """
        if shuffle:
            raise ValueError("Expected shuffle=False: each worker reads the batches by index, and the data shuffles "
                             "itself (DataGeneratorSimCLR does, seeded). Received: shuffle=True")
        for name, part in (("data_train", data), ("validation_data", validation_data)):
            if part is not None and not (hasattr(part, "__getitem__") and hasattr(part, "__len__")):
                raise TypeError(
                    f"Expected {name} to be indexable data (a DataGeneratorSimCLR or another keras.utils.PyDataset): "
                    "under MultiWorkerMirroredStrategy each worker reads its rows of every batch by index. "
                    f"Received: {name} of type {type(part).__name__}")
        model = self.model
        with self.strategy.scope():
            if not model.optimizer.built:
                model.optimizer.build(model.trainable_variables)
        if self._train_step is None:
            self._train_step = self._compiled(self._replica_train)
        verbose = 1 if verbose == "auto" else verbose
        callbacks = keras.callbacks.CallbackList(
            callbacks, add_history=True, add_progbar=verbose != 0 and self.is_chief, verbose=verbose,
            epochs=epochs, steps=len(data), model=model)
        model.stop_training = False
        callbacks.on_train_begin()
        epoch_logs = None
        for epoch in range(initial_epoch, epochs):
            callbacks.on_epoch_begin(epoch)
            epoch_logs = dict(self._run_epoch(data, self._train_step, callbacks, callbacks.on_train_batch_end))
            if validation_data is not None:
                epoch_logs.update({f"val_{name}": value for name, value in self.evaluate(validation_data).items()})
            callbacks.on_epoch_end(epoch, epoch_logs)
            if model.stop_training:
                break
        callbacks.on_train_end(logs=epoch_logs)
        return model.history
