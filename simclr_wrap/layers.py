"""The `SoftmaxCosineSim` layer: SimCLR's similarity softmax over two views."""

import keras
from keras import ops

from data_generators.checks import check_bool, check_integer, check_positive
from simclr_wrap.distribute import gather_replicas
from simclr_wrap.keras_compat import attach_logits

# Logit given to an anchor's similarity with itself: exp() of it is exactly 0
# in float32, yet it stays finite, so no inf - inf can turn into NaN.
_SELF_SIMILARITY_LOGIT = -1e9


@keras.saving.register_keras_serializable(package="simclr_wrap")
class SoftmaxCosineSim(keras.layers.Layer):
    """Softmax over the cosine similarities of each view with all the others.

    The input holds the 2·B projections of a SimCLR step: rows `0..B-1` are
    the first views (a) of B images and rows `B..2B-1` their second views (b).
    They are L2-normalised and compared by cosine similarity divided by the
    temperature. For every anchor the similarity with itself is masked out,
    and the output is the (B, 4·B) matrix

        [softmax([ab | aa]) | softmax([ba | bb])]

    so row i holds the distribution of anchor a_i over its 2B-1 candidates
    in columns `0..2B-1` and that of anchor b_i in columns `2B..4B-1`. With the
    `[I|O|I|O]` target, `simclr_wrap.losses.nt_xent` of this output is the
    NT-Xent loss of SimCLR. The batch size is read from the input at run
    time, so one model serves any (even) batch.

    Under a `tf.distribute` strategy with several replicas, each replica's
    anchors are compared with the views of the whole global batch, gathered
    from all replicas (`simclr_wrap.distribute.gather_replicas`): the output
    of a replica holding images `r·b .. r·b + b - 1` of the global batch of B
    is rows `r·b .. r·b + b - 1` of the (B, 4·B) matrix one device would
    compute, which is what the `[I|O|I|O]` target split over the replicas
    asks for.

    The output carries its (B, 4·B) logits `[ab | aa | ba | bb] / temperature`
    (masked where the probability is 0) as an attribute for the loss
    (`simclr_wrap.keras_compat.attached_logits`): `nt_xent` computes from
    them, so it is exact where probabilities underflow, in `fit` too.

    The layer always computes in float32, whatever the model's dtype policy:
    at low temperatures the logits span 2/temperature and the softmax of
    float16 logits would underflow.

    With `anchors` (NNCLR, see `NearestNeighbourQueue`) the rows of the
    cross-view blocks ab and ba compare each anchor's stand-in, its nearest
    neighbour from a queue, with the other view, while aa and bb still
    compare the views themselves and serve as extra negatives. With
    `same_view_negatives=False` the aa and bb blocks are left out (their
    probabilities are 0): with anchors that is NNCLR's loss exactly as in
    the paper, without them the cross-view-only form of SimCLR.

    Args:
        temperature: positive float dividing the cosine similarities.
        same_view_negatives: whether the other first views (aa) and second
            views (bb) are negatives too, as in SimCLR.

    Call arguments:
        projections: (2·B, D), the first views' projections, then the second views'.
        anchors: optional (2·B, D) stand-ins for the rows of the cross-view blocks.

    Example:
    >>> import numpy as np
    >>> layer = SoftmaxCosineSim(temperature=0.5)
    >>> projections = np.random.default_rng(0).normal(size=(6, 4)).astype("float32")
    >>> tuple(layer(projections).shape)
    (3, 12)
    """

    def __init__(self, *, temperature, same_view_negatives=True, **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        self.temperature = check_positive("temperature", temperature)
        self.same_view_negatives = check_bool("same_view_negatives", same_view_negatives)

    def call(self, projections, anchors=None):
        normalised = _unit_rows(projections)
        batch_size = ops.shape(normalised)[0] // 2  # this replica's images
        # Candidates: the views of the global batch, all first views then all second views.
        first_views, first_row = gather_replicas(normalised[:batch_size])
        second_views, _ = gather_replicas(normalised[batch_size:])
        candidates = ops.transpose(ops.concatenate([first_views, second_views], axis=0))
        global_batch = ops.shape(first_views)[0]
        logits = ops.matmul(normalised, candidates) / self.temperature
        # Each anchor's own column in its view's block (the global row of its image).
        own = ops.cast(ops.one_hot(first_row + ops.arange(batch_size), global_batch), "bool")
        other = ops.zeros_like(own)
        is_self = ops.concatenate([ops.concatenate([own, other], axis=1), ops.concatenate([other, own], axis=1)], axis=0)
        masked = ops.full_like(logits, _SELF_SIMILARITY_LOGIT)
        same_view = ops.where(is_self, masked, logits)
        if not self.same_view_negatives:
            same_view = masked
        # NNCLR: each anchor's stand-in (its nearest neighbour) against the other view.
        cross_view = logits if anchors is None else ops.matmul(_unit_rows(anchors), candidates) / self.temperature
        # Row block a: anchors a_i against [b | a]; row block b: b_i against [a | b].
        from_a = ops.concatenate(
            [cross_view[:batch_size, global_batch:], same_view[:batch_size, :global_batch]], axis=1
        )
        from_b = ops.concatenate(
            [cross_view[batch_size:, :global_batch], same_view[batch_size:, global_batch:]], axis=1
        )
        probabilities = ops.concatenate([ops.softmax(from_a, axis=1), ops.softmax(from_b, axis=1)], axis=1)
        # The loss needs the logits: the log of an underflowed probability has no value and no gradient.
        return attach_logits(probabilities, ops.concatenate([from_a, from_b], axis=1))

    def compute_output_shape(self, input_shape):
        half = None if input_shape[0] is None else input_shape[0] // 2
        # The width, 4 times the global batch, depends on the replicas of the strategy at run time.
        return (half, None)

    def get_config(self):
        config = super().get_config()
        config.pop("dtype", None)
        config["temperature"] = self.temperature
        config["same_view_negatives"] = self.same_view_negatives
        return config


def _unit_rows(x):
    x = ops.cast(x, "float32")
    return x / ops.maximum(ops.norm(x, axis=1, keepdims=True), keras.config.epsilon())


@keras.saving.register_keras_serializable(package="simclr_wrap")
class NearestNeighbourQueue(keras.layers.Layer):
    """NNCLR's support queue: each projection's nearest neighbour among past projections.

    Holds a FIFO queue of `queue_size` L2-normalised projections of first
    views (a non-trainable weight, so it is saved with the model). Called on
    the 2·B projections of a step, it returns for each its nearest neighbour
    in the queue by cosine similarity, with the straight-through gradient
    (the value is the neighbour's, the gradient flows to the projection as if
    it were the projection itself); then, in training, it puts the step's B
    normalised first-view projections at the front of the queue and drops the
    oldest B. The queue starts as random unit vectors (seeded). Under a
    `tf.distribute` strategy every replica puts the first views of the whole
    global batch in, in replica order, so all replicas hold the same queue,
    the one a single device would.

    Fed with the projections as the `anchors` of `SoftmaxCosineSim`, the
    neighbours take their views' places in the cross-view blocks: NNCLR
    (Dwibedi et al., 2021).

    Args:
        queue_size: number of past projections kept, at least the batch size.
        seed: seed of the initial queue.

    Example:
    >>> import numpy as np
    >>> layer = NearestNeighbourQueue(queue_size=8, seed=0)
    >>> tuple(layer(np.ones((4, 3), "float32")).shape)
    (4, 3)
    """

    def __init__(self, *, queue_size, seed=0, **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        self.queue_size, self.seed = check_integer("queue_size", queue_size, minimum=1), seed

    def build(self, input_shape):
        dims = input_shape[-1]
        initial = keras.random.normal((self.queue_size, dims), seed=self.seed)
        self.queue = self.add_weight(
            shape=(self.queue_size, dims), initializer=lambda shape, dtype=None: _unit_rows(initial),
            trainable=False, name="queue",
            # Replicas assign the same value; the first one's is kept.
            aggregation="only_first_replica",
        )

    def call(self, projections, training=False):
        normalised = _unit_rows(projections)
        nearest = ops.take(self.queue, ops.argmax(ops.matmul(normalised, ops.transpose(self.queue)), axis=1), axis=0)
        if training:
            batch_size = ops.shape(normalised)[0] // 2
            # Every replica enqueues the global batch's first views, so all hold the same queue.
            newest, _ = gather_replicas(ops.stop_gradient(normalised[:batch_size]))
            batch_size = ops.shape(newest)[0]
            self.queue.assign(ops.concatenate([newest, self.queue[: self.queue_size - batch_size]], axis=0))
        return normalised + ops.stop_gradient(nearest - normalised)

    def get_config(self):
        config = super().get_config()
        config.pop("dtype", None)
        config.update(queue_size=self.queue_size, seed=self.seed)
        return config
