"""`DataGeneratorSimCLR`: pairs of augmented views and their contrastive target."""

import logging

import numpy as np

from data_generators.augment import SimCLRAugmentation
from data_generators.batches import SeededImageBatches
from data_generators.checks import check_bool, check_choice, check_integer
from data_generators.frames import SPLITS
from data_generators.targets import contrastive_target

logger = logging.getLogger(__name__)


class DataGeneratorSimCLR(SeededImageBatches):
    """Batches `((view_a, view_b), target)` for training SimCLR.

    Each batch holds B images, each augmented twice; the target is the
    `[I|O|I|O]` matrix of `contrastive_target(B)`. Only whole batches are
    made: `len()` is `n_images // batch_size` and the remainder of each
    epoch's order is left out. The views depend only on (seed, epoch, batch
    index), so any number of workers gives the same batches; the "val" and
    "test" subsets give the same views every epoch.

    Args:
        data: a DataFrame with columns `filename`, `class_label` and optionally
            `split`, a folder of class subfolders, a `.csv` split file, or a
            tuple `(images, labels)` of arrays (images (N, H, W, C) uint8 or
            float in [0, 255], resized if their size differs; labels may be
            None).
        batch_size: images per batch, from 2 to the number of images.
        subset: "train", "val" or "test": the rows of that split when the
            frame has a `split` column.
        shuffle: whether to visit the images in a new seeded order each
            epoch; None means True for "train", False otherwise.
        width: image width in pixels.
        height: image height in pixels.
        channels: 3 for RGB or 1 for grayscale.
        preprocess_input: callable applied to each float32 [0, 255] view batch
            after augmentation (e.g. a backbone's `preprocess_input`), or None.
        augmentation: a callable `(images, rng) -> views`; None means
            `SimCLRAugmentation()`.
        seed: non-negative integer seed of the order and the views.
        augment_in_model: False: batches of views, made here with NumPy.
            True: batches `((images, parameters), target)`, the float32
            images in [0, 255] as read and `augmentation.draw`'s parameters
            of both views (B, 2, len(VIEW_PARAMETERS)), for a `SimCLR` built
            with the same `augmentation` to make the views inside its
            training step (on the GPU where there is one), with the
            preprocessing there too; `augmentation` must then be a
            `SimCLRAugmentation` and `preprocess_input` None. The parameters
            come from the same (seed, epoch, batch) stream, so the views are
            those this generator would make with False (with `noise_std` >
            0, other draws of the same distribution).
        **kwargs: `workers`, `use_multiprocessing`, `max_queue_size` of
            `keras.utils.PyDataset`.

    Attributes:
        n_images: the number of images of the subset.
        class_labels: sorted distinct labels of `data`, or None.
        epoch: the epoch whose batches are served.

    Example:
    >>> import numpy as np
    >>> images = np.random.default_rng(0).integers(0, 256, (10, 16, 16, 3), dtype=np.uint8)
    >>> generator = DataGeneratorSimCLR((images, None), batch_size=4, width=16, height=16)
    >>> (view_a, view_b), target = generator[0]
    >>> len(generator), view_a.shape, target.shape
    (2, (4, 16, 16, 3), (4, 16))
    """

    def __init__(
        self,
        data,
        batch_size=32,
        subset="train",
        shuffle=None,
        width=80,
        height=80,
        channels=3,
        preprocess_input=None,
        augmentation=None,
        seed=0,
        augment_in_model=False,
        **kwargs,
    ):
        check_choice("subset", subset, SPLITS)
        self.augment_in_model = check_bool("augment_in_model", augment_in_model)
        if self.augment_in_model and preprocess_input is not None:
            raise ValueError("Expected preprocess_input=None with augment_in_model=True: the model preprocesses the "
                             "views it makes (give the preprocessing to SimCLR(preprocess=...)). Received: "
                             f"preprocess_input={preprocess_input!r}")
        if self.augment_in_model and not isinstance(augmentation, (SimCLRAugmentation, type(None))):
            raise TypeError("Expected augmentation to be a SimCLRAugmentation with augment_in_model=True (the model "
                            f"applies its parameters). Received: augmentation={augmentation!r}")
        check_integer("batch_size", batch_size, minimum=2, why="a contrastive batch needs negatives")
        super().__init__(
            data,
            batch_size=batch_size,
            min_batch_size=2,
            subset=subset,
            shuffle=subset == "train" if shuffle is None else shuffle,
            width=width,
            height=height,
            channels=channels,
            preprocess_input=preprocess_input,
            augmentation=SimCLRAugmentation() if augmentation is None else augmentation,
            seed=seed,
            **kwargs,
        )
        if self.batch_size > self.n_images:
            raise ValueError(
                f"Expected batch_size to be at most the {self.n_images} images of {self.source.description}. "
                f"Received: batch_size={self.batch_size}"
            )
        self.class_labels = self.source.class_labels
        self._target = contrastive_target(self.batch_size)
        left_out = self.n_images % self.batch_size
        if left_out:
            logger.info(
                "%d of the %d images of %s are left out of each epoch (only whole batches of %d)",
                left_out,
                self.n_images,
                self.source.description,
                self.batch_size,
            )

    def __len__(self):
        return self.n_images // self.batch_size

    def __getitem__(self, index):
        """Batch `index` of this epoch: `((view_a, view_b), target)`.

        Args:
            index: the batch number, in `range(len(self))`.

        Returns:
            view_a and view_b float32 (B, height, width, channels) and the
            float32 (B, 4B) target; with `augment_in_model`, the images and
            the views' parameters in their place (see the class).
        """
        return self.shard_of_batch(index, np.arange(self.batch_size))

    def shard_of_batch(self, index, rows):
        """Rows `rows` of batch `index`, reading and augmenting only their images.

        What one worker of several reads of every global batch: the rows are
        those of `self[index]`, to the bit where the augmentation is a
        `SimCLRAugmentation` (its random numbers for the whole batch are
        drawn, its pixels made for `rows` alone; see
        `SimCLRAugmentation.rows_of_view`).

        Args:
            index: the batch number, in `range(len(self))`.
            rows: int array of positions in the batch, in `range(batch_size)`.

        Returns:
            `((view_a, view_b), target)` of len(rows) rows each (the target's
            (len(rows), 4B) rows of the batch's), or the images and the views'
            parameters with `augment_in_model`.

        Example:
        >>> import numpy as np
        >>> images = np.random.default_rng(0).integers(0, 256, (8, 16, 16, 3), dtype=np.uint8)
        >>> generator = DataGeneratorSimCLR((images, None), batch_size=4, width=16, height=16)
        >>> (view_a, _), target = generator.shard_of_batch(1, np.array([2, 3]))
        >>> bool(np.array_equal(view_a, generator[1][0][0][2:])), target.shape
        (True, (2, 16))
        """
        rows = np.asarray(rows, dtype=np.int64)
        if rows.ndim != 1 or rows.size == 0 or rows.min() < 0 or rows.max() >= self.batch_size:
            raise IndexError(f"Expected rows of a batch of {self.batch_size} images. Received: rows={rows.tolist()}")
        images = self.source.read(self.batch_indices(index)[rows])
        rng = self.batch_rng(index)
        target = self._target[rows]
        if self.augment_in_model:
            shape = (self.batch_size, *images.shape[1:])
            parameters = [self.augmentation.draw(shape, rng, noise_seed=True)[rows] for _ in range(2)]
            return (images.astype("float32"), np.stack(parameters, axis=1)), target
        if isinstance(self.augmentation, SimCLRAugmentation):
            views = [self.augmentation.rows_of_view(images, rng, rows, self.batch_size) for _ in range(2)]
        elif len(rows) == self.batch_size and np.array_equal(rows, np.arange(self.batch_size)):
            views = [self.augmentation(images, rng) for _ in range(2)]
        else:  # another augmentation draws for the images it is given: the whole batch, then the rows
            whole = self.source.read(self.batch_indices(index))
            views = [self.augmentation(whole, rng)[rows] for _ in range(2)]
        return tuple(self.preprocess(view) for view in views), target
