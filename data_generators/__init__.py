"""From image files to SimCLR batches: frames, reading, augmentation, generators.

The two generators subclass `keras.utils.PyDataset`, so they (and with them
Keras and TensorFlow) are imported only when first used: reading, splitting
and augmenting images does not pay for importing TensorFlow.
"""

import importlib

from data_generators.augment import SimCLRAugmentation
from data_generators.frames import (
    digits_demo,
    frame_from_folder,
    load_frame,
    read_split_file,
    split_sources,
    stratified_split,
    take_rows,
)
from data_generators.io import atomic_output, read_image, read_images
from data_generators.targets import contrastive_target
from data_generators.visualize import save_augmentation_grid

_IMPORTED_ON_FIRST_USE = {
    "DataGeneratorSimCLR": "data_generators.simclr",
    "DataGeneratorClass": "data_generators.classification",
}

__all__ = [
    "DataGeneratorSimCLR",
    "DataGeneratorClass",
    "SimCLRAugmentation",
    "contrastive_target",
    "frame_from_folder",
    "read_split_file",
    "stratified_split",
    "split_sources",
    "take_rows",
    "load_frame",
    "read_image",
    "read_images",
    "digits_demo",
    "save_augmentation_grid",
    "atomic_output",
]


def __getattr__(name):
    if name in _IMPORTED_ON_FIRST_USE:
        return getattr(importlib.import_module(_IMPORTED_ON_FIRST_USE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
