"""The test split selects nothing: tests that fail when it leaks into training or model selection.

Two kinds of test, on tiny array data split by hand ({"train", "val",
"test"} parts, so the split is under the test's control):

- Spies (in process, exact): every fine-tuned classifier, linear and kNN
  probe and SimCLR generator is recorded with what it was given, and each
  image is identified by its bytes: fine-tuning validates on the val split
  and trains on a labelled subset of the training split, the probes fit on
  rows of the training features, SimCLR never holds or reads a test image.
- Counterfactuals (in a subprocess with op determinism, so that two runs
  are equal to the bit): the test split's images replaced and its labels
  shifted (class c becomes c + 1 mod K) change nothing but the test
  accuracies (every record's `val_accuracy`, `selected` and `n_labels`,
  the adapted backbone's weights and SimCLR's history stay equal).
"""

import functools
import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pandas as pd
import pytest

import evaluation.benchmark as benchmark_module
import evaluation.pretraining as pretraining_module
from data_generators.sources import ImageSource
from evaluation.benchmark import CLASSIFIERS, run_benchmark
from evaluation.distill import DistilledClassifier
from evaluation.finetune import FineTunedClassifier
from evaluation.fractions import label_subset
from evaluation.knn import KNNProbe
from evaluation.linear import LinearProbe
from evaluation.pretraining import pretrain
from evaluation.report import write_results
from simclr_wrap.backbones import Backbone
from tests.conftest import FLOAT32_IN_SUBPROCESS, TINY_CLASSES, TINY_SIZE, _draw, make_tiny_backbone

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SPLITS = ("train", "val", "test")
PER_CLASS = {"train": 8, "val": 4, "test": 4}
SEED = 0
FRACTIONS, RUNS = (1.0, 0.5), 2
FAST = dict(schedule=[("all", 1e-3, 1)], simclr=dict(pooling="avg", batch_size=4, feat_dims_ph=(16, 8)),
            classifiers=CLASSIFIERS,
            finetune=dict(schedule=[(0, 1e-3, 1), ("all", 1e-4, 1)]), knn=dict(k=3, weights="uniform"), seed=SEED)
PRETRAIN = dict(schedule=[("all", 1e-3, 1)], simclr=dict(pooling="avg", batch_size=4, feat_dims_ph=(16, 8)),
                probe=dict(every=1, fraction=0.5), seed=SEED, verbose=0)
# What may differ when only the test split changes.
TEST_FIGURES = ("accuracy", "top5", "seconds")


# Data


def tiny_parts(seed=0):
    """{"train", "val", "test"}: (uint8 images, class names) of three drawn classes, every image distinct."""
    rng = np.random.default_rng(seed)
    parts = {}
    for name in SPLITS:
        labels = np.repeat(np.array(TINY_CLASSES), PER_CLASS[name])
        images = np.stack([_draw(label, rng, TINY_SIZE) for label in labels])
        parts[name] = (images, labels)
    return parts


def other_test_split(parts, seed=1):
    """`parts` with other test images, their labels shifted to the next class (c -> c + 1 mod K)."""
    images, labels = tiny_parts(seed)["test"]
    classes = list(TINY_CLASSES)
    shifted = np.array([classes[(classes.index(label) + 1) % len(classes)] for label in labels])
    return {**parts, "test": (images, shifted)}


class Catalogue:
    """Which split, and which image of it, each image is (looked up by its bytes)."""

    def __init__(self, parts):
        self.parts = parts
        self.where = {}
        for name, (images, _) in parts.items():
            for index, image in enumerate(images):
                self.where[self.key(image)] = (name, index)
        assert len(self.where) == sum(len(images) for images, _ in parts.values()), "tiny images must be distinct"

    @staticmethod
    def key(image):
        return np.asarray(image, np.float32).astype(np.uint8).tobytes()

    def identify(self, images):
        """(split, index) of each image; ("unknown", -1) for an image of no split."""
        return [self.where.get(self.key(image), ("unknown", -1)) for image in images]

    def source(self, generator):
        """(split, index) of every image a generator holds, in its dataset order."""
        return self.identify(generator.source.read(range(generator.source.n_images)))

    def splits(self, generator):
        return {name for name, _ in self.source(generator)}

    def is_split(self, generator, name):
        """Whether `generator` holds exactly the images of split `name`, in order, with their labels."""
        images, labels = self.parts[name]
        held = self.source(generator)
        if held != [(name, index) for index in range(len(images))]:
            return False
        return np.asarray(generator.source.labels).tolist() == labels.tolist()


def expected_subsets(parts):
    """The labelled subsets of the training split that the benchmark's cells may use."""
    labels = parts["train"][1]
    return {tuple(label_subset(labels, fraction, seed=SEED + run).tolist())
            for fraction in FRACTIONS for run in range(RUNS)}


def quicker_benchmark(setattr):
    """Make the benchmark's linear probes search 3 values of C on 2 folds, and skip its plots.

    The probe's search is most of a tiny benchmark's time (50 fits per
    probe); what is tested here is what it is fitted on, not how.
    """
    setattr(benchmark_module, "LinearProbe", functools.partial(LinearProbe, Cs=3, cv=2))
    setattr(benchmark_module, "write_benchmark_outputs",
            lambda out, records, settings, durations, versions, *args: write_results(out, records, settings,
                                                                                      durations, versions))


# Spies


class Spy:
    """What the benchmark's classifiers and SimCLR were given, recorded by monkeypatching."""

    def __init__(self, monkeypatch, catalogue):
        self.catalogue = catalogue
        self.finetune_fits, self.finetune_tests, self.probe_fits, self.extractions = [], [], [], []
        self.distill_fits = []
        self.simclr_generators, self.online_probes, self.read_in_pretrain = [], [], []
        self._in_pretrain = False
        spy = self

        # Stubs: what fine-tuning is given is checked here, how it trains in test_finetune.
        def fit(classifier, base_model, train_data, val_data, callbacks=None, prefix_activations=None):
            spy.finetune_fits.append((train_data, val_data))
            classifier.val_accuracy_, classifier.selected_, classifier.model_ = 0.5, {"round": 1}, None
            classifier.classes_ = list(train_data.classes)
            return classifier

        def evaluate(classifier, test_data, prefix_activations=None):
            spy.finetune_tests.append(test_data)
            return {"accuracy": 0.5, "val_accuracy": classifier.val_accuracy_, "selected": dict(classifier.selected_)}

        def distill(distilled, base_model, teacher, train_data, labelled, val_data, **kwargs):
            spy.distill_fits.append((teacher, train_data, np.array(labelled), val_data))
            distilled.student_ = teacher  # whose stubbed evaluate records the test data
            return distilled

        monkeypatch.setattr(FineTunedClassifier, "fit", fit)
        monkeypatch.setattr(DistilledClassifier, "fit", distill)
        monkeypatch.setattr(FineTunedClassifier, "evaluate", evaluate)

        for probe in (LinearProbe, KNNProbe):
            def probe_fit(self, features, labels, real=probe.fit, kind=probe.__name__):
                spy.probe_fits.append((kind, np.array(features), np.array(labels)))
                return real(self, features, labels)

            monkeypatch.setattr(probe, "fit", probe_fit)

        real_extract = benchmark_module.extract_features

        def extract_features(base_model, data, *args, **kwargs):
            features, labels = real_extract(base_model, data, *args, **kwargs)
            spy.extractions.append((data, features, labels))
            return features, labels

        monkeypatch.setattr(benchmark_module, "extract_features", extract_features)

        class RecordedSimCLRGenerator(pretraining_module.DataGeneratorSimCLR):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                spy.simclr_generators.append(self)

        monkeypatch.setattr(pretraining_module, "DataGeneratorSimCLR", RecordedSimCLRGenerator)

        real_probe = pretraining_module.OnlineLinearProbe

        def online_probe(*args, **kwargs):
            probe = real_probe(*args, **kwargs)
            spy.online_probes.append(probe)
            return probe

        monkeypatch.setattr(pretraining_module, "OnlineLinearProbe", online_probe)

        real_read = ImageSource.read

        def read(source, indices):
            images = real_read(source, indices)
            if spy._in_pretrain:
                spy.read_in_pretrain.extend(catalogue.identify(images))
            return images

        monkeypatch.setattr(ImageSource, "read", read)
        real_pretrain = benchmark_module.pretrain

        def pretrain_spied(*args, **kwargs):
            spy._in_pretrain = True
            try:
                return real_pretrain(*args, **kwargs)
            finally:
                spy._in_pretrain = False

        monkeypatch.setattr(benchmark_module, "pretrain", pretrain_spied)
        self.pretrain = pretrain_spied


@pytest.fixture(scope="module")
def spied_benchmark(tmp_path_factory):
    """One benchmark run (SimCLR included; fine-tuning stubbed) with every input recorded."""
    parts = tiny_parts()
    with pytest.MonkeyPatch.context() as monkeypatch:
        spy = Spy(monkeypatch, Catalogue(parts))
        quicker_benchmark(monkeypatch.setattr)
        keras.utils.set_random_seed(0)
        out = tmp_path_factory.mktemp("spied")
        records = run_benchmark(parts, make_tiny_backbone(), out, fractions=FRACTIONS, runs=RUNS, verbose=0, **FAST)
    return parts, spy, records


def test_fine_tuning_validates_on_the_val_split_and_trains_on_a_labelled_training_subset(spied_benchmark):
    parts, spy, records = spied_benchmark
    catalogue, subsets = spy.catalogue, expected_subsets(parts)
    assert len(spy.finetune_fits) == 2 * len(FRACTIONS) * RUNS  # before and after
    for train, val in spy.finetune_fits:
        # early stopping and the choice of round see the val split, nothing else
        assert catalogue.is_split(val, "val"), f"fine-tuning validated on {sorted(catalogue.splits(val))}"
        held = catalogue.source(train)
        assert {name for name, _ in held} == {"train"}, f"fine-tuning trained on {sorted(catalogue.splits(train))}"
        indices = [index for _, index in held]
        assert tuple(indices) in subsets  # a label subset of a cell, in order
        assert np.asarray(train.classes)[train.labels].tolist() == parts["train"][1][indices].tolist()
    assert all(catalogue.is_split(test, "test") for test in spy.finetune_tests)
    sizes = [len(label_subset(parts["train"][1], fraction, seed=SEED + run)) for fraction in FRACTIONS
             for run in range(RUNS)]
    assert sorted(records.loc[records["classifier"] == "fine_tuned", "n_labels"]) == sorted(sizes * 2)


def test_distillation_reads_the_labels_of_its_cells_subset_only_and_validates_on_val(spied_benchmark):
    parts, spy, records = spied_benchmark
    catalogue, subsets = spy.catalogue, expected_subsets(parts)
    # A teacher per cell, the fine-tuned classifier of that cell (no second fine-tuning, counted above).
    assert len(spy.distill_fits) == len(spy.finetune_fits)
    for (teacher, train, labelled, val), (teacher_train, _) in zip(spy.distill_fits, spy.finetune_fits):
        assert catalogue.is_split(val, "val"), f"the student validated on {sorted(catalogue.splits(val))}"
        assert catalogue.is_split(train, "train"), f"the student trained on {sorted(catalogue.splits(train))}"
        assert tuple(labelled.tolist()) in subsets  # the labels it may read: the cell's subset
        assert [index for _, index in catalogue.source(teacher_train)] == labelled.tolist()
    assert len(spy.finetune_tests) == 2 * len(spy.finetune_fits)  # fine-tuned and distilled, each read test once
    assert all(catalogue.is_split(test, "test") for test in spy.finetune_tests)


def test_probes_fit_on_rows_of_the_training_features_of_the_labelled_subset(spied_benchmark):
    parts, spy, _ = spied_benchmark
    catalogue, subsets = spy.catalogue, expected_subsets(parts)
    by_split = {name: [] for name in (*SPLITS, "unknown")}
    for data, features, labels in spy.extractions:
        names = catalogue.splits(data)
        by_split[names.pop() if len(names) == 1 else "unknown"].append((features, labels))
        assert len(names) == 0, "features were extracted from a generator mixing splits"
    assert len(by_split["train"]) == 2 and not by_split["unknown"]  # before and after
    kinds = [kind for kind, _, _ in spy.probe_fits]
    # Before and after, each cell once, but at 100 % the runs after the first share its probes (same labels).
    assert kinds.count("LinearProbe") == kinds.count("KNNProbe") == 2 * (len(FRACTIONS) * RUNS - (RUNS - 1))
    for kind, features, labels in spy.probe_fits:
        rows = {}
        for train_features, train_labels in by_split["train"]:
            rows = {row.tobytes(): index for index, row in enumerate(train_features)}
            if features.size and features[0].tobytes() in rows:
                break
        indices = [rows.get(row.tobytes(), -1) for row in features]
        assert -1 not in indices, f"the {kind} was fitted on rows that are not training features of its stage"
        assert tuple(indices) in subsets, f"the {kind} was fitted on training rows {indices}, not a cell's subset"
        np.testing.assert_array_equal(labels, train_labels[indices])


def test_simclr_in_the_benchmark_never_holds_or_reads_a_test_image(spied_benchmark):
    _, spy, _ = spied_benchmark
    catalogue = spy.catalogue
    assert spy.simclr_generators, "the benchmark ran no SimCLR"
    held = [catalogue.splits(generator) for generator in spy.simclr_generators]
    assert all(names == {"train"} or names == {"val"} for names in held), f"SimCLR's generators hold {held}"
    read = {name for name, _ in spy.read_in_pretrain}
    assert "train" in read and "test" not in read, f"SimCLR read images of {sorted(read)}"


def test_pretrain_trains_on_train_validates_on_val_and_never_reads_test(tmp_path, monkeypatch):
    parts = tiny_parts()
    spy = Spy(monkeypatch, Catalogue(parts))
    keras.utils.set_random_seed(0)
    spy.pretrain(parts, Backbone(make_tiny_backbone()), tmp_path, **PRETRAIN)
    catalogue = spy.catalogue
    train_views, val_views = spy.simclr_generators
    assert catalogue.is_split(train_views, "train"), f"SimCLR trained on {sorted(catalogue.splits(train_views))}"
    assert catalogue.is_split(val_views, "val"), f"SimCLR validated on {sorted(catalogue.splits(val_views))}"
    (probe,) = spy.online_probes
    assert catalogue.splits(probe.train_data) == {"train"} and catalogue.is_split(probe.val_data, "val")
    read = {name for name, _ in spy.read_in_pretrain}
    assert read == {"train", "val"}, f"pretrain read images of {sorted(read)}"


# Counterfactuals, in a subprocess with op determinism


def deterministic_benchmark(parts, out):
    """The benchmark's records (without timings) and the adapted backbone's weights."""
    quicker_benchmark(setattr)
    keras.utils.set_random_seed(0)
    records = run_benchmark(parts, make_tiny_backbone(), out, fractions=(1.0,), runs=1, verbose=0, **FAST)
    adapted = keras.models.load_model(os.path.join(out, "simclr_run_0", "base_model.keras"), compile=False)
    # Without the cells a stage leaves empty (pretrain_run "before"), which the frame holds as NaN.
    records = [{key: value for key, value in record.items() if not pd.isna(value)}
               for record in records.drop(columns="seconds").to_dict(orient="records")]
    return records, adapted.get_weights()


def deterministic_pretrain(parts, out):
    """SimCLR's history and the adapted backbone's weights."""
    keras.utils.set_random_seed(0)
    simclr = pretrain(parts, Backbone(make_tiny_backbone()), out, **PRETRAIN)
    return simclr.history_, simclr.base_model.get_weights()


def counterfactual(function, out):
    """Run `function` on the tiny parts and on them with another test split, in one deterministic process.

    Returns:
        {"first", "second": what `function` returned but the weights,
        "weights_equal", "max_weight_difference"}.
    """
    script = textwrap.dedent(f"""
        import json, sys
        import numpy as np, tensorflow as tf
        sys.path.insert(0, {ROOT!r})
        {FLOAT32_IN_SUBPROCESS}
        tf.config.experimental.enable_op_determinism()
        from tests.evaluation.test_leakage import {function}, other_test_split, tiny_parts
        parts = tiny_parts()
        first, weights = {function}(parts, {os.path.join(out, "first")!r})
        second, other_weights = {function}(other_test_split(parts), {os.path.join(out, "second")!r})
        difference = max(float(np.max(np.abs(a - b))) for a, b in zip(weights, other_weights))
        print("RESULT " + json.dumps({{"first": first, "second": second, "max_weight_difference": difference,
                                      "weights_equal": difference == 0.0}}, default=float))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=ROOT)
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert result.returncode == 0 and lines, result.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


def test_another_test_split_changes_only_the_benchmarks_test_accuracies(tmp_path):
    result = counterfactual("deterministic_benchmark", str(tmp_path))
    first, second = result["first"], result["second"]
    assert len(first) == len(second) == 2 * len(CLASSIFIERS)  # stages x classifiers
    assert result["weights_equal"], (f"the adapted backbone changed with the test split (max difference "
                                     f"{result['max_weight_difference']:g}): SimCLR saw test images")
    for mine, theirs in zip(first, second):
        cell = {key: mine[key] for key in ("stage", "classifier", "fraction", "run")}
        assert mine.keys() == theirs.keys()
        for key in sorted(mine.keys() - set(TEST_FIGURES)):
            assert mine[key] == theirs[key], f"{cell}: {key} changed with the test split: {mine[key]} -> {theirs[key]}"


def test_another_test_split_leaves_pretrain_unchanged(tmp_path):
    result = counterfactual("deterministic_pretrain", str(tmp_path))
    assert result["weights_equal"], (f"the adapted backbone changed with the test split (max difference "
                                     f"{result['max_weight_difference']:g}): SimCLR saw test images")
    # every loss, accuracy and online-probe figure of every epoch (NaN equal to NaN)
    np.testing.assert_equal(result["second"], result["first"])
