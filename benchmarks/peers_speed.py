"""simclr-wrap against what a user would write instead: a keras.io-style SimCLR `Model` (issue 13, item 0).

    python benchmarks/peers_speed.py [--quick] [--turns N] [--json benchmarks/speed.json]

The same work for both, on the same in-memory TrashNet training images:
MobileNetV2 at 80x80 with the shared weights (x / 255), batch 32, a
2048 -> 128 head, temperature 0.2, Adam at 1e-4. The peer is
`benchmarks/keras_io_simclr.py` (a `keras.Model` with its own `train_step`,
which makes its two views inside the step with Keras preprocessing layers).
Every contender runs once per turn, the turns alternate in one process, and
the median over the turns (the first, with tracing, left out) is reported, so
that this noisy machine's drift falls on all alike.

1. step: views per second of one epoch of `fit` on data already in memory,
   with the layers from block_16_expand on trainable, and with every layer
   trainable (BatchNormalization too, `unfreeze_batchnorm=True`, since the
   peer trains it; block_16_expand has none): simclr-wrap's model on views made beforehand (the host path),
   simclr-wrap's model making its views in the step (`augment_on="device"`),
   and the peer (which also makes its views in the step).
2. epoch: views per second of what a user runs for an epoch: `SimCLR.train`
   on a `DataGeneratorSimCLR` over the images (views made on the host, with
   its monitors and callbacks) against the peer's `fit` on a `tf.data`
   pipeline of the same images.
3. pipeline: views per second of the data alone: `DataGeneratorSimCLR`
   (host views) on one thread, and on one thread per core (as
   `workers=os.cpu_count()` runs it), against the peer's augmenter mapped over
   a `tf.data` pipeline (AUTOTUNE: every core).

`speed.json`'s `peers` entry holds `step_ratio` (ours over the peer, block_16
on, host views), `epoch_ratio` and `pipeline_ratio` (ours at the better of
one thread and one per core, the peer on every core), with every figure.
"""

import argparse
import datetime
import os
import statistics
import sys
import time
from multiprocessing.pool import ThreadPool

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras_io_simclr import ContrastiveModel, augmenter  # noqa: E402
from speed_json import machine, read_speed_json, write_speed_json  # noqa: E402
from throughput import InMemory  # noqa: E402

from data_generators import DataGeneratorSimCLR, split_sources  # noqa: E402
from data_generators.augment import SimCLRAugmentation  # noqa: E402
from data_generators.sources import ImageSource  # noqa: E402
from simclr_wrap import SimCLR  # noqa: E402
from simclr_wrap.backbones import Backbone  # noqa: E402

SHARED = os.path.normpath(os.path.join(ROOT, "..", "shared"))
SPLIT = os.path.join(SHARED, "data", "trashnet", "split.csv")
WEIGHTS = os.path.join(SHARED, "backbones", "mobilenet_v2_nsfwjs_notop.weights.h5")
SIZE, BATCH, TEMPERATURE, LR, HEAD = 80, 32, 0.2, 1e-4, (2048, 128)
LAST_BLOCK = "block_16_expand"


def mobilenet_v2(unfrozen):
    """A fresh MobileNetV2 with the shared weights, trainable from `unfrozen` (a layer name, or "all")."""
    model, _ = Backbone("mobilenet_v2", input_shape=(SIZE, SIZE, 3), weights=WEIGHTS, preprocess="unit").load()
    trainable = unfrozen == "all"
    for layer in model.layers:
        trainable = trainable or layer.name == unfrozen
        layer.trainable = trainable
    return model


def ours(unfrozen, **options):
    """simclr-wrap's SimCLR; with every layer trainable, BatchNormalization trains too, as in the peer."""
    model, _ = Backbone("mobilenet_v2", input_shape=(SIZE, SIZE, 3), weights=WEIGHTS, preprocess="unit").load()
    layers = len(model.layers) if unfrozen == "all" else unfrozen
    return SimCLR(model, BATCH, feat_dims_ph=HEAD, temperature=TEMPERATURE, lr=LR, pooling="avg",
                  num_of_unfrozen_layers=layers, unfreeze_batchnorm=unfrozen == "all", save_path=None, seed=0,
                  **options)


def peer(unfrozen):
    model = ContrastiveModel(mobilenet_v2(unfrozen), SIZE, widths=HEAD, temperature=TEMPERATURE)
    model.compile(optimizer=keras.optimizers.Adam(LR))
    return model


def generator(images, **options):
    return DataGeneratorSimCLR((images, None), batch_size=BATCH, width=SIZE, height=SIZE, seed=0, **options)


def image_dataset(images):
    return tf.data.Dataset.from_tensor_slices(images.astype("float32")).batch(BATCH, drop_remainder=True)


def in_turns(contenders, turns):
    """{name: median seconds} of each `contenders[name]()`, run once per turn, turns alternating.

    The first turn (tracing, warm-up) is left out of the median.
    """
    seconds = {name: [] for name in contenders}
    for turn in range(turns + 1):
        for name, work in contenders.items():
            started = time.perf_counter()
            work()
            seconds[name].append(time.perf_counter() - started)
        print(f"turn {turn}: " + ", ".join(f"{name} {values[-1]:.2f} s" for name, values in seconds.items()),
              file=sys.stderr, flush=True)
    return {name: statistics.median(values[1:]) for name, values in seconds.items()}


def step_speeds(images, unfrozen, turns):
    """Item 1: views/s of `fit` on in-memory data, ours (host views, views in the step) and the peer's."""
    host = generator(images, preprocess_input=lambda x: x / 255)
    host_batches = InMemory([host[index] for index in range(len(host))])
    in_step = generator(images, augmentation=SimCLRAugmentation(), augment_in_model=True)
    in_step_batches = InMemory([in_step[index] for index in range(len(in_step))])
    ours_host = ours(unfrozen).SimCLR_model
    ours_in_step = ours(unfrozen, augmentation=SimCLRAugmentation(), preprocess="unit").SimCLR_model
    the_peer = peer(unfrozen)
    data = image_dataset(images).cache()
    seconds = in_turns({
        "ours_host_views": lambda: ours_host.fit(host_batches, epochs=1, verbose=0, shuffle=False),
        "ours_views_in_step": lambda: ours_in_step.fit(in_step_batches, epochs=1, verbose=0, shuffle=False),
        "peer": lambda: the_peer.fit(data, epochs=1, verbose=0),
    }, turns)
    return {name: round(len(host) * 2 * BATCH / value, 1) for name, value in seconds.items()}


def epoch_speeds(images, turns):
    """Item 2: views/s of an epoch as a user runs it, block_16_expand on."""
    simclr = ours(LAST_BLOCK)
    data = generator(images, preprocess_input=lambda x: x / 255)
    the_peer = peer(LAST_BLOCK)
    pipeline = image_dataset(images).shuffle(len(images), seed=0).prefetch(tf.data.AUTOTUNE)
    seconds = in_turns({
        "ours": lambda: simclr.train(data, None, epochs=1, verbose=0),
        "peer": lambda: the_peer.fit(pipeline, epochs=1, verbose=0),
    }, turns)
    return {name: round(len(data) * 2 * BATCH / value, 1) for name, value in seconds.items()}


def pipeline_speeds(images, turns):
    """Item 3: views/s of the data alone, ours on one worker against the peer's augmenter on tf.data."""
    data = generator(images, preprocess_input=lambda x: x / 255)
    views = augmenter(SIZE, seed=0)
    pipeline = image_dataset(images).map(
        lambda batch: (views(batch, training=True), views(batch, training=True)),
        num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)

    threads = ThreadPool(os.cpu_count())

    def ours_epoch(map_batches):
        for _ in map_batches(data.__getitem__, range(len(data))):
            pass
        data.on_epoch_end()

    def peer_epoch():
        for _ in pipeline:
            pass

    seconds = in_turns({
        "ours": lambda: ours_epoch(map),
        # What PyDataset(workers=os.cpu_count()) does: threads asking for batches, as tf.data's AUTOTUNE map uses the cores.
        "ours_all_cores": lambda: ours_epoch(threads.imap),
        "peer": peer_epoch,
    }, turns)
    threads.close()
    return {name: round(len(data) * 2 * BATCH / value, 1) for name, value in seconds.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="4 batches and 2 turns (a check that it runs)")
    parser.add_argument("--batches", type=int, help="batches of 32 images per timed epoch (default 12)")
    parser.add_argument("--turns", type=int, help="timed turns after the first (default 5)")
    parser.add_argument("--json", help="record the result in this speed.json's `peers` entry")
    settings = parser.parse_args(argv)
    if not os.path.exists(SPLIT) or not os.path.exists(WEIGHTS):
        sys.exit(f"needs the shared TrashNet data and MobileNetV2 weights under {SHARED}")
    batches = settings.batches or (4 if settings.quick else 12)
    turns = settings.turns or (2 if settings.quick else 5)
    keras.utils.set_random_seed(0)
    images = ImageSource(split_sources(SPLIT)["train"].iloc[: batches * BATCH], SIZE, SIZE).read(
        np.arange(batches * BATCH))
    step = {unfrozen: step_speeds(images, unfrozen, turns) for unfrozen in (LAST_BLOCK, "all")}
    epoch = epoch_speeds(images, turns)
    pipeline = pipeline_speeds(images, turns)
    block, every = step[LAST_BLOCK], step["all"]
    result = {
        "step_ratio": round(block["ours_host_views"] / block["peer"], 3),
        "epoch_ratio": round(epoch["ours"] / epoch["peer"], 3),
        # Ours at its better setting (threads can lose to the GIL on few cores), against the peer on every core.
        "pipeline_ratio": round(max(pipeline["ours"], pipeline["ours_all_cores"]) / pipeline["peer"], 3),
        "pipeline_ratio_one_thread": round(pipeline["ours"] / pipeline["peer"], 3),
        "pipeline_ratio_all_cores": round(pipeline["ours_all_cores"] / pipeline["peer"], 3),
        "step_ratio_all_trainable": round(every["ours_host_views"] / every["peer"], 3),
        "step_ratio_views_in_step": round(block["ours_views_in_step"] / block["peer"], 3),
        "step_ratio_views_in_step_all_trainable": round(every["ours_views_in_step"] / every["peer"], 3),
        "step_views_per_s": {"from_" + LAST_BLOCK: block, "all_trainable": every},
        "epoch_views_per_s": epoch,
        "pipeline_views_per_s": pipeline,
        "images": len(images), "batch_size": BATCH, "turns": turns,
        "command": "python benchmarks/peers_speed.py" + (" --quick" if settings.quick else ""),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": machine(),
        "tensorflow": tf.__version__, "keras": keras.__version__,
    }
    print(result)
    if settings.json:
        speed = read_speed_json(settings.json)
        speed["peers"] = result
        write_speed_json(speed, settings.json)


if __name__ == "__main__":
    main()
