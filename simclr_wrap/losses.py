"""NT-Xent, SimCLR's loss, and contrastive accuracy on `SoftmaxCosineSim` output.

Both take the (B, 4·B) output of `SoftmaxCosineSim` and a target of the same
shape that marks each anchor's positive with a 1: `[I|O|I|O]`, or a permuted
identity when the second views are shuffled.

Keras' `categorical_crossentropy` is not NT-Xent on this output: its rows hold
two distributions (they sum to 2), which it renormalises, and it clips
probabilities to [1e-7, 1 - 1e-7]. These functions treat the two halves of a
row as the two anchors they are.
"""

import keras
from keras import ops

_SMALLEST_NORMAL_FLOAT32 = 1.1754944e-38


def _split_anchors(y_true, y_pred):
    """Return (target, probabilities) as (2, B, 2B): anchors a_i, then b_i."""
    y_true = ops.cast(y_true, "float32")
    y_pred = ops.cast(y_pred, "float32")
    two_b = ops.shape(y_pred)[1] // 2
    return (
        ops.stack([y_true[:, :two_b], y_true[:, two_b:]]),
        ops.stack([y_pred[:, :two_b], y_pred[:, two_b:]]),
    )


@keras.saving.register_keras_serializable(package="simclr_wrap")
def nt_xent(y_true, y_pred):
    """NT-Xent per row: the mean of -log p(positive) over the row's two anchors.

    Averaged over the B rows (Keras' default reduction) this is exactly the
    SimCLR loss, the mean over all 2·B anchors. Probabilities are clipped only
    at the smallest normal float32 (about 1e-38), so the value is exact
    wherever it is representable and never inf or NaN, even where a masked
    self-similarity has probability 0.

    Args:
        y_true: (B, 4·B) target, 1 at each anchor's positive.
        y_pred: (B, 4·B) output of `SoftmaxCosineSim`.

    Returns:
        (B,) float32 tensor.

    Example:
    >>> import numpy as np
    >>> uniform = np.full((2, 8), 1 / 3, "float32")  # 2B - 1 = 3 candidates
    >>> target = np.concatenate([np.eye(2), np.zeros((2, 2))] * 2, 1)
    >>> np.allclose(nt_xent(target, uniform), np.log(3))
    True
    """
    target, probabilities = _split_anchors(y_true, y_pred)
    log_p = ops.log(ops.maximum(probabilities, _SMALLEST_NORMAL_FLOAT32))
    per_anchor = -ops.sum(target * log_p, axis=2)
    return ops.mean(per_anchor, axis=0)


@keras.saving.register_keras_serializable(package="simclr_wrap")
def contrastive_accuracy(y_true, y_pred):
    """Share of a row's two anchors whose most similar candidate is the positive.

    Args:
        y_true: (B, 4·B) target, 1 at each anchor's positive.
        y_pred: (B, 4·B) output of `SoftmaxCosineSim`.

    Returns:
        (B,) float32 tensor of 0, 0.5 or 1.

    Example:
    >>> import numpy as np
    >>> target = np.concatenate([np.eye(2), np.zeros((2, 2))] * 2, 1)
    >>> float(np.mean(contrastive_accuracy(target, target)))
    1.0
    """
    target, probabilities = _split_anchors(y_true, y_pred)
    hits = ops.equal(ops.argmax(probabilities, axis=2), ops.argmax(target, axis=2))
    return ops.mean(ops.cast(hits, "float32"), axis=0)


@keras.saving.register_keras_serializable(package="simclr_wrap")
class NTXent(keras.losses.Loss):
    """The NT-Xent loss of SimCLR as a Keras loss; see `nt_xent`.

    Args:
        name: name of the loss.
        reduction: Keras reduction over the B rows (default: their mean).

    Example:
    >>> import numpy as np
    >>> target = np.concatenate([np.eye(2), np.zeros((2, 2))] * 2, 1)
    >>> round(float(NTXent()(target, np.full((2, 8), 1 / 3, "float32"))), 4)
    1.0986
    """

    def __init__(self, name="nt_xent", reduction="sum_over_batch_size", **kwargs):
        super().__init__(name=name, reduction=reduction, **kwargs)

    def call(self, y_true, y_pred):
        return nt_xent(y_true, y_pred)


def contrastive_metrics():
    """The metrics every SimCLR model reports: NT-Xent alone, and accuracy.

    `nt_xent` excludes the head's regularisation penalty, which Keras adds to
    `loss`; callbacks monitor `val_nt_xent` so that the penalty cannot hide
    or fake progress of the contrastive objective.
    """
    return [
        keras.metrics.MeanMetricWrapper(nt_xent, name="nt_xent"),
        keras.metrics.MeanMetricWrapper(contrastive_accuracy, name="contrastive_accuracy"),
    ]
