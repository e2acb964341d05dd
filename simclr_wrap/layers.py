"""The `SoftmaxCosineSim` layer: SimCLR's similarity softmax over two views."""

import keras
from keras import ops

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
    time, so one model serves any (even) batch, and every replica of a
    distribution strategy.

    The layer always computes in float32, whatever the model's dtype policy:
    at low temperatures the logits span 2/temperature and the softmax of
    float16 logits would underflow.

    Args:
        temperature: positive float dividing the cosine similarities.

    Example:
    >>> import numpy as np
    >>> layer = SoftmaxCosineSim(temperature=0.5)
    >>> projections = np.random.default_rng(0).normal(size=(6, 4)).astype("float32")
    >>> tuple(layer(projections).shape)
    (3, 12)
    """

    def __init__(self, *, temperature=0.1, **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        temperature = float(temperature)
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got temperature={temperature}")
        self.temperature = temperature

    def call(self, projections):
        projections = ops.cast(projections, "float32")
        normalised = projections / ops.maximum(
            ops.norm(projections, axis=1, keepdims=True), keras.config.epsilon()
        )
        logits = ops.matmul(normalised, ops.transpose(normalised)) / self.temperature
        two_b = ops.shape(logits)[0]
        batch_size = two_b // 2
        logits = ops.where(ops.eye(two_b, dtype="bool"), _SELF_SIMILARITY_LOGIT, logits)
        # Row block a: anchors a_i against [b | a]; row block b: b_i against [a | b].
        from_a = ops.concatenate([logits[:batch_size, batch_size:], logits[:batch_size, :batch_size]], axis=1)
        from_b = ops.concatenate([logits[batch_size:, :batch_size], logits[batch_size:, batch_size:]], axis=1)
        return ops.concatenate([ops.softmax(from_a, axis=1), ops.softmax(from_b, axis=1)], axis=1)

    def compute_output_shape(self, input_shape):
        half = None if input_shape[0] is None else input_shape[0] // 2
        return (half, None if half is None else 4 * half)

    def get_config(self):
        config = super().get_config()
        config.pop("dtype", None)
        config["temperature"] = self.temperature
        return config
