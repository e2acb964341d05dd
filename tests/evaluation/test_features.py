"""Batched feature extraction against one image at a time."""

import numpy as np
import pytest

from data_generators import DataGeneratorClass, SimCLRAugmentation, read_images
from evaluation.features import extract_features
from tests.conftest import TINY_SIZE


@pytest.mark.parametrize("pooling", ["flatten", "avg", "max"])
def test_batched_features_equal_one_predict_per_image(tiny_backbone, tiny_image_folder, pooling):
    images = DataGeneratorClass(tiny_image_folder, batch_size=5, width=TINY_SIZE, height=TINY_SIZE)
    features, labels = extract_features(tiny_backbone, images, pooling)
    assert features.shape[0] == images.n_images == 18 and labels.tolist() == images.labels.tolist()
    raw = read_images(list(images.source.filenames), TINY_SIZE, TINY_SIZE).astype("float32")
    reduce = {"flatten": lambda m: m.reshape(-1), "avg": lambda m: m.mean(axis=(0, 1)), "max": lambda m: m.max(axis=(0, 1))}
    one_by_one = np.stack([reduce[pooling](tiny_backbone(image[None], training=False).numpy()[0]) for image in raw])
    np.testing.assert_allclose(features, one_by_one, atol=1e-5)


def test_refuses_shuffled_or_augmented_data(tiny_backbone, tiny_image_folder):
    for options in ({"shuffle": True}, {"augmentation": SimCLRAugmentation()}):
        images = DataGeneratorClass(tiny_image_folder, batch_size=5, width=TINY_SIZE, height=TINY_SIZE, **options)
        with pytest.raises(ValueError, match="without shuffle or augmentation"):
            extract_features(tiny_backbone, images)
