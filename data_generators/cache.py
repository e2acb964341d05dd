"""Decoded images kept for the run: each image file is read, decoded and resized once.

Decoding dominates the host's work per view (a 512×384 JPEG takes
milliseconds, the SimCLR augmentation of its 80×80 crop far less), and every
epoch, the up-front readability check and the classifier generators read the
same files again. `ImageSource` therefore reads files through the process's
`image_cache()`: images as uint8 at their target size, in memory up to a
budget, beyond it in a temporary file read back by offset.
"""

import os
import tempfile
import threading

import numpy as np

from data_generators.checks import check_integer
from data_generators.io import read_image, read_images

DEFAULT_BUDGET_BYTES = 1 << 30


class DecodedImageCache:
    """Decoded, resized uint8 images keyed by file, its size and mtime, and the target size.

    A file whose size or modification time has changed since it was cached is
    read again. Images beyond `budget_bytes` of memory go to an anonymous
    temporary file in `folder` (deleted by the system when the cache is), so a
    data set larger than memory is still decoded only once. Safe to share
    between the threads of a `PyDataset`; a process started by `fork` (Keras'
    multiprocessing workers) starts its own, empty cache.

    Args:
        budget_bytes: bytes of decoded images kept in memory, an int >= 0.
        folder: where the temporary file of the images beyond the budget is
            made, or None for the system's temporary folder.

    Attributes:
        hits, misses: images served from the cache and decoded from files.

    Example:
    >>> import cv2, numpy as np, os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "grey.png")
    >>> _ = cv2.imwrite(path, np.full((4, 6), 100, np.uint8))
    >>> cache = DecodedImageCache(budget_bytes=0)  # everything goes to the temporary file
    >>> [cache.read([path], width=3, height=2).shape for _ in range(2)], cache.misses, cache.hits
    ([(1, 2, 3, 3), (1, 2, 3, 3)], 1, 1)
    """

    def __init__(self, budget_bytes=DEFAULT_BUDGET_BYTES, folder=None):
        self.budget_bytes = check_integer("budget_bytes", budget_bytes, minimum=0)
        if folder is not None and not os.path.isdir(folder):
            raise ValueError(f"Expected folder to be an existing folder or None. Received: folder={folder!r}")
        self.folder = folder
        self._lock = threading.Lock()
        self._reset()

    def _reset(self):
        self._pid = os.getpid()
        self._entries = {}  # (path, width, height, channels) -> (size, mtime_ns, inode, array or file offset)
        self._memory_bytes = 0
        self._file, self._file_bytes = None, 0
        self.hits = self.misses = 0

    def read(self, paths, width, height, channels=3):
        """Read image files into one uint8 batch, as `io.read_images` does, decoding each file at most once.

        Args:
            paths: a sequence of image files.
            width: output width in pixels.
            height: output height in pixels.
            channels: 3 for RGB or 1 for grayscale.

        Returns:
            A uint8 array of shape (len(paths), height, width, channels).
        """
        return read_images(paths, width, height, channels, read_one=self._image)

    def _image(self, path, width, height, channels):
        path = os.path.abspath(os.fspath(path))
        try:
            status = os.stat(path)
        except OSError:
            return read_image(path, width, height, channels)  # raises, naming the file
        key = (path, width, height, channels)
        stamp = (status.st_size, status.st_mtime_ns, status.st_ino)  # a rewritten or replaced file reads again
        with self._lock:
            if self._pid != os.getpid():
                self._reset()
            entry = self._entries.get(key)
            if entry is not None and entry[:3] == stamp:
                self.hits += 1
                return self._load(entry[3], (height, width, channels))
        image = read_image(path, width, height, channels)
        with self._lock:
            self.misses += 1
            self._store(key, stamp, image)
        return image

    def _load(self, place, shape):
        if isinstance(place, np.ndarray):
            return place
        data = os.pread(self._file.fileno(), int(np.prod(shape)), place)
        return np.frombuffer(data, np.uint8).reshape(shape)

    def _store(self, key, stamp, image):
        previous = self._entries.pop(key, None)
        if previous is not None and isinstance(previous[3], np.ndarray):
            self._memory_bytes -= previous[3].nbytes  # a changed file: its old image goes (in the file it stays)
        if self._memory_bytes + image.nbytes <= self.budget_bytes:
            place = np.ascontiguousarray(image)
            self._memory_bytes += image.nbytes
        else:
            if self._file is None:
                self._file = tempfile.TemporaryFile(prefix="simclr_wrap_images_", dir=self.folder)
            place = self._file_bytes
            os.pwrite(self._file.fileno(), np.ascontiguousarray(image).tobytes(), place)
            self._file_bytes += image.nbytes
        self._entries[key] = (*stamp, place)


_cache = DecodedImageCache()


def image_cache():
    """The process's `DecodedImageCache`, or None where caching is turned off (`set_image_cache(None)`)."""
    return _cache


def set_image_cache(cache):
    """Use `cache` (a `DecodedImageCache`, or None to decode every read) for every image read from now on.

    Example:
    >>> previous = image_cache()
    >>> set_image_cache(DecodedImageCache(budget_bytes=64 << 20))
    >>> image_cache().budget_bytes
    67108864
    >>> set_image_cache(previous)
    """
    global _cache
    if cache is not None and not isinstance(cache, DecodedImageCache):
        raise TypeError(f"Expected cache to be a DecodedImageCache or None. Received: cache={cache!r}")
    _cache = cache
