"""Throughput of simclr-wrap on this machine: every figure measured side by side in one run, as ratios.

Uses the real backbones of ../shared/backbones on TrashNet at the reference's
setting (80x80, batch 32). Each timing is the median of --repeats runs after
a warm-up run (tracing and caches excluded), so machine noise cancels in
the ratios. What it measures:

1. SimCLR training step, views/s: the library's graph (the backbone once on
   the 2*B views) against the reference's (2*B Inputs of one image each,
   feeding the shared backbone), same layers, optimizer, loss, fit loop
   and data; frozen backbone and last block unfrozen.
2. VGG16: GFLOP/s of that step (backbone forward FLOPs per view) over the
   GFLOP/s of a 2048x2048 float32 matmul in this process.
3. DataGeneratorSimCLR alone, views/s with 0, 1 and 2 workers, against what
   the step consumes; an epoch fed by the generator against one fed from
   batches already in memory.
4. Feature extraction: batched against one `predict` per image.
5. Fine-tuned classifier: cached frozen prefix against end to end (a whole
   schedule on MobileNetV2, 3 runs each with their test accuracies; per
   round on VGG16 with the reference's [5, 5, 6, 7] schedule).
6. jit_compile and mixed precision (bfloat16) against the default step.
7. Peak memory (RSS) of a VGG16 SimCLR training run, in a child process.

    python benchmarks/throughput.py --json benchmarks/throughput.json
    python benchmarks/throughput.py --quick     # under 2 minutes: fewer batches and repeats
"""

import argparse
import datetime
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from data_generators import DataGeneratorClass, DataGeneratorSimCLR, atomic_output, split_sources  # noqa: E402
from evaluation.features import extract_features, feature_extractor  # noqa: E402
from evaluation.finetune import finetune_classifier  # noqa: E402
from simclr_wrap import SimCLR  # noqa: E402
from simclr_wrap.backbones import Backbone  # noqa: E402
from simclr_wrap.losses import NTXent, contrastive_metrics  # noqa: E402
from speed_json import machine  # noqa: E402

SHARED = os.path.normpath(os.path.join(ROOT, "..", "shared"))
SPLIT = os.path.join(SHARED, "data", "trashnet", "split.csv")
SIZE = 80
BATCH = 32  # the reference's; --quick uses 8, so that its reference graph (2*B backbone calls) builds fast
# name: (weights file, preprocessing, pooling, first layer of the last block)
BACKBONES = {
    "vgg16": ("vgg16_hed_notop.weights.h5", "caffe", "flatten", "block5_conv1"),
    "mobilenet_v2": ("mobilenet_v2_nsfwjs_notop.weights.h5", "unit", "avg", "block_16_expand"),
}


def backbone(name):
    """A fresh copy of a shared backbone, its preprocessing and pooling."""
    weights, preprocess, pooling, last_block = BACKBONES[name]
    spec = Backbone(name, input_shape=(SIZE, SIZE, 3), weights=os.path.join(SHARED, "backbones", weights),
                    preprocess=preprocess)
    model, preprocess_input = spec.load()
    return model, preprocess_input, pooling, last_block


def progress(message, started=time.perf_counter()):
    print(f"[{time.perf_counter() - started:6.0f} s] {message}", file=sys.stderr, flush=True)


def median_seconds(work, repeats):
    """Median wall-clock seconds of `work()` over `repeats` runs, after one warm-up run."""
    work()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


class InMemory(keras.utils.PyDataset):
    """Batches made once and served from memory (no reading, no augmentation)."""

    def __init__(self, batches, transform=None):
        super().__init__()
        self.batches = [batch if transform is None else transform(batch) for batch in batches]

    def __len__(self):
        return len(self.batches)

    def __getitem__(self, index):
        return self.batches[index]


def as_reference_batch(batch):
    """((view_a, view_b), target) as the reference fed it: 2*B arrays of one image each."""
    (view_a, view_b), target = batch
    return tuple(np.split(np.concatenate([view_a, view_b]), 2 * len(view_a))), target


def reference_model(simclr):
    """The reference's graph on the wrapper's own layers: the backbone called once per image."""
    inputs = [keras.Input(simclr.input_shape, name=f"image_{index}") for index in range(2 * simclr.batch_size)]
    pooling = simclr.SimCLR_model.get_layer("pooling")
    features = keras.layers.Concatenate(axis=0)([pooling(simclr.base_model(image)) for image in inputs])
    for depth in range(1, len(simclr.feat_dims_ph) + 1):
        features = simclr.SimCLR_model.get_layer(f"projection_{depth}")(features)
    model = keras.Model(inputs, simclr.SimCLR_model.get_layer("softmax_cosine_sim")(features), name="reference")
    model.compile(optimizer=keras.optimizers.Adam(simclr.lr), loss=NTXent(), metrics=contrastive_metrics(),
                  jit_compile=simclr.jit_compile)
    return model


def views_per_second(model, data, repeats):
    """Views per second of `fit` on `data` (2*B views a batch), one epoch per run."""
    seconds = median_seconds(lambda: model.fit(data, epochs=1, verbose=0, shuffle=False), repeats)
    return len(data) * 2 * BATCH / seconds


def simclr_generator(parts, preprocess_input, n_batches, workers=0):
    return DataGeneratorSimCLR(parts["train"].iloc[: n_batches * BATCH], batch_size=BATCH, subset="train",
                               width=SIZE, height=SIZE, preprocess_input=preprocess_input, seed=0, workers=workers)


def wrapper(base_model, unfrozen, pooling, **options):
    return SimCLR(base_model, BATCH, num_of_unfrozen_layers=unfrozen, pooling=pooling, save_path=None, seed=0,
                  **options)


def training_step(parts, name, settings, results):
    """Items 1 and 2: the library's step against the reference's, frozen and with the last block unfrozen."""
    base_model, preprocess_input, pooling, last_block = backbone(name)
    batches = InMemory([simclr_generator(parts, preprocess_input, settings.batches)[i] for i in range(settings.batches)])
    reference_batches = InMemory(batches.batches, as_reference_batch)
    for label, unfrozen in (("frozen", 0), ("last_block_unfrozen", last_block)):
        progress(f"{name} {label}: SimCLR step, library and reference graphs")
        simclr = wrapper(base_model, unfrozen, pooling)
        library = views_per_second(simclr.SimCLR_model, batches, settings.repeats)
        reference = views_per_second(reference_model(simclr), reference_batches, settings.repeats)
        results[f"{name}_{label}_step_views_per_s_library"] = round(library, 1)
        results[f"{name}_{label}_step_views_per_s_reference_graph"] = round(reference, 1)
        results[f"{name}_{label}_step_ratio_library_over_reference"] = round(library / reference, 3)
        if name == "vgg16":
            flops = forward_flops(base_model)
            results["vgg16_forward_gflop_per_view"] = round(flops / 1e9, 3)
            achieved = flops * library / 1e9
            results[f"vgg16_{label}_step_achieved_gflop_per_s"] = round(achieved, 1)
            results[f"vgg16_{label}_step_over_matmul_gflop_per_s"] = round(achieved / results["matmul_2048_gflop_per_s"], 3)
    return batches


def forward_flops(model):
    """Multiply-add FLOPs (2 per MAC) of one image through the conv and dense layers of `model`."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)):
            height, width = layer.output.shape[1:3]
            kernel = layer.kernel.shape  # (kh, kw, in, out) or (kh, kw, in, multiplier)
            total += 2 * height * width * int(np.prod(kernel))
        elif isinstance(layer, keras.layers.Dense):
            total += 2 * int(np.prod(layer.kernel.shape))
    return total


def matmul_gflops(repeats):
    a = tf.random.stateless_normal((2048, 2048), seed=(1, 2))
    b = tf.random.stateless_normal((2048, 2048), seed=(3, 4))
    seconds = median_seconds(lambda: tf.linalg.matmul(a, b).numpy(), max(repeats, 5))
    return 2 * 2048**3 / seconds / 1e9


def data_pipeline(parts, name, consumed, in_memory, settings, results):
    """Item 3: the generator alone with 0, 1 and 2 workers; an epoch fed by it against one from memory."""
    base_model, preprocess_input, pooling, last_block = backbone(name)
    view_a, view_b = keras.Input((SIZE, SIZE, 3)), keras.Input((SIZE, SIZE, 3))
    # A model that does nearly nothing, so that predict times the pipeline alone.
    drain = keras.Model([view_a, view_b], keras.layers.GlobalAveragePooling2D()(view_a + view_b))
    progress(f"{name}: data pipeline")
    for workers in (0, 1, 2):
        data = simclr_generator(parts, preprocess_input, settings.batches, workers)
        seconds = median_seconds(lambda data=data: drain.predict(data, verbose=0), settings.repeats)
        rate = len(data) * 2 * BATCH / seconds
        results[f"{name}_pipeline_views_per_s_{workers}_workers"] = round(rate, 1)
        results[f"{name}_pipeline_over_step_consumption_{workers}_workers"] = round(rate / consumed, 2)
    label, unfrozen = ("last_block_unfrozen", last_block) if name == "vgg16" else ("frozen", 0)
    simclr = wrapper(base_model, unfrozen, pooling)
    generator = simclr_generator(parts, preprocess_input, settings.batches, workers=1)
    fed, memory = paired_seconds(
        lambda: simclr.SimCLR_model.fit(generator, epochs=1, verbose=0),
        lambda: simclr.SimCLR_model.fit(in_memory, epochs=1, verbose=0),
        settings.repeats,
    )
    results[f"{name}_{label}_epoch_seconds_generator_1_worker"] = [round(t, 2) for t in fed]
    results[f"{name}_{label}_epoch_seconds_in_memory"] = [round(t, 2) for t in memory]
    results[f"{name}_{label}_epoch_ratio_generator_over_in_memory"] = round(
        statistics.median(f / m for f, m in zip(fed, memory)), 3)


def paired_seconds(first, second, repeats):
    """Wall-clock seconds of `first()` and `second()`, run in turns `repeats` times after a warm-up of each.

    In turns, because this VM's speed for a training epoch changes by up to
    2x from one minute to the next: timed in turns, each pair sees the same
    conditions, and the median of the pairs' ratios cancels the change.
    """
    first(), second()
    times = ([], [])
    for _ in range(repeats):
        for work, spent in zip((first, second), times):
            started = time.perf_counter()
            work()
            spent.append(time.perf_counter() - started)
    return times


def feature_extraction(parts, name, settings, results):
    """Item 4: batched extraction against one predict call per image (the reference's way)."""
    progress(f"{name}: feature extraction")
    base_model, preprocess_input, pooling, _ = backbone(name)
    frame = parts["train"].iloc[: settings.images]
    images = DataGeneratorClass(frame, batch_size=len(frame), width=SIZE, height=SIZE)[0][0]
    labels = np.zeros(len(images), int)
    data = DataGeneratorClass((images, labels), batch_size=BATCH, width=SIZE, height=SIZE,
                              preprocess_input=preprocess_input)
    # One extractor for both ways, so neither pays for building and tracing it in the timings.
    extractor = feature_extractor(base_model, pooling)
    batched = median_seconds(lambda: extractor.predict(data, verbose=0), settings.repeats)
    prepared = preprocess_input(images)
    one_by_one = median_seconds(
        lambda: [extractor.predict(prepared[i:i + 1], verbose=0) for i in range(len(prepared))], settings.repeats
    )
    library = median_seconds(lambda: extract_features(base_model, data, pooling), settings.repeats)
    results[f"{name}_features_images_per_s_extract_features_including_model_build"] = round(len(images) / library, 1)
    results[f"{name}_features_images_per_s_batched"] = round(len(images) / batched, 1)
    results[f"{name}_features_images_per_s_one_predict_per_image"] = round(len(images) / one_by_one, 1)
    results[f"{name}_features_speedup_batched_over_per_image"] = round(one_by_one / batched, 2)


def classifier_data(parts, preprocess_input, n_train):
    classes = sorted(set(parts["train"]["class_label"]))
    options = dict(classes=classes, width=SIZE, height=SIZE, preprocess_input=preprocess_input)
    train = DataGeneratorClass(parts["train"].iloc[:n_train], shuffle=True, seed=0, **options)
    return train, DataGeneratorClass(parts["val"], **options), DataGeneratorClass(parts["test"], **options)


def finetune_cache(parts, settings, results):
    """Item 5: a whole fine-tuning schedule, cached against end to end, on MobileNetV2; per round on VGG16."""
    progress("mobilenet_v2: fine-tuning schedule, cached and end to end")
    base_model, preprocess_input, pooling, last_block = backbone("mobilenet_v2")
    train, val, test = classifier_data(parts, preprocess_input, settings.finetune_images)
    schedule = [(0, 1e-3, settings.head_epochs), (last_block, 1e-4, settings.block_epochs)]
    for cached in (False, True):
        seconds, accuracies = [], []
        for run in range(settings.finetune_runs):
            started = time.perf_counter()
            # patience above the epochs: both ways run every epoch, so they do the same work
            result = finetune_classifier(base_model, train, val, test, schedule=schedule, pooling=pooling,
                                         patience=100, cache_frozen=cached, seed=run)
            seconds.append(time.perf_counter() - started)
            accuracies.append(result["accuracy"])
        way = "cached" if cached else "end_to_end"
        results[f"mobilenet_v2_finetune_schedule_seconds_{way}"] = [round(s, 1) for s in seconds]
        results[f"mobilenet_v2_finetune_test_accuracy_{way}"] = [round(a, 4) for a in accuracies]
    results["mobilenet_v2_finetune_schedule"] = [list(r) for r in schedule]
    results["mobilenet_v2_finetune_train_images"] = train.n_images
    results["mobilenet_v2_finetune_speedup_cached_over_end_to_end"] = round(
        statistics.median(results["mobilenet_v2_finetune_schedule_seconds_end_to_end"])
        / statistics.median(results["mobilenet_v2_finetune_schedule_seconds_cached"]), 2)
    progress("vgg16: fine-tuning rounds, cached and end to end")
    base_model, preprocess_input, pooling, _ = backbone("vgg16")
    train, val, test = classifier_data(parts, preprocess_input, settings.finetune_images)
    for unfrozen in (5, 6, 7):  # the reference's [5, 5, 6, 7]: rounds of 5 unfrozen layers cost alike
        timed = {}
        for cached in (False, True):
            started = time.perf_counter()
            finetune_classifier(base_model, train, val, test, schedule=[(unfrozen, 1e-4, settings.block_epochs)],
                                pooling=pooling, patience=100, cache_frozen=cached)
            timed[cached] = time.perf_counter() - started
        results[f"vgg16_finetune_round_{unfrozen}_unfrozen_seconds_end_to_end"] = round(timed[False], 1)
        results[f"vgg16_finetune_round_{unfrozen}_unfrozen_seconds_cached"] = round(timed[True], 1)
        results[f"vgg16_finetune_round_{unfrozen}_unfrozen_speedup"] = round(timed[False] / timed[True], 2)
    results["vgg16_finetune_round_epochs"] = settings.block_epochs


def compile_options(parts, name, in_memory, settings, results):
    """Item 6: jit_compile and bfloat16 mixed precision against the default step (frozen backbone)."""
    progress(f"{name}: jit_compile and mixed precision")
    base_model, _, pooling, _ = backbone(name)
    default = views_per_second(wrapper(base_model, 0, pooling).SimCLR_model, in_memory, settings.repeats)
    jit = views_per_second(wrapper(base_model, 0, pooling, jit_compile=True).SimCLR_model, in_memory, settings.repeats)
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        mixed_backbone = backbone(name)[0]
        mixed = views_per_second(wrapper(mixed_backbone, 0, pooling).SimCLR_model, in_memory, settings.repeats)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    results[f"{name}_frozen_step_views_per_s_default"] = round(default, 1)
    results[f"{name}_frozen_step_ratio_jit_compile_over_default"] = round(jit / default, 3)
    results[f"{name}_frozen_step_ratio_mixed_bfloat16_over_default"] = round(mixed / default, 3)


def peak_memory_child(name, n_batches):
    """Train SimCLR for one epoch (last block unfrozen) and print the peak RSS in MiB."""
    parts = split_sources(SPLIT)
    base_model, preprocess_input, pooling, last_block = backbone(name)
    simclr = wrapper(base_model, last_block, pooling)
    simclr.SimCLR_model.fit(simclr_generator(parts, preprocess_input, n_batches, workers=1), epochs=1, verbose=0)
    print(peak_rss_mib())


def peak_rss_mib():
    """This process's peak resident memory in MiB.

    Linux's VmHWM, which starts afresh at exec; `ru_maxrss` would also count
    the parent's memory that the child was forked from.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_memory(settings, results):
    """Item 7: in a child process, so the figure is one training run's alone."""
    progress("peak memory of training runs")
    for name in ("vgg16", "mobilenet_v2"):
        output = subprocess.run([sys.executable, __file__, "--peak-memory-of", name, "--batches", str(settings.batches)],
                                capture_output=True, text=True, check=True).stdout
        results[f"{name}_simclr_training_peak_rss_mib"] = round(float(output.strip().splitlines()[-1]))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer batches, images and repeats (under 2 minutes)")
    parser.add_argument("--json", help="write every figure to this JSON file")
    parser.add_argument("--repeats", type=int, help="timed runs per figure (median; default 5, quick 1)")
    parser.add_argument("--batches", type=int, help="SimCLR batches per timed epoch (default 8, quick 2)")
    parser.add_argument("--peak-memory-of", help=argparse.SUPPRESS)
    settings = parser.parse_args()
    quick = settings.quick
    global BATCH
    BATCH = 8 if quick else BATCH
    settings.repeats = settings.repeats or (1 if quick else 5)
    settings.batches = settings.batches or (2 if quick else 8)
    if settings.peak_memory_of:
        return peak_memory_child(settings.peak_memory_of, settings.batches)
    if not os.path.exists(SPLIT):
        sys.exit(f"needs the shared TrashNet data and backbones at {SHARED}")
    settings.images = 64 if quick else 256
    settings.finetune_images = 160 if quick else 400  # the speedup depends on epochs per round, not on images
    settings.finetune_runs = 1 if quick else 3
    settings.head_epochs, settings.block_epochs = (2, 1) if quick else (10, 4)
    logging.basicConfig(level=logging.WARNING)
    keras.utils.set_random_seed(0)
    started = time.perf_counter()
    parts = split_sources(SPLIT)
    results = {
        "command": "python benchmarks/throughput.py" + (" --quick" if quick else ""),
        "date": datetime.date.today().isoformat(),
        "machine": machine(),
        "tensorflow": tf.__version__, "keras": keras.__version__,
        "repeats": settings.repeats, "batches_per_timed_epoch": settings.batches, "batch_size": BATCH, "size": SIZE,
        "matmul_2048_gflop_per_s": round(matmul_gflops(settings.repeats), 1),
    }
    names = ("mobilenet_v2",) if quick else ("vgg16", "mobilenet_v2")
    for name in names:
        in_memory = training_step(parts, name, settings, results)
        label = "last_block_unfrozen" if name == "vgg16" else "frozen"
        data_pipeline(parts, name, results[f"{name}_{label}_step_views_per_s_library"], in_memory, settings, results)
        feature_extraction(parts, name, settings, results)
        compile_options(parts, name, in_memory, settings, results)
        print(json.dumps(results, indent=1), flush=True)
    if not quick:
        finetune_cache(parts, settings, results)
        peak_memory(settings, results)
    results["benchmark_seconds"] = round(time.perf_counter() - started, 1)
    text = json.dumps(results, indent=1)
    print(text)
    if settings.json:
        with atomic_output(settings.json) as tmp, open(tmp, "w") as file:
            file.write(text + "\n")


if __name__ == "__main__":
    main()
