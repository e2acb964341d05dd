"""Train only the unfrozen end of a classifier, from cached activations of its frozen prefix.

While the first layers of a backbone stay frozen and the images are not
augmented, those layers compute the same activations every epoch. A round of
gradual unfreezing can compute them once and train the rest of the model
(the unfrozen layers and the head) on them: the same function and the same
gradients, at the cost of one forward pass of the prefix instead of one per
epoch. The suffix model shares its layers (and so its weights) with the full
classifier, so training it trains the classifier. `PrefixActivations` keeps
those activations for other classifiers of the same backbone (the cells of a
benchmark stage), so each image goes through a frozen prefix once.

This module knows nothing of the classifier's head: its caller passes the
head as a model from the backbone's output to the class probabilities.
"""

import hashlib
import logging
import math
import os
from typing import NamedTuple

import keras
import numpy as np

from simclr_wrap.prefix_cut import cut_backbone

logger = logging.getLogger(__name__)

DEFAULT_CACHE_BYTES = 2 * 1024**3  # activations of train and validation together, float32


def cacheable(data):
    """Whether `data` gives the same images in every epoch (up to order).

    True for `(images, one_hot)` arrays and for generators that state they
    apply no augmentation (`augmentation is None`, as `DataGeneratorClass`);
    False for any other source, whose batches may be random.

    Example:
    >>> cacheable((np.zeros((2, 4, 4, 3)), np.eye(2))), cacheable(object())
    (True, False)
    """
    if isinstance(data, tuple):
        return True
    return isinstance(data, keras.utils.PyDataset) and hasattr(data, "augmentation") and data.augmentation is None


class FrozenPrefix:
    """A backbone cut in front of its first unfrozen layer: the frozen prefix and the suffix that trains.

    Args:
        backbone: the classifier's backbone (a functional or Sequential
            model, its layer in the classifier).
        head: a model from the backbone's output to the class
            probabilities that shares its layers with the classifier, as
            `evaluation.finetune.classifier_head` gives.
        first_unfrozen: index in `flat_layers(backbone)` (the backbone's
            layers, those of nested models counted in their place, as
            `first_unfrozen_index` gives it) of the first layer that trains
            this round (`len(flat_layers(backbone))` when only the head
            trains).

    Attributes:
        cut: `first_unfrozen`, or None when the backbone cannot be cut there
            (see `available`). The cut may fall inside a nested model.
        prefix: the model from images to the activations in front of `cut`.
        suffix: the model from those activations to the class
            probabilities: the backbone's layers from `cut` on, then `head`;
            it shares its layers with the classifier.
    """

    def __init__(self, backbone, head, first_unfrozen):
        cut = cut_backbone(backbone, first_unfrozen)
        self.cut = self.prefix = self.suffix = None
        if cut is None:
            return
        self.cut = first_unfrozen
        self.prefix, layers = cut
        inputs = keras.Input(self.prefix.output.shape[1:], name="frozen_activations")
        x = inputs
        for layer in layers:
            x = layer(x)
        self.suffix = keras.Model(inputs, head(x), name=f"{backbone.name}_suffix")

    @property
    def available(self):
        """Whether this round can train from cached activations."""
        return self.suffix is not None

    def bytes_per_image(self):
        """Bytes of float32 activations cached per image."""
        return 4 * math.prod(self.prefix.output_shape[1:])

    def activations(self, data, memo=None):
        """The prefix's activations and the one-hot labels of every image of `data`, in one pass.

        Args:
            data: `(images, one_hot)` arrays or a `keras.utils.PyDataset` of
                such batches (visited once, in the order of its current epoch).
            memo: a `PrefixActivations` that keeps the activations of image
                files for other rounds and classifiers with this same frozen
                prefix, or None.

        Returns:
            `(activations, one_hot)` float32 arrays.
        """
        keys = None if memo is None else memo.image_keys(self.prefix, data)
        batches = [data] if isinstance(data, tuple) else (data[index] for index in range(len(data)))
        outputs, labels = [], []
        for index, (images, one_hot) in enumerate(batches):
            if keys is None:
                outputs.append(self._forward(images))
            else:
                batch_keys = keys(index)
                missing = [row for row, key in enumerate(batch_keys) if key not in memo]
                computed = dict(zip(missing, self._forward(np.asarray(images)[missing]))) if missing else {}
                memo.put([batch_keys[row] for row in missing], list(computed.values()))
                outputs.append(np.stack([computed[row] if row in computed else memo.get(key)
                                         for row, key in enumerate(batch_keys)]))
            labels.append(np.asarray(one_hot, np.float32))
        return np.concatenate(outputs).astype(np.float32), np.concatenate(labels)

    def _forward(self, images):
        return np.concatenate([keras.ops.convert_to_numpy(self.prefix(images[start:start + 64], training=False))
                               for start in range(0, len(images), 64)])


class PrefixActivations:
    """Activations of frozen prefixes for image files, kept across rounds and classifiers.

    The cells of a benchmark stage fine-tune clones of one backbone, so the
    frozen prefix of a round has the same layers and weights in every cell:
    the validation split's activations are the same in each, and a labelled
    subset's are rows of the full training split's. Keyed by the prefix (its
    layers' configs and a hash of their weights), the file (path, size,
    mtime) and how the generator reads and preprocesses it, an activation is
    computed once and never served for other weights, files or preprocessing.
    Generators of files only (`DataGeneratorClass`); arrays are computed
    every time.

    Args:
        max_bytes: the most memory the kept activations may take; beyond
            it, activations are computed and not kept.

    Attributes:
        hits, misses: activations served and computed.
    """

    def __init__(self, max_bytes=DEFAULT_CACHE_BYTES):
        self.max_bytes = max_bytes
        self._kept, self._bytes = {}, 0
        self.hits = self.misses = 0

    def __contains__(self, key):
        return key in self._kept

    def get(self, key):
        self.hits += 1
        return self._kept[key]

    def put(self, keys, activations):
        """Keep the activations computed for `keys`, as far as `max_bytes` allows."""
        self.misses += len(keys)
        for key, activation in zip(keys, activations):
            if self._bytes + activation.nbytes > self.max_bytes:
                return
            self._kept[key] = np.array(activation, np.float32)
            self._bytes += activation.nbytes

    def image_keys(self, prefix, data):
        """A function from batch index to the keys of its images, or None where `data` is not of files."""
        source = getattr(data, "source", None)
        if source is None or getattr(source, "filenames", None) is None or not hasattr(data, "batch_indices"):
            return None
        model = (_weights_digest(prefix), tuple(layer.name for layer in prefix.layers))
        reading = (source.width, source.height, source.channels, data.preprocess_input)
        files = [_file_stamp(path) for path in source.filenames]
        return lambda index: [(model, reading, files[row]) for row in data.batch_indices(index)]


class CachedRound(NamedTuple):
    """What a round trains from cached activations: the suffix model and its data.

    Attributes:
        suffix: the `FrozenPrefix.suffix` model that trains.
        train: `(activations, one_hot)` of the training data.
        val: `(activations, one_hot)` of the validation data.
        cut: index in `flat_layers` of the first backbone layer of the suffix.
    """

    suffix: keras.Model
    train: tuple
    val: tuple
    cut: int


class ShuffledArrays(keras.utils.PyDataset):
    """Batches of in-memory arrays, in a new order each epoch drawn from `(seed, epoch)`.

    Args:
        x: the inputs, (N, ...).
        y: the targets, (N, ...).
        batch_size: rows per batch; the last batch holds the rest.
        seed: non-negative int seed of the orders.

    Example:
    >>> batches = ShuffledArrays(np.arange(5), np.arange(5), batch_size=2, seed=0)
    >>> len(batches), sorted(np.concatenate([batches[i][0] for i in range(3)]).tolist())
    (3, [0, 1, 2, 3, 4])
    """

    def __init__(self, x, y, batch_size, seed):
        super().__init__()
        self.x, self.y, self.batch_size, self.seed = x, y, batch_size, seed
        self.epoch = 0
        self._order = self._draw_order()

    def _draw_order(self):
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.x))

    def __len__(self):
        return math.ceil(len(self.x) / self.batch_size)

    def __getitem__(self, index):
        rows = self._order[index * self.batch_size:(index + 1) * self.batch_size]
        return self.x[rows], self.y[rows]

    def on_epoch_end(self):
        self.epoch += 1
        self._order = self._draw_order()


def round_cache(backbone, head, first_unfrozen, train_data, val_data, max_bytes=DEFAULT_CACHE_BYTES, memo=None):
    """The suffix model and the cached activations of `train_data` and `val_data`, or None.

    None (train end to end) when the data may be augmented, the backbone
    cannot be cut in front of its first unfrozen layer, or the activations
    would take more than `max_bytes`. The cache lives for one round: the next
    round freezes fewer layers. Activations outlive it only in `memo`, keyed
    by the prefix's weights, so stale ones are never reused.

    Args:
        backbone, head, first_unfrozen: as in `FrozenPrefix`.
        train_data, val_data: as in `evaluation.finetune.FineTunedClassifier.fit`.
        max_bytes: the most memory the activations may take.
        memo: a `PrefixActivations` shared with other rounds and classifiers
            (activations of this prefix computed there are not computed
            again), or None.

    Returns:
        A `CachedRound`, or None.
    """
    if not (cacheable(train_data) and cacheable(val_data)):
        logger.info("training end to end: the training or validation data may be augmented")
        return None
    frozen = FrozenPrefix(backbone, head, first_unfrozen)
    if not frozen.available:
        logger.info("training end to end: nothing frozen to cache, or a branch or residual block spans "
                    "layer %d of %r (layers of nested models counted)",
                    first_unfrozen, backbone.name)
        return None
    needed = frozen.bytes_per_image() * (n_images(train_data) + n_images(val_data))
    if needed > max_bytes:
        logger.info("training end to end: cached activations would take %.0f MB, above the %.0f MB allowed",
                    needed / 2**20, max_bytes / 2**20)
        return None
    cached = CachedRound(frozen.suffix, frozen.activations(train_data, memo), frozen.activations(val_data, memo),
                         frozen.cut)
    logger.info("training from cached activations of the first %d layers of %r (%.0f MB)",
                frozen.cut, backbone.name, needed / 2**20)
    return cached


def _weights_digest(model):
    """A hash of `model`'s weights (and their shapes): equal for a clone with the same weights."""
    digest = hashlib.blake2b(digest_size=16)
    for weight in model.weights:
        value = np.ascontiguousarray(keras.ops.convert_to_numpy(weight))
        digest.update(str(value.shape).encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def _file_stamp(path):
    """The path, size and modification time of an image file: another stamp, another image."""
    status = os.stat(path)
    return os.path.abspath(path), status.st_size, status.st_mtime_ns


def n_images(data):
    """The number of images of `(images, one_hot)` arrays or of a generator (its `n_images`, else batches × size)."""
    if isinstance(data, tuple):
        return len(data[0])
    return getattr(data, "n_images", len(data) * getattr(data, "batch_size", 1))
