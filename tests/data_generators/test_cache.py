"""The decoded-image cache: each file decoded once, a changed file read again, memory budget and spill file."""

import os

import cv2
import numpy as np
import pytest

import data_generators.io
from data_generators import DataGeneratorClass, DataGeneratorSimCLR, frame_from_folder
from data_generators.cache import DecodedImageCache, image_cache, set_image_cache
from data_generators.io import read_images
from tests.conftest import write_image_folder


@pytest.fixture
def decodes(monkeypatch):
    """The paths cv2 decodes, in order."""
    seen = []
    real = data_generators.io.read_image

    def counting(path, *args, **kwargs):
        seen.append(os.path.basename(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr("data_generators.cache.read_image", counting)
    return seen


@pytest.fixture
def files(tmp_path):
    folder = write_image_folder(tmp_path / "images", n_per_class=3, size=20)
    return sorted(os.path.join(root, name) for root, _, names in os.walk(folder) for name in names)


@pytest.mark.parametrize("budget", [1 << 20, 0, 2 * 8 * 8 * 3])  # all in memory, all in the file, some of each
def test_each_file_is_decoded_once_and_read_back_as_decoded(files, decodes, budget):
    cache = DecodedImageCache(budget_bytes=budget)
    expected = read_images(files, 8, 8)
    for _ in range(3):
        np.testing.assert_array_equal(cache.read(files, 8, 8), expected)
    assert sorted(decodes) == sorted(os.path.basename(path) for path in files)
    assert (cache.misses, cache.hits) == (len(files), 2 * len(files))
    # Another target size is another image.
    np.testing.assert_array_equal(cache.read(files[:2], 5, 4, channels=1), read_images(files[:2], 5, 4, channels=1))
    assert cache.misses == len(files) + 2


def test_a_changed_file_is_read_again(tmp_path, decodes):
    path = str(tmp_path / "image.png")
    cv2.imwrite(path, np.full((6, 6, 3), 10, np.uint8))
    cache = DecodedImageCache()
    assert cache.read([path], 6, 6).max() == 10
    cv2.imwrite(path, np.full((6, 6, 3), 200, np.uint8))  # the same size in bytes, written in place
    os.utime(path, ns=(0, os.stat(path).st_mtime_ns + 1_000_000))
    assert cache.read([path], 6, 6).max() == 200
    replacement = str(tmp_path / "other.png")
    cv2.imwrite(replacement, np.full((6, 6, 3), 90, np.uint8))
    os.replace(replacement, path)
    assert cache.read([path], 6, 6).max() == 90
    assert len(decodes) == 3


def test_a_corrupt_file_is_named_and_not_cached(tmp_path):
    path = tmp_path / "broken.jpg"
    path.write_bytes(b"not an image")
    cache = DecodedImageCache()
    for _ in range(2):
        with pytest.raises(ValueError, match="broken.jpg"):
            cache.read([str(path)], 8, 8)
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        cache.read([str(tmp_path / "missing.jpg")], 8, 8)
    assert cache.hits == 0


def test_both_generators_read_through_one_cache(tmp_path, decodes, monkeypatch):
    folder = write_image_folder(tmp_path / "images", n_per_class=4, size=20)
    monkeypatch.setattr("data_generators.cache._cache", DecodedImageCache())
    frame = frame_from_folder(folder)
    simclr = DataGeneratorSimCLR(frame, batch_size=4, width=8, height=8, seed=0)
    for epoch in range(2):
        for index in range(len(simclr)):
            simclr[index]
        simclr.on_epoch_end()
    classifier = DataGeneratorClass(frame, batch_size=4, width=8, height=8, classes=sorted(set(frame["class_label"])))
    batches = [classifier[index][0] for index in range(len(classifier))]
    assert len(decodes) == len(frame)  # every image decoded once, by the first epoch of the first generator
    assert image_cache().hits >= 2 * len(frame)
    set_image_cache(None)  # off: every read decodes, with the same images
    np.testing.assert_array_equal(np.concatenate([classifier[index][0] for index in range(len(classifier))]),
                                  np.concatenate(batches))


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match="budget_bytes"):
        DecodedImageCache(budget_bytes=-1)
    with pytest.raises(ValueError, match="folder"):
        DecodedImageCache(folder=str(tmp_path / "absent"))
    with pytest.raises(TypeError, match="cache"):
        set_image_cache({})
