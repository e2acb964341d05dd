"""The offline demo: a small CNN pretrained on digits 0-4, adapted to digits 5-9."""

import logging

import keras
import numpy as np

from data_generators import digits_demo
from simclr_wrap.backbones import small_cnn

logger = logging.getLogger(__name__)

# Digits are 8x8 upsampled and not mirror-symmetric: small crops leave blobs
# and flips change the digit, so the demo's views are milder than SimCLR's.
DEMO_AUGMENTATION = {"crop_area": (0.35, 1.0), "flip": False, "blur": False, "noise_std": 10.0}


def digits_story(size=32, seed=0, epochs=2):
    """The real story in miniature: a labelled source domain, then an unlabelled target.

    A `small_cnn` is trained with labels on scikit-learn's digits 0-4 (the
    "pretrained backbone" a user would bring); the digits 5-9 are the user's
    domain data set. Everything is bundled with scikit-learn: no network.

    Args:
        size: image side in pixels.
        seed: seed of the supervised pretraining and the image order.
        epochs: epochs of supervised pretraining on digits 0-4.

    Returns:
        `(backbone, (images, labels))`: the pretrained backbone (expects
        x/255) and the uint8 images and int labels of digits 5-9.
    """
    images, labels = digits_demo(size=size, seed=seed)
    source = labels < 5
    keras.utils.set_random_seed(seed)  # Keras layers draw their initial weights from it
    backbone = small_cnn((size, size, 3))
    classifier = keras.Sequential([
        backbone, keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(5, activation="softmax"),
    ])
    classifier.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    history = classifier.fit(images[source] / np.float32(255), labels[source], epochs=epochs, batch_size=64, verbose=0)
    logger.info("small_cnn pretrained with labels on digits 0-4: training accuracy %.3f",
                history.history["accuracy"][-1])
    return backbone, (images[~source], labels[~source])
