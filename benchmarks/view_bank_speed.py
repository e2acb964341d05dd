"""Time SimCLR rounds with and without a view bank, in turns in one process (issue 13, item 3).

VGG16 on TrashNet's training split at 80×80, the benchmark's round (block 5
and the head train, batch 32, temperature 0.2, caffe preprocessing): each
turn times a round trained end to end and a round of the same settings
from a view bank of `M` views per image, both with validation. A callback
records when training starts and each epoch ends, so the bank's filling
(before training starts) and its epochs are timed apart. From the medians:

    end to end, E epochs:  E × epoch
    view bank, E epochs:   fill of M/2 epochs of views (+ validation views) + E × bank epoch

    python benchmarks/view_bank_speed.py --turns 2 --json benchmarks/speed.json

With `--backbone mobilenet_v2` it times each round of MobileNetV2's
schedule (`--layers`, the rounds' first unfrozen layers) the same way, and
projects a schedule end to end (`--project`, epochs per round) against a
longer one from banks (`--project-bank`, epochs per round), both from the
medians of the same turns:

    python benchmarks/view_bank_speed.py --backbone mobilenet_v2 --turns 1 --epochs 2 \
        --project 3,6,6 --project-bank 9,18,18

With `--accuracy LOG.jsonl ...` it times nothing and summarises instead the
validation linear probes of `tune_trashnet.py` runs (the same schedule end
to end and with banks of M views, one entry per pretraining seed) into
speed.json's `view_bank`: per M, the mean over seeds and its difference
from the end-to-end mean, with the timed speed-up for that M.

The images are decoded once before any timing (the decoded-image cache),
so both paths read the same way.
"""

import argparse
import json
import logging
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))

import keras  # noqa: E402

from data_generators import DataGeneratorSimCLR, split_sources  # noqa: E402
from simclr_wrap import SimCLR  # noqa: E402
from simclr_wrap.backbones import Backbone  # noqa: E402
from speed_json import machine, read_speed_json, write_speed_json  # noqa: E402
from tune_trashnet import over_seeds  # noqa: E402

SHARED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared")
SPLIT = os.path.join(SHARED, "data", "trashnet", "split.csv")
WEIGHTS = os.path.join(SHARED, "backbones", "vgg16_hed_notop.weights.h5")
# The TrashNet benchmark's settings of each backbone: weights, preprocessing, pooling, the rounds' first layers.
BACKBONES = {
    "vgg16": (WEIGHTS, "caffe", "flatten", "block5_conv1"),
    "mobilenet_v2": (os.path.join(SHARED, "backbones", "mobilenet_v2_nsfwjs_notop.weights.h5"), "unit", "avg",
                     "block_16_expand,block_13_expand,block_11_expand"),
}


class EpochClock(keras.callbacks.Callback):
    """The time `fit` starts training and the time each epoch ends."""

    def __init__(self):
        super().__init__()
        self.started, self.epoch_ends = None, []

    def on_train_begin(self, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_ends.append(time.perf_counter())


def timed_round(spec, train, val, view_bank, epochs, layer="block5_conv1", pooling="flatten"):
    """`(seconds before training starts, seconds of each epoch)` of one round from `layer` on."""
    base_model, _ = spec.load()
    simclr = SimCLR(base_model, 32, temperature=0.2, num_of_unfrozen_layers=layer, pooling=pooling, save_path=None,
                    seed=0, view_bank=view_bank, early_stopping_patience=100)
    clock = EpochClock()
    called = time.perf_counter()
    simclr.train(train, val, epochs=epochs, callbacks=[clock], verbose=0)
    ends = [clock.started, *clock.epoch_ends]
    return clock.started - called, [later - earlier for earlier, later in zip(ends, ends[1:])]


def accuracy_summary(logs, end_to_end):
    """Validation linear probes per configuration (mean and values over seeds), and each bank's difference."""
    entries = [json.loads(line) for path in logs for line in open(path) if line.strip()]

    def group_of(entry):
        if entry.get("view_bank"):
            return str(entry["view_bank"])
        return "end_to_end" if entry["name"] == end_to_end else None

    summary = over_seeds(entries, group_of, baseline="end_to_end")
    return {"end_to_end": summary.pop("end_to_end", None), "by_M": summary}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--views", type=int, default=2, help="M, views per image of the bank timed")
    parser.add_argument("--epochs", type=int, default=2, help="epochs timed per round")
    parser.add_argument("--turns", type=int, default=2)
    parser.add_argument("--backbone", choices=sorted(BACKBONES), default="vgg16")
    parser.add_argument("--layers", help="first unfrozen layer of each round timed, comma-separated "
                        "(default: the benchmark's schedule of the backbone)")
    parser.add_argument("--project", default="8", help="epochs of each round the speed-up is given for")
    parser.add_argument("--project-bank", help="epochs of each round of a longer schedule from banks, projected "
                        "against --project end to end")
    parser.add_argument("--json", help="speed.json to record `view_bank` in")
    parser.add_argument("--accuracy", nargs="+", help="tune_trashnet.py logs to summarise instead of timing")
    parser.add_argument("--end-to-end", default="v1_block5_lr1e-4_t0.2", help="name of the end-to-end configuration")
    args = parser.parse_args(argv)
    if args.accuracy:
        summary = accuracy_summary(args.accuracy, args.end_to_end)
        print(json.dumps(summary, indent=1))
        if args.json:
            speed = read_speed_json(args.json)
            timing = speed.get("view_bank", {}).get("timing", {})
            best = max(summary["by_M"], key=int)  # the largest M measured: the most varied pairs
            speed["view_bank"] = {
                "M": int(best), "vgg16_speedup": timing.get("speedup_by_M", {}).get(best),
                "val_linear_delta": summary["by_M"][best]["val_linear_1_delta"],
                "val_linear_delta_5_percent": summary["by_M"][best]["val_linear_0.05_delta"],
                "accuracy": summary, "timing": timing}
            write_speed_json(speed, args.json)
        return
    logging.basicConfig(level=logging.WARNING)
    weights, preprocess, pooling, layers = BACKBONES[args.backbone]
    layers = (args.layers or layers).split(",")
    project = [int(epochs) for epochs in args.project.split(",")]
    longer = None if args.project_bank is None else [int(epochs) for epochs in args.project_bank.split(",")]
    if len(project) != len(layers) or (longer is not None and len(longer) != len(layers)):
        parser.error(f"--project and --project-bank need one number of epochs per round of {layers}")
    parts = split_sources(SPLIT)
    spec = Backbone(args.backbone, input_shape=(80, 80, 3), weights=weights, preprocess=preprocess)
    _, preprocess_input = spec.load()
    options = dict(batch_size=32, width=80, height=80, preprocess_input=preprocess_input, seed=0)
    train = DataGeneratorSimCLR(parts["train"], subset="train", **options)
    val = DataGeneratorSimCLR(parts["val"], subset="val", **options)
    for data in (train, val):  # decode every image once, untimed
        for index in range(len(data)):
            data[index]
    times = {layer: {"end_to_end": [], "bank": [], "fill": []} for layer in layers}
    for turn in range(args.turns):
        for layer in layers:
            measured = times[layer]
            _, epochs = timed_round(spec, train, val, None, args.epochs, layer, pooling)
            measured["end_to_end"] += epochs
            fill, epochs = timed_round(spec, train, val, args.views, args.epochs + args.views // 2, layer, pooling)
            measured["fill"].append(fill)
            measured["bank"] += epochs
            last = [round(seconds, 1) for seconds in measured["end_to_end"][-args.epochs:]]
            print(f"turn {turn + 1}, from {layer}: end to end {last} s/epoch; bank fill {fill:.1f} s, bank epochs "
                  f"{[round(seconds, 1) for seconds in epochs]} s", flush=True)
    rounds = {layer: {"end_to_end_epoch_seconds": round(statistics.median(measured["end_to_end"]), 1),
                      "bank_epoch_seconds": round(statistics.median(measured["bank"]), 1),
                      # The filling also passes the validation views once: slightly pessimistic for M > 2.
                      "fill_seconds_per_epoch_of_views": round(statistics.median(measured["fill"]) / (args.views // 2),
                                                               1)}
              for layer, measured in times.items()}

    def seconds(epochs_per_round, views=None):
        """A schedule's projected seconds: end to end, or from banks of `views` per image."""
        if views is None:
            return sum(epochs * rounds[layer]["end_to_end_epoch_seconds"]
                       for layer, epochs in zip(layers, epochs_per_round))
        return sum(views // 2 * rounds[layer]["fill_seconds_per_epoch_of_views"]
                   + epochs * rounds[layer]["bank_epoch_seconds"] for layer, epochs in zip(layers, epochs_per_round))

    result = {"backbone": args.backbone, "rounds": rounds, "projected_epochs": project, "measured_views": args.views,
              "end_to_end_seconds": round(seconds(project)),
              "speedup_by_M": {str(views): round(seconds(project) / seconds(project, views), 2) for views in (2, 4, 8)},
              "machine": machine(), "date": time.strftime("%Y-%m-%d"),
              "command": "python benchmarks/view_bank_speed.py " + " ".join(argv or sys.argv[1:])}
    if longer is not None:
        result["longer_from_banks"] = {
            "epochs": longer, "seconds_by_M": {str(views): round(seconds(longer, views)) for views in (2, 4, 8)},
            "over_end_to_end_by_M": {str(views): round(seconds(longer, views) / seconds(project), 2)
                                     for views in (2, 4, 8)}}
    if len(layers) == 1:  # the keys speed.json's `view_bank.timing` has always had
        result.update({key: value for key, value in rounds[layers[0]].items()})
        result["projected_epochs"] = project[0]
    print(json.dumps(result, indent=1))
    if args.json:
        speed = read_speed_json(args.json)
        key = "timing" if args.backbone == "vgg16" else f"timing_{args.backbone}"
        speed["view_bank"] = {**speed.get("view_bank", {}), key: result}
        write_speed_json(speed, args.json)


if __name__ == "__main__":
    main()
