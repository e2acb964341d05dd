"""benchmarks/tune_trashnet.py on tiny data: the new pretrain API, and a test split that is never read.

The test split's images are replaced by corrupt files (reading one raises)
and its labels shifted to the next class: the tuning must run, and, in a
subprocess with op determinism, log the very same figures as on the
untouched split.
"""

import functools
import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import keras
import pytest

from data_generators import DataGeneratorClass, frame_from_folder, stratified_split
from evaluation.linear import LinearProbe
from tests.conftest import FLOAT32_IN_SUBPROCESS, TINY_CLASSES, make_tiny_backbone, write_image_folder

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
CONFIGS = [{"name": "tiny", "schedule": "all:1e-3:1", "temperature": 0.2, "batch_size": 4, "feat_dims": [16, 8],
            "augmentation": {"flip": False}}]
FRACTIONS = (1.0, 0.5)
# Figures that say when and where, not what.
CIRCUMSTANCES = ("date", "machine", "minutes")


def load_tune_module():
    """benchmarks/tune_trashnet.py as a module (benchmarks/ is not a package)."""
    path = os.path.join(ROOT, "benchmarks", "tune_trashnet.py")
    spec = importlib.util.spec_from_file_location("tune_trashnet", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_parts(root):
    """{"train", "val", "test"} frames of a tiny image folder, split 50/25/25."""
    frame = stratified_split(frame_from_folder(write_image_folder(os.path.join(root, "images"), n_per_class=8)),
                             0.25, 0.25, seed=0)
    return {name: frame[frame["split"] == name].reset_index(drop=True) for name in ("train", "val", "test")}


def unreadable_test_split(parts, root):
    """`parts` whose test images are corrupt files and whose test labels are shifted to the next class."""
    test = parts["test"].copy()
    folder = os.path.join(root, "corrupt")
    os.makedirs(folder, exist_ok=True)
    filenames = []
    for index in range(len(test)):
        filename = os.path.join(folder, f"corrupt_{index}.png")
        with open(filename, "wb") as file:
            file.write(b"not an image: reading it raises")
        filenames.append(filename)
    classes = list(TINY_CLASSES)
    test["filename"] = filenames
    test["class_label"] = [classes[(classes.index(label) + 1) % len(classes)] for label in test["class_label"]]
    return {**parts, "test": test}


def run_tune(parts, out, log=None, seed=0):
    """`tune` with one tiny configuration; linear probes searching 3 values of C on 2 folds (for time)."""
    module = load_tune_module()
    module.LinearProbe = functools.partial(LinearProbe, Cs=3, cv=2)
    keras.utils.set_random_seed(0)
    return module.tune(parts, make_tiny_backbone(), CONFIGS, out, pooling="avg", log=log, fractions=FRACTIONS,
                       seed=seed, verbose=0)


def test_tune_never_reads_the_test_split_and_uses_the_new_pretrain_api(tmp_path):
    parts = unreadable_test_split(tiny_parts(tmp_path), tmp_path)
    with pytest.raises(ValueError, match="could not decode"):  # the corrupt files raise when read
        DataGeneratorClass(parts["test"], width=16, height=16)[0]
    entries = run_tune(parts, str(tmp_path / "out"))
    assert [entry["name"] for entry in entries] == ["before", "tiny"]
    for entry in entries:
        assert 0 <= entry["val_linear_1"] <= 1 and 0 <= entry["val_linear_0.5"] <= 1
        assert entry["backbone"] == "tiny_backbone" and entry["weights"] == ""
    assert entries[1]["policy"] == "float32"  # what precision "auto" meant here (the tests pin float32)
    logged = [json.loads(line) for line in (tmp_path / "out" / "tuning.jsonl").read_text().splitlines()]
    assert logged == entries
    config = json.loads((tmp_path / "out" / "tiny" / "pretrain_config.json").read_text())
    assert config["simclr"]["temperature"] == 0.2 and config["simclr"]["batch_size"] == 4
    assert config["simclr"]["feat_dims_ph"] == [16, 8] and config["simclr"]["pooling"] == "avg"
    assert config["augmentation"]["flip"] is False
    assert config["schedule"] == [[len(make_tiny_backbone().layers), 1e-3, 1]]  # "all" resolved
    # a second call goes on from the log: nothing left to do
    assert run_tune(parts, str(tmp_path / "out")) == []
    # another pretraining seed: the configurations again, in a folder of their own, and not "before"
    again = run_tune(parts, str(tmp_path / "out"), seed=1)
    assert [(entry["name"], entry["seed"]) for entry in again] == [("tiny", 1)]
    assert json.loads((tmp_path / "out" / "tiny_seed1" / "pretrain_config.json").read_text())["seed"] == 1
    assert run_tune(parts, str(tmp_path / "out"), seed=1) == []


def test_tune_rejects_an_unknown_option_before_any_training(tmp_path):
    module = load_tune_module()
    with pytest.raises(ValueError, match="temprature"):
        module.tune(tiny_parts(tmp_path), make_tiny_backbone(), [{"name": "typo", "schedule": "1:1e-3:1",
                                                                  "temprature": 0.2}], str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_an_unreadable_relabelled_test_split_changes_no_logged_figure(tmp_path):
    # In a subprocess: op determinism, once on, stays on for the whole process.
    script = textwrap.dedent(f"""
        import json, sys
        import tensorflow as tf
        sys.path.insert(0, {ROOT!r})
        {FLOAT32_IN_SUBPROCESS}
        tf.config.experimental.enable_op_determinism()
        from tests.test_tune_trashnet import run_tune, tiny_parts, unreadable_test_split
        root = {str(tmp_path)!r}
        parts = tiny_parts(root)
        first = run_tune(parts, root + "/first")
        second = run_tune(unreadable_test_split(parts, root), root + "/second")
        print("RESULT " + json.dumps({{"first": first, "second": second}}))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=ROOT)
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert result.returncode == 0 and lines, result.stderr[-3000:]
    logged = json.loads(lines[-1][len("RESULT "):])
    first, second = logged["first"], logged["second"]
    assert [entry["name"] for entry in first] == [entry["name"] for entry in second] == ["before", "tiny"]
    for mine, theirs in zip(first, second):
        for key in sorted(mine.keys() - set(CIRCUMSTANCES)):
            assert mine[key] == theirs[key], f"{mine['name']}: {key} changed with the test split"


def load_benchmark(name):
    """A script of benchmarks/ as a module, with benchmarks/ importable as its scripts expect."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "benchmarks", f"{name}.py"))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.pop(0)
    return module


def log_entry(name, seed, linear_1, linear_5, backbone="vgg16"):
    return {"name": name, "seed": seed, "backbone": backbone, "date": "2026-11-27", "minutes": 1.0,
            "val_linear_1": linear_1, "val_linear_0.05": linear_5}


def test_over_seeds_averages_each_group_and_compares_it_with_the_baseline():
    entries = [log_entry("a", 0, 0.60, 0.40), log_entry("a", 1, 0.70, 0.50), log_entry("b", 0, 0.66, 0.41),
               log_entry("b", 1, 0.62, 0.47), log_entry("other", 0, 0.1, 0.1)]
    summary = load_tune_module().over_seeds(entries, lambda entry: {"a": "A", "b": "B"}.get(entry["name"]), "A")
    assert set(summary) == {"A", "B"}  # None leaves an entry out
    assert summary["A"]["val_linear_1_values"] == [0.60, 0.70] and summary["B"]["seeds"] == [0, 1]
    assert summary["A"]["val_linear_1_mean"] == pytest.approx(0.65)
    assert summary["B"]["val_linear_0.05_mean"] == pytest.approx(0.44)
    assert summary["B"]["val_linear_1_delta"] == pytest.approx(0.64 - 0.65)
    assert summary["B"]["val_linear_0.05_delta"] == pytest.approx(0.44 - 0.45)
    assert "val_linear_1_delta" not in summary["A"]


def test_bf16_accuracy_sides_follow_the_configurations_precision(tmp_path):
    module = load_benchmark("bf16_accuracy")
    configs = tmp_path / "configs.json"
    configs.write_text(json.dumps([{"name": "v1", "schedule": "x:1e-4:8", "precision": "float32"},
                                   {"name": "v1_bf16", "schedule": "x:1e-4:8", "precision": "mixed_bfloat16"}]))
    log = tmp_path / "log.jsonl"
    entries = [log_entry("before", 0, 0.5, 0.3), log_entry("v1", 0, 0.68, 0.50), log_entry("v1", 1, 0.64, 0.48),
               log_entry("v1_bf16", 0, 0.66, 0.52), log_entry("v1_bf16", 1, 0.64, 0.50),
               log_entry("v1", 0, 0.7, 0.5, backbone="mobilenet_v2")]
    log.write_text("".join(json.dumps(entry) + "\n" for entry in entries))
    summary = module.precision_summary([str(log)], [str(configs)])
    assert set(summary) == {"vgg16", "mobilenet_v2"}
    assert summary["vgg16"]["float32"]["val_linear_1_values"] == [0.68, 0.64]  # "before" is neither side
    assert summary["vgg16"]["mixed_bfloat16"]["val_linear_1_delta"] == pytest.approx(0.65 - 0.66)
    assert summary["vgg16"]["mixed_bfloat16"]["val_linear_0.05_delta"] == pytest.approx(0.51 - 0.49)
    assert set(summary["mobilenet_v2"]) == {"float32"}  # each backbone against its own float32
    configs.write_text(json.dumps([{"name": "v1", "schedule": "x:1e-4:8"}]))
    with pytest.raises(ValueError, match="configuration 'v1' of .*configs.json has no 'precision'"):
        module.precision_summary([str(log)], [str(configs)])
