"""Tune SimCLR settings on TrashNet's VALIDATION split (the test split is never read).

For each configuration: SimCLR on the training images (no labels), then a
linear probe trained on 100 % and 5 % of the training labels, scored on the
validation images. Every configuration and its validation figures are
appended to a JSON-lines file, so RESULTS.md can list all that was tried.

    python benchmarks/tune_trashnet.py --backbone mobilenet_v2 \
        --weights ../shared/backbones/mobilenet_v2_nsfwjs_notop.weights.h5 --preprocess unit --pooling avg \
        --configs benchmarks/trashnet/configs_mobilenet_v2.json --out runs/tune_mobilenet_v2
"""

import argparse
import json
import logging
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from data_generators import DataGeneratorClass, SimCLRAugmentation, split_sources  # noqa: E402
from evaluation.features import extract_features  # noqa: E402
from evaluation.fractions import label_subset  # noqa: E402
from evaluation.linear import LinearProbe  # noqa: E402
from evaluation.pretraining import parse_schedule, pretrain  # noqa: E402
from simclr_wrap.backbones import load_backbone  # noqa: E402

SPLIT = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "trashnet", "split.csv")


def validation_probe(base_model, parts, args, preprocess_input):
    """Linear-probe accuracy on the validation split at 100 % and 5 % (mean of 3 subsets)."""
    options = dict(batch_size=64, width=args.size, height=args.size, preprocess_input=preprocess_input)
    classes = sorted(set(parts["train"]["class_label"]))
    train_x, train_y = extract_features(base_model, DataGeneratorClass(parts["train"], classes=classes, **options), args.pooling)
    val_x, val_y = extract_features(base_model, DataGeneratorClass(parts["val"], classes=classes, **options), args.pooling)
    scores = {}
    for fraction in (1.0, 0.05):
        accuracies = [
            LinearProbe(seed=run).fit(train_x[subset], train_y[subset]).score(val_x, val_y)
            for run in range(1 if fraction == 1.0 else 3)
            for subset in [label_subset(train_y, fraction, seed=run)]
        ]
        scores[f"val_linear_{fraction:g}"] = round(float(np.mean(accuracies)), 4)
    return scores


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", required=True)
    parser.add_argument("--weights")
    parser.add_argument("--preprocess", default="auto")
    parser.add_argument("--pooling", default="avg")
    parser.add_argument("--size", type=int, default=80)
    parser.add_argument("--configs", required=True, help="JSON list of {name, schedule, temperature, augmentation, batch_size, feat_dims, positives, queue_size}")
    parser.add_argument("--out", required=True)
    parser.add_argument("--log", default=None, help="JSON-lines file of results (default: <out>/tuning.jsonl)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    log = args.log or os.path.join(args.out, "tuning.jsonl")
    os.makedirs(os.path.dirname(os.path.abspath(log)), exist_ok=True)
    parts = split_sources(SPLIT)
    with open(args.configs) as file:
        configs = json.load(file)
    base, preprocess_input = load_backbone(args.backbone, (args.size, args.size, 3), args.weights, args.preprocess)
    done = set()
    if os.path.exists(log):
        done = {json.loads(line)["name"] for line in open(log)}
    if "before" not in done:
        entry = {"name": "before", **validation_probe(base, parts, args, preprocess_input)}
        _append(log, entry, args)
    for config in configs:
        if config["name"] in done:
            continue
        started = time.time()
        model, _ = load_backbone(args.backbone, (args.size, args.size, 3), args.weights, args.preprocess)
        simclr = pretrain(
            parts, model, os.path.join(args.out, config["name"]), preprocess=preprocess_input, size=args.size,
            schedule=parse_schedule(config["schedule"]), batch_size=config.get("batch_size", 32),
            temperature=config.get("temperature", 0.1), feat_dims=tuple(config.get("feat_dims", (2048, 128))),
            pooling=args.pooling, augmentation=SimCLRAugmentation(**config.get("augmentation", {})), verbose=2,
            positives=config.get("positives", "view"), queue_size=config.get("queue_size", 10000),
        )
        entry = {**config, **validation_probe(simclr.base_model, parts, args, preprocess_input),
                 "val_nt_xent_last": round(simclr.history_["val_nt_xent"][-1], 4),
                 "minutes": round((time.time() - started) / 60, 1)}
        _append(log, entry, args)


def _append(log, entry, args):
    entry = {**entry, "backbone": args.backbone, "weights": os.path.basename(args.weights or ""),
             "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} cores"}
    with open(log, "a") as file:
        file.write(json.dumps(entry) + "\n")
    print(json.dumps(entry), flush=True)


if __name__ == "__main__":
    main()
