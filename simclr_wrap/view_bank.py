"""SimCLR's view bank: augmented views of every image through the frozen prefix, computed once per round.

While a round of gradual unfreezing trains only the layers after a frozen
prefix of the backbone, the prefix computes the same function of every view
all round; for VGG16 at 80×80 training block 5 it is about 91 % of the
forward pass. A round with a view bank runs the prefix once over `M` views
of every training image, `M / 2` epochs of the training data's own views
(the epochs the round would have seen first), keeps the activations
(float16, in memory within a budget, else in a memory-mapped file) and
trains the layers after the cut, the head and `SoftmaxCosineSim` from them:

- its first `M / 2` epochs replay those epochs exactly: the same images in
  the same batches with the same two views, so they train as the round
  without a bank would, up to float16 rounding of the activations;
- each later epoch draws a new order of the images (seeded by the
  generator's seed and the epoch) and, for each image, two of its `M`
  stored views, so the pairs vary although no view is computed again.

The bank lives for one round: the next round unfreezes more layers and so
changes the prefix. `SimCLR(view_bank=M)` uses it wherever it can (see
`bank_plan` for when it cannot, and why it then trains end to end).
"""

import logging
import math
import os
import shutil
import tempfile

import keras
import numpy as np

from data_generators.targets import contrastive_target
from simclr_wrap.monitors import traced_inference
from simclr_wrap.prefix_cut import cut_backbone
from simclr_wrap.unfreezing import flat_layers

logger = logging.getLogger(__name__)

DEFAULT_BANK_BYTES = 2 * 1024**3  # above it, the bank is a memory-mapped file
FLOAT16_SAFE = 2048.0  # activations above it are stored in float32 (float16's largest value is 65504)
_STREAM = 0x76696577  # tells the bank's random draws apart from the generator's (seed, epoch, batch) streams

# Layers whose output is random in training: a prefix that holds one cannot be computed once.
_RANDOM_LAYERS = (keras.layers.Dropout, keras.layers.SpatialDropout1D, keras.layers.SpatialDropout2D,
                  keras.layers.SpatialDropout3D, keras.layers.GaussianNoise, keras.layers.GaussianDropout,
                  keras.layers.AlphaDropout)


def first_trainable_index(base_model):
    """Index in `flat_layers(base_model)` of the first layer with trainable weights (their count when none).

    Example:
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(2)])
    >>> model.layers[0].trainable = False
    >>> first_trainable_index(model)
    1
    """
    layers = flat_layers(base_model)
    return next((index for index, layer in enumerate(layers) if layer.trainable_weights), len(layers))


def bank_plan(base_model, views_per_image, epochs, data_train, data_val, multi_worker=False):
    """Where this round's backbone is cut for a view bank: `(prefix, suffix layers)`, or `(None, why not)`.

    A round trains from a bank when the training (and validation) data are
    seeded batches of images that say which images each batch holds
    (`DataGeneratorSimCLR`), the backbone can be cut in front of its first
    trainable layer (no residual block spans the cut, and the prefix holds
    weights and no random layer such as Dropout), the round runs more epochs
    than the bank's `M / 2` (else the bank computes as many prefix passes as
    training end to end would), and one process trains (each worker of
    several reads only its rows of a batch).

    Example:
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(2)])
    >>> bank_plan(model, 4, epochs=2, data_train=None, data_val=None)[1]
    'the round has 2 epochs, no more than the 2 epochs of views a bank of 4 views per image holds'
    """
    if epochs <= views_per_image // 2:
        return None, (f"the round has {epochs} epochs, no more than the {views_per_image // 2} epochs of views a "
                      f"bank of {views_per_image} views per image holds")
    if multi_worker:
        return None, "several workers train (each reads only its rows of every batch)"
    for name, data in (("training", data_train), ("validation", data_val)):
        if data is not None and not all(hasattr(data, attribute) for attribute in
                                        ("batch_indices", "epoch", "seed", "n_images", "__getitem__", "__len__")):
            return None, (f"the {name} data does not say which images each batch holds (a DataGeneratorSimCLR "
                          "does)")
    start = first_trainable_index(base_model)
    random = [layer.name for layer in flat_layers(base_model)[:start]
              if isinstance(layer, _RANDOM_LAYERS) or type(layer).__name__.startswith("Random")]
    if random:
        return None, f"the frozen layers {random} of {base_model.name!r} are random in training"
    cut = cut_backbone(base_model, start)
    if cut is None:
        layers = flat_layers(base_model)
        where = f"layer {layers[start].name!r}" if start < len(layers) else "its output"
        return None, (f"no frozen layer with weights comes before {where} of {base_model.name!r}, the first that "
                      "trains, or a branch or residual block spans the cut there")
    return cut, None


class ViewBank:
    """The frozen prefix's activations of `M` views of every image, and the batches they came in.

    Args:
        n_images: images of the data (rows of the bank).
        views_per_image: M, an even number: `M / 2` epochs of two views each.
        shape: shape of one activation (the prefix's output without the batch axis).
        folder: where a memory-mapped bank goes (a temporary folder in it,
            removed by `close`); None: the system's temporary folder.
        max_bytes: the most memory the bank may take; above it, a
            memory-mapped file.
        dtype: "float16" or "float32", how activations are stored.

    Attributes:
        activations: (n_images, M, *shape) array (or memory map).
        filled: (n_images, M) bool, which views hold an activation (an image
            left out of an epoch's whole batches has none for that epoch).
        batch_rows: per epoch of views, the image positions of each of its
            batches.

    Example:
    >>> bank = ViewBank(n_images=3, views_per_image=2, shape=(4,))
    >>> bank.put(0, 0, np.arange(2), np.ones((2, 4)), np.zeros((2, 4)))
    >>> bank.filled.tolist(), bank.epochs
    ([[True, True], [True, True], [False, False]], 1)
    """

    def __init__(self, n_images, views_per_image, shape, folder=None, max_bytes=DEFAULT_BANK_BYTES, dtype="float16"):
        self.views_per_image, self.shape = views_per_image, tuple(shape)
        self.dtype = np.dtype(dtype)
        size = (n_images, views_per_image, *self.shape)
        self.nbytes = math.prod(size) * self.dtype.itemsize
        self._folder = None
        if self.nbytes > max_bytes:
            self._folder = tempfile.mkdtemp(prefix="view_bank_", dir=folder)
            self.activations = np.lib.format.open_memmap(os.path.join(self._folder, "views.npy"), mode="w+",
                                                         dtype=self.dtype, shape=size)
        else:
            self.activations = np.empty(size, self.dtype)
        self.filled = np.zeros((n_images, views_per_image), bool)
        self.batch_rows = []
        self._clipped = False

    @property
    def epochs(self):
        """Epochs of views stored so far."""
        return len(self.batch_rows)

    @property
    def memory_mapped(self):
        return self._folder is not None

    def put(self, epoch, batch, rows, view_a, view_b):
        """Store the activations of batch `batch` of epoch `epoch` (its images `rows`, its two views)."""
        if batch == 0:
            self.batch_rows.append([])
        self.batch_rows[epoch].append(np.asarray(rows))
        for slot, values in ((2 * epoch, view_a), (2 * epoch + 1, view_b)):
            values = np.asarray(values)
            if self.dtype == np.float16 and np.abs(values).max(initial=0) > np.finfo(np.float16).max:
                if not self._clipped:
                    logger.warning("view bank: activations above float16's range were clipped to it")
                self._clipped = True
                values = np.clip(values, -np.finfo(np.float16).max, np.finfo(np.float16).max)
            self.activations[rows, slot] = values
            self.filled[rows, slot] = True

    def views(self, rows, slots):
        """The float32 activations of views `slots[i]` of images `rows[i]`."""
        return np.asarray(self.activations[rows, slots], np.float32)

    def close(self):
        """Free the bank (and remove its memory-mapped file)."""
        self.activations = None
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None


def fill_bank(encoder, data, first_epoch, views_per_image, folder=None, max_bytes=DEFAULT_BANK_BYTES, verbose=0):
    """A `ViewBank` of `data`'s views at epochs `first_epoch`, ... through the frozen prefix.

    Args:
        encoder: a model from `data`'s inputs to the prefix's (2·B, ...)
            activations of both views, view a's first.
        data: seeded batches of images (`DataGeneratorSimCLR`); its `epoch`
            is set to each epoch in turn and put back afterwards.
        first_epoch: the epoch of the first views.
        views_per_image: M (even): `M / 2` epochs of views.
        folder, max_bytes: as in `ViewBank`.
        verbose: Keras' verbosity: a progress bar with 1 or "auto", one line
            at the end with 2, nothing with 0.

    Returns:
        The filled `ViewBank`.
    """
    encode = traced_inference(encoder)
    epochs, n_batches = views_per_image // 2, len(data)
    shape = tuple(encoder.output.shape[1:])
    saved_epoch = data.epoch
    progress = None
    if verbose:
        progress = keras.utils.Progbar(epochs * n_batches, verbose=1 if verbose == "auto" else verbose,
                                       unit_name="batch")
    bank = None
    try:
        for epoch in range(epochs):
            data.epoch = first_epoch + epoch
            for index in range(n_batches):
                inputs, _ = data[index]
                rows = data.batch_indices(index)
                activations = keras.ops.convert_to_numpy(encode(list(inputs)))
                if bank is None:
                    # float16 keeps 3 digits; activations far beyond float16's range would be clipped.
                    dtype = "float16" if np.abs(activations).max(initial=0) <= FLOAT16_SAFE else "float32"
                    bank = ViewBank(data.n_images, views_per_image, shape, folder, max_bytes, dtype)
                bank.put(epoch, index, rows, activations[:len(rows)], activations[len(rows):])
                if progress is not None:
                    progress.add(1)
    except BaseException:
        if bank is not None:
            bank.close()
        raise
    finally:
        data.epoch = saved_epoch
    return bank


class BankBatches(keras.utils.PyDataset):
    """`((activations_a, activations_b), target)` batches drawn from a `ViewBank`.

    Epoch `first_epoch + t` replays the bank's epoch t while the bank holds
    it (the very batches and views the data gave); later epochs draw a new
    order of the images and two distinct stored views of each, from
    `(seed, epoch)`. Its `epoch` follows the schedule like the generator's
    (`ScheduleEpoch`), so a resumed round draws the same pairs.

    Args:
        bank: the `ViewBank`.
        batch_size: B.
        seed: the data's seed.
        first_epoch: the epoch of the bank's first views.
        n_batches: batches per epoch (the data's).
        replay_only: always give the bank's first epoch (validation data,
            whose views stay the same every epoch).

    Example:
    >>> bank = ViewBank(n_images=4, views_per_image=2, shape=(1,), dtype="float32")
    >>> bank.put(0, 0, np.array([2, 0]), np.array([[2.0], [0.0]]), np.array([[20.0], [0.0]]))
    >>> (a, b), target = BankBatches(bank, batch_size=2, seed=0, first_epoch=5, n_batches=1)[0]
    >>> a.ravel().tolist(), b.ravel().tolist(), target.shape
    ([2.0, 0.0], [20.0, 0.0], (2, 8))
    """

    def __init__(self, bank, batch_size, seed, first_epoch, n_batches, replay_only=False):
        super().__init__()
        self.bank, self.batch_size, self.seed = bank, batch_size, seed
        self.first_epoch, self.n_batches, self.replay_only = first_epoch, n_batches, replay_only
        self.epoch = first_epoch
        self._target = contrastive_target(batch_size)
        self._pairable = np.flatnonzero(bank.filled.sum(axis=1) >= 2)

    def __len__(self):
        return self.n_batches

    def __getitem__(self, index):
        stored = 0 if self.replay_only else self.epoch - self.first_epoch
        if stored < self.bank.epochs:
            rows = self.bank.batch_rows[stored][index]
            slots = np.broadcast_to([2 * stored, 2 * stored + 1], (len(rows), 2))
        else:
            order = np.random.default_rng([self.seed, self.epoch, _STREAM]).permutation(self._pairable)
            rows = order[index * self.batch_size:(index + 1) * self.batch_size]
            # Two distinct stored views per image: the two smallest of random keys over its filled views.
            keys = np.random.default_rng([self.seed, self.epoch, _STREAM, index]).random(self.bank.filled[rows].shape)
            slots = np.argsort(np.where(self.bank.filled[rows], keys, np.inf), axis=1)[:, :2]
        return (self.bank.views(rows, slots[:, 0]), self.bank.views(rows, slots[:, 1])), self._target

    def on_epoch_end(self):
        self.epoch += 1


class BankTrainer(keras.Model):
    """The part of a SimCLR model that trains from a view bank: activations in, (B, 4·B) similarities out.

    It shares its layers (the backbone's after the cut, the head,
    `SoftmaxCosineSim`) with the whole SimCLR model, so training it trains
    that. Its weights, as callbacks see them, are the whole model's:
    `get_weights`, `set_weights`, `save_weights`, `load_weights` and `save`
    act on the whole model, so early stopping's best weights, the
    checkpoint and the resume state are those of the model the user holds.

    Args:
        whole: the SimCLR model.
        inputs, outputs: the functional graph from the two views'
            activations to the similarities.
    """

    def __init__(self, whole, inputs, outputs, **kwargs):
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        # A plain function, not an attribute Keras would track (the whole model's weights are not this model's).
        self._whole = lambda: whole

    def get_weights(self):
        return self._whole().get_weights()

    def set_weights(self, weights):
        self._whole().set_weights(weights)

    def save_weights(self, *args, **kwargs):
        return self._whole().save_weights(*args, **kwargs)

    def load_weights(self, *args, **kwargs):
        return self._whole().load_weights(*args, **kwargs)

    def save(self, *args, **kwargs):
        return self._whole().save(*args, **kwargs)
