"""Reading image files into arrays, with errors that name the file."""

import os

import cv2
import numpy as np

from data_generators.checks import check_image_size


def check_files_exist(paths):
    """Raise FileNotFoundError naming the first missing file of `paths`.

    Checking every file up front turns a crash in the middle of an epoch into
    an error before training starts.

    Args:
        paths: a sequence of file paths.

    Example:
    >>> check_files_exist([__file__])
    """
    paths = [os.fspath(path) for path in paths]
    missing = [path for path in paths if not os.path.isfile(path)]
    if missing:
        raise FileNotFoundError(
            f"image file {missing[0]!r} does not exist ({len(missing)} of {len(paths)} files are missing)"
        )


def read_image(path, width, height, channels=3):
    """Read one image file as a uint8 RGB (or grayscale) array of a given size.

    The file is decoded by OpenCV with `cv2.IMREAD_UNCHANGED`, so every format
    OpenCV reads is accepted and converted rather than rejected: BGR becomes
    RGB, grayscale is replicated to 3 channels (or RGB turned to grayscale when
    `channels=1`), an alpha channel is dropped, 16-bit images are scaled to
    8 bits. The image is resized (`INTER_AREA` to shrink, `INTER_LINEAR` to
    grow) only when its size differs. EXIF orientation is not applied.

    Args:
        path: the image file.
        width: output width in pixels.
        height: output height in pixels.
        channels: 3 for RGB or 1 for grayscale.

    Returns:
        A uint8 array of shape (height, width, channels).

    Raises:
        FileNotFoundError: `path` is not a file.
        ValueError: the file is not a decodable image, or a truncated JPEG.

    Example:
    >>> import cv2, numpy as np, os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "grey.png")
    >>> _ = cv2.imwrite(path, np.full((4, 6), 100, np.uint8))
    >>> read_image(path, width=3, height=2).shape
    (2, 3, 3)
    """
    path = os.fspath(path)
    check_image_size(width, height, channels)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image file {path!r} does not exist")
    with open(path, "rb") as file:
        data = file.read()
    # cv2.imdecode on bytes already read, rather than cv2.imread(path): the
    # bytes are needed for the truncation check, and paths with non-ASCII
    # characters then work on every platform.
    image = None
    if data and (not data.startswith(_JPEG_START) or _jpeg_is_complete(data)):
        try:
            image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        except cv2.error:
            image = None
    if image is None:
        raise ValueError(f"could not decode image file {path!r}: empty, corrupt, truncated or not an image")
    if image.dtype == np.uint16:
        image = np.round(image / 257.0).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ValueError(f"could not decode image file {path!r}: unsupported pixel type {image.dtype}")
    return fit_image(_decoded_to_rgb(image), width, height, channels)


def read_images(paths, width, height, channels=3, read_one=None):
    """Read image files into one uint8 batch, each as `read_image` reads it.

    Args:
        paths: a sequence of image files.
        width: output width in pixels.
        height: output height in pixels.
        channels: 3 for RGB or 1 for grayscale.
        read_one: what reads each file, `(path, width, height, channels) ->
            image`; None for `read_image` (the decoded-image cache passes its own).

    Returns:
        A uint8 array of shape (len(paths), height, width, channels).

    Example:
    >>> read_images([], width=8, height=8).shape
    (0, 8, 8, 3)
    """
    check_image_size(width, height, channels)
    batch = np.empty((len(paths), height, width, channels), np.uint8)
    # Decoding has no batched form: one file at a time.
    read_one = read_image if read_one is None else read_one
    for position, path in enumerate(paths):
        batch[position] = read_one(path, width, height, channels)
    return batch


def fit_image(image, width, height, channels=3):
    """Convert an RGB, RGBA or grayscale array to `channels` and size.

    The one place that shapes a single image, for decoded files and for
    in-memory arrays alike. uint8 stays uint8; floats become float32.

    Args:
        image: array (H, W) or (H, W, C) with C in 1, 2 (gray + alpha), 3
            (RGB) or 4 (RGBA). Alpha is dropped.
        width: output width in pixels.
        height: output height in pixels.
        channels: 3 for RGB or 1 for grayscale.

    Returns:
        An array of shape (height, width, channels).

    Example:
    >>> import numpy as np
    >>> fit_image(np.zeros((4, 4, 4), np.uint8), width=2, height=2).shape
    (2, 2, 3)
    """
    check_image_size(width, height, channels)
    image = np.asarray(image)
    if image.dtype.kind == "f":
        image = image.astype(np.float32, copy=False)  # OpenCV has no float64 colour conversion
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 2, 3, 4):
        raise ValueError(
            f"Expected image of shape (H, W) or (H, W, C) with C in 1..4. Received: image of shape {image.shape}"
        )
    colour = image[:, :, :3] if image.shape[2] >= 3 else image[:, :, :1]
    if channels == 3 and colour.shape[2] == 1:
        colour = np.repeat(colour, 3, axis=2)
    elif channels == 1 and colour.shape[2] == 3:
        colour = cv2.cvtColor(np.ascontiguousarray(colour), cv2.COLOR_RGB2GRAY)[:, :, None]
    if colour.shape[:2] != (height, width):
        shrinking = height <= colour.shape[0] and width <= colour.shape[1]
        interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        resized = cv2.resize(np.ascontiguousarray(colour), (width, height), interpolation=interpolation)
        colour = resized.reshape(height, width, channels)
    return np.ascontiguousarray(colour)


_JPEG_START = b"\xff\xd8"
_JPEG_END_MARKER = b"\xff\xd9"
_JPEG_START_OF_SCAN = 0xDA
# Markers that stand alone, without a length field: TEM and RST0..RST7.
_JPEG_MARKERS_WITHOUT_LENGTH = {0x01, *range(0xD0, 0xD8)}


def _jpeg_is_complete(data):
    """Whether a JPEG's bytes reach its end-of-image marker.

    OpenCV decodes a truncated JPEG into a partly grey image with only a
    warning. Inside compressed data a 0xFF byte is always escaped, so the
    end marker can only appear as itself: walking the header segments up to
    the first scan and then finding FFD9 after it detects truncation, while
    an FFD9 in an embedded EXIF thumbnail (skipped with its segment) or bytes
    appended after the end marker do not mislead it.
    """
    position = len(_JPEG_START)
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            return False
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte before a marker
            position += 1
        elif marker == _JPEG_START_OF_SCAN:
            return data.find(_JPEG_END_MARKER, position) != -1
        elif marker in _JPEG_MARKERS_WITHOUT_LENGTH:
            position += 2
        else:
            position += 2 + int.from_bytes(data[position + 2 : position + 4], "big")
    return False


def _decoded_to_rgb(image):
    """OpenCV's BGR / BGRA channel order to RGB / RGBA; grayscale unchanged."""
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA)
    return image
