"""`SeededImageBatches`: batches whose content depends only on (seed, epoch, index)."""

import keras
import numpy as np

from data_generators.checks import check_bool, check_integer
from data_generators.sources import ImageSource

# Evaluation subsets show the same batches every epoch, so their scores
# compare across epochs.
_FIXED_EPOCH_SUBSETS = ("val", "test")


class SeededImageBatches(keras.utils.PyDataset):
    """Base of the generators: seeded image order and per-batch random streams.

    The image order of an epoch comes from `np.random.default_rng([seed,
    epoch])` and the random stream of batch `index` from
    `np.random.default_rng([seed, epoch, index])`, so a batch is the same
    whichever worker builds it and in whichever order batches are asked for.
    `on_epoch_end` moves to the next epoch, except for the "val" and "test"
    subsets, which stay at epoch 0. Subclasses define `__len__` and
    `__getitem__` from `batch_indices`, `batch_rng` and `preprocess`.

    Args:
        data: what `ImageSource` accepts: a DataFrame, folder, split CSV or
            `(images, labels)` arrays.
        batch_size: images per batch, at least `min_batch_size`.
        min_batch_size: the smallest batch the subclass can use.
        subset: "train", "val", "test" or None (every row).
        shuffle: whether each epoch visits the images in a new seeded order.
        width: image width in pixels.
        height: image height in pixels.
        channels: 3 for RGB or 1 for grayscale.
        preprocess_input: callable applied to each float32 [0, 255] batch
            after augmentation, or None for none.
        augmentation: a callable `(images, rng) -> images`, or None for none.
        seed: non-negative integer seed.
        **kwargs: `workers`, `use_multiprocessing`, `max_queue_size` of
            `keras.utils.PyDataset`.

    Example:
    >>> import numpy as np
    >>> class Firsts(SeededImageBatches):
    ...     def __len__(self):
    ...         return 1
    ...     def __getitem__(self, index):
    ...         return self.source.read(self.batch_indices(index))
    >>> data = (np.zeros((4, 8, 8, 3), np.uint8), None)
    >>> Firsts(data, batch_size=2, min_batch_size=1, subset=None, shuffle=False,
    ...        width=8, height=8, channels=3, preprocess_input=None, augmentation=None,
    ...        seed=0)[0].shape
    (2, 8, 8, 3)
    """

    def __init__(
        self,
        data,
        *,
        batch_size,
        min_batch_size,
        subset,
        shuffle,
        width,
        height,
        channels,
        preprocess_input,
        augmentation,
        seed,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.batch_size = check_integer("batch_size", batch_size, minimum=min_batch_size)
        self.shuffle = check_bool("shuffle", shuffle)
        self.seed = check_integer("seed", seed, minimum=0)
        if preprocess_input is not None and not callable(preprocess_input):
            raise TypeError(
                f"Expected preprocess_input to be a callable or None. Received: preprocess_input={preprocess_input!r}"
            )
        self.preprocess_input = preprocess_input
        if augmentation is not None and not callable(augmentation):
            raise TypeError(
                "Expected augmentation to be a callable (images, rng) -> images, or None. "
                f"Received: augmentation={augmentation!r}"
            )
        self.augmentation = augmentation
        self.source = ImageSource(data, width, height, channels, subset)
        self.subset, self.width, self.height, self.channels = subset, width, height, channels
        self.n_images = self.source.n_images
        self.epoch = 0

    def image_order(self):
        """The positions of the images in this epoch's order.

        Returns:
            An int64 array, a permutation of `range(n_images)` (the identity
            without shuffle).
        """
        if not self.shuffle:
            return np.arange(self.n_images)
        return np.random.default_rng([self.seed, self.epoch]).permutation(self.n_images)

    def batch_indices(self, index):
        """The image positions of batch `index` of this epoch.

        Args:
            index: the batch number, in `range(len(self))`.

        Returns:
            An int64 array of at most `batch_size` positions.
        """
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < len(self):
            raise IndexError(f"batch index {index!r} is out of range for {len(self)} batches")
        start = int(index) * self.batch_size
        return self.image_order()[start : start + self.batch_size]

    def batch_rng(self, index):
        """The random generator of batch `index` of this epoch.

        Args:
            index: the batch number.

        Returns:
            A `numpy.random.Generator` seeded with (seed, epoch, index).
        """
        return np.random.default_rng([self.seed, self.epoch, int(index)])

    def preprocess(self, images):
        """Apply `preprocess_input` (if any) and return float32.

        Args:
            images: a float32 batch in [0, 255].

        Returns:
            The preprocessed batch as a float32 NumPy array.
        """
        if self.preprocess_input is not None:
            images = self.preprocess_input(images)
        return np.asarray(images, dtype=np.float32)

    def on_epoch_end(self):
        """Move to the next epoch, unless the subset is "val" or "test"."""
        if self.subset not in _FIXED_EPOCH_SUBSETS:
            self.epoch += 1
