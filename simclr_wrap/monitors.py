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

When the projections collapse, the monitor warns, and names the likely
cause: if the backbone's own features barely vary from image to image (as a
randomly initialised backbone whose BatchNormalization layers are frozen in
inference mode gives: its activations shrink layer after layer to about
1e-11), the head has nothing to spread, and the warning says so and points to
`unfreeze_batchnorm=True`; otherwise it points to the temperature, the
learning rate and the augmentations.
"""

import logging
import math
import weakref

import keras
import numpy as np

from data_generators.checks import check_number

logger = logging.getLogger(__name__)

# The backbone's features "barely vary" when their std over the batch is below this,
# or below FEATURE_RELATIVE_FLOOR times their root mean square.
FEATURE_STD_FLOOR = 1e-6
FEATURE_RELATIVE_FLOOR = 1e-3


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


def feature_std(features):
    """Std over the batch of each feature, averaged over the features, and the features' root mean square.

    Args:
        features: (B, ...) features of a batch of images (pooled vectors or
            feature maps).

    Returns:
        `(std, rms)` floats.

    Example:
    >>> feature_std(np.full((4, 3), 2.0))
    (0.0, 2.0)
    """
    f = np.asarray(features, np.float64).reshape(len(features), -1)
    return float(f.std(axis=0).mean()), float(np.sqrt(np.mean(f**2)))


def features_barely_vary(features):
    """Whether a batch of backbone features is nearly constant (see `feature_std`).

    Example:
    >>> features_barely_vary(np.full((4, 3), 1e-11)), features_barely_vary(np.eye(4))
    (True, False)
    """
    std, rms = feature_std(features)
    return not (std >= FEATURE_STD_FLOOR and std >= FEATURE_RELATIVE_FLOOR * rms)


def _batchnorm_layers(model):
    """The BatchNormalization layers of `model` and of the models nested in it."""
    found = []
    for layer in getattr(model, "layers", []):
        if isinstance(layer, keras.layers.BatchNormalization):
            found.append(layer)
        elif isinstance(layer, keras.Model):
            found.extend(_batchnorm_layers(layer))
    return found


_COMPILED_CALLS = weakref.WeakKeyDictionary()


def traced_inference(model):
    """`model(inputs, training=False)` traced once per model (TensorFlow), run on the whole batch.

    Op by op, an epoch's monitoring of a MobileNetV2 took as long as a few
    training steps; `predict_on_batch` would split the batch over the
    replicas of a strategy and put the two views' rows out of order. Kept
    per model, so that the monitors of later rounds reuse the trace.
    """
    if keras.backend.backend() != "tensorflow":
        return lambda inputs: model(inputs, training=False)
    if model not in _COMPILED_CALLS:
        import tensorflow as tf

        reference = weakref.ref(model)  # a strong one would keep the model, the dictionary's key, alive
        _COMPILED_CALLS[model] = tf.function(lambda inputs: reference()(inputs, training=False),
                                             reduce_retracing=True)
    return _COMPILED_CALLS[model]


class ProjectionMonitor(keras.callbacks.Callback):
    """Log correlation accuracy and projection std on a fixed batch of views; warn on collapse.

    Args:
        projector: a model from `(view_a, view_b)` to the (2·B, D)
            projections of both views, view a's first (the SimCLR model up to
            its projection head).
        views: the `(view_a, view_b)` batch to watch, the same every epoch.
        prefix: prefix of the log keys, e.g. "val_".
        collapse_threshold: warn when the projection std falls below it.
        backbone: the backbone, a model from images to features, to tell on
            collapse whether its features vary (it is run on both views,
            concatenated, as SimCLR runs it). None: the first model nested
            in `projector`, if any (the SimCLR projector's backbone).

    Example:
    >>> inputs = [keras.Input((3,)), keras.Input((3,))]
    >>> projector = keras.Model(inputs, keras.layers.Concatenate(axis=0)(inputs))
    >>> views = (np.eye(3, dtype="float32"), np.eye(3, dtype="float32"))
    >>> logs = {}
    >>> ProjectionMonitor(projector, views).on_epoch_end(0, logs)
    >>> sorted(logs)
    ['val_correlation_accuracy', 'val_projection_std']
    """

    def __init__(self, projector, views, prefix="val_", collapse_threshold=0.1, backbone=None):
        super().__init__()
        self.projector, self.views, self.prefix = projector, views, prefix
        self.collapse_threshold = check_number("collapse_threshold", collapse_threshold, minimum=0)
        if backbone is not None and not callable(backbone):
            raise TypeError(f"Expected backbone to be a Keras model or None. Received: backbone={backbone!r}")
        self.backbone = backbone
        self._pending = []
        self._project = None

    def on_epoch_end(self, epoch, logs=None):
        if self._project is None:
            self._project = traced_inference(self.projector)
        projections = keras.ops.convert_to_numpy(self._project(list(self.views)))
        half = len(projections) // 2
        spread = projection_std(projections)
        if logs is not None:
            logs[self.prefix + "correlation_accuracy"] = correlation_accuracy(projections[:half], projections[half:])
            logs[self.prefix + "projection_std"] = spread
        if spread < self.collapse_threshold:
            self._warn(
                "epoch %d: the projections are collapsing (%sprojection_std %.3f, below %.3f): every image is "
                "projected almost alike. %s", epoch + 1, self.prefix, spread, self.collapse_threshold, self._cause(),
            )

    def _warn(self, *message):
        """Warn now, or, inside `fit`, once the progress bar has ended the epoch's line.

        Keras' progress bar is the last callback, so a warning logged here
        would land in the middle of its line.
        """
        if self.model is None:
            logger.warning(*message)
        else:
            self._pending.append(message)

    def on_epoch_begin(self, epoch, logs=None):
        self._flush()

    def on_train_end(self, logs=None):
        self._flush()

    def _flush(self):
        for message in self._pending:
            logger.warning(*message)
        self._pending = []

    def _backbone(self):
        if self.backbone is not None:
            return self.backbone
        nested = [layer for layer in getattr(self.projector, "layers", []) if isinstance(layer, keras.Model)]
        return nested[0] if nested else None

    def _cause(self):
        """The likely cause of a collapse, with what to try."""
        advice = "Try a higher temperature, a lower learning rate or stronger augmentations."
        backbone = self._backbone()
        if backbone is None:
            return advice
        try:
            images = np.concatenate([np.asarray(view) for view in self.views])
            features = keras.ops.convert_to_numpy(backbone(images, training=False))
        except (TypeError, ValueError) as error:  # not a backbone of these views: no diagnosis
            logger.debug("no diagnosis of the backbone's features: %s", error)
            return advice
        std, rms = feature_std(features)
        if not features_barely_vary(features):
            return f"The backbone's features do vary (std {std:.2g} over the batch). {advice}"
        frozen = [layer for layer in _batchnorm_layers(backbone) if not layer.trainable]
        found = (f"{len(frozen)} of its BatchNormalization layers are frozen in inference mode: a randomly "
                 "initialised backbone whose BatchNormalization layers are frozen gives such features (its "
                 "activations shrink layer after layer). Train them with unfreeze_batchnorm=True "
                 "(--unfreeze-batchnorm on the command line), or start from pretrained weights."
                 if frozen else "Check its weights (pretrained?) and the scaling of its input images.")
        return (f"The likely cause is the backbone: its features barely vary from image to image (std {std:.2g} "
                f"over the batch, root mean square {rms:.2g}), so the projection head has nothing to spread. "
                f"{found}")
