"""From image files to SimCLR batches: frames, reading, augmentation, generators.

Every name is imported on first use (PEP 562), so that importing one module
of the package, such as `data_generators.checks` or `data_generators.files`
from the model floor, does not import pandas, OpenCV, matplotlib or
TensorFlow.
"""

import importlib

_MODULE_OF = {
    "DataGeneratorSimCLR": "data_generators.simclr",
    "DataGeneratorClass": "data_generators.classification",
    "SimCLRAugmentation": "data_generators.augment",
    "contrastive_target": "data_generators.targets",
    "frame_from_folder": "data_generators.frames",
    "read_split_file": "data_generators.frames",
    "stratified_split": "data_generators.frames",
    "split_sources": "data_generators.frames",
    "take_rows": "data_generators.frames",
    "load_frame": "data_generators.frames",
    "digits_demo": "data_generators.frames",
    "read_image": "data_generators.io",
    "read_images": "data_generators.io",
    "save_augmentation_grid": "data_generators.visualize",
    "atomic_output": "data_generators.files",
    "DecodedImageCache": "data_generators.cache",
    "image_cache": "data_generators.cache",
    "set_image_cache": "data_generators.cache",
}

__all__ = list(_MODULE_OF)


def __getattr__(name):
    if name in _MODULE_OF:
        return getattr(importlib.import_module(_MODULE_OF[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
