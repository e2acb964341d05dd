"""save_augmentation_grid: a readable PNG, written atomically; images drawn from every class."""

import os

import cv2
import numpy as np
import pytest

from data_generators import SimCLRAugmentation, save_augmentation_grid
from data_generators.sources import ImageSource
from data_generators.visualize import images_from_every_class, indices_from_every_class
from tests.conftest import TINY_CLASSES, write_image_folder


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
    with pytest.raises(ValueError, match=r"Expected path to end in \.png\. Received: path='.*grid\.jpg'"):
        save_augmentation_grid(images, tmp_path / "grid.jpg")
    with pytest.raises(ValueError, match="Expected n_images to be an integer >= 1. Received: n_images=0"):
        save_augmentation_grid(images, tmp_path / "grid.png", n_images=0)
    with pytest.raises(ValueError, match=r"Expected images of shape \(N, H, W, C\) .* Received: images of shape \("):
        save_augmentation_grid(images[0], tmp_path / "grid.png")


def test_indices_are_taken_round_robin_across_the_classes():
    labels = ["b", "a", "a", "b", "c", "a", "c"]
    assert indices_from_every_class(labels, 3) == [1, 0, 4]  # the first image of a, b and c
    assert indices_from_every_class(labels, 6) == [1, 0, 4, 2, 3, 6]
    assert indices_from_every_class(labels, 100) == [1, 0, 4, 2, 3, 6, 5]
    with pytest.raises(ValueError, match="Expected count to be an integer >= 1. Received: count=0"):
        indices_from_every_class(labels, 0)


def test_images_from_every_class_show_each_class_first():
    images = np.arange(9, dtype=np.uint8).reshape(9, 1, 1, 1) * np.ones((1, 4, 4, 3), np.uint8)
    labels = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2])  # sorted by class, as a folder's listing is
    picked, picked_labels = images_from_every_class((images, labels), 5, width=4, height=4)
    assert picked.shape == (5, 4, 4, 3) and picked.dtype == np.float32
    assert picked[:, 0, 0, 0].tolist() == [0, 4, 6, 1, 5]
    assert picked_labels.tolist() == [0, 1, 2, 0, 1]
    again, _ = images_from_every_class(ImageSource((images, labels), 4, 4), 5)
    assert np.array_equal(picked, again)  # deterministic, and an ImageSource works as well


def test_images_from_every_class_without_labels_are_the_first_images():
    images = np.arange(5, dtype=np.uint8).reshape(5, 1, 1, 1) * np.ones((1, 4, 4, 1), np.uint8)
    picked, labels = images_from_every_class((images, None), 3, width=4, height=4, channels=1)
    assert picked[:, 0, 0, 0].tolist() == [0, 1, 2] and labels is None
    assert len(images_from_every_class((images, None), 9, width=4, height=4, channels=1)[0]) == 5


def test_images_from_every_class_of_a_folder(tmp_path):
    folder = write_image_folder(tmp_path / "images", n_per_class=3)
    picked, labels = images_from_every_class(str(folder), 4, width=16, height=16)
    assert picked.shape == (4, 16, 16, 3)
    assert list(labels[:3]) == sorted(TINY_CLASSES) and labels[3] == sorted(TINY_CLASSES)[0]
    with pytest.raises(ValueError, match="Expected width and height when source is not an ImageSource"):
        images_from_every_class(str(folder), 4)


def test_grid_with_titles(tmp_path, images):
    untitled, titled = save_augmentation_grid(images, tmp_path / "a.png"), tmp_path / "b.png"
    save_augmentation_grid(images, titled, titles=["a", "b", "c", "d", "e"])
    assert not np.array_equal(cv2.imread(str(untitled)), cv2.imread(str(titled)))
    with pytest.raises(ValueError, match=r"Expected titles to have one caption per image \(5\). Received: 2 titles"):
        save_augmentation_grid(images, tmp_path / "c.png", titles=["a", "b"])
