"""What a view-bank step still computes: a backbone's prefix forward against its suffix forward and backward.

For a round of the TrashNet benchmark's schedule of MobileNetV2 or VGG16
(the shared weights do not change the arithmetic, so the backbone is built
without them), times on one batch of 64 views (two views of 32 images) at 80×80,
as compiled `tf.function`s: the frozen prefix's forward pass (what a bank
saves), the suffix's forward pass, the suffix's forward and backward pass
(what every bank step still does), and the head's. Medians of 12 calls,
`--turns` times in turn in one process, in float32 or, with `--precision
mixed_bfloat16`, as SimCLR trains where the hardware has bfloat16.

    python benchmarks/bank_suffix_cost.py --layers block_16_expand,block_13_expand,block_11_expand
    python benchmarks/bank_suffix_cost.py --backbone vgg16 --layers block5_conv1 --precision mixed_bfloat16
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from simclr_wrap.prefix_cut import cut_backbone  # noqa: E402
from simclr_wrap.unfreezing import set_unfrozen_layers  # noqa: E402
from simclr_wrap.view_bank import first_trainable_index  # noqa: E402


def milliseconds(function, argument, calls=12):
    """Median milliseconds of `function(argument)` after two untimed calls (tracing)."""
    function(argument)
    function(argument)
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        keras.tree.map_structure(lambda tensor: tensor.numpy(), function(argument))
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


# Each backbone as the benchmark pools it before the projection head.
BACKBONES = {"mobilenet_v2": (keras.applications.MobileNetV2, keras.layers.GlobalAveragePooling2D),
             "vgg16": (keras.applications.VGG16, keras.layers.Flatten)}


def costs(backbone_name, layer, batch=64, size=80):
    """Milliseconds of the prefix forward, suffix forward, suffix forward and backward, head forward and backward."""
    application, pooling = BACKBONES[backbone_name]
    backbone = application(input_shape=(size, size, 3), include_top=False, weights=None)
    set_unfrozen_layers(backbone, layer)
    prefix, suffix_layers = cut_backbone(backbone, first_trainable_index(backbone))
    activations = keras.Input(prefix.output.shape[1:])
    features = activations
    for suffix_layer in suffix_layers:
        features = suffix_layer(features)
    suffix = keras.Model(activations, features)
    head = keras.Sequential([pooling(), keras.layers.Dense(2048, activation="swish"),
                             keras.layers.Dense(128, dtype="float32")])
    rng = np.random.default_rng(0)
    images = tf.constant(rng.uniform(-1, 1, (batch, size, size, 3)).astype("float32"))
    stored = tf.constant(prefix(images).numpy().astype("float32"))  # as the bank gives them
    features = tf.constant(suffix(stored).numpy().astype("float32"))

    def trained(model):
        @tf.function
        def step(inputs):
            with tf.GradientTape() as tape:
                total = tf.reduce_sum(model(inputs, training=True))
            return tape.gradient(total, model.trainable_variables)
        return step

    return {"prefix forward": milliseconds(tf.function(lambda x: prefix(x, training=False)), images),
            "suffix forward": milliseconds(tf.function(lambda x: suffix(x, training=True)), stored),
            "suffix forward and backward": milliseconds(trained(suffix), stored),
            "head forward and backward": milliseconds(trained(head), features)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", choices=sorted(BACKBONES), default="mobilenet_v2")
    parser.add_argument("--layers", default="block_16_expand,block_13_expand,block_11_expand",
                        help="first trainable layer of each round, comma-separated")
    parser.add_argument("--precision", choices=["float32", "mixed_bfloat16"], default="float32")
    parser.add_argument("--turns", type=int, default=2)
    args = parser.parse_args(argv)
    keras.mixed_precision.set_global_policy(args.precision)
    for turn in range(args.turns):
        for layer in args.layers.split(","):
            print(f"turn {turn + 1}, {args.backbone} from {layer}, {args.precision}:",
                  {name: round(value) for name, value in costs(args.backbone, layer).items()}, flush=True)


if __name__ == "__main__":
    main()
