"""Fixtures of the data_generators tests: images whose pixels tell who they are."""

import numpy as np
import pytest


@pytest.fixture
def numbered_images():
    """20 images of 8x8x3, image i filled with the value 10 * i, and labels i % 3."""
    values = 10 * np.arange(20, dtype=np.uint8)
    images = np.broadcast_to(values[:, None, None, None], (20, 8, 8, 3)).copy()
    return images, np.arange(20) % 3


@pytest.fixture
def no_augmentation():
    """An augmentation that returns the batch unchanged, so batches show their images."""

    def identity(images, rng):
        return np.asarray(images, dtype=np.float32)

    return identity


@pytest.fixture
def numbers_of():
    """A function telling which numbered images a batch holds."""

    def numbers(batch):
        return (np.asarray(batch)[:, 0, 0, 0] / 10).round().astype(int).tolist()

    return numbers
