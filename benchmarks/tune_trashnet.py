"""Tune SimCLR settings on TrashNet's VALIDATION split (the test split is never read).

For each configuration: SimCLR on the training images (no labels), then a
linear probe trained on 100 % and 5 % of the training labels, scored on the
validation images. Every configuration and its validation figures are
appended to a JSON-lines file, so RESULTS.md can list all that was tried.

    python benchmarks/tune_trashnet.py --backbone mobilenet_v2 \
        --weights ../shared/backbones/mobilenet_v2_nsfwjs_notop.weights.h5 --preprocess unit --pooling avg \
        --configs benchmarks/trashnet/configs_mobilenet_v2.json --out runs/tune_mobilenet_v2

A configuration is a dict: `name`, `schedule` ("layers:lr:epochs,..." as
`parse_schedule` reads it), optional `augmentation` (a `SimCLRAugmentation`
config dict) and SimCLR options: `temperature`, `batch_size`, `feat_dims`
(SimCLR's `feat_dims_ph`), `positives`, `queue_size`, or any other option
of `SimCLR.default_config()`.

`tune` is the same as a function, for other data (a test runs it on tiny
data and checks that the test split is never read).
"""

import argparse
import json
import logging
import os
import statistics
import sys
import time

import keras
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # speed_json, beside this file

from data_generators import DataGeneratorClass, SimCLRAugmentation, split_sources  # noqa: E402
from evaluation.features import extract_features  # noqa: E402
from evaluation.fractions import label_subset  # noqa: E402
from evaluation.linear import LinearProbe  # noqa: E402
from evaluation.pretraining import SET_BY_PRETRAIN, parse_schedule, pretrain  # noqa: E402
from simclr_wrap.backbones import Backbone  # noqa: E402
from simclr_wrap.model import check_options  # noqa: E402
from simclr_wrap.precision import gpu_compute_capabilities  # noqa: E402
from speed_json import machine  # noqa: E402

SPLIT = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "trashnet", "split.csv")
FRACTIONS = (1.0, 0.05)
PROBES = tuple(f"val_linear_{fraction:g}" for fraction in FRACTIONS)  # the figures of a log entry
SUBSET_RUNS = 3  # label subsets averaged at a fraction below 1
# Keys of the configuration files that name a SimCLR option differently.
SIMCLR_ALIASES = {"feat_dims": "feat_dims_ph"}
NOT_SIMCLR = ("name", "schedule", "augmentation")


def simclr_options(config, pooling):
    """The `pretrain` arguments of a configuration: (schedule, simclr options, augmentation config).

    Raises:
        ValueError: a configuration without a name or a schedule, or with a
            key that is no SimCLR option.
    """
    for key in ("name", "schedule"):
        if key not in config:
            raise ValueError(f"configuration {config!r} has no {key!r}")
    options = {SIMCLR_ALIASES.get(key, key): value for key, value in config.items() if key not in NOT_SIMCLR}
    fixed = sorted(set(options) & set(SET_BY_PRETRAIN))
    if fixed:
        raise ValueError(f"configuration {config['name']!r} sets {fixed}, which pretrain sets itself")
    options = check_options({"pooling": pooling, **options})
    schedule = config["schedule"]
    schedule = parse_schedule(schedule) if isinstance(schedule, str) else [tuple(entry) for entry in schedule]
    augmentation = config.get("augmentation")
    if augmentation is not None:
        SimCLRAugmentation.from_config(augmentation)  # fails now on an unknown key
    return schedule, options, augmentation


def validation_probe(base_model, parts, pooling, preprocess_input, fractions=FRACTIONS, runs=SUBSET_RUNS):
    """Linear-probe accuracy on the validation split at each fraction (mean of `runs` subsets below 1).

    Reads the "train" and "val" parts only.
    """
    height, width, channels = base_model.input_shape[1:]
    options = dict(batch_size=64, width=width, height=height, channels=channels, preprocess_input=preprocess_input)
    train = DataGeneratorClass(parts["train"], **options)
    val = DataGeneratorClass(parts["val"], classes=train.classes, **options)
    train_x, train_y = extract_features(base_model, train, pooling)
    val_x, val_y = extract_features(base_model, val, pooling)
    scores = {}
    for fraction in fractions:
        accuracies = [
            LinearProbe(seed=run).fit(train_x[subset], train_y[subset]).score(val_x, val_y)
            for run in range(1 if fraction == 1.0 else runs)
            for subset in [label_subset(train_y, fraction, seed=run)]
        ]
        scores[f"val_linear_{fraction:g}"] = round(float(np.mean(accuracies)), 4)
    return scores


def tune(parts, backbone, configs, out, *, pooling="avg", log=None, fractions=FRACTIONS, seed=0, verbose=2):
    """SimCLR with each configuration, scored by linear probes on the validation split; the test split is unread.

    The backbone as it is ("before") is scored first. A configuration (or
    "before") whose name and seed are in `log` already is skipped, so an
    interrupted tuning goes on where it stopped.

    Args:
        parts: what `split_sources` takes (a split CSV, a folder, a dict of
            parts, ...): SimCLR trains on "train", the probes train on
            "train" and are scored on "val".
        backbone: a `Backbone` or what `Backbone.of` takes; every
            configuration starts from it as it is.
        configs: configurations (see the module's docstring).
        out: folder of the SimCLR runs (one subfolder per configuration,
            suffixed `_seed{seed}` for a seed other than 0).
        pooling: pooling of SimCLR and of the probes' features.
        log: JSON-lines file of the results (default `out/tuning.jsonl`).
        fractions: shares of the training labels the probes see.
        seed: `pretrain`'s seed.
        verbose: Keras' verbosity for SimCLR training.

    Returns:
        The entries appended to `log` by this call.
    """
    log = log or os.path.join(out, "tuning.jsonl")
    prepared = [(config, *simclr_options(config, pooling)) for config in configs]  # every error before training
    names = [config["name"] for config in configs]
    if len(set(names)) != len(names) or "before" in names:
        raise ValueError(f"configuration names must be distinct and not 'before'; got {names}")
    os.makedirs(os.path.dirname(os.path.abspath(log)), exist_ok=True)
    parts = split_sources(parts)
    spec = Backbone.of(backbone)
    base_model, preprocess_input = spec.load()
    described = {"backbone": spec.name, "weights": os.path.basename(spec.weights or "")}
    done = set()
    if os.path.exists(log):
        with open(log) as file:
            done = {(entry["name"], entry.get("seed", 0)) for entry in map(json.loads, filter(str.strip, file))}
    entries = []
    if "before" not in {name for name, _ in done}:
        scores = validation_probe(base_model, parts, pooling, preprocess_input, fractions)
        entries.append(_append(log, {"name": "before", **scores}, described))
    for config, schedule, options, augmentation in prepared:
        if (config["name"], seed) in done:
            continue
        started = time.time()
        folder = config["name"] if seed == 0 else f"{config['name']}_seed{seed}"
        simclr = pretrain(parts, _fresh(spec, base_model), os.path.join(out, folder), schedule=schedule,
                          simclr=options, augmentation=augmentation, seed=seed, verbose=verbose)
        entry = {**config, "seed": seed, "policy": simclr.policy,
                 **validation_probe(simclr.base_model, parts, pooling, preprocess_input, fractions),
                 "val_nt_xent_last": round(float(simclr.history_["val_nt_xent"][-1]), 4),
                 "minutes": round((time.time() - started) / 60, 1)}
        entries.append(_append(log, entry, described))
    return entries


def over_seeds(entries, group_of, baseline):
    """The validation probes of tuning entries by group, over seeds, and each group's difference from `baseline`.

    Args:
        entries: entries of tuning logs (dicts as `tune` appends them).
        group_of: entry -> the name of its group, or None to leave it out.
        baseline: the name of the group the others are compared with.

    Returns:
        {group: {"seeds", "dates", "minutes", "<probe>_values", "<probe>_mean"}}
        for the probes val_linear_1 and val_linear_0.05, with
        "<probe>_delta" (mean minus the baseline's mean) in every group but
        the baseline, where there is one.

    Example:
    >>> entries = [{"name": "a", "seed": seed, "date": "d", "minutes": 1, "val_linear_1": value,
    ...             "val_linear_0.05": value / 2} for seed, value in [(0, 0.6), (1, 0.7)]]
    >>> entries.append({**entries[0], "name": "b", "val_linear_1": 0.66})
    >>> summary = over_seeds(entries, lambda entry: entry["name"], baseline="a")
    >>> summary["a"]["val_linear_1_mean"], summary["b"]["val_linear_1_delta"], summary["b"]["seeds"]
    (0.65, 0.01, [0])
    """
    groups = {}
    for entry in entries:
        group = group_of(entry)
        if group is not None:
            groups.setdefault(group, []).append(entry)
    summary = {group: {"seeds": [entry.get("seed", 0) for entry in members],
                       "dates": sorted({entry["date"] for entry in members}),
                       "minutes": [entry["minutes"] for entry in members],
                       **{f"{probe}_values": [entry[probe] for entry in members] for probe in PROBES},
                       **{f"{probe}_mean": round(statistics.mean(entry[probe] for entry in members), 4)
                          for probe in PROBES}}
               for group, members in groups.items()}
    if baseline in summary:
        for group, values in summary.items():
            if group != baseline:
                values.update({f"{probe}_delta": round(values[f"{probe}_mean"] - summary[baseline][f"{probe}_mean"], 4)
                               for probe in PROBES})
    return summary


def _fresh(spec, base_model):
    """The backbone as `spec` gives it, not trained by an earlier configuration."""
    if isinstance(spec.source, str):
        return spec  # built or loaded anew by pretrain, which records its source and weights
    import keras

    model = keras.models.clone_model(base_model)
    model.set_weights(base_model.get_weights())
    return Backbone(model, preprocess=spec.preprocess)


def _append(log, entry, described):
    entry = {**entry, **described, "date": time.strftime("%Y-%m-%d"),
             "machine": machine(), "gpus": len(gpu_compute_capabilities()),
             "keras_backend": keras.backend.backend()}
    with open(log, "a") as file:
        file.write(json.dumps(entry) + "\n")
    print(json.dumps(entry), flush=True)
    return entry


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", required=True)
    parser.add_argument("--weights")
    parser.add_argument("--preprocess", default="auto")
    parser.add_argument("--pooling", default="avg")
    parser.add_argument("--size", type=int, default=80)
    parser.add_argument("--data", default=SPLIT, help="split CSV (default: the shared TrashNet split)")
    parser.add_argument("--configs", required=True, help="JSON list of {name, schedule, temperature, augmentation, "
                        "batch_size, feat_dims, positives, queue_size}")
    parser.add_argument("--out", required=True)
    parser.add_argument("--log", default=None, help="JSON-lines file of results (default: <out>/tuning.jsonl)")
    parser.add_argument("--seed", type=int, default=0, help="pretrain's seed (the views, the head): another "
                        "pretraining run; recorded in each entry")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with open(args.configs) as file:
        configs = json.load(file)
    backbone = Backbone(args.backbone, input_shape=(args.size, args.size, 3), weights=args.weights,
                        preprocess=args.preprocess)
    tune(args.data, backbone, configs, args.out, pooling=args.pooling, log=args.log, seed=args.seed)


if __name__ == "__main__":
    main()
