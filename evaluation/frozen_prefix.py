"""Train only the unfrozen end of a classifier, from cached activations of its frozen prefix.

While the first layers of a backbone stay frozen and the images are not
augmented, those layers compute the same activations every epoch. A round of
gradual unfreezing can compute them once and train the rest of the model
(the unfrozen layers and the head) on them: the same function and the same
gradients, at the cost of one forward pass of the prefix instead of one per
epoch. The suffix model shares its layers (and so its weights) with the full
classifier, so training it trains the classifier.
"""

import logging
import math

import keras
import numpy as np

logger = logging.getLogger(__name__)

DEFAULT_CACHE_BYTES = 2 * 1024**3  # activations of train and validation together, float32
HEAD_LAYERS = ("pooling", "head_batchnorm", "hidden", "predictions")


def chain_start(backbone):
    """Index of the first layer from which `backbone` is a plain chain to its output.

    Layers from that index on each take exactly one tensor, the previous
    layer's output, so the model can be cut in front of any of them and the
    rest rebuilt on a new input. Residual or branching blocks end the chain.

    Args:
        backbone: a built functional or Sequential Keras model.

    Returns:
        An int in `[1, len(backbone.layers)]`; `len(backbone.layers)` when
        even the last layer cannot be cut in front of (only the output can be
        cached).

    Example:
    >>> inputs = keras.Input((4,))
    >>> hidden = keras.layers.Dense(3)(inputs)
    >>> outputs = keras.layers.Dense(2)(keras.layers.Add()([hidden, keras.layers.Dense(3)(inputs)]))
    >>> chain_start(keras.Model(inputs, outputs))  # the Add joins two branches: cut after it
    4
    """
    layers = backbone.layers
    start = len(layers)
    try:
        if backbone.outputs[0] is not layers[-1].output:
            return start
        for index in range(len(layers) - 1, 0, -1):
            # Node 0 is the layer's call in the backbone itself; later nodes are other models' calls.
            inputs = layers[index]._inbound_nodes[0].input_tensors
            if len(inputs) != 1 or inputs[0] is not layers[index - 1].output:
                break
            start = index
    except (AttributeError, IndexError, ValueError):  # not a graph of layers we can read
        return len(layers)
    return start


def _cut(backbone, first_unfrozen):
    """Where to cut `backbone` for a round that trains `layers[first_unfrozen:]`, or None.

    None when the layers in front of the cut hold no weights (nothing to
    save) or when a residual block spans the cut.
    """
    layers = backbone.layers
    if not any(layer.weights for layer in layers[:first_unfrozen]):
        return None
    if first_unfrozen == len(layers) or chain_start(backbone) <= first_unfrozen:
        return first_unfrozen
    return None


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


class FrozenPrefixCache:
    """The frozen prefix of a classifier's backbone, its cached activations and the suffix model.

    Args:
        model: a classifier of `evaluation.finetune.classifier_model`.
        backbone_name: the name of its backbone layer.
        first_unfrozen: index in the backbone's layers of the first layer
            that trains this round (`len(layers)` when only the head trains).

    Attributes:
        cut: index of the first backbone layer of the suffix, or None when
            the backbone cannot be cut there (see `available`).
        prefix: the model from images to the activations in front of `cut`.
        suffix: the model from those activations to the class
            probabilities; it shares its layers with `model`.
    """

    def __init__(self, model, backbone_name, first_unfrozen):
        backbone = model.get_layer(backbone_name)
        layers = backbone.layers
        self.cut = _cut(backbone, first_unfrozen)
        self.prefix = self.suffix = None
        if self.cut is None:
            return
        cached = backbone.outputs[0] if self.cut == len(layers) else layers[self.cut - 1].output
        self.prefix = keras.Model(backbone.inputs[0], cached, name=f"{backbone_name}_frozen_prefix")
        inputs = keras.Input(cached.shape[1:], name="frozen_activations")
        x = inputs
        for layer in layers[self.cut:]:
            x = layer(x)
        for name in HEAD_LAYERS:
            x = model.get_layer(name)(x)
        self.suffix = keras.Model(inputs, x, name=f"{model.name}_suffix")

    @property
    def available(self):
        """Whether this round can train from cached activations."""
        return self.suffix is not None

    def bytes_per_image(self):
        """Bytes of float32 activations cached per image."""
        return 4 * math.prod(self.prefix.output_shape[1:])

    def activations(self, data):
        """The prefix's activations and the one-hot labels of every image of `data`, in one pass.

        Args:
            data: `(images, one_hot)` arrays or a `keras.utils.PyDataset` of
                such batches (visited once, in the order of its current epoch).

        Returns:
            `(activations, one_hot)` float32 arrays.
        """
        batches = [data] if isinstance(data, tuple) else (data[index] for index in range(len(data)))
        outputs, labels = [], []
        for images, one_hot in batches:
            for start in range(0, len(images), 64):
                outputs.append(keras.ops.convert_to_numpy(self.prefix(images[start:start + 64], training=False)))
            labels.append(np.asarray(one_hot, np.float32))
        return np.concatenate(outputs).astype(np.float32), np.concatenate(labels)


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


def round_cache(model, backbone_name, first_unfrozen, train_data, val_data, max_bytes=DEFAULT_CACHE_BYTES):
    """A `FrozenPrefixCache` with the activations of `train_data` and `val_data`, or None.

    None (train end to end) when the data may be augmented, the backbone
    cannot be cut in front of its first unfrozen layer, or the activations
    would take more than `max_bytes`. The cache lives for one round: the next
    round freezes fewer layers, and a new classifier has other weights, so
    stale activations are never reused.

    Args:
        model, backbone_name, first_unfrozen: as in `FrozenPrefixCache`.
        train_data, val_data: as in `finetune_classifier`.
        max_bytes: the most memory the activations may take.

    Returns:
        The cache, with `train` and `val` set to `(activations, one_hot)`,
        or None.
    """
    if not (cacheable(train_data) and cacheable(val_data)):
        logger.info("training end to end: the training or validation data may be augmented")
        return None
    cache = FrozenPrefixCache(model, backbone_name, first_unfrozen)
    if not cache.available:
        logger.info("training end to end: nothing frozen to cache, or a residual block spans layer %d of %r",
                    first_unfrozen, backbone_name)
        return None
    needed = cache.bytes_per_image() * (_n_images(train_data) + _n_images(val_data))
    if needed > max_bytes:
        logger.info("training end to end: cached activations would take %.0f MB, above the %.0f MB allowed",
                    needed / 2**20, max_bytes / 2**20)
        return None
    cache.train, cache.val = cache.activations(train_data), cache.activations(val_data)
    logger.info("training from cached activations of the first %d layers of %r (%.0f MB)",
                cache.cut, backbone_name, needed / 2**20)
    return cache


def _n_images(data):
    if isinstance(data, tuple):
        return len(data[0])
    return getattr(data, "n_images", len(data) * getattr(data, "batch_size", 1))
