"""`DataGeneratorClass`: batches of images with one-hot class labels."""

import math

import numpy as np

from data_generators.batches import SeededImageBatches


class DataGeneratorClass(SeededImageBatches):
    """Batches `(images, one_hot)` for training and evaluating classifiers.

    Every image appears exactly once per epoch: `len()` is
    `ceil(n_images / batch_size)` and the last batch holds the remaining
    images, never padded. With `shuffle` the order is seeded per epoch, and an
    optional augmentation draws from `np.random.default_rng([seed, epoch,
    index])`, as in `DataGeneratorSimCLR`.

    Args:
        data: a DataFrame with columns `filename`, `class_label` and optionally
            `split`, a folder of class subfolders, a `.csv` split file, or a
            tuple `(images, labels)` of arrays. Labels are looked up in
            `classes`; integer labels that are not all among `classes` are
            taken as indices into it instead.
        batch_size: images per batch (at least 1).
        classes: the ordered class labels that the one-hot columns stand
            for; None means the sorted distinct labels of all of `data` (for
            integer labels, `range(max + 1)`). Pass the training generator's
            `classes` to the others when building them from other data.
        width: image width in pixels.
        height: image height in pixels.
        channels: 3 for RGB or 1 for grayscale.
        shuffle: whether to visit the images in a new seeded order each epoch.
        preprocess_input: callable applied to each float32 [0, 255] batch
            (after augmentation), or None.
        augmentation: a callable `(images, rng) -> images` such as
            `SimCLRAugmentation(...)`, or None for none.
        seed: non-negative integer seed of the order and the augmentation.
        subset: "train", "val", "test" or None (every row): the rows of that
            split when the frame has a `split` column.
        **kwargs: `workers`, `use_multiprocessing`, `max_queue_size` of
            `keras.utils.PyDataset`.

    Attributes:
        classes: the class labels, in one-hot column order.
        labels: int64 array, the class index of each image in dataset order.
        n_images: the number of images.

    Example:
    >>> import numpy as np
    >>> images = np.zeros((5, 8, 8, 3), np.uint8)
    >>> generator = DataGeneratorClass((images, ["cat", "dog", "cat", "dog", "dog"]),
    ...                                batch_size=2, width=8, height=8)
    >>> generator.classes, len(generator), generator[2][1].tolist()
    (['cat', 'dog'], 3, [[0.0, 1.0]])
    """

    def __init__(
        self,
        data,
        batch_size=32,
        classes=None,
        width=80,
        height=80,
        channels=3,
        shuffle=False,
        preprocess_input=None,
        augmentation=None,
        seed=0,
        subset=None,
        **kwargs,
    ):
        super().__init__(
            data,
            batch_size=batch_size,
            min_batch_size=1,
            subset=subset,
            shuffle=shuffle,
            width=width,
            height=height,
            channels=channels,
            preprocess_input=preprocess_input,
            augmentation=augmentation,
            seed=seed,
            **kwargs,
        )
        if self.source.labels is None:
            raise ValueError("data has no labels: DataGeneratorClass needs (images, labels) or a frame's class_label")
        self.classes, self.labels = _class_indices(self.source.labels, self.source.class_labels, classes)
        self._one_hot = np.eye(len(self.classes), dtype=np.float32)[self.labels]

    def __len__(self):
        return math.ceil(self.n_images / self.batch_size)

    def __getitem__(self, index):
        """Batch `index` of this epoch: `(images, one_hot)`.

        Args:
            index: the batch number, in `range(len(self))`.

        Returns:
            images float32 (b, height, width, channels) and one_hot float32
            (b, len(classes)), where b is `batch_size` or, for the last
            batch, the images left.
        """
        indices = self.batch_indices(index)
        images = self.source.read(indices)
        if self.augmentation is not None:
            images = self.augmentation(images, self.batch_rng(index))
        return self.preprocess(images), self._one_hot[indices]


def _class_indices(labels, data_classes, classes):
    """The class list and the int64 index of every label in it."""
    integer_labels = np.issubdtype(labels.dtype, np.integer)
    if classes is None:
        classes = list(range(max(data_classes) + 1)) if integer_labels else list(data_classes)
    classes = list(classes)
    if not classes or len(set(classes)) != len(classes):
        raise ValueError(f"Expected classes to be a non-empty list of distinct labels. Received: classes={classes}")
    if integer_labels and not set(np.unique(labels).tolist()) <= set(classes):
        outside = labels[(labels < 0) | (labels >= len(classes))]
        if len(outside):
            raise ValueError(f"label {int(outside[0])} of data is not an index into the {len(classes)} classes")
        return classes, labels.astype(np.int64)
    position = {label: index for index, label in enumerate(classes)}
    labels = labels.tolist()  # plain Python values, for the lookup and the error message
    unknown = [label for label in labels if label not in position]
    if unknown:
        raise ValueError(f"class label {unknown[0]!r} of data is not in classes={classes}")
    return classes, np.array([position[label] for label in labels], dtype=np.int64)
