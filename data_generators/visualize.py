"""A picture of what the augmentation does: originals above two random views."""

import os

import numpy as np
from matplotlib.figure import Figure

from data_generators.augment import SimCLRAugmentation
from data_generators.checks import check_integer
from data_generators.files import atomic_output

_ROW_TITLES = ("original", "view a", "view b")


def indices_from_every_class(labels, count):
    """Positions of up to `count` images, taken round-robin across the classes.

    The first image of each class (classes in sorted order, as
    `ImageSource.class_labels`), then the second of each, and so on: the
    first `min(count, n_classes)` positions show as many different classes.
    Deterministic: no random draw.

    Args:
        labels: array-like (N,) of the images' labels.
        count: how many positions at most, an integer >= 1.

    Returns:
        A list of `min(count, N)` positions in `range(N)`.

    Example:
    >>> indices_from_every_class(["b", "a", "a", "b", "c", "a"], 5)
    [1, 0, 4, 2, 3]
    """
    count = check_integer("count", count, minimum=1)
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"Expected labels of shape (N,). Received: labels of shape {labels.shape}")
    per_class = [np.flatnonzero(labels == label) for label in np.unique(labels)]
    picked = []
    for rank in range(max((len(positions) for positions in per_class), default=0)):
        for positions in per_class:
            if rank < len(positions):
                picked.append(int(positions[rank]))
                if len(picked) == count:
                    return picked
    return picked


def images_from_every_class(source, count=8, width=None, height=None, channels=3, subset=None):
    """Up to `count` images drawn round-robin across the classes, with their labels.

    For `save_augmentation_grid`, so that its columns show every class rather
    than the first images of a dataset sorted by class. See
    `indices_from_every_class` for the order. Without labels: the first
    `count` images.

    Args:
        source: an `ImageSource`, or what `ImageSource` takes as `data` (a
            DataFrame, a folder, a `.csv` split file, or `(images, labels)`).
        count: how many images at most, an integer >= 1.
        width, height, channels, subset: as `ImageSource` takes them; needed
            (width, height) and used only when `source` is not an `ImageSource`.

    Returns:
        `(images, labels)`: a float32 array (n, height, width, channels) in
        [0, 255], n = min(count, number of images), and the labels (n,) of
        those images, or None when the source has no labels.

    Example:
    >>> import numpy as np
    >>> images = np.arange(6, dtype=np.uint8).reshape(6, 1, 1, 1) * np.ones((1, 4, 4, 3), np.uint8)
    >>> picked, labels = images_from_every_class((images, [0, 0, 0, 1, 1, 2]), 4, width=4, height=4)
    >>> picked[:, 0, 0, 0].tolist(), labels.tolist()
    ([0.0, 3.0, 5.0, 1.0], [0, 1, 2, 0])
    """
    from data_generators.sources import ImageSource

    count = check_integer("count", count, minimum=1)
    if not isinstance(source, ImageSource):
        if width is None or height is None:
            raise ValueError(
                "Expected width and height when source is not an ImageSource. "
                f"Received: width={width!r}, height={height!r}"
            )
        source = ImageSource(source, width, height, channels, subset)
    if source.labels is None:
        return source.read(range(min(count, source.n_images))), None
    positions = indices_from_every_class(source.labels, count)
    return source.read(positions), np.asarray(source.labels)[positions]


def save_augmentation_grid(images, path, augmentation=None, n_images=8, seed=0, titles=None):
    """Save a PNG grid: the first images, and two augmented views of each.

    The figure is drawn without pyplot, so no display or global backend is
    involved, and written through `atomic_output`. To show every class, pick
    the images with `images_from_every_class` and pass their labels (or
    class names) as `titles`.

    Args:
        images: array (N, H, W, C), C 1 or 3, uint8 or float in [0, 255].
        path: the `.png` file to write.
        augmentation: a callable `(images, rng) -> views`; None means
            `SimCLRAugmentation()`.
        n_images: how many of the first images to show (columns).
        seed: integer seed of the views.
        titles: optional sequence of N captions, one per image (e.g. its
            class name), printed above its column; None for no captions.

    Returns:
        `path`.

    Example:
    >>> import numpy as np, os, tempfile
    >>> images = np.random.default_rng(0).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    >>> path = os.path.join(tempfile.mkdtemp(), "grid.png")
    >>> save_augmentation_grid(images, path, titles=["cat", "dog", "cat"]) == path
    True
    """
    if not os.fspath(path).lower().endswith(".png"):
        raise ValueError(f"Expected path to end in .png. Received: path={os.fspath(path)!r}")
    n_images = check_integer("n_images", n_images, minimum=1)
    seed = check_integer("seed", seed, minimum=0)
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[3] not in (1, 3) or len(images) == 0:
        raise ValueError(
            f"Expected images of shape (N, H, W, C) with N > 0 and C 1 or 3. Received: images of shape {images.shape}"
        )
    if titles is not None:
        titles = [str(title) for title in titles]
        if len(titles) != len(images):
            raise ValueError(
                f"Expected titles to have one caption per image ({len(images)}). Received: {len(titles)} titles"
            )
    figure = _augmentation_figure(images[:n_images], augmentation, seed, titles and titles[:n_images])
    with atomic_output(path) as temporary:
        figure.savefig(temporary, format="png")
    return path


def _augmentation_figure(images, augmentation, seed, titles):
    """The grid's Figure: originals (captioned by `titles`), then two views."""
    augmentation = SimCLRAugmentation() if augmentation is None else augmentation
    originals = images.astype(np.float32)
    rng = np.random.default_rng(seed)
    rows = (originals, augmentation(originals, rng), augmentation(originals, rng))
    columns = len(originals)
    figure = Figure(figsize=(1.2 * columns + 0.4, 1.2 * len(rows) + (0.5 if titles else 0.3)))
    for row_number, (title, row) in enumerate(zip(_ROW_TITLES, rows)):
        for column, image in enumerate(np.clip(row, 0, 255).astype(np.uint8)):
            axes = figure.add_subplot(len(rows), columns, row_number * columns + column + 1)
            axes.imshow(image[:, :, 0] if image.shape[2] == 1 else image, cmap="gray", vmin=0, vmax=255)
            axes.set_xticks([])
            axes.set_yticks([])
            if column == 0:
                axes.set_ylabel(title)
            if row_number == 0 and titles:
                axes.set_title(titles[column], fontsize=8)
    figure.tight_layout()
    return figure
