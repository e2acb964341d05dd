"""A new user's first hour (issue 11): each case through the command line where the user met it.

Every failure is an exit status 2 with a message naming the culprit, no traceback, and `--out`
as it was.
"""

import json
import logging
import os

import keras
import numpy as np
import pandas as pd
import pytest

from data_generators import DataGeneratorSimCLR, frame_from_folder, read_images
from evaluation.cli import main
from simclr_wrap import SimCLR
from simclr_wrap.backbones import PREPROCESSING, load_backbone
from simclr_wrap.callbacks import read_model_metadata
from tests.conftest import make_tiny_backbone, write_image_folder

TINY = ["--backbone", "small_cnn", "--size", "16", "--batch-size", "4", "--feat-dims", "16,8",
        "--schedule", "all:1e-3:1"]
BENCHMARK = [*TINY, "--finetune-schedule", "0:1e-3:1", "--fractions", "1.0", "--runs", "1",
             "--classifiers", "linear", "--pooling", "avg"]


def run(argv, capsys):
    status = main(argv)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return status, captured.err


@pytest.fixture
def folder(tmp_path):
    return write_image_folder(tmp_path / "images", n_per_class=8)


def test_a_truncated_image_deep_in_the_data_is_named_before_training(folder, tmp_path, capsys):
    frame = frame_from_folder(folder)
    broken = frame["filename"].iloc[-1]  # not in the first batch
    with open(broken, "r+b") as file:
        file.truncate(os.path.getsize(broken) // 2)
    out = tmp_path / "run"
    status, error = run(["pretrain", "--data", folder, "--out", str(out), *TINY], capsys)
    assert status == 2 and os.path.basename(broken) in error
    assert not out.exists()


def test_a_file_that_turns_bad_during_a_run_gives_the_message_naming_it(folder, tmp_path, capsys, monkeypatch):
    from data_generators.sources import ImageSource

    monkeypatch.setattr(ImageSource, "check_decodable", lambda self: None)  # as if it broke after the check
    broken = frame_from_folder(folder)["filename"].iloc[-1]
    open(broken, "wb").write(b"not an image any more")
    out = tmp_path / "run"
    status, error = run(["pretrain", "--data", folder, "--out", str(out), *TINY], capsys)
    assert status == 2 and os.path.basename(broken) in error and "decode" in error
    assert not out.exists()


def test_a_keras_backbone_keeps_its_own_size_and_preprocessing(folder, tmp_path, capsys):
    out = tmp_path / "run"
    assert run(["pretrain", "--data", folder, "--out", str(out), *TINY[2:], "--backbone", "small_cnn",
                "--size", "32", "--preprocess", "tf", "--pooling", "max"], capsys)[0] == 0
    adapted = out / "base_model.keras"
    assert read_model_metadata(adapted) == {"input_shape": [32, 32, 3], "pooling": "max", "preprocess": "tf",
                                            "source": "small_cnn"}
    model, preprocess = load_backbone(str(adapted))
    assert preprocess is PREPROCESSING["tf"] and model.input_shape == (None, 32, 32, 3)
    embedded = tmp_path / "e.npy"
    assert run(["embed", "--data", folder, "--backbone", str(adapted), "--out", str(embedded)], capsys)[0] == 0
    images = read_images(list(frame_from_folder(folder)["filename"]), 32, 32).astype("float32")
    expected = keras.layers.GlobalMaxPooling2D()(model(PREPROCESSING["tf"](images))).numpy()
    np.testing.assert_allclose(np.load(embedded), expected, rtol=1e-4, atol=1e-5)  # [-1, 1], max-pooled, 32 px


def test_a_non_square_keras_model_pretrains_at_its_own_size(folder, tmp_path, capsys):
    inputs = keras.Input((12, 20, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(4, 3, activation="relu")(inputs), name="wide")
    path = tmp_path / "wide.keras"
    model.save(path)
    out = tmp_path / "run"
    assert run(["pretrain", "--data", folder, "--out", str(out), "--backbone", str(path), "--batch-size", "4",
                "--feat-dims", "8,4", "--schedule", "1:1e-3:1", "--pooling", "avg"], capsys)[0] == 0
    assert keras.models.load_model(out / "base_model.keras").input_shape == (None, 12, 20, 3)


def test_a_second_run_into_the_same_out_is_refused_unless_overwrite(folder, tmp_path, capsys):
    out = tmp_path / "run"
    assert run(["pretrain", "--data", folder, "--out", str(out), *TINY[:-1], "all:1e-3:1,2:1e-4:1"], capsys)[0] == 0
    first = sorted(os.listdir(out))
    status, error = run(["pretrain", "--data", folder, "--out", str(out), *TINY], capsys)
    assert status == 2 and "exists and is not empty" in error and "--overwrite" in error
    assert sorted(os.listdir(out)) == first
    assert run(["pretrain", "--data", folder, "--out", str(out), *TINY, "--overwrite"], capsys)[0] == 0
    assert "base_model_round_2.keras" not in os.listdir(out)  # nothing stale from the 2-round run
    assert list(pd.read_csv(out / "history.csv")["round"]) == [1]
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".run.")]  # no staging left behind


def test_a_failed_run_leaves_no_partial_output(folder, tmp_path, capsys, monkeypatch):
    from simclr_wrap import model

    def fail(*args, **kwargs):
        raise RuntimeError("stopped in the middle")

    monkeypatch.setattr(model.SimCLR, "_end_round", fail)
    out = tmp_path / "run"
    status, error = run(["pretrain", "--data", folder, "--out", str(out), *TINY], capsys)
    assert status == 2 and "stopped in the middle" in error
    assert not out.exists() and os.listdir(tmp_path) == ["images"]


def test_an_adapted_file_that_is_no_model_fails_before_the_benchmark_starts(folder, tmp_path, capsys):
    fake = tmp_path / "notmodel.keras"
    fake.write_text("not a model")
    out = tmp_path / "bench"
    status, error = run(["benchmark", "--data", folder, "--out", str(out), *BENCHMARK, "--adapted", str(fake)],
                        capsys)
    assert status == 2 and "notmodel.keras" in error and "could not be loaded" in error
    assert not out.exists()


def test_one_class_is_refused_before_any_work(tmp_path, capsys):
    folder = write_image_folder(tmp_path / "one", n_per_class=12, classes=("circle",))
    out = tmp_path / "bench"
    status, error = run(["benchmark", "--data", folder, "--out", str(out), *BENCHMARK], capsys)
    assert status == 2 and "at least 2 classes" in error and "'circle'" in error
    assert not out.exists()


def test_the_split_says_when_it_grows_for_a_batch_and_names_the_largest_batch(tmp_path, capsys, caplog):
    folder = write_image_folder(tmp_path / "images", n_per_class=40)  # 120 images
    out = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="evaluation"):
        assert run(["pretrain", "--data", folder, "--out", str(out), *TINY, "--batch-size", "40"], capsys)[0] == 0
    assert "validation split is raised from 15 % to 33 %" in caplog.text
    status, error = run(["pretrain", "--data", folder, "--out", str(tmp_path / "b"), *TINY, "--batch-size", "90"],
                        capsys)
    assert status == 2 and "Expected batch_size to be at most 51" in error and "batch_size=90" in error


def test_a_generator_of_another_size_is_refused_before_fit(folder, tmp_path):
    backbone = make_tiny_backbone(size=16)
    simclr = SimCLR(backbone, 4, feat_dims_ph=(8, 4), save_path=tmp_path / "s")
    frame = frame_from_folder(folder)
    wrong = DataGeneratorSimCLR(frame, batch_size=4, width=24, height=24, seed=0)
    with pytest.raises(ValueError, match=r"data_train gives views of shape .*24, 24, 3.* takes images of shape "
                                         r"\(16, 16, 3\): build the generator with width=16"):
        simclr.train(wrong, None, epochs=1, verbose=0)
    assert not (tmp_path / "s" / "history.csv").exists()


def test_a_random_backbone_with_frozen_batchnorm_is_warned_about(folder, tmp_path, capsys, caplog):
    # A randomly initialised MobileNetV2 in inference mode squashes its features to about 1e-11.
    mobilenet = ["--backbone", "mobilenet_v2", "--size", "32", "--batch-size", "4", "--feat-dims", "8,4",
                 "--schedule", "1:1e-3:0", "--pooling", "avg"]
    with caplog.at_level(logging.WARNING):
        assert run(["pretrain", "--data", folder, "--out", str(tmp_path / "a"), *mobilenet], capsys)[0] == 0
    assert "features that barely vary" in caplog.text and "--unfreeze-batchnorm" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert run(["pretrain", "--data", folder, "--out", str(tmp_path / "b"), *mobilenet, "--unfreeze-batchnorm"],
                   capsys)[0] == 0
    assert "barely vary" not in caplog.text
    assert json.loads((tmp_path / "b" / "pretrain_config.json").read_text())["simclr"]["unfreeze_batchnorm"]
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # small_cnn's features vary: no warning, though it is random too
        assert run(["pretrain", "--data", folder, "--out", str(tmp_path / "c"), *TINY], capsys)[0] == 0
    assert "barely vary" not in caplog.text


def test_the_default_first_setting_does_not_warn_when_a_schedule_replaces_it(caplog):
    backbone = keras.applications.MobileNetV2(weights=None, include_top=False, input_shape=(32, 32, 3), alpha=0.35)
    with caplog.at_level(logging.WARNING, logger="simclr_wrap"):
        SimCLR(backbone, 4, feat_dims_ph=(8, 4), pooling="avg", save_path=None)
    assert "makes no new layer" not in caplog.text


def test_tensorboard_logs_every_round_or_says_what_to_install(folder, tmp_path, capsys):
    import importlib.util

    logs, out = tmp_path / "tb", tmp_path / "run"
    argv = ["pretrain", "--data", folder, "--out", str(out), *TINY, "--tensorboard", str(logs)]
    if importlib.util.find_spec("tensorboard") is None:
        status, error = run(argv, capsys)
        assert status == 2 and "pip install 'simclr-wrap[tensorboard]'" in error and not out.exists()
    else:
        assert run(argv, capsys)[0] == 0
        assert any("events.out.tfevents" in name for _, _, files in os.walk(logs) for name in files)


def test_the_console_says_each_thing_once_and_no_retracing(folder, tmp_path, capsys, caplog):
    with caplog.at_level(logging.INFO):
        assert run(["pretrain", "--data", folder, "--out", str(tmp_path / "run"), *TINY], capsys)[0] == 0
    assert caplog.text.count("found 24 images of 3 classes") == 1
    assert "retracing" not in caplog.text.lower()
