"""Bad input at every public entry point: a clear error naming what is wrong, and nothing written.

Tests run as root, so unreadable files cannot be made with permission bits;
the cases here are about content and arguments. Images that are merely
unusual (grayscale, RGBA, 16-bit, mixed sizes) are converted, not refused.
"""

import os

import cv2
import keras
import numpy as np
import pandas as pd
import pytest

from data_generators import DataGeneratorClass, DataGeneratorSimCLR, frame_from_folder, read_split_file
from evaluation.benchmark import run_benchmark
from evaluation.cli import main
from evaluation.fractions import label_subset
from simclr_wrap import SimCLR
from tests.conftest import TINY_SIZE, make_tiny_backbone, write_image_folder

TINY_PRETRAIN = ["--size", "16", "--batch-size", "4", "--feat-dims", "16,8", "--schedule", "all:1e-3:1"]
TINY_BENCHMARK = TINY_PRETRAIN + ["--finetune-schedule", "0:1e-3:1", "--runs", "1", "--classifiers", "linear",
                                  "--fractions", "1.0"]


@pytest.fixture
def folder(tmp_path):
    return write_image_folder(tmp_path / "images", n_per_class=8)


def snapshot(root):
    """Every file under `root` with its size, to check that a failed command wrote nothing."""
    return {os.path.join(d, f): os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(root) for f in files}


def run_cli(argv, capsys):
    """Run the CLI; return (exit status, stderr)."""
    status = main(argv)
    return status, capsys.readouterr().err


def spoil(folder, how):
    """Replace one image of `folder` by a broken file; return its path."""
    path = os.path.join(folder, "circle", "circle_0.jpg")
    data = open(path, "rb").read()
    content = {"corrupt": data[:20] + os.urandom(200), "truncated": data[: len(data) // 2],
               "text": b"this is not an image\n"}[how]
    with open(path, "wb") as file:
        file.write(content)
    return path


@pytest.mark.parametrize("how", ["corrupt", "truncated", "text"])
def test_broken_image_files_are_named(folder, how, tmp_path, capsys):
    path = spoil(folder, how)
    frame = frame_from_folder(folder)
    position = int(np.flatnonzero(frame["filename"] == path)[0])
    generator = DataGeneratorClass(frame, batch_size=4, width=TINY_SIZE, height=TINY_SIZE)
    with pytest.raises(ValueError, match="circle_0.jpg"):
        generator[position // 4]
    images, _ = generator[(position // 4 + 1) % len(generator)]  # only the batch holding the file fails
    assert images.shape == (4, TINY_SIZE, TINY_SIZE, 3)
    out = tmp_path / "embeddings.csv"
    status, error = run_cli(["embed", "--data", folder, "--backbone", "small_cnn", "--size", "16", "--out", str(out)],
                            capsys)
    assert status == 2 and "circle_0.jpg" in error and not out.exists()


def test_unusual_images_are_converted_not_refused(tmp_path):
    folder = tmp_path / "unusual"
    os.makedirs(folder / "a")
    rng = np.random.default_rng(0)
    cv2.imwrite(str(folder / "a" / "grey.png"), rng.integers(0, 255, (20, 20), dtype=np.uint8))
    cv2.imwrite(str(folder / "a" / "rgba.png"), rng.integers(0, 255, (16, 16, 4), dtype=np.uint8))
    cv2.imwrite(str(folder / "a" / "deep.png"), rng.integers(0, 65535, (30, 12, 3), dtype=np.uint16))
    cv2.imwrite(str(folder / "a" / "wide.jpg"), rng.integers(0, 255, (10, 40, 3), dtype=np.uint8))
    frame = frame_from_folder(folder)
    images, _ = DataGeneratorClass(frame, batch_size=4, width=TINY_SIZE, height=TINY_SIZE)[0]
    assert images.shape == (4, TINY_SIZE, TINY_SIZE, 3) and images.dtype == np.float32
    assert 0 <= images.min() and images.max() <= 255 and images.std() > 0
    (view_a, view_b), _ = DataGeneratorSimCLR(frame, batch_size=4, width=TINY_SIZE, height=TINY_SIZE)[0]
    assert view_a.shape == view_b.shape == (4, TINY_SIZE, TINY_SIZE, 3)


@pytest.mark.parametrize("content,match", [
    ("filename,label\ncircle/circle_0.jpg,circle\n", "split"),
    ("filename,label,split\ncircle/circle_0.jpg,circle,train\ncircle/circle_0.jpg,circle,train\n", "circle_0.jpg"),
    ("filename,label,split\ncircle/circle_0.jpg,circle,holdout\n", "holdout"),
    ("filename,label,split\ncircle/missing.jpg,circle,train\n", "missing.jpg"),
])
def test_bad_split_files_are_refused_naming_the_fault(folder, content, match, tmp_path, capsys):
    split = os.path.join(folder, "split.csv")
    with open(split, "w") as file:
        file.write(content)
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        DataGeneratorClass(read_split_file(split), width=TINY_SIZE, height=TINY_SIZE)
    out = tmp_path / "run"
    status, error = run_cli(["pretrain", "--data", split, "--out", str(out), *TINY_PRETRAIN], capsys)
    assert status == 2 and match in error and not out.exists()


def test_a_class_without_training_images_is_refused_before_training(folder, tmp_path, capsys):
    frame = frame_from_folder(folder)
    frame["split"] = ["train", "train", "train", "train", "val", "val", "test", "test"] * 3
    frame.loc[frame["class_label"] == "stripes", "split"] = "test"  # "stripes" only in test
    split = tmp_path / "split.csv"
    pd.DataFrame({"filename": frame["filename"], "label": frame["class_label"], "split": frame["split"]}).to_csv(
        split, index=False)
    out = tmp_path / "bench"
    status, error = run_cli(["benchmark", "--data", str(split), "--out", str(out), *TINY_BENCHMARK], capsys)
    assert status == 2 and "class 'stripes' of the test split has no training images" in error
    assert not out.exists()


@pytest.mark.parametrize("fraction", ["0", "-0.2", "1.5", "0.01"])
def test_bad_fractions_are_refused(folder, fraction, tmp_path, capsys):
    out = tmp_path / "bench"
    argv = ["benchmark", "--data", folder, "--out", str(out), *TINY_BENCHMARK[:-2], "--fractions", fraction]
    status, error = run_cli(argv, capsys)
    assert status == 2 and "fraction" in error and not out.exists()
    with pytest.raises(ValueError, match="fraction"):
        label_subset(np.repeat([0, 1, 2], 8), float(fraction), seed=0)


@pytest.mark.parametrize("option,value,match", [
    ("--batch-size", "0", "batch_size"),
    ("--batch-size", "1", "batch_size"),
    ("--temperature", "0", "temperature"),
    ("--temperature", "-0.1", "temperature"),
    ("--schedule", "all:1e-3:-1", "epochs"),
    ("--schedule", "conv9:1e-3:1", "conv9"),
])
def test_bad_simclr_settings_fail_before_anything_is_written(folder, option, value, match, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["pretrain", "--data", folder, "--out", str(out), *TINY_PRETRAIN, option, value]
    status, error = run_cli(argv, capsys)
    assert status == 2 and match in error and not out.exists()


@pytest.mark.parametrize("kwargs,match", [
    ({"batch_size": 0}, "batch_size"),
    ({"batch_size": 1}, "batch_size"),
    ({"temperature": 0.0}, "temperature"),
    ({"temperature": -1.0}, "temperature"),
])
def test_the_wrapper_refuses_bad_arguments(kwargs, match):
    settings = {"batch_size": 4, **kwargs}
    with pytest.raises(ValueError, match=match):
        SimCLR(make_tiny_backbone(), settings.pop("batch_size"), save_path=None, **settings)
    with pytest.raises(ValueError, match="epochs"):
        SimCLR(make_tiny_backbone(), 4, save_path=None).check_schedule([(1, 1e-3, -1)])


def test_a_backbone_with_four_input_channels_is_refused(folder, tmp_path, capsys):
    four = make_tiny_backbone(channels=4, name="four_channels")
    with pytest.raises(ValueError, match="backbone 'four_channels' takes images with 4 channels"):
        SimCLR(four, 4, save_path=None)
    path = tmp_path / "four.keras"
    four.save(path)
    out = tmp_path / "run"
    argv = ["pretrain", "--data", folder, "--backbone", str(path), "--out", str(out), *TINY_PRETRAIN]
    status, error = run_cli(argv, capsys)
    assert status == 2 and "4 channels" in error and not out.exists()


@pytest.mark.parametrize("command", ["pretrain", "benchmark", "embed"])
@pytest.mark.parametrize("where", ["is_a_file", "under_a_file"])
def test_an_output_path_blocked_by_a_file_is_refused(folder, command, where, tmp_path, capsys):
    blocker = tmp_path / "taken"
    blocker.write_text("keep me")
    if command == "embed":  # its output is a file: the blocked cases are a folder in its place, or a file above
        out = blocker / "e.csv" if where == "under_a_file" else tmp_path / "folder.csv"
        if where == "is_a_file":
            out.mkdir()
        argv = ["embed", "--data", folder, "--backbone", "small_cnn", "--size", "16", "--out", str(out)]
    else:
        out = blocker if where == "is_a_file" else blocker / "run"
        argv = [command, "--data", folder, "--out", str(out),
                *(TINY_PRETRAIN if command == "pretrain" else TINY_BENCHMARK)]
    before = snapshot(tmp_path)
    status, error = run_cli(argv, capsys)
    assert status == 2 and ("taken" in error or "folder" in error)
    assert snapshot(tmp_path) == before and blocker.read_text() == "keep me"


def test_generators_refuse_batches_they_cannot_fill(folder):
    frame = frame_from_folder(folder)
    with pytest.raises(ValueError, match="Expected batch_size to be at most the 24 images of subset 'train'. "
                                         "Received: batch_size=40"):
        DataGeneratorSimCLR(frame, batch_size=40, subset="train", width=TINY_SIZE, height=TINY_SIZE)
    with pytest.raises(ValueError, match="batch_size"):
        DataGeneratorSimCLR(frame, batch_size=1, subset="train", width=TINY_SIZE, height=TINY_SIZE)
    with pytest.raises(ValueError, match="batch_size"):
        DataGeneratorClass(frame, batch_size=0, width=TINY_SIZE, height=TINY_SIZE)
    # What the generators are built for: Keras takes them as PyDatasets.
    assert isinstance(DataGeneratorClass(frame, batch_size=8, width=TINY_SIZE, height=TINY_SIZE), keras.utils.PyDataset)
