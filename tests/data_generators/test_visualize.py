"""save_augmentation_grid: a readable PNG, written atomically."""

import os

import cv2
import numpy as np
import pytest

from data_generators import SimCLRAugmentation, save_augmentation_grid


@pytest.fixture
def images():
    return np.random.default_rng(0).integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)


def test_grid_png_is_written_and_readable(tmp_path, images):
    path = str(tmp_path / "plots" / "grid.png")
    assert save_augmentation_grid(images, path, n_images=4) == path
    grid = cv2.imread(path)
    assert grid is not None and grid.shape[0] > 100 and grid.shape[1] > grid.shape[0]
    assert os.listdir(tmp_path / "plots") == ["grid.png"]  # no temporary file left


def test_grid_is_seeded_and_shows_the_views(tmp_path, images):
    first, second, third = (str(tmp_path / name) for name in ("a.png", "b.png", "c.png"))
    save_augmentation_grid(images, first, seed=1)
    save_augmentation_grid(images, second, seed=1)
    save_augmentation_grid(images, third, seed=2)
    assert np.array_equal(cv2.imread(first), cv2.imread(second))
    assert not np.array_equal(cv2.imread(first), cv2.imread(third))


def test_grid_of_gray_images_with_a_given_augmentation(tmp_path, images):
    path = save_augmentation_grid(images[..., :1], tmp_path / "gray.png", augmentation=SimCLRAugmentation(blur=False))
    assert cv2.imread(str(path)) is not None


def test_grid_arguments_are_checked(tmp_path, images):
    with pytest.raises(ValueError, match="path must end in .png"):
        save_augmentation_grid(images, tmp_path / "grid.jpg")
    with pytest.raises(ValueError, match="n_images"):
        save_augmentation_grid(images, tmp_path / "grid.png", n_images=0)
    with pytest.raises(ValueError, match="images must have shape"):
        save_augmentation_grid(images[0], tmp_path / "grid.png")
