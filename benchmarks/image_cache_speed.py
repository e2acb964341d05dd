"""The decoded-image cache: the SimCLR pipeline's first epoch against later ones, and an epoch fed by it.

1. Large photos: --images TrashNet training images upscaled to 512x384 JPEGs
   (quality 95) under --work. `DataGeneratorSimCLR` (batch 32, no workers)
   at --size 80 and 160: views/s of its first epoch (every file decoded and
   put in the cache) against the next two (read from the cache), and of an
   epoch with the cache off (`set_image_cache(None)`).
2. MobileNetV2 (the shared weights), frozen, batch 32, 80x80: a SimCLR
   training epoch fed by the generator (1 worker) against one fed from the
   same batches held in memory, timed in turns (benchmarks/throughput.py's
   `paired_seconds`); both after a warm-up epoch, which fills the cache.

Writes the `pipeline` entry of --json (benchmarks/speed.json).

    python benchmarks/image_cache_speed.py
    python benchmarks/image_cache_speed.py --quick    # 64 images, 1 pair
"""

import argparse
import datetime
import importlib.util
import json
import os
import statistics
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # speed_json, beside this file
from speed_json import machine, read_speed_json, write_speed_json  # noqa: E402
import cv2  # noqa: E402

from data_generators import DataGeneratorSimCLR, split_sources  # noqa: E402
from data_generators.cache import DecodedImageCache, set_image_cache  # noqa: E402

SHARED = os.path.normpath(os.path.join(ROOT, "..", "shared"))
SPLIT = os.path.join(SHARED, "data", "trashnet", "split.csv")
LARGE = (512, 384)  # width, height
BATCH = 32


def throughput_module():
    spec = importlib.util.spec_from_file_location("throughput", os.path.join(ROOT, "benchmarks", "throughput.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def large_jpegs(frame, folder, n_images):
    """The first `n_images` rows of `frame` as 512x384 JPEGs in `folder` (made once); a frame of them."""
    os.makedirs(folder, exist_ok=True)
    rows = frame.iloc[:n_images].copy()
    paths = []
    for index, source in enumerate(rows["filename"]):
        path = os.path.join(folder, f"{index:05d}.jpg")
        if not os.path.exists(path):
            image = cv2.resize(cv2.imread(source), LARGE, interpolation=cv2.INTER_CUBIC)
            cv2.imwrite(path, image, [cv2.IMWRITE_JPEG_QUALITY, 95])
        paths.append(path)
    rows["filename"] = paths
    return rows.drop(columns=[column for column in ("split",) if column in rows.columns])


def epoch_views_per_second(generator):
    """Views per second of one pass over `generator`'s full batches (two views per image), then the next epoch."""
    started = time.perf_counter()
    for index in range(len(generator)):
        generator[index]
    seconds = time.perf_counter() - started
    generator.on_epoch_end()
    return 2 * len(generator) * generator.batch_size / seconds


def first_and_later_epochs(frame, size, results):
    """Item 1: views/s of the first epoch, the next two, and an epoch without the cache, at `size`."""
    set_image_cache(DecodedImageCache())
    generator = DataGeneratorSimCLR(frame, batch_size=BATCH, width=size, height=size, seed=0)
    first = epoch_views_per_second(generator)
    later = [epoch_views_per_second(generator) for _ in range(2)]
    set_image_cache(None)
    uncached = epoch_views_per_second(DataGeneratorSimCLR(frame, batch_size=BATCH, width=size, height=size, seed=0))
    set_image_cache(DecodedImageCache())
    results[f"size_{size}"] = {"first_epoch_views_per_s": round(first, 1),
                               "later_epochs_views_per_s": [round(rate, 1) for rate in later],
                               "no_cache_views_per_s": round(uncached, 1),
                               "later_over_first": round(statistics.median(later) / first, 2)}
    print(f"size {size}: {results[f'size_{size}']}", file=sys.stderr, flush=True)


def generator_against_memory(throughput, parts, n_batches, repeats, results):
    """Item 2: a frozen MobileNetV2 SimCLR epoch fed by the generator (1 worker) against in memory, in turns."""
    base_model, preprocess_input, pooling, _ = throughput.backbone("mobilenet_v2")
    simclr = throughput.wrapper(base_model, 0, pooling)
    generator = throughput.simclr_generator(parts, preprocess_input, n_batches, workers=1)
    in_memory = throughput.InMemory([generator[index] for index in range(len(generator))])
    fed, memory = throughput.paired_seconds(lambda: simclr.SimCLR_model.fit(generator, epochs=1, verbose=0),
                                            lambda: simclr.SimCLR_model.fit(in_memory, epochs=1, verbose=0),
                                            repeats)
    results["mobilenet_v2_frozen_epoch_seconds_generator_1_worker"] = [round(t, 2) for t in fed]
    results["mobilenet_v2_frozen_epoch_seconds_in_memory"] = [round(t, 2) for t in memory]
    results["mobilenet_v2_epoch_ratio"] = round(statistics.median(f / m for f, m in zip(fed, memory)), 3)
    print(f"generator / in memory: {fed} / {memory}", file=sys.stderr, flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="64 images, 2 batches per epoch, 1 timed pair")
    parser.add_argument("--images", type=int, help="large JPEGs to make (default 320, quick 64)")
    parser.add_argument("--work", default="/tmp/simclr_wrap_large_jpegs", help="folder of the large JPEGs")
    parser.add_argument("--json", default=os.path.join(ROOT, "benchmarks", "speed.json"))
    settings = parser.parse_args(argv)
    if not os.path.exists(SPLIT):
        sys.exit(f"needs the shared TrashNet data and backbones at {SHARED}")
    n_images = settings.images or (64 if settings.quick else 320)
    parts = split_sources(SPLIT)
    frame = large_jpegs(parts["train"], settings.work, n_images)
    results = {}
    for size in (80, 160):
        first_and_later_epochs(frame, size, results)
    results["raw_jpeg_later_over_first"] = results["size_80"]["later_over_first"]
    throughput = throughput_module()
    generator_against_memory(throughput, parts, 2 if settings.quick else 8, 1 if settings.quick else 5, results)
    results.update({
        "command": "python benchmarks/image_cache_speed.py" + (" --quick" if settings.quick else ""),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": machine(),
        "images": f"{n_images} TrashNet training images as {LARGE[0]}x{LARGE[1]} JPEGs",
    })
    speed = read_speed_json(settings.json)
    speed["pipeline"] = results
    write_speed_json(speed, settings.json)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
