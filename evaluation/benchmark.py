"""The label-fraction benchmark: a backbone before and after SimCLR, as records."""

import json
import logging
import os
import time

import keras
import numpy as np
import pandas as pd

from data_generators import DataGeneratorClass, SimCLRAugmentation, take_rows
from data_generators.files import check_output_folder
from evaluation.features import extract_features
from evaluation.finetune import finetune_classifier
from evaluation.fractions import label_subset
from evaluation.knn import KNNProbe
from evaluation.linear import LinearProbe
from evaluation.pretraining import TEST_FRACTION, VAL_FRACTION, pretrain, resolve_all_layers
from evaluation.report import write_benchmark_outputs, write_results
from simclr_wrap.backbones import get_preprocessing, load_backbone

logger = logging.getLogger(__name__)

CLASSIFIERS = ("linear", "knn", "fine_tuned")


def run_benchmark(
    data,
    backbone,
    out,
    *,
    weights=None,
    size=80,
    preprocess="auto",
    pooling="flatten",
    schedule=((1, 1e-4, 5), (2, 1e-5, 5)),
    finetune_schedule=((0, 1e-3, 30), (2, 1e-4, 5)),
    fractions=(1.0, 0.2, 0.05),
    runs=3,
    pretrain_runs=1,
    adapted=None,
    supervised_baseline=False,
    classifiers=CLASSIFIERS,
    batch_size=32,
    temperature=0.1,
    feat_dims=(2048, 128),
    augmentation=None,
    knn_k=20,
    seed=0,
    probe_every=0,
    probe_fraction=0.1,
    positives="view",
    queue_size=10000,
    cache_frozen=True,
    resume=False,
    verbose="auto",
):
    """Evaluate a backbone, adapt it with SimCLR, evaluate it again; return the records.

    1. The backbone as it is ("before"): a linear and a kNN classifier on its
       pooled features and a fine-tuned classifier, each on `fractions` of
       the training labels, `runs` times (other label subsets and seeds).
    2. SimCLR on the training images, no labels (`pretrain_runs` times, or
       none when `adapted` gives a backbone adapted earlier).
    3. The adapted backbone, evaluated the same way ("after").
    4. Optionally the same architecture from random initialisation trained
       on the same label subsets ("scratch", classifier "supervised").

    Model selection (regularisation, early stopping) sees only the training
    labels and the validation split; the test split is read once per run.
    Writes `results.json`, `report.md` and the plots to `out` as it goes.

    Args:
        data: what `split_sources` takes: a folder (split 70/15/15 here), a
            split CSV, a DataFrame or arrays; the parts may be given as a dict.
        backbone: a `load_backbone` name or path, or a Keras model.
        out: output folder.
        weights, size, preprocess, pooling: as in `pretrain`.
        schedule: SimCLR's unfreezing rounds `(layers, lr, epochs)`.
        finetune_schedule: the fine-tuned classifier's rounds.
        fractions: shares of the training labels, each in (0, 1].
        runs: repeated runs per cell.
        pretrain_runs: repeated SimCLR runs (seeds seed, seed + 1, ...).
        adapted: a `.keras` backbone adapted earlier; skips SimCLR.
        supervised_baseline: also train the architecture from scratch.
        classifiers: which of "linear", "knn" and "fine_tuned" to run.
        batch_size, temperature, feat_dims, augmentation: of SimCLR.
        knn_k: neighbours of the kNN classifier.
        seed: base seed of everything.
        probe_every, probe_fraction: the online linear probe during SimCLR
            (see `pretrain`).
        positives, queue_size: "view" for SimCLR, "nearest_neighbour" for
            NNCLR (records then have method "nnclr"); see `SimCLR`.
        cache_frozen: train the fine-tuned classifiers from cached
            activations of their frozen prefix (`finetune_classifier`); False
            runs them end to end, only slower (for comparison).
        resume: go on with the benchmark that `out` holds (the same
            settings): cells already in its results.json are kept, not run
            again, and an interrupted SimCLR run goes on from its last
            finished epoch. results.json is written after every cell.
        verbose: Keras' verbosity for SimCLR training.

    Returns:
        A pandas DataFrame, one row per (stage, classifier, fraction, run),
        with `accuracy` and `n_labels`.
    """
    unknown = sorted(set(classifiers) - set(CLASSIFIERS))
    if unknown:
        raise ValueError(f"classifiers must be among {CLASSIFIERS}, got {unknown}")
    if isinstance(runs, bool) or not isinstance(runs, int) or runs < 1:
        raise ValueError(f"runs must be an int >= 1, got runs={runs!r}")
    if isinstance(pretrain_runs, bool) or not isinstance(pretrain_runs, int) or pretrain_runs < 1:
        raise ValueError(f"pretrain_runs must be an int >= 1, got pretrain_runs={pretrain_runs!r}")
    out = check_output_folder(out)
    from data_generators import split_sources

    if isinstance(backbone, str):
        base_model, preprocess_input = load_backbone(backbone, (size, size, 3), weights, preprocess)
    else:
        base_model = backbone
        preprocess_input = get_preprocessing("unit" if preprocess == "auto" else preprocess)
    parts = split_sources(data, VAL_FRACTION, TEST_FRACTION, seed)
    bench = _Evaluation(
        parts, base_model.input_shape[1:], preprocess_input, pooling, resolve_all_layers(finetune_schedule, base_model), fractions, runs,
        classifiers, knn_k, seed, backbone_name=base_model.name,
        method="nnclr" if positives == "nearest_neighbour" else "simclr", cache_frozen=cache_frozen,
    )
    settings = {
        "backbone": backbone if isinstance(backbone, str) else base_model.name, "weights": weights,
        "size": size, "preprocess": preprocess, "pooling": pooling, "schedule": [list(r) for r in schedule],
        "finetune_schedule": [list(r) for r in finetune_schedule], "fractions": list(fractions), "runs": runs,
        "pretrain_runs": pretrain_runs, "adapted": adapted, "supervised_baseline": supervised_baseline,
        "classifiers": list(classifiers), "batch_size": batch_size, "temperature": temperature,
        "feat_dims": list(feat_dims), "knn_k": knn_k, "seed": seed, "positives": positives,
        "queue_size": queue_size if positives == "nearest_neighbour" else None, "cache_frozen": cache_frozen,
        "images": {name: _size_of(part) for name, part in parts.items()},
    }
    state = {"records": [], "durations": {}, "features": {}, "history": None, "done": set()}
    if resume:
        _resume_from(out, settings, state)
    state["save"] = lambda: write_results(out, state["records"], settings, state["durations"])

    def stage(name, work):
        logger.info("== %s ==", name)
        started = time.perf_counter()
        result = work()
        # Added up, so that a resumed stage reports all the time it took.
        state["durations"][name] = round(state["durations"].get(name, 0) + time.perf_counter() - started, 1)
        write_benchmark_outputs(out, state["records"], settings, state["durations"], state["features"],
                                state["history"])
        return result

    stage("before", lambda: bench.evaluate(base_model, "before", state))
    if adapted is not None:
        adapted_models = [(None, keras.models.load_model(adapted, compile=False))]
    else:
        adapted_models = []
        for pretrain_run in range(pretrain_runs):
            if bench.finished(state, "after", pretrain_run):
                logger.info("SimCLR run %d: every cell after it is in results.json already", pretrain_run)
                continue

            def adapt(pretrain_run=pretrain_run):
                simclr = pretrain(
                    parts, bench.clone(base_model), os.path.join(out, f"simclr_run_{pretrain_run}"),
                    preprocess=preprocess_input, size=size, schedule=schedule, batch_size=batch_size,
                    temperature=temperature, feat_dims=feat_dims, pooling=pooling,
                    augmentation=augmentation or SimCLRAugmentation(), seed=seed + pretrain_run, verbose=verbose,
                    probe_every=probe_every, probe_fraction=probe_fraction, positives=positives,
                    queue_size=queue_size, resume=resume,
                )
                state["history"] = state["history"] or simclr.history_
                return simclr.base_model
            adapted_models.append((pretrain_run, stage(f"simclr run {pretrain_run}", adapt)))
    for pretrain_run, model in adapted_models:
        stage(f"after (SimCLR run {pretrain_run})", lambda: bench.evaluate(model, "after", state, pretrain_run))
    if supervised_baseline:
        stage("scratch", lambda: bench.scratch(base_model, state))
    return pd.DataFrame(state["records"])


class _Evaluation:
    """Everything that evaluates one backbone on the label fractions."""

    def __init__(self, parts, input_shape, preprocess_input, pooling, finetune_schedule, fractions, runs,
                 classifiers, knn_k, seed, backbone_name, method, cache_frozen=True):
        self.parts, self.pooling, self.fractions, self.runs = parts, pooling, tuple(fractions), runs
        self.finetune_schedule, self.classifiers, self.knn_k, self.seed = finetune_schedule, classifiers, knn_k, seed
        self.backbone_name, self.method, self.cache_frozen = backbone_name, method, cache_frozen
        height, width, channels = input_shape
        self.generator_options = dict(width=width, height=height, channels=channels, preprocess_input=preprocess_input)
        self.classes = sorted(set().union(*(_labels_of(part) for part in parts.values() if _size_of(part))))
        trained = _labels_of(parts["train"])
        for name, part in parts.items():
            unknown = sorted(_labels_of(part) - trained, key=str) if _size_of(part) else []
            if unknown:
                raise ValueError(f"class {unknown[0]!r} of the {name} split has no training images, so no "
                                 f"classifier can learn it; the training classes are {sorted(trained, key=str)}")
        self.data = {name: self._generator(part) for name, part in parts.items() if _size_of(part)}
        if "test" not in self.data:
            raise ValueError("the benchmark needs a test split; give data with a 'test' part or split share")
        self.train_labels = self.data["train"].labels
        for fraction in self.fractions:  # a fraction that leaves a class empty fails here, before any training
            label_subset(self.train_labels, fraction, seed)

    def _generator(self, part, shuffle=False, seed=0):
        return DataGeneratorClass(part, batch_size=32, classes=self.classes, shuffle=shuffle, seed=seed,
                                  **self.generator_options)

    def clone(self, base_model):
        model = keras.models.clone_model(base_model)
        model.set_weights(base_model.get_weights())
        return model

    def cells(self, stage):
        """The (fraction, run, classifier) cells of a stage, in the order they run."""
        classifiers = ("supervised",) if stage == "scratch" else self.classifiers
        return [(fraction, run, classifier) for fraction in self.fractions for run in range(self.runs)
                for classifier in classifiers]

    def todo(self, state, stage, pretrain_run=None):
        """The cells of the stage that results.json does not hold yet."""
        return [cell for cell in self.cells(stage) if _cell_key(stage, *cell, pretrain_run) not in state["done"]]

    def finished(self, state, stage, pretrain_run=None):
        """Whether results.json holds every cell of the stage."""
        return not self.todo(state, stage, pretrain_run)

    def evaluate(self, base_model, stage, state, pretrain_run=None):
        todo = self.todo(state, stage, pretrain_run)
        if not todo:
            logger.info("every %s cell is in results.json already", stage)
            return
        features = {name: extract_features(base_model, self.data[name], self.pooling) for name in ("train", "test")}
        state["features"][stage] = features["test"]
        for fraction, run, classifier in todo:
            subset = label_subset(self.train_labels, fraction, seed=self.seed + run)
            started = time.perf_counter()
            result = self._classify(classifier, base_model, features, subset, self.seed + run)
            record = {
                "backbone": self.backbone_name, "method": self.method if stage == "after" else "none",
                "stage": stage, "classifier": classifier, "fraction": fraction, "run": run,
                "n_labels": len(subset), "accuracy": float(result["accuracy"]),
                "seconds": round(time.perf_counter() - started, 2),
            }
            if "top5" in result:
                record["top5"] = float(result["top5"])
            if pretrain_run is not None:
                record["pretrain_run"] = pretrain_run
            _add_record(state, record)
            logger.info("%s %s fraction %g run %d: %d labels, accuracy %.3f",
                        stage, classifier, fraction, run, len(subset), record["accuracy"])

    def _classify(self, classifier, base_model, features, subset, seed):
        train_features, train_labels = features["train"]
        test_features, test_labels = features["test"]
        if classifier == "linear":
            probe = LinearProbe(seed=seed).fit(train_features[subset], train_labels[subset])
            return probe.evaluate(test_features, test_labels)
        if classifier == "knn":
            probe = KNNProbe(k=self.knn_k).fit(train_features[subset], train_labels[subset])
            return probe.evaluate(test_features, test_labels)
        return finetune_classifier(
            base_model, self._generator(take_rows(self.parts["train"], subset), shuffle=True, seed=seed),
            self.data["val"], self.data["test"], schedule=self.finetune_schedule, pooling=self.pooling, seed=seed,
            cache_frozen=self.cache_frozen,
        )

    def scratch(self, base_model, state):
        """Train the architecture from random initialisation on the same label subsets."""
        # Every layer trains, at the first round's rate, for all the schedule's epochs.
        everything = [(len(base_model.layers), self.finetune_schedule[0][1], sum(r[2] for r in self.finetune_schedule))]
        for fraction, run, _ in self.todo(state, "scratch"):
            subset = label_subset(self.train_labels, fraction, seed=self.seed + run)
            keras.utils.set_random_seed(self.seed + run)  # clone_model draws new initial weights
            fresh = keras.models.clone_model(base_model)
            result = finetune_classifier(
                fresh, self._generator(take_rows(self.parts["train"], subset), shuffle=True, seed=self.seed + run),
                self.data["val"], self.data["test"], schedule=everything, pooling=self.pooling, seed=self.seed + run,
            )
            _add_record(state, {
                "backbone": self.backbone_name, "method": "none", "stage": "scratch",
                "classifier": "supervised", "fraction": fraction, "run": run, "n_labels": len(subset),
                "accuracy": float(result["accuracy"]),
            })


def _cell_key(stage, fraction, run, classifier, pretrain_run):
    return stage, classifier, float(fraction), int(run), pretrain_run


def _record_key(record):
    return _cell_key(record["stage"], record["fraction"], record["run"], record["classifier"],
                     record.get("pretrain_run"))


def _add_record(state, record):
    """Keep a finished cell, and write results.json at once: an interruption loses at most the cell under way."""
    state["records"].append(record)
    state["done"].add(_record_key(record))
    state["save"]()


def _resume_from(out, settings, state):
    """Take the finished cells of the benchmark in `out`, which must have the same settings."""
    path = os.path.join(out, "results.json")
    if not os.path.exists(path):
        return
    try:
        with open(path) as file:
            previous = json.load(file)
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot resume from {path!r}: {error}") from None
    differing = sorted(key for key in set(settings) | set(previous.get("settings", {}))
                       if json.loads(json.dumps(settings.get(key))) != previous.get("settings", {}).get(key))
    if differing:
        raise ValueError(f"cannot resume the benchmark in {out!r}: its settings differ in {differing}; "
                         "use the same settings or another --out")
    state["records"], state["durations"] = previous["records"], previous.get("durations_s", {})
    state["done"] = {_record_key(record) for record in state["records"]}
    logger.info("resuming the benchmark in %s: %d cells done", out, len(state["records"]))


def _size_of(part):
    if part is None:
        return 0
    return len(part[0]) if isinstance(part, tuple) else len(part)


def _labels_of(part):
    return set(np.asarray(part[1]).tolist()) if isinstance(part, tuple) else set(part["class_label"])
