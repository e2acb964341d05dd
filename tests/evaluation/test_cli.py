"""The `simclr-wrap pretrain` command on a tiny image folder."""

import json
import os
import shutil

import keras
import numpy as np
import pandas as pd
import pytest

from evaluation.cli import OPTIONS, build_parser, main
from evaluation.pretraining import parse_schedule
from simclr_wrap import SimCLR
from tests.conftest import TINY_CLASSES, make_tiny_backbone

TINY_RUN = ["--size", "16", "--batch-size", "4", "--feat-dims", "16,8", "--schedule", "all:1e-3:1,2:1e-4:1"]


def test_pretrain_on_a_folder_writes_the_adapted_backbone(tiny_image_folder, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["pretrain", "--data", tiny_image_folder, "--out", str(out), *TINY_RUN]) == 0
    written = set(os.listdir(out))
    assert {"base_model.keras", "base_model_round_1.keras", "base_model_round_2.keras", "history.csv",
            "simclr_best.keras", "training_curves.png", "augmentations.png"} <= written
    history = pd.read_csv(out / "history.csv")
    assert list(history["round"]) == [1, 2] and history["val_nt_xent"].notna().all()
    backbone = keras.models.load_model(out / "base_model.keras")
    assert backbone.name == "small_cnn" and backbone.input_shape == (None, 16, 16, 3)
    assert "Done: 2 rounds" in capsys.readouterr().out


def test_pretrain_monitors_reach_the_csv_and_the_plot(tiny_image_folder, tmp_path, monkeypatch):
    probed = []
    from evaluation import monitors

    score = monitors.LinearProbe.score
    monkeypatch.setattr(monitors.LinearProbe, "score", lambda self, *a: probed.append(self.n_labels_) or score(self, *a))
    out = tmp_path / "run"
    run = ["--size", "16", "--batch-size", "4", "--feat-dims", "16,8", "--schedule", "all:1e-3:3"]
    assert main(["pretrain", "--data", tiny_image_folder, "--out", str(out), "--probe-every", "2",
                 "--probe-fraction", "0.5", *run]) == 0
    history = pd.read_csv(out / "history.csv")
    assert history["val_correlation_accuracy"].between(0, 1).all() and history["val_projection_std"].notna().all()
    assert history["val_probe_accuracy"].notna().tolist() == [True, False, True]  # epochs 1 and 3 of 3
    assert probed == [6, 6]  # half of the 12 training images of the 70/15/15 split, stratified
    assert (out / "training_curves.png").stat().st_size > 0


def test_pretrain_reads_a_split_file_and_ignores_test_rows(tiny_image_folder, tmp_path):
    rows = []
    for label in TINY_CLASSES:
        files = sorted(os.listdir(os.path.join(tiny_image_folder, label)))
        splits = ["train"] * 4 + ["val", "test"]
        rows += [(f"{label}/{name}", label, split) for name, split in zip(files, splits)]
    folder = tmp_path / "with_corrupt_test_images"
    shutil.copytree(tiny_image_folder, folder)
    for name, _, split in rows:
        if split == "test":  # SimCLR must not read them: reading one would fail
            (folder / name).write_bytes(b"not an image")
    split_file = folder / "split.csv"
    pd.DataFrame(rows, columns=["filename", "label", "split"]).to_csv(split_file, index=False)
    out = tmp_path / "run"
    args = [a if a != "4" else "3" for a in TINY_RUN]  # 3 val images: batches of 3
    assert main(["pretrain", "--data", str(split_file), "--out", str(out), *args]) == 0
    assert len(pd.read_csv(out / "history.csv")) == 2


@pytest.mark.parametrize("extra,message", [
    (["--schedule", "1:1e-4"], "schedule round 1 is '1:1e-4'"),
    (["--schedule", "99:1e-4:1"], "num_of_unfrozen_layers=99"),
    (["--batch-size", "50"], "batch_size=50"),
    (["--feat-dims", "16,x"], "--feat-dims"),
    (["--temperature", "0"], "Expected temperature to be a number > 0. Received: temperature=0.0"),
    (["--optimizer", "adamm"], "optimizer='adamm'"),
    (["--backbone", "no_such_net"], "no_such_net"),
])
def test_pretrain_reports_bad_input_without_writing(tiny_image_folder, tmp_path, capsys, extra, message):
    out = tmp_path / "run"
    assert main(["pretrain", "--data", tiny_image_folder, "--out", str(out), *TINY_RUN, *extra]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_pretrain_rejects_an_output_path_that_is_a_file(tiny_image_folder, tmp_path, capsys):
    existing = tmp_path / "results.txt"
    existing.write_text("keep me")
    assert main(["pretrain", "--data", tiny_image_folder, "--out", str(existing), *TINY_RUN]) == 2
    assert "is an existing file" in capsys.readouterr().err
    assert existing.read_text() == "keep me"


def test_pretrain_names_a_missing_data_folder(tmp_path, capsys):
    missing = str(tmp_path / "nowhere")
    assert main(["pretrain", "--data", missing, "--out", str(tmp_path / "run"), *TINY_RUN]) == 2
    assert missing in capsys.readouterr().err


def test_help_documents_every_option(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["pretrain", "--help"])
    text = capsys.readouterr().out
    for option in ("--data", "--backbone", "--weights", "--size", "--preprocess", "--pooling", "--batch-size",
                   "--schedule", "--temperature", "--feat-dims", "--color-strength", "--seed", "--out"):
        assert option in text
    assert "default: None" not in text and "{'" not in text  # no Python reprs or dict dumps


def test_help_shows_the_defaults_of_the_objects_configured(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["benchmark", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    defaults = SimCLR.default_config()
    assert f"softmax temperature of NT-Xent (default: {defaults['temperature']};" in text
    assert f"NNCLR's queue of past projections (default: {defaults['queue_size']})" in text
    assert "(default: adam)" in text and "(default: 1:0.0001:5,2:1e-05:5;" in text
    assert "(default: 0:0.001:30,2:0.0001:5; without --data: 0:0.001:30,all:0.0001:5)" in text


def test_every_simclr_option_is_reachable_from_the_command_line():
    # schedule, --out, --size, --seed; the views made in the step: --augment-on with the augmentation flags and --preprocess
    set_elsewhere = {"num_of_unfrozen_layers", "lr", "save_path", "input_shape", "seed", "augmentation", "preprocess"}
    flags = {option.key for option in OPTIONS if option.group == "simclr" and "pretrain" in option.commands}
    assert flags == set(SimCLR.default_config()) - set_elsewhere


def test_pretrain_passes_simclr_options_through_to_the_wrapper(tiny_image_folder, tmp_path):
    out = tmp_path / "run"
    assert main(["pretrain", "--data", tiny_image_folder, "--out", str(out), *TINY_RUN, "--optimizer", "sgd",
                 "--ph-regul", "0.001", "--unfreeze-batchnorm", "--early-stopping-patience", "1",
                 "--temperature", "0.3", "--seed", "5"]) == 0
    config = json.loads((out / "pretrain_config.json").read_text())
    simclr = config["simclr"]
    assert simclr["optimizer"]["class_name"].lower() == "sgd" and simclr["ph_regul"] == 0.001
    assert simclr["unfreeze_batchnorm"] is True and simclr["early_stopping_patience"] == 1
    assert simclr["temperature"] == 0.3 and simclr["seed"] == 5 and config["seed"] == 5
    assert simclr["feat_dims_ph"] == [16, 8] and config["backbone"]["input_shape"] == [16, 16, 3]
    n_layers = len(keras.models.load_model(out / "base_model.keras").layers)
    assert config["schedule"] == [[n_layers, 0.001, 1], [2, 0.0001, 1]]  # "all" resolved to every layer


def test_pretrain_makes_the_same_views_in_the_training_step_as_on_the_host(tiny_image_folder, tmp_path):
    backbone = tmp_path / "backbone.keras"
    make_tiny_backbone().save(backbone)  # the same initial weights in every run
    histories = {}
    for augment_on in ("host", "device", "auto"):
        out = tmp_path / augment_on
        assert main(["pretrain", "--data", tiny_image_folder, "--out", str(out), *TINY_RUN, "--seed", "3",
                     "--backbone", str(backbone), "--augment-on", augment_on, "--preprocess", "caffe"]) == 0
        config = json.loads((out / "pretrain_config.json").read_text())
        in_step = config["simclr"]["augmentation"] is not None
        assert in_step == (augment_on == "device")  # auto: no GPU here, so on the host
        if in_step:
            assert config["simclr"]["augmentation"] == config["augmentation"]
            assert config["simclr"]["preprocess"] == "caffe"
        histories[augment_on] = pd.read_csv(out / "history.csv")
    for key in ("nt_xent", "val_nt_xent"):
        np.testing.assert_allclose(histories["device"][key], histories["host"][key], rtol=1e-3)
        np.testing.assert_allclose(histories["auto"][key], histories["host"][key], rtol=1e-6)


def test_pretrain_with_a_view_bank_trains_its_first_epoch_as_without_one(tiny_image_folder, tmp_path, caplog):
    backbone = tmp_path / "backbone.keras"
    make_tiny_backbone().save(backbone)
    run = ["--size", "16", "--batch-size", "4", "--feat-dims", "16,8", "--schedule", "conv2:1e-3:2", "--seed", "3",
           "--backbone", str(backbone), "--preprocess", "caffe"]
    histories = {}
    for name, extra in (("plain", []), ("bank", ["--view-bank", "2"]),
                        ("bank_in_step", ["--view-bank", "2", "--augment-on", "device"])):
        out = tmp_path / name
        caplog.clear()
        with caplog.at_level("INFO", logger="simclr_wrap.model"):
            assert main(["pretrain", "--data", tiny_image_folder, "--out", str(out), *run, *extra]) == 0
        assert ("a view bank of 2 views per image through the first 3 layers" in caplog.text) == bool(extra)
        assert json.loads((out / "pretrain_config.json").read_text())["simclr"]["view_bank"] == (2 if extra else None)
        histories[name] = pd.read_csv(out / "history.csv")
    for name in ("bank", "bank_in_step"):  # epoch 1 from the bank's views, epoch 2 from new pairs of them
        for key in ("nt_xent", "val_nt_xent"):
            np.testing.assert_allclose(histories[name][key][0], histories["plain"][key][0], rtol=2e-3)
        assert histories[name]["nt_xent"][1] != pytest.approx(histories["plain"]["nt_xent"][1], rel=1e-3)


def test_pretrain_refuses_views_in_the_step_with_a_preprocessing_it_cannot_apply(tiny_image_folder, tmp_path):
    from evaluation.pretraining import pretrain
    from simclr_wrap.backbones import Backbone

    def per_image_standardisation(images):  # mixes pixels: not an affine map of each pixel's channels
        return (images - images.mean()) / (images.std() + 1e-6)

    backbone = Backbone(make_tiny_backbone(), preprocess=per_image_standardisation)
    with pytest.raises(ValueError, match="augment_on='device' needs one of the preprocessings.*augment_on='host'"):
        pretrain(tiny_image_folder, backbone, tmp_path / "run", schedule=[(1, 1e-3, 1)],
                 simclr=dict(batch_size=4, feat_dims_ph=(16, 8)), augment_on="device")
    assert not (tmp_path / "run").exists() or not os.listdir(tmp_path / "run")


def test_cli_choices_are_the_library_s():
    from evaluation import cli, pretraining
    from simclr_wrap.backbones import PREPROCESSING
    from simclr_wrap.heads import POOLINGS

    assert tuple(cli.AUGMENT_ON) == pretraining.AUGMENT_ON
    assert set(cli.POOLING_CHOICES) == set(POOLINGS)
    assert set(cli.PREPROCESS_CHOICES) == {"auto", *PREPROCESSING}


def test_parse_schedule_accepts_counts_names_and_all():
    assert parse_schedule("2:1e-4:5, block5_conv1:1e-5:3,all:1e-6:1") == [
        (2, 1e-4, 5), ("block5_conv1", 1e-5, 3), ("all", 1e-6, 1)]
    with pytest.raises(ValueError, match="epochs an int"):
        parse_schedule("2:1e-4:five")


def test_pretrain_without_data_runs_the_offline_digits_demo(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["pretrain", "--schedule", "all:1e-3:1", "--out", str(out)]) == 0
    assert "offline demo" in capsys.readouterr().out
    assert keras.models.load_model(out / "base_model.keras").input_shape == (None, 32, 32, 3)
    assert np.isfinite(pd.read_csv(out / "history.csv")["val_nt_xent"]).all()


def test_pretrain_resume_of_a_finished_run_trains_nothing_more(tiny_image_folder, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["pretrain", "--data", tiny_image_folder, "--out", str(out), "--resume", *TINY_RUN]
    assert main(argv) == 0
    first = pd.read_csv(out / "history.csv")
    state = (out / "resume" / "state.json").read_text()
    assert main(argv) == 0
    assert "Done: 2 rounds" in capsys.readouterr().out
    pd.testing.assert_frame_equal(pd.read_csv(out / "history.csv"), first)  # no epoch was run again
    assert (out / "resume" / "state.json").read_text() == state


def test_pretrain_mirrored_trains_under_a_mirrored_strategy(tiny_image_folder, tmp_path, capsys):
    # This machine has one device, so one replica; tests/simclr_wrap/test_distribute.py checks two.
    out = tmp_path / "run"
    assert main(["pretrain", "--data", tiny_image_folder, "--out", str(out), "--mirrored", *TINY_RUN]) == 0
    printed = capsys.readouterr().out
    assert "MirroredStrategy over 1 device(s)" in printed and "Done: 2 rounds" in printed
    assert keras.models.load_model(out / "base_model.keras").name == "small_cnn"


@pytest.mark.parametrize("tf_config, message", [
    (None, "TF_CONFIG environment variable, which is not set"),
    ("{not json", "TF_CONFIG is not valid JSON"),
    ('{"cluster": {"worker": ["localhost:1"]}, "task": {"type": "worker", "index": 3}}', "this worker's task"),
])
def test_pretrain_multi_worker_needs_a_valid_tf_config(tiny_image_folder, tmp_path, capsys, monkeypatch, tf_config,
                                                         message):
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    out = tmp_path / "run"
    assert main(["pretrain", "--data", tiny_image_folder, "--out", str(out), "--multi-worker", *TINY_RUN]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_pretrain_on_two_workers_trains_as_one_process(tiny_image_folder, tmp_path):
    from tests.simclr_wrap.test_distribute import reports_of, start_two_local_workers

    outs = [str(tmp_path / f"worker_{index}") for index in range(2)]  # as on two machines
    backbone = str(tmp_path / "backbone.keras")  # the same weights in every process
    keras.utils.set_random_seed(0)
    make_tiny_backbone().save(backbone)
    # Batches of 4: each worker reads and augments its 2 images of every batch.
    command = ["pretrain", "--data", tiny_image_folder, "--backbone", backbone, *TINY_RUN, "--multi-worker"]
    reports = reports_of(start_two_local_workers(f"main({command!r} + ['--out', {outs!r}[worker]])",
                                                 imports="from evaluation.cli import main"))
    assert reports == [0, 0], reports
    assert main(["pretrain", "--data", tiny_image_folder, "--backbone", backbone, "--out", str(tmp_path / "one"),
                 *TINY_RUN]) == 0
    assert not os.path.exists(outs[1])  # only the chief writes
    two, one = (pd.read_csv(os.path.join(folder, "history.csv")) for folder in (outs[0], tmp_path / "one"))
    for key in ("nt_xent", "val_nt_xent", "contrastive_accuracy", "val_contrastive_accuracy"):
        np.testing.assert_allclose(two[key], one[key], atol=1e-5, err_msg=key)
    assert {"base_model.keras", "simclr_best.keras", "pretrain_config.json"} <= set(os.listdir(outs[0]))


def test_pretrain_trains_in_the_precision_given_and_writes_a_float32_backbone(tiny_image_folder, tmp_path, capsys):
    from simclr_wrap.precision import PRECISIONS

    option = next(option for option in OPTIONS if option.key == "precision")
    assert tuple(option.choices) == PRECISIONS  # written out in the CLI, which imports no TensorFlow for --help
    with pytest.raises(SystemExit):
        build_parser().parse_args(["pretrain", "--help"])
    assert "--precision {float32,mixed_bfloat16,mixed_float16,auto}" in capsys.readouterr().out
    out = tmp_path / "run"
    assert main(["pretrain", "--data", tiny_image_folder, "--out", str(out), *TINY_RUN,
                 "--precision", "mixed_bfloat16"]) == 0
    assert json.loads((out / "pretrain_config.json").read_text())["simclr"]["precision"] == "mixed_bfloat16"
    backbone = keras.models.load_model(out / "base_model.keras")  # trained in bfloat16, handed back as given
    assert {layer.dtype_policy.name for layer in backbone.layers} == {"float32"}


@pytest.mark.parametrize("precision, policy", [([], "mixed_bfloat16"), (["--precision", "float32"], "float32")])
def test_pretrain_trains_in_bfloat16_by_default_where_the_hardware_has_it(tiny_image_folder, tmp_path, monkeypatch,
                                                                         precision, policy):
    import simclr_wrap.precision

    monkeypatch.setattr(simclr_wrap.precision, "hardware_facts", lambda: ([], {"avx512_bf16"}))
    out = tmp_path / "run"
    assert main(["pretrain", "--data", tiny_image_folder, "--out", str(out), *TINY_RUN, *precision]) == 0
    config = json.loads((out / "pretrain_config.json").read_text())
    assert (config["simclr"]["precision"], config["policy"]) == (precision[-1] if precision else "auto", policy)


def _without_tensorflow(monkeypatch):
    """Make `import tensorflow` fail as where it is not installed (Keras on JAX or PyTorch)."""
    import builtins
    import sys
    from importlib import metadata

    real_import, real_version = builtins.__import__, metadata.version

    def import_(name, *args, **kwargs):
        if name.split(".")[0] == "tensorflow":
            raise ImportError("No module named 'tensorflow'")
        return real_import(name, *args, **kwargs)

    def version(package):
        if package == "tensorflow":
            raise metadata.PackageNotFoundError(package)
        return real_version(package)

    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)
    monkeypatch.setattr(builtins, "__import__", import_)
    monkeypatch.setattr(metadata, "version", version)


def test_the_cli_starts_where_tensorflow_is_not_installed(monkeypatch, capsys):
    _without_tensorflow(monkeypatch)
    assert main(["benchmark", "--help"]) == 0
    assert "--classifiers" in capsys.readouterr().out


def test_results_name_the_keras_backend_where_tensorflow_is_not_installed(monkeypatch):
    from evaluation.report import versions

    _without_tensorflow(monkeypatch)
    found = versions()
    assert found["tensorflow"] is None and found["keras"] == keras.__version__
    assert found["keras_backend"] == keras.backend.backend()
