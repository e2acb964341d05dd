"""An online linear probe: is SimCLR making the backbone's features better for the labels?"""

import logging
import math

import keras
import numpy as np

from data_generators.checks import check_integer
from evaluation.features import extract_features
from evaluation.fractions import check_fraction, label_subset
from evaluation.linear import LinearProbe

logger = logging.getLogger(__name__)


class OnlineLinearProbe(keras.callbacks.Callback):
    """Every `every` epochs, fit a linear probe on a few training labels and log its validation accuracy.

    The probe reads the backbone's pooled features (no gradient reaches the
    backbone) of a stratified, seeded `fraction` of the training images and
    of all the validation images, and adds `val_probe_accuracy` to the epoch
    logs, so it shows in the progress bar, the history and the CSV file; on
    the epochs in between the value is NaN (the CSV keeps one column). The
    test split is never read. It lives with the evaluation code, which may
    import the model package; the model package does not import it.

    Args:
        base_model: the backbone being adapted (read, never changed).
        train: the labelled training images: a DataFrame with `filename` and
            `class_label`, or an `(images, labels)` pair of arrays.
        val: the validation images, likewise.
        width, height, channels, preprocess_input: how to read them, as for
            `DataGeneratorClass`.
        pooling: "flatten", "avg" or "max", as in the SimCLR wrapper.
        fraction: share of the training labels the probe sees, in (0, 1].
        every: probe on epochs 1, 1 + every, 1 + 2·every, ... of each round.
        seed: seed of the label subset and of the probe.

    Example:
    >>> images = np.random.default_rng(0).uniform(0, 255, (12, 8, 8, 3)).astype("float32")
    >>> data = (images, np.arange(12) % 2)
    >>> backbone = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(2, 3)])
    >>> probe = OnlineLinearProbe(backbone, data, data, width=8, height=8, pooling="avg", fraction=0.5)
    >>> logs = {}
    >>> probe.on_epoch_end(0, logs)
    >>> probe.n_labels, 0.0 <= logs["val_probe_accuracy"] <= 1.0
    (6, True)
    """

    def __init__(self, base_model, train, val, *, width, height, channels=3, preprocess_input=None,
                 pooling="flatten", fraction=0.1, every=1, seed=0):
        super().__init__()
        from data_generators import DataGeneratorClass, take_rows

        self.base_model, self.pooling = base_model, pooling
        self.fraction = check_fraction(fraction)
        self.every = check_integer("every", every, minimum=1)
        self.seed = check_integer("seed", seed, minimum=0)
        options = dict(batch_size=64, width=width, height=height, channels=channels, preprocess_input=preprocess_input)
        labelled = DataGeneratorClass(train, **options)  # reads labels only; images when a batch is asked for
        subset = label_subset(labelled.labels, self.fraction, seed=self.seed)
        self.n_labels = len(subset)
        self.train_data = DataGeneratorClass(take_rows(train, subset), classes=labelled.classes, **options)
        self.val_data = DataGeneratorClass(val, classes=labelled.classes, **options)

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        if epoch % self.every:
            logs["val_probe_accuracy"] = math.nan
            return
        train_features, train_labels = extract_features(self.base_model, self.train_data, self.pooling)
        val_features, val_labels = extract_features(self.base_model, self.val_data, self.pooling)
        probe = LinearProbe(seed=self.seed).fit(train_features, train_labels)
        logs["val_probe_accuracy"] = probe.score(val_features, val_labels)
        logger.info("epoch %d: online linear probe on %d labels, validation accuracy %.3f",
                    epoch + 1, self.n_labels, logs["val_probe_accuracy"])
