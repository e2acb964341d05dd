"""The package's public names, and that importing it does not import TensorFlow."""

import os
import subprocess
import sys

import data_generators

# The names the other packages import: renaming one breaks them.
PUBLIC_NAMES = set(
    """DataGeneratorSimCLR DataGeneratorClass SimCLRAugmentation contrastive_target frame_from_folder
    read_split_file stratified_split load_frame read_image read_images digits_demo save_augmentation_grid
    atomic_output split_sources take_rows DecodedImageCache image_cache set_image_cache""".split()
)


def test_public_names_are_exported():
    assert set(data_generators.__all__) == PUBLIC_NAMES
    assert all(callable(getattr(data_generators, name)) for name in PUBLIC_NAMES)
    assert PUBLIC_NAMES <= set(dir(data_generators))


def test_import_does_not_load_tensorflow_or_the_other_packages():
    code = (
        "import sys, data_generators\n"
        "loaded = [m for m in ('tensorflow', 'keras', 'simclr_wrap', 'evaluation') if m in sys.modules]\n"
        "print(loaded)\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(data_generators.__file__)))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert result.stdout.strip() == "[]"
