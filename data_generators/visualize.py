"""A picture of what the augmentation does: originals above two random views."""

import os

import numpy as np
from matplotlib.figure import Figure

from data_generators.augment import SimCLRAugmentation
from data_generators.checks import check_integer
from data_generators.files import atomic_output

_ROW_TITLES = ("original", "view a", "view b")


def save_augmentation_grid(images, path, augmentation=None, n_images=8, seed=0):
    """Save a PNG grid: the first images, and two augmented views of each.

    The figure is drawn without pyplot, so no display or global backend is
    involved, and written through `atomic_output`.

    Args:
        images: array (N, H, W, C), C 1 or 3, uint8 or float in [0, 255].
        path: the `.png` file to write.
        augmentation: a callable `(images, rng) -> views`; None means
            `SimCLRAugmentation()`.
        n_images: how many of the first images to show (columns).
        seed: integer seed of the views.

    Returns:
        `path`.

    Example:
    >>> import numpy as np, os, tempfile
    >>> images = np.random.default_rng(0).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    >>> path = os.path.join(tempfile.mkdtemp(), "grid.png")
    >>> save_augmentation_grid(images, path) == path
    True
    """
    if not os.fspath(path).lower().endswith(".png"):
        raise ValueError(f"path must end in .png, got path={os.fspath(path)!r}")
    n_images = check_integer("n_images", n_images, minimum=1)
    seed = check_integer("seed", seed, minimum=0)
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[3] not in (1, 3) or len(images) == 0:
        raise ValueError(f"images must have shape (N, H, W, C) with N > 0 and C 1 or 3, got {images.shape}")
    augmentation = SimCLRAugmentation() if augmentation is None else augmentation
    originals = images[:n_images].astype(np.float32)
    rng = np.random.default_rng(seed)
    rows = (originals, augmentation(originals, rng), augmentation(originals, rng))
    columns = len(originals)
    figure = Figure(figsize=(1.2 * columns, 1.2 * len(rows) + 0.3))
    for row_number, (title, row) in enumerate(zip(_ROW_TITLES, rows)):
        for column, image in enumerate(np.clip(row, 0, 255).astype(np.uint8)):
            axes = figure.add_subplot(len(rows), columns, row_number * columns + column + 1)
            axes.imshow(image[:, :, 0] if image.shape[2] == 1 else image, cmap="gray", vmin=0, vmax=255)
            axes.set_xticks([])
            axes.set_yticks([])
            if column == 0:
                axes.set_ylabel(title)
    figure.tight_layout()
    with atomic_output(path) as temporary:
        figure.savefig(temporary, format="png")
    return path
