"""Views per second of SimCLR's augmentations: the NumPy path on the host against the Keras ops in the step.

    python benchmarks/augment_speed.py [--quick] [--step] [--out FILE] [--json benchmarks/speed.json]
    python benchmarks/augment_speed.py --add-result FILE [--json benchmarks/speed.json]

1. `numpy`: `SimCLRAugmentation()` on a batch of uint8 images, one thread:
   what one data-loading worker makes (decoding excluded; images in memory).
2. `in_step`: `simclr_wrap.views.AugmentedViews` on the same batch and
   parameters drawn on the host, compiled (tf.function, or jax.jit), the
   images already on the device, as in a training step.
The two alternate, in turns, in one process; the median of the turns is
reported. With `--step` (meant for a GPU): the views per second a
SimCLR-shaped training step of MobileNetV2 (weights=None, 80x80, the
backbone run once on both views, a 128-wide head) consumes with views made
on the host, with views made in the step, and with the step in
mixed_bfloat16.

Runs under any Keras backend: on the GPU machine, where TensorFlow is not
installed, with KERAS_BACKEND=jax (the library itself trains with TensorFlow;
`simclr_wrap.views` is loaded on its own there). `--json` records the result
in the `augment` entry of speed.json, under "cpu" or "gpu" (the headline
`numpy_views_per_s` / `tf_views_per_s` are the CPU's at 80x80);
`--add-result` records a result written elsewhere (`--out` on the GPU machine).
"""

import argparse
import datetime
import importlib.util
import json
import os
import pathlib
import statistics
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import keras  # noqa: E402
sys.path.insert(0, str(ROOT / "benchmarks"))  # speed_json, beside this file
from speed_json import machine, read_speed_json, write_speed_json  # noqa: E402

from data_generators.augment import SimCLRAugmentation  # noqa: E402


def load_views_module():
    """`simclr_wrap.views`, without the package (whose model needs TensorFlow) where TensorFlow is absent."""
    if importlib.util.find_spec("tensorflow") is not None:
        from simclr_wrap import views

        return views
    spec = importlib.util.spec_from_file_location("simclr_views", ROOT / "simclr_wrap" / "views.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def compiled(function):
    """`function` compiled by the backend (XLA on a GPU), returning a value that waits for the device."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        jitted = jax.jit(function)
        return lambda *arguments: jitted(*arguments).block_until_ready()
    if backend == "tensorflow":
        import tensorflow as tf

        on_gpu = bool(tf.config.list_logical_devices("GPU"))
        traced = tf.function(function, jit_compile=on_gpu)
        return lambda *arguments: traced(*arguments).numpy()
    raise ValueError(f"this benchmark runs under the jax or tensorflow backend, not {backend}")


def time_in_turns(runs, turns, batches):
    """Median seconds per batch of each named function, run in turns."""
    seconds = {name: [] for name in runs}
    for _ in range(turns):
        for name, run in runs.items():
            started = time.perf_counter()
            for _ in range(batches):
                run()
            seconds[name].append((time.perf_counter() - started) / batches)
    return {name: statistics.median(values) for name, values in seconds.items()}


def augmentation_speed(views_module, size, batch_size, turns, batches):
    augmentation = SimCLRAugmentation()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (batch_size, size, size, 3), dtype=np.uint8)
    parameters = np.stack([augmentation.draw(images.shape, rng) for _ in range(2)], axis=1)
    layer = views_module.AugmentedViews(augmentation)
    on_device = (keras.ops.convert_to_tensor(images.astype("float32")), keras.ops.convert_to_tensor(parameters))
    in_step = compiled(lambda x, p: keras.ops.sum(layer(x, p)))
    in_step(*on_device)  # compile
    seconds = time_in_turns({
        # Two views per image, as a generator makes them, parameters drawn included.
        "numpy": lambda: [augmentation(images, rng) for _ in range(2)],
        "in_step": lambda: in_step(*on_device),
    }, turns, batches)
    return {f"{name}_views_per_s": round(2 * batch_size / value, 1) for name, value in seconds.items()}


def step_speed(views_module, size, batch_size, turns, batches):
    """Views per second consumed by a SimCLR-shaped step: views from the host, made in the step, in bfloat16."""
    from data_generators.augment import VIEW_PARAMETERS

    augmentation = SimCLRAugmentation()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (batch_size, size, size, 3), dtype=np.uint8).astype("float32")
    parameters = np.stack([augmentation.draw(images.shape, rng) for _ in range(2)], axis=1)
    views = np.concatenate([augmentation(images, rng) for _ in range(2)]) / 127.5 - 1

    def model(in_step):
        backbone = keras.applications.MobileNetV2(input_shape=(size, size, 3), include_top=False, weights=None,
                                                  pooling="avg")
        if in_step:
            inputs = [keras.Input((size, size, 3)), keras.Input((2, len(VIEW_PARAMETERS)))]
            made = views_module.AugmentedViews(augmentation, np.eye(3) / 127.5, -np.ones(3))(*inputs)
        else:
            inputs = made = keras.Input((size, size, 3))
        projections = keras.layers.Dense(128)(keras.layers.Dense(2048, activation="swish")(backbone(made)))
        built = keras.Model(inputs, projections)
        built.compile(optimizer=keras.optimizers.Adam(1e-4), loss="mse", jit_compile="auto")  # XLA on GPUs
        return built

    target = np.zeros((2 * batch_size, 128), "float32")
    runs = {}
    for name, in_step, policy in (("host_views", False, "float32"), ("in_step", True, "float32"),
                                  ("in_step_bf16", True, "mixed_bfloat16")):
        keras.mixed_precision.set_global_policy(policy)
        built = model(in_step)
        x = [images, parameters] if in_step else views
        built.train_on_batch(x, target)  # compile
        runs[name] = (lambda built=built, x=x: built.train_on_batch(x, target))
    keras.mixed_precision.set_global_policy("float32")
    seconds = time_in_turns(runs, turns, batches)
    return {f"{name}_views_per_s": round(2 * batch_size / value, 1) for name, value in seconds.items()}


def record(result, path):
    """Put `result` in the `augment` entry of the speed.json at `path`."""
    speed = read_speed_json(path)
    entry = speed.setdefault("augment", {})
    entry["gpu" if "gpu" in result["machine"].lower() or " on " in result["backend"] else "cpu"] = result
    if "cpu" in entry:
        at_80 = entry["cpu"]["augment"]["80"]
        entry["numpy_views_per_s"], entry["tf_views_per_s"] = at_80["numpy_views_per_s"], at_80["in_step_views_per_s"]
    write_speed_json(speed, path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer turns and batches")
    parser.add_argument("--step", action="store_true", help="also time a MobileNetV2 step (for a GPU)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per augmented batch")
    parser.add_argument("--step-batch-size", type=int, default=256, help="images per step (2x views) with --step")
    parser.add_argument("--out", help="write the figures to this JSON file")
    parser.add_argument("--json", help="record the figures in this speed.json (benchmarks/speed.json)")
    parser.add_argument("--add-result", help="record this --out file of another machine in --json; run nothing")
    args = parser.parse_args(argv)
    if args.add_result:
        record(json.loads(pathlib.Path(args.add_result).read_text()), args.json or ROOT / "benchmarks" / "speed.json")
        return None
    turns, batches = (2, 2) if args.quick else (5, 5)
    views_module = load_views_module()
    devices = keras.backend.backend()
    try:
        import jax

        devices += f" on {jax.devices()[0].device_kind}"
    except ImportError:
        pass
    result = {"backend": devices, "batch_size": args.batch_size, "cpu_count": os.cpu_count(), "augment": {},
              "command": "python benchmarks/augment_speed.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "date": datetime.datetime.now().isoformat(timespec="seconds"), "machine": machine()}
    for size in (80, 160):
        result["augment"][str(size)] = augmentation_speed(views_module, size, args.batch_size, turns, batches)
        print(size, result["augment"][str(size)], flush=True)
    if args.step:
        result["step_batch_size"] = args.step_batch_size
        result["step_80"] = step_speed(views_module, 80, args.step_batch_size, turns, batches)
        print("step", result["step_80"], flush=True)
    if args.out:
        pathlib.Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    if args.json:
        record(result, args.json)
    return result


if __name__ == "__main__":
    main()
