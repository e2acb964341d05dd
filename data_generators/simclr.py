"""`DataGeneratorSimCLR`: pairs of augmented views and their contrastive target."""

import logging

from data_generators.augment import SimCLRAugmentation
from data_generators.batches import SeededImageBatches
from data_generators.checks import check_choice, check_integer
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
        **kwargs,
    ):
        check_choice("subset", subset, SPLITS)
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
            float32 (B, 4B) target.
        """
        images = self.source.read(self.batch_indices(index))
        rng = self.batch_rng(index)
        view_a = self.preprocess(self.augmentation(images, rng))
        view_b = self.preprocess(self.augmentation(images, rng))
        return (view_a, view_b), self._target.copy()
