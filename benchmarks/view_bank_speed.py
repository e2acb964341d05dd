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
from speed_json import read_speed_json, write_speed_json  # noqa: E402
from tune_trashnet import over_seeds  # noqa: E402

SHARED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared")
SPLIT = os.path.join(SHARED, "data", "trashnet", "split.csv")
WEIGHTS = os.path.join(SHARED, "backbones", "vgg16_hed_notop.weights.h5")


class EpochClock(keras.callbacks.Callback):
    """The time `fit` starts training and the time each epoch ends."""

    def __init__(self):
        super().__init__()
        self.started, self.epoch_ends = None, []

    def on_train_begin(self, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_ends.append(time.perf_counter())


def timed_round(spec, train, val, view_bank, epochs):
    """`(seconds before training starts, seconds of each epoch)` of one round."""
    base_model, _ = spec.load()
    simclr = SimCLR(base_model, 32, temperature=0.2, num_of_unfrozen_layers="block5_conv1", save_path=None,
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
    parser.add_argument("--project", type=int, default=8, help="epochs of the round the speed-up is given for")
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
    parts = split_sources(SPLIT)
    spec = Backbone("vgg16", input_shape=(80, 80, 3), weights=WEIGHTS, preprocess="caffe")
    _, preprocess_input = spec.load()
    options = dict(batch_size=32, width=80, height=80, preprocess_input=preprocess_input, seed=0)
    train = DataGeneratorSimCLR(parts["train"], subset="train", **options)
    val = DataGeneratorSimCLR(parts["val"], subset="val", **options)
    for data in (train, val):  # decode every image once, untimed
        for index in range(len(data)):
            data[index]
    end_to_end_epochs, bank_epochs, fills = [], [], []
    for turn in range(args.turns):
        _, epochs = timed_round(spec, train, val, None, args.epochs)
        end_to_end_epochs += epochs
        fill, epochs = timed_round(spec, train, val, args.views, args.epochs + args.views // 2)
        fills.append(fill)
        bank_epochs += epochs
        print(f"turn {turn + 1}: end to end {[round(s, 1) for s in end_to_end_epochs[-args.epochs:]]} s/epoch; "
              f"bank fill {fill:.1f} s, bank epochs {[round(s, 1) for s in epochs]} s", flush=True)
    epoch, bank_epoch, fill = (statistics.median(values) for values in (end_to_end_epochs, bank_epochs, fills))
    fill_per_epoch_of_views = fill / (args.views // 2)
    result = {"end_to_end_epoch_seconds": round(epoch, 1), "bank_epoch_seconds": round(bank_epoch, 1),
              "fill_seconds_per_epoch_of_views": round(fill_per_epoch_of_views, 1), "projected_epochs": args.project,
              "measured_views": args.views,
              "speedup_by_M": {str(views): round(args.project * epoch / (views // 2 * fill_per_epoch_of_views +
                                                                         args.project * bank_epoch), 2)
                               for views in (2, 4, 8)},
              "machine": f"{os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d"),
              "command": "python benchmarks/view_bank_speed.py " + " ".join(argv or sys.argv[1:])}
    print(json.dumps(result, indent=1))
    if args.json:
        speed = read_speed_json(args.json)
        speed["view_bank"] = {**speed.get("view_bank", {}), "timing": result}
        write_speed_json(speed, args.json)


if __name__ == "__main__":
    main()
