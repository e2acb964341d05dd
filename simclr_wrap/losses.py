"""NT-Xent, SimCLR's loss, and contrastive accuracy on `SoftmaxCosineSim` output.

Both take the (B, 4·B) output of `SoftmaxCosineSim` and a target of the same
shape that marks each anchor's positive with a 1: `[I|O|I|O]`, or a permuted
identity when the second views are shuffled.

Keras' `categorical_crossentropy` is not NT-Xent on this output: its rows hold
two distributions (they sum to 2), which it renormalises, and it clips
probabilities to [1e-7, 1 - 1e-7]. These functions treat the two halves of a
row as the two anchors they are.

NT-Xent is computed from the logits that `SoftmaxCosineSim` attaches to its
output (`simclr_wrap.keras_compat`), so that it is exact at any temperature:
at temperature 0.01 the positive of a badly wrong anchor has a probability of
about e^-200, which no float32 holds, and the log of the probabilities would
stop at -87.3 with a zero gradient. Probabilities without the logits (NumPy
arrays, `predict` output) give the log of the probabilities.

Why the logits travel on the tensor: the model's output must stay the
(B, 4·B) probabilities, and Keras gives a loss nothing but `y_true` and
`y_pred`; a float32 `y_pred` cannot hold probabilities like e^-248 at all,
and outputting float64 instead would change the output's dtype and still
not keep the gradient of tiny losses. So the layer attaches its logits to
its output as Keras does for its own softmax (see `keras_compat`). From the
logits, a plain `log_softmax` would already fix the badly wrong anchors,
but not nearly right ones (their loss of 1e-5..1e-30 rounds to 0 next to
1, measured relative error 1.0); `_crossentropy_from_logits` keeps both to
about 1e-5 relative, value and gradient, against a float64 NT-Xent for
temperatures 0.005 to 1.
"""

import keras
from keras import ops

from simclr_wrap.keras_compat import attached_logits

_SMALLEST_NORMAL_FLOAT32 = 1.1754944e-38
# Stands in for the positive among the other candidates: exp() of it is 0, yet it stays finite.
_NOT_A_CANDIDATE = -1e9


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
    SimCLR loss, the mean over all 2·B anchors. On the output of
    `SoftmaxCosineSim` (in `fit`, `evaluate` or eagerly) it is computed from
    the logits the layer attaches, so value and gradient are exact at any
    temperature, for anchors however wrong or right. On bare probabilities it
    is the log of the probabilities, clipped only at the smallest normal
    float32 (about 1e-38): exact wherever they do not underflow, and never
    inf or NaN, even where a masked self-similarity has probability 0.

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
    logits = attached_logits(y_pred)
    if logits is not None:
        target, logits = _split_anchors(y_true, logits)
        per_anchor = _crossentropy_from_logits(target, logits)
    else:
        target, probabilities = _split_anchors(y_true, y_pred)
        log_p = ops.log(ops.maximum(probabilities, _SMALLEST_NORMAL_FLOAT32))
        per_anchor = -ops.sum(target * log_p, axis=2)
    return ops.mean(per_anchor, axis=0)


def _crossentropy_from_logits(target, logits):
    """-sum(target * log_softmax(logits)) over the last axis, exact for tiny and huge losses.

    With r the column of an anchor's largest target (its positive) and x the
    logits, -log p_j = (lse(x) - x_r) + (x_r - x_j) and lse(x) - x_r =
    softplus(lse_{m != r}(x_m - x_r)). Unlike `log_softmax`, this keeps a
    loss of 1e-30 (a near perfect anchor at a low temperature) and its
    gradient, where 1 - p_r rounds to 0 in float32; a loss of 400 is exact
    either way.
    """
    positive = ops.one_hot(ops.argmax(target, axis=-1), ops.shape(target)[-1], dtype="float32")
    positive_logit = ops.sum(positive * logits, axis=-1, keepdims=True)
    others = ops.where(ops.cast(positive, "bool"), _NOT_A_CANDIDATE, logits - positive_logit)
    to_positive = ops.softplus(ops.logsumexp(others, axis=-1))
    # Zero for a one-hot target; the positive's own (zero) term is left out, since its gradient,
    # +1 and -1 to the positive's logit, would round away a tiny loss's gradient.
    others_target = target * (1 - positive)
    return ops.sum(target, axis=-1) * to_positive + ops.sum(others_target * (positive_logit - logits), axis=-1)


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
