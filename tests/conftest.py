"""Fixtures shared by every test: a tiny backbone and a tiny image folder."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2
import keras
import numpy as np
import pytest


@pytest.fixture(autouse=True, scope="session")
def float32_hardware():
    """"auto" precision (the default) resolves to float32 in every test, whatever the CPU or GPU running them.

    The tests' references are float32; on a host with bfloat16 instructions
    "auto" would train in bfloat16. Session-wide, so that module fixtures
    see it too; tests of "auto" patch the facts themselves.
    """
    import simclr_wrap.precision

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(simclr_wrap.precision, "hardware_facts", float32_hardware_facts)
        yield


def float32_hardware_facts():
    """The facts of a machine without GPUs or bfloat16 instructions: "auto" resolves to float32."""
    return [], set()


# The first lines of a test's Python subprocess, after its `sys.path` reaches the project: the fixture above does
# not reach another process, and one that trained in bfloat16 would differ from its float32 reference.
FLOAT32_IN_SUBPROCESS = ("import simclr_wrap.precision, tests.conftest; "
                         "simclr_wrap.precision.hardware_facts = tests.conftest.float32_hardware_facts")


SHARED = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "shared"))
TINY_SIZE = 16
TINY_CLASSES = ("circle", "square", "stripes")


def make_tiny_backbone(size=TINY_SIZE, channels=3, name="tiny_backbone"):
    """A functional CNN of a few layers, with a BatchNormalization to test freezing."""
    inputs = keras.Input((size, size, channels), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = keras.layers.MaxPooling2D(name="pool1")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv2")(x)
    x = keras.layers.BatchNormalization(name="bn2")(x)
    x = keras.layers.Activation("relu", name="relu2")(x)
    x = keras.layers.MaxPooling2D(name="pool2")(x)
    return keras.Model(inputs, x, name=name)


@pytest.fixture
def tiny_backbone():
    keras.utils.set_random_seed(0)
    return make_tiny_backbone()


def _draw(class_label, rng, size):
    image = np.full((size, size, 3), rng.integers(0, 80), np.uint8)
    colour = tuple(int(c) for c in rng.integers(120, 256, 3))
    centre = tuple(int(c) for c in rng.integers(size // 3, 2 * size // 3, 2))
    if class_label == "circle":
        cv2.circle(image, centre, size // 4, colour, -1)
    elif class_label == "square":
        half = size // 4
        cv2.rectangle(image, (centre[0] - half, centre[1] - half), (centre[0] + half, centre[1] + half), colour, -1)
    else:
        image[:: 4] = colour
    return image


def write_image_folder(root, n_per_class=6, size=TINY_SIZE, classes=TINY_CLASSES, seed=0):
    """Write one subfolder of JPEG/PNG images per class and return the root."""
    rng = np.random.default_rng(seed)
    for class_label in classes:
        folder = os.path.join(root, class_label)
        os.makedirs(folder, exist_ok=True)
        for i in range(n_per_class):
            suffix = ".png" if i % 2 else ".jpg"
            cv2.imwrite(os.path.join(folder, f"{class_label}_{i}{suffix}"), _draw(class_label, rng, size))
    return str(root)


@pytest.fixture
def tiny_image_folder(tmp_path):
    return write_image_folder(tmp_path / "images")


@pytest.fixture
def shared_dir():
    if not os.path.isdir(SHARED):
        pytest.skip(f"needs the shared data and backbones at {SHARED} (absent in a plain clone)")
    return SHARED
