"""`ImageSource`: the images of a dataset, from files or arrays, read by index."""

import logging

import numpy as np

from data_generators.cache import image_cache
from data_generators.checks import check_choice, check_image_size
from data_generators.frames import SPLITS, load_frame
from data_generators.io import check_files_exist, fit_image, read_images

logger = logging.getLogger(__name__)


class ImageSource:
    """The images (and labels) a generator draws its batches from.

    One place turns every kind of `data` into images of one size: image files
    listed by a frame (read when a batch asks for them, through the decoded-image
    cache of `data_generators.cache`) or arrays in memory.

    Args:
        data: a DataFrame with columns `filename` and `class_label` (and
            optionally `split`), a folder or a `.csv` split file (see
            `frames.load_frame`), or a tuple `(images, labels)` of arrays:
            images (N, H, W, C) uint8 or float in [0, 255], labels (N,) or None.
        width: width of the images read, in pixels.
        height: height of the images read, in pixels.
        channels: 3 for RGB or 1 for grayscale.
        subset: "train", "val", "test" or None. With a frame that has a
            `split` column, only that split's rows are kept; otherwise (and
            for arrays) every image is.

    Attributes:
        n_images: the number of images.
        labels: array (n_images,) of their labels, or None.
        class_labels: sorted distinct labels of all of `data`, before the
            subset is taken, so that every subset numbers classes alike;
            None without labels.
        filenames: array of the image files, or None for arrays.
        description: how errors name this data, e.g. "subset 'train'".

    Example:
    >>> import numpy as np
    >>> source = ImageSource((np.zeros((5, 8, 8, 3), np.uint8), [0, 1, 0, 1, 1]), width=4, height=4)
    >>> source.read([0, 2]).shape, source.class_labels
    ((2, 4, 4, 3), [0, 1])
    """

    def __init__(self, data, width, height, channels=3, subset=None):
        check_image_size(width, height, channels)
        check_choice("subset", subset, (*SPLITS, None))
        self.width, self.height, self.channels, self.subset = width, height, channels, subset
        self.description = "data" if subset is None else f"subset {subset!r}"
        if isinstance(data, tuple):
            self._images, self.labels = _checked_arrays(data)
            self.filenames = None
            all_labels = self.labels
        else:
            frame = load_frame(data)
            all_labels = frame["class_label"].to_numpy()
            if subset is not None and "split" in frame.columns:
                splits = sorted(set(frame["split"]))
                frame = frame[frame["split"] == subset]
                if frame.empty:
                    raise ValueError(f"subset={subset!r} selects no rows of data; its splits are {splits}")
            self.filenames = frame["filename"].to_numpy()
            self.labels = frame["class_label"].to_numpy()
            self._images = None
            check_files_exist(self.filenames)
        self.class_labels = None if all_labels is None else np.unique(all_labels).tolist()
        self.n_images = len(self.labels) if self.labels is not None else len(self._images)

    def read(self, indices):
        """Images at the given positions, as a float32 batch in [0, 255].

        Args:
            indices: a sequence of positions in `range(n_images)`.

        Returns:
            A float32 array (len(indices), height, width, channels).

        Example:
        >>> import numpy as np
        >>> ImageSource((np.ones((3, 2, 2, 1)), None), 2, 2, channels=1).read([2]).shape
        (1, 2, 2, 1)
        """
        indices = np.asarray(indices, dtype=np.int64)
        if self.filenames is not None:
            cache = image_cache()  # each file decoded once per process, not once per epoch
            read = read_images if cache is None else cache.read
            return read(self.filenames[indices], self.width, self.height, self.channels).astype(np.float32)
        images = self._images[indices]
        if images.shape[1:] != (self.height, self.width, self.channels):
            images = [fit_image(image, self.width, self.height, self.channels) for image in images]
            images = np.stack(images) if images else np.empty((0, self.height, self.width, self.channels))
        return np.asarray(images, dtype=np.float32)


    def check_decodable(self, chunk=256):
        """Read every image file once, so that a corrupt one is reported before any training.

        Arrays are decoded already and are not read again.

        Raises:
            ValueError: naming the first file that cannot be decoded.
        """
        if self.filenames is None:
            return
        for start in range(0, self.n_images, chunk):
            self.read(range(start, min(start + chunk, self.n_images)))


def _checked_arrays(data):
    """Validate `(images, labels)` and return them as arrays (labels may be None)."""
    if len(data) != 2:
        raise ValueError(f"Expected data as a tuple to be (images, labels). Received: a tuple of {len(data)} items")
    images, labels = np.asarray(data[0]), data[1]
    if images.ndim != 4 or images.shape[3] not in (1, 3, 4) or len(images) == 0:
        raise ValueError(
            "Expected data images of shape (N, H, W, C) with N > 0 and C 1, 3 or 4. "
            f"Received: images of shape {images.shape}"
        )
    if not (images.dtype == np.uint8 or np.issubdtype(images.dtype, np.floating)):
        raise TypeError(
            f"Expected data images to be uint8 or float in [0, 255]. Received: images of dtype {images.dtype}"
        )
    if np.issubdtype(images.dtype, np.floating) and images.max() <= 1.0:
        logger.warning("data images are float with values <= 1: expected [0, 255], not [0, 1]")
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (len(images),):
            raise ValueError(
                f"Expected data labels of shape ({len(images)},), one per image. "
                f"Received: labels of shape {labels.shape}"
            )
    return images, labels
