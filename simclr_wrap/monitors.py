"""Monitors of SimCLR training: do the projections still carry information?

Two figures on the projections of a fixed batch of views, computed at the end
of each epoch and added to the logs (so they reach the progress bar, the
history and the CSV file):

- correlation accuracy, as in the NNCLR example of keras.io: standardise each
  projection dimension over the batch in both views, cross-correlate the
  views, and count how often a dimension of view a is most correlated with
  the same dimension of view b. A representation that has learned to be
  invariant to the augmentations scores high.
- projection std: the standard deviation over the batch of the L2-normalised
  projections, averaged over dimensions and multiplied by sqrt(dimensions),
  so that projections spread evenly over the sphere give about 1 and
  collapsed ones (every image projected alike) give 0.
"""

import logging
import math

import keras
import numpy as np

logger = logging.getLogger(__name__)


def correlation_accuracy(projections_a, projections_b):
    """Share of dimensions most correlated, across the two views, with themselves.

    Args:
        projections_a: (B, D) projections of the first views.
        projections_b: (B, D) projections of the second views, row for row.

    Returns:
        A float in [0, 1].

    Example:
    >>> z = np.random.default_rng(0).normal(size=(64, 8))
    >>> correlation_accuracy(z, z + 0.01)
    1.0
    """
    a, b = (np.asarray(p, np.float64) for p in (projections_a, projections_b))
    a = (a - a.mean(0)) / (a.std(0) + 1e-8)
    b = (b - b.mean(0)) / (b.std(0) + 1e-8)
    correlation = a.T @ b / len(a)
    return float(np.mean(np.argmax(correlation, axis=1) == np.arange(correlation.shape[0])))


def projection_std(projections):
    """Std over the batch of the L2-normalised projections, times sqrt(dimensions).

    About 1 when the projections spread over the sphere, 0 when they collapse.

    Example:
    >>> projection_std(np.ones((16, 4)))
    0.0
    """
    z = np.asarray(projections, np.float64)
    z = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
    return float(z.std(axis=0).mean() * math.sqrt(z.shape[1]))


class ProjectionMonitor(keras.callbacks.Callback):
    """Log correlation accuracy and projection std on a fixed batch of views; warn on collapse.

    Args:
        projector: a model from `(view_a, view_b)` to the (2·B, D)
            projections of both views, view a's first (the SimCLR model up to
            its projection head).
        views: the `(view_a, view_b)` batch to watch, the same every epoch.
        prefix: prefix of the log keys, e.g. "val_".
        collapse_threshold: warn when the projection std falls below it.

    Example:
    >>> inputs = [keras.Input((3,)), keras.Input((3,))]
    >>> projector = keras.Model(inputs, keras.layers.Concatenate(axis=0)(inputs))
    >>> views = (np.eye(3, dtype="float32"), np.eye(3, dtype="float32"))
    >>> logs = {}
    >>> ProjectionMonitor(projector, views).on_epoch_end(0, logs)
    >>> sorted(logs)
    ['val_correlation_accuracy', 'val_projection_std']
    """

    def __init__(self, projector, views, prefix="val_", collapse_threshold=0.1):
        super().__init__()
        self.projector, self.views, self.prefix = projector, views, prefix
        self.collapse_threshold = float(collapse_threshold)

    def on_epoch_end(self, epoch, logs=None):
        projections = keras.ops.convert_to_numpy(self.projector(list(self.views), training=False))
        half = len(projections) // 2
        spread = projection_std(projections)
        if logs is not None:
            logs[self.prefix + "correlation_accuracy"] = correlation_accuracy(projections[:half], projections[half:])
            logs[self.prefix + "projection_std"] = spread
        if spread < self.collapse_threshold:
            logger.warning(
                "epoch %d: the projections are collapsing (%sprojection_std %.3f, below %.3f): every image is "
                "projected almost alike. Try a higher temperature, a lower learning rate or stronger augmentations.",
                epoch + 1, self.prefix, spread, self.collapse_threshold,
            )
