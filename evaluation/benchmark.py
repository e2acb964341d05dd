"""The label-fraction benchmark: a backbone before and after SimCLR, as records."""

import json
import logging
import os
import time

import keras
import numpy as np
import pandas as pd

from data_generators import DataGeneratorClass, split_sources, take_rows
from data_generators.checks import check_bool, check_choice, check_integer
from data_generators.files import check_run_folder, staged_folder
from data_generators.sources import ImageSource
from evaluation.distill import DistilledClassifier
from evaluation.features import extract_features
from evaluation.finetune import FineTunedClassifier
from evaluation.fractions import check_fraction, label_subset
from evaluation.frozen_prefix import PrefixActivations
from evaluation.knn import KNNProbe
from evaluation.linear import LinearProbe
from evaluation.pretraining import DEFAULT_SCHEDULE, TEST_FRACTION, VAL_FRACTION, _augmentation, pretrain
from evaluation.report import versions, write_benchmark_outputs, write_results
from simclr_wrap.backbones import Backbone, preprocessing_name
from simclr_wrap.callbacks import read_model_metadata
from simclr_wrap.model import SimCLR, check_options
from simclr_wrap.unfreezing import flat_layers

logger = logging.getLogger(__name__)

CLASSIFIERS = ("linear", "knn", "fine_tuned", "distilled")
# Distillation trains a second classifier per fine-tuned one, on every training image: asked for, not default.
DEFAULT_CLASSIFIERS = ("linear", "knn", "fine_tuned")
PROBES = ("linear", "knn")  # classifiers of the extracted features: the same features and labels, the same result
SPLITS = ("train", "val", "test")


class Benchmark:
    """Evaluate a backbone, adapt it with SimCLR, evaluate it again, as records.

    1. The backbone as it is ("before"): a linear and a kNN classifier on its
       pooled features and a fine-tuned classifier, each on `fractions` of
       the training labels, `runs` times (other label subsets and seeds);
       optionally a student distilled from each fine-tuned classifier on
       every training image (SimCLR v2's third step, "distilled").
    2. SimCLR on the training images, no labels (`pretrain_runs` times, or
       none when `run` is given a backbone adapted earlier).
    3. The adapted backbone, evaluated the same way ("after").
    4. Optionally the same architecture from random initialisation trained
       on the same label subsets ("scratch", classifier "supervised").

    Model selection (the probe's C, early stopping, the fine-tuned round) sees
    only the training labels and the validation split; the test split is read
    for the reported accuracy only. Every option is defined here or in the
    object it configures (`SimCLR`, `SimCLRAugmentation`,
    `FineTunedClassifier`), and `get_config()` is what results.json records
    and what `resume=True` checks.

    Args:
        fractions: shares of the training labels, each in (0, 1].
        runs: repeated runs per cell (seeds seed, seed + 1, ...).
        pretrain_runs: repeated SimCLR runs (seeds seed, seed + 1, ...).
        classifiers: which of "linear", "knn", "fine_tuned" and "distilled"
            to run (default: all but "distilled").
        knn: the kNN classifier: a `KNNProbe` or its options as a dict
            (default: similarity-weighted votes, k chosen on the labelled
            images; `{"k": 20, "weights": "uniform"}` is the majority vote of
            the tables published before 2026-11-26).
        supervised_baseline: also train the architecture from scratch.
        seed: base seed of the split, the label subsets and every model.
        schedule, simclr, augmentation, probe: SimCLR's, as in `pretrain`.
            The benchmark's pooling is the SimCLR options' `pooling`.
        finetune: the fine-tuned classifier: a `FineTunedClassifier` or its
            options as a dict (its `pooling` and `seed` are the benchmark's).
        distill: the distilled classifier: a `DistilledClassifier` or its
            options as a dict; its teacher is the fine-tuned classifier of
            the same cell, and its student's options are the fine-tuned
            classifier's, updated with those given in `student`.

    Attributes (after `run`):
        records_: one dict per (stage, classifier, fraction, run), with
            `n_labels`, `accuracy`, `val_accuracy`, `selected` (what the
            classifier chose: C, k, or the round and epoch kept) and `seconds`;
            a probe cell with the labelled images of an earlier run of its
            stage repeats that run's record, with `shared_from_run`.
        durations_: seconds per stage.
        settings_: `get_config()` with the backbone and the split sizes.
        versions_: package versions and the git commit, read at the start.

    Example:
    >>> Benchmark(fractions=(1.0, 0.05), runs=2).get_config()["fractions"]
    [1.0, 0.05]
    """

    def __init__(self, *, fractions=(1.0, 0.2, 0.05), runs=3, pretrain_runs=1, classifiers=DEFAULT_CLASSIFIERS,
                 knn=None, supervised_baseline=False, seed=0, schedule=DEFAULT_SCHEDULE, simclr=None,
                 augmentation=None, probe=None, finetune=None, distill=None):
        self.fractions = tuple(check_fraction(fraction) for fraction in fractions)
        self.runs = check_integer("runs", runs, minimum=1)
        self.pretrain_runs = check_integer("pretrain_runs", pretrain_runs, minimum=1)
        self.classifiers = tuple(check_choice("classifiers", name, CLASSIFIERS) for name in classifiers)
        self.knn = knn if isinstance(knn, KNNProbe) else KNNProbe(**dict(knn or {}))
        self.supervised_baseline = check_bool("supervised_baseline", supervised_baseline)
        self.seed = check_integer("seed", seed, minimum=0)
        self.schedule = [tuple(entry) for entry in schedule]
        self.simclr = dict(check_options(dict(simclr or {})))
        self.augmentation = _augmentation(augmentation)
        self.probe = dict(probe) if probe else None
        self.pooling = self.simclr.get("pooling", SimCLR.default_config()["pooling"])
        finetune = finetune.get_config() if isinstance(finetune, FineTunedClassifier) else dict(finetune or {})
        for key in ("pooling", "seed"):
            if key in finetune and finetune[key] != getattr(self, key):
                raise ValueError(f"the fine-tuned classifier's {key}={finetune[key]!r} differs from the benchmark's "
                                 f"{key}={getattr(self, key)!r}; the benchmark uses one for every classifier")
        self.finetune = FineTunedClassifier(**{**finetune, "pooling": self.pooling, "seed": self.seed})
        distill = distill.get_config() if isinstance(distill, DistilledClassifier) else dict(distill or {})
        student = {**self.finetune.get_config(), **distill.get("student", {})}
        for key in ("pooling", "seed"):
            if student[key] != getattr(self, key):
                raise ValueError(f"the distilled student's {key}={student[key]!r} differs from the benchmark's "
                                 f"{key}={getattr(self, key)!r}; the benchmark uses one for every classifier")
        self.distill = DistilledClassifier(**{**distill, "student": student})

    def get_config(self):
        return {
            "fractions": list(self.fractions), "runs": self.runs, "pretrain_runs": self.pretrain_runs,
            "classifiers": list(self.classifiers), "knn": self.knn.get_config(),
            "supervised_baseline": self.supervised_baseline, "seed": self.seed,
            "schedule": [list(entry) for entry in self.schedule], "simclr": self.simclr,
            "augmentation": self.augmentation.get_config(), "probe": self.probe,
            "finetune": self.finetune.get_config(), "distill": self.distill.get_config(),
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    @property
    def method(self):
        """What "after" is adapted with: "simclr", or "nnclr" for nearest-neighbour positives."""
        return "nnclr" if self.simclr.get("positives") == "nearest_neighbour" else "simclr"

    # Running

    def run(self, data, backbone, out, *, adapted=None, resume=False, overwrite=False, verbose="auto"):
        """Run the benchmark on `data`; write results.json, report.md and plots to `out` as it goes.

        Args:
            data: what `split_sources` takes: a folder (split 70/15/15 here),
                a split CSV, a DataFrame or arrays; the parts may be a dict.
            backbone: a `Backbone`, or what `Backbone.of` takes.
            out: output folder.
            adapted: a `.keras` backbone adapted earlier: evaluated as
                "after" instead of running SimCLR.
            resume: go on with the benchmark in `out` (same settings): its
                cells in results.json are kept, not run again, and an
                interrupted SimCLR run goes on from its last finished epoch.
                The outputs are then written in `out` itself as the run goes.
            overwrite: replace an existing non-empty `out`. Without `resume`
                the outputs go to a temporary folder beside `out`, moved
                into place when the benchmark has finished; a non-empty `out`
                is refused unless `overwrite` or `resume`.
            verbose: Keras' verbosity for SimCLR training.

        Returns:
            A pandas DataFrame of `records_`.
        """
        if resume and overwrite:
            raise ValueError("Expected at most one of resume=True (go on with the benchmark in out) and "
                             "overwrite=True (replace it). Received: both")
        out = check_run_folder(out, overwrite=overwrite, resume=resume)
        spec = Backbone.of(backbone)
        base_model, preprocess_input = spec.load()
        adapted_model = None if adapted is None else _load_adapted(adapted, base_model, preprocess_input)
        self._verbose, self._resume = verbose, resume
        self._splits = _LabelledSplits(split_sources(data, VAL_FRACTION, TEST_FRACTION, self.seed),
                                       base_model.input_shape[1:], preprocess_input)
        for fraction in self.fractions:  # a fraction that leaves a class empty fails here, before any training
            label_subset(self._splits.train_labels, fraction, self.seed)
        self._splits.check_decodable()
        self._backbone_name = base_model.name
        self.settings_ = {**self.get_config(), "backbone": spec.get_config(), "adapted": adapted,
                          "images": self._splits.sizes}
        self.versions_ = versions()
        self.records_, self.durations_, self.test_features_, self.history_ = [], {}, {}, None
        with staged_folder(out, overwrite=overwrite, resume=resume) as folder:
            self._out = folder
            if resume:
                self._take_finished_cells()
            evaluations = 1 + (1 if adapted is not None else self.pretrain_runs)
            self._progress = _Progress(evaluations * len(self._cells("before"))
                                       + (len(self._cells("scratch")) if self.supervised_baseline else 0),
                                       done=len(self.records_))  # cells of an earlier, resumed run count as done
            self._stage("before", lambda: self._evaluate(base_model, "before"))
            for pretrain_run, model in self._adapted_models(base_model, preprocess_input, adapted_model):
                self._stage(f"after (SimCLR run {pretrain_run})",
                            lambda: self._evaluate(model, "after", pretrain_run))
            if self.supervised_baseline:
                self._stage("scratch", lambda: self._scratch(base_model))
        self._out = out
        return pd.DataFrame(self.records_)

    def _adapted_models(self, base_model, preprocess_input, adapted_model):
        """`(pretrain_run, adapted backbone)` pairs: the model given, or SimCLR's runs that have cells left."""
        if adapted_model is not None:
            yield None, adapted_model
            return
        for pretrain_run in range(self.pretrain_runs):
            if not self._todo("after", pretrain_run):
                logger.info("SimCLR run %d: every cell after it is in results.json already", pretrain_run)
                continue

            def adapt(pretrain_run=pretrain_run):
                simclr = pretrain(
                    self._splits.parts, Backbone(_clone(base_model), preprocess=preprocess_input),
                    os.path.join(self._out, f"simclr_run_{pretrain_run}"), schedule=self.schedule,
                    simclr=self.simclr, augmentation=self.augmentation, probe=self.probe,
                    seed=self.seed + pretrain_run, resume=self._resume, verbose=self._verbose,
                )
                self.history_ = self.history_ or simclr.history_
                return simclr.base_model

            yield pretrain_run, self._stage(f"simclr run {pretrain_run}", adapt)

    def _stage(self, name, work):
        logger.info("== %s ==", name)
        started = time.perf_counter()
        result = work()
        # Added up, so that a resumed stage reports all the time it took.
        self.durations_[name] = round(self.durations_.get(name, 0) + time.perf_counter() - started, 1)
        write_benchmark_outputs(self._out, self.records_, self.settings_, self.durations_, self.versions_,
                                self.test_features_, self.history_, [str(name) for name in self._splits.classes])
        return result

    # Cells

    def _cells(self, stage):
        """The (fraction, run, classifier) cells of a stage, in the order they run."""
        classifiers = ("supervised",) if stage == "scratch" else self.classifiers
        return [(fraction, run, classifier) for fraction in self.fractions for run in range(self.runs)
                for classifier in classifiers]

    def _todo(self, stage, pretrain_run=None):
        """The cells of the stage that results.json does not hold yet."""
        done = {_record_key(record) for record in self.records_}
        return [cell for cell in self._cells(stage) if _cell_key(stage, *cell, pretrain_run) not in done]

    def _evaluate(self, base_model, stage, pretrain_run=None):
        todo = self._todo(stage, pretrain_run)
        if not todo:
            logger.info("every %s cell is in results.json already", stage)
            return
        logger.info("extracting the %s features of %s images", stage, " / ".join(
            f"{self._splits.sizes[name]} {name}" for name in SPLITS))
        features = {name: extract_features(base_model, self._splits.data[name], self.pooling, verbose=self._verbose)
                    for name in SPLITS}
        self.test_features_[stage] = features["test"]
        # The fine-tuned cells of a stage clone one backbone: its frozen prefixes' activations of the val split
        # and the training images are computed once for all of them.
        self._prefix_activations = PrefixActivations(self.finetune.cache_bytes)
        self._teacher = None  # (subset, seed, the fitted FineTunedClassifier) of the cell under way
        for fraction, run, classifier in todo:
            subset = label_subset(self._splits.train_labels, fraction, seed=self.seed + run)
            earlier = self._same_probe_earlier(stage, pretrain_run, classifier, subset)
            if earlier is not None:
                self._keep(stage, classifier, fraction, run, subset, earlier, 0.0, pretrain_run,
                           shared_from_run=earlier["run"])
                continue
            started = time.perf_counter()
            result = self._classify(classifier, base_model, features, subset, self.seed + run)
            self._keep(stage, classifier, fraction, run, subset, result, time.perf_counter() - started, pretrain_run)

    def _same_probe_earlier(self, stage, pretrain_run, classifier, subset):
        """The record of an earlier run of this probe on the same features and the same labelled images, or None.

        A probe on the same features and labels gives the same result (at 100 % every run has every label):
        it is computed once and its record repeated. The fine-tuned classifier trains from its run's seed, so
        it is never shared.
        """
        if classifier not in PROBES:
            return None
        for record in self.records_:
            if ((record["stage"], record.get("pretrain_run"), record["classifier"]) == (stage, pretrain_run, classifier)
                    and "shared_from_run" not in record and record["n_labels"] == len(subset)):
                labelled = label_subset(self._splits.train_labels, record["fraction"], seed=self.seed + record["run"])
                if np.array_equal(labelled, subset):
                    return record
        return None

    def _classify(self, classifier, base_model, features, subset, seed):
        """Train `classifier` on the labelled `subset` of the training split; score it on val and test."""
        train_features, train_labels = features["train"]
        if classifier in ("linear", "knn"):
            # The probe's folds are drawn with the benchmark's seed, not the run's: a probe is then a function
            # of its features and labelled images, and runs with the same images share one result.
            probe = LinearProbe(seed=self.seed) if classifier == "linear" else KNNProbe.from_config(
                self.knn.get_config())
            probe.fit(train_features[subset], train_labels[subset])
            result = probe.evaluate(*features["test"])
            result["val_accuracy"] = probe.evaluate(*features["val"])["accuracy"]
            result["selected"] = {"C": float(probe.C_)} if classifier == "linear" else {"k": int(probe.k_)}
            return result
        fine_tuned = self._fine_tuned(base_model, subset, seed)
        if classifier == "fine_tuned":
            return fine_tuned.evaluate(self._splits.data["test"], prefix_activations=self._prefix_activations)
        config = self.distill.get_config()
        # The student, like its teacher, starts from the cell's seed: runs differ in both.
        distilled = DistilledClassifier.from_config({**config, "student": {**config["student"], "seed": seed}})
        # Every training image, in a seeded order of its own each epoch, as the fine-tuned classifier's subset.
        every_image = self._splits.generator(self._splits.parts["train"], shuffle=True, seed=seed)
        distilled.fit(base_model, fine_tuned, every_image, subset, self._splits.data["val"],
                      prefix_activations=self._prefix_activations)
        return distilled.evaluate(self._splits.data["test"], prefix_activations=self._prefix_activations)

    def _fine_tuned(self, base_model, subset, seed):
        """The fine-tuned classifier of a cell's labelled `subset` and `seed`, fitted once for the cell.

        The distilled classifier's teacher is the fine-tuned classifier of its cell: the one the
        "fine_tuned" record reports when the benchmark runs both.
        """
        if self._teacher is not None and np.array_equal(self._teacher[0], subset) and self._teacher[1] == seed:
            return self._teacher[2]
        classifier = FineTunedClassifier.from_config({**self.finetune.get_config(), "seed": seed})
        classifier.fit(base_model, self._splits.train_subset(subset, seed), self._splits.data["val"],
                       prefix_activations=self._prefix_activations)
        self._teacher = (subset, seed, classifier)
        return classifier

    def _scratch(self, base_model):
        """Train the architecture from random initialisation on the same label subsets."""
        config = self.finetune.get_config()
        # Every layer trains, at the first round's rate, for all the schedule's epochs.
        rounds = config["schedule"]
        everything = [(len(flat_layers(base_model)), rounds[0][1], sum(entry[2] for entry in rounds))]
        for fraction, run, _ in self._todo("scratch"):
            subset = label_subset(self._splits.train_labels, fraction, seed=self.seed + run)
            started = time.perf_counter()
            keras.utils.set_random_seed(self.seed + run)  # clone_model draws new initial weights
            fresh = keras.models.clone_model(base_model)
            classifier = FineTunedClassifier.from_config({**config, "schedule": everything, "seed": self.seed + run})
            classifier.fit(fresh, self._splits.train_subset(subset, self.seed + run), self._splits.data["val"])
            result = classifier.evaluate(self._splits.data["test"])
            self._keep("scratch", "supervised", fraction, run, subset, result, time.perf_counter() - started)

    def _keep(self, stage, classifier, fraction, run, subset, result, seconds, pretrain_run=None,
              shared_from_run=None):
        """Make the record of a finished cell, and write results.json at once.

        An interruption loses at most the cell under way. `shared_from_run` names the run whose result
        this cell repeats (same probe, features and labels), recorded as `shared_from_run`.
        """
        method = "none" if stage != "after" else self.method
        record = {
            "backbone": self._backbone_name, "method": method, "stage": stage, "classifier": classifier,
            "fraction": fraction, "run": run, "n_labels": len(subset), "accuracy": float(result["accuracy"]),
            "val_accuracy": float(result["val_accuracy"]), "selected": result["selected"],
            "seconds": round(seconds, 2),
        }
        if "top5" in result:
            record["top5"] = float(result["top5"])
        if pretrain_run is not None:
            record["pretrain_run"] = pretrain_run
        if shared_from_run is not None:
            record["shared_from_run"] = shared_from_run
        self.records_.append(record)
        write_results(self._out, self.records_, self.settings_, self.durations_, self.versions_)
        logger.info("%s: %s %s fraction %g run %d: %d labels, val accuracy %.3f, test accuracy %.3f",
                    self._progress.step(), stage, classifier, fraction, run, len(subset), record["val_accuracy"],
                    record["accuracy"])

    def _take_finished_cells(self):
        """Take the finished cells of the benchmark in `out`, which must have the same settings."""
        path = os.path.join(self._out, "results.json")
        if not os.path.exists(path):
            return
        try:
            with open(path) as file:
                previous = json.load(file)
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"cannot resume from {path!r}: {error}") from None
        settings, saved = json.loads(json.dumps(self.settings_, default=str)), previous.get("settings", {})
        differing = sorted(key for key in set(settings) | set(saved) if settings.get(key) != saved.get(key))
        if differing:
            raise ValueError(f"cannot resume the benchmark in {self._out!r}: its settings differ in {differing}; "
                             "use the same settings or another --out")
        self.records_, self.durations_ = previous["records"], previous.get("durations_s", {})
        logger.info("resuming the benchmark in %s: %d cells done", self._out, len(self.records_))


def run_benchmark(data, backbone, out, *, adapted=None, resume=False, overwrite=False, verbose="auto", **config):
    """`Benchmark(**config).run(data, backbone, out, ...)`: the records as a DataFrame.

    See `Benchmark` for the options and `Benchmark.run` for the arguments.
    """
    return Benchmark(**config).run(data, backbone, out, adapted=adapted, resume=resume, overwrite=overwrite,
                                   verbose=verbose)


def _load_adapted(adapted, base_model, preprocess_input):
    """The backbone of `adapted`, loaded before any work and checked against the one benchmarked."""
    if not os.path.isfile(adapted):
        raise FileNotFoundError(f"adapted={adapted!r} is not a file; give a .keras backbone saved by pretrain")
    try:
        model = keras.models.load_model(adapted, compile=False)
    except Exception as error:  # Keras raises many kinds for a file that is no model
        raise ValueError(f"adapted={adapted!r} could not be loaded as a Keras model: {error}") from None
    if tuple(model.input_shape[1:]) != tuple(base_model.input_shape[1:]):
        raise ValueError(f"adapted={adapted!r} takes images of shape {tuple(model.input_shape[1:])} but the backbone "
                         f"benchmarked takes {tuple(base_model.input_shape[1:])}; give the same --size")
    saved = (read_model_metadata(adapted) or {}).get("preprocess")
    used = preprocessing_name(preprocess_input)
    if saved is not None and saved != used:
        raise ValueError(f"adapted={adapted!r} was adapted with preprocess={saved!r} but the benchmark feeds "
                         f"preprocess={used!r}; give --preprocess {saved}")
    return model


class _Progress:
    """"cell k of N, elapsed, ETA" for the log, the ETA from the cells done in this process so far."""

    def __init__(self, total, done=0):
        self.total, self.done, self._first = total, done, done
        self._started = time.perf_counter()

    def step(self):
        self.done += 1
        elapsed = time.perf_counter() - self._started
        remaining = elapsed / (self.done - self._first) * max(self.total - self.done, 0)
        return (f"cell {self.done} of {self.total}, {_duration(elapsed)} elapsed, "
                f"about {_duration(remaining)} left")


def _duration(seconds):
    """Seconds as 42 s, 3 min 5 s or 1 h 2 min."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


class _LabelledSplits:
    """The train / val / test parts of the data as classifier generators, with their classes.

    Checks, before any training, that every class of val and test has
    training images and that there is a test split.
    """

    def __init__(self, parts, input_shape, preprocess_input):
        height, width, channels = input_shape
        self.parts = parts
        self.options = dict(width=width, height=height, channels=channels, preprocess_input=preprocess_input)
        sources = {name: ImageSource(part, width, height, channels) for name, part in parts.items()
                   if part is not None}
        self.sizes = {name: source.n_images for name, source in sources.items()}
        if any(source.labels is None for source in sources.values()):
            raise ValueError("the benchmark needs labelled images (a class subfolder, a label column or labels "
                             "beside the arrays); SimCLR alone needs none: use pretrain")
        labels = {name: set(source.labels.tolist()) for name, source in sources.items() if source.n_images}
        trained = labels.get("train", set())
        for name, classes in labels.items():
            unknown = sorted(classes - trained, key=str)
            if unknown:
                raise ValueError(f"class {unknown[0]!r} of the {name} split has no training images, so no "
                                 f"classifier can learn it; the training classes are {sorted(trained, key=str)}")
        if "test" not in labels:
            raise ValueError("the benchmark needs a test split; give data with a 'test' part or split share")
        if len(trained) < 2:
            raise ValueError(f"the benchmark needs at least 2 classes with training images; the training split has "
                             f"{len(trained)}: {sorted(trained, key=str)}")
        self._sources = sources
        self.classes = sorted(set().union(*labels.values()))
        self.data = {name: self.generator(parts[name]) for name in labels}
        self.train_labels = self.data["train"].labels

    def check_decodable(self):
        """Read every image once, so that a corrupt file is named before any training."""
        for source in self._sources.values():
            source.check_decodable()

    def generator(self, part, shuffle=False, seed=0):
        return DataGeneratorClass(part, batch_size=32, classes=self.classes, shuffle=shuffle, seed=seed,
                                  **self.options)

    def train_subset(self, subset, seed):
        """The labelled training images of `subset`, shuffled with `seed`."""
        return self.generator(take_rows(self.parts["train"], subset), shuffle=True, seed=seed)


def _clone(base_model):
    model = keras.models.clone_model(base_model)
    model.set_weights(base_model.get_weights())
    return model


def _cell_key(stage, fraction, run, classifier, pretrain_run):
    return stage, classifier, float(fraction), int(run), pretrain_run


def _record_key(record):
    return _cell_key(record["stage"], record["fraction"], record["run"], record["classifier"],
                     record.get("pretrain_run"))
