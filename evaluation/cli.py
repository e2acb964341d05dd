"""The `simclr-wrap` command line."""

import argparse
import datetime
import logging
import os
import sys

DEMO_DEFAULTS = {
    "backbone": "small_cnn",
    "size": 32,
    "batch_size": 64,
    "schedule": "all:1e-3:8",
    "temperature": 0.2,
    "feat_dims": "128,64",
    "color_strength": 0.5,
}
# Digits are 8x8 upsampled and not mirror-symmetric: small crops leave blobs
# and flips change the digit, so the demo's views are milder than SimCLR's.
DEMO_AUGMENTATION = {"crop_area": (0.35, 1.0), "flip": False, "blur": False, "noise_std": 10.0}
DATA_DEFAULTS = {
    "backbone": "small_cnn",
    "size": 80,
    "batch_size": 32,
    "schedule": "1:1e-4:5,2:1e-5:5",
    "temperature": 0.1,
    "feat_dims": "2048,128",
    "color_strength": 0.5,
}


def build_parser():
    """The argument parser of every `simclr-wrap` command."""
    parser = argparse.ArgumentParser(
        prog="simclr-wrap",
        description="SimCLR self-supervised adaptation of any Keras backbone to your images.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    pretrain = commands.add_parser(
        "pretrain",
        help="adapt a backbone to a folder of images with a SimCLR schedule",
        description=(
            "Adapt a backbone to your images with SimCLR and gradual unfreezing. Without --data it "
            "runs an offline demo on scikit-learn's digits with a small CNN (about a minute). "
            f"Defaults without --data: {DEMO_DEFAULTS}; with --data: {DATA_DEFAULTS}."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    pretrain.add_argument("--data", help="folder with one subfolder of images per class, or a filename,label,split CSV (its train and val rows are used; labels are not)")
    pretrain.add_argument("--backbone", help="keras.applications name (vgg16, mobilenet_v2, resnet50, ...), small_cnn, or a .keras model file")
    pretrain.add_argument("--weights", help="'imagenet' or a .weights.h5 file for a named backbone (default: random initialisation)")
    pretrain.add_argument("--size", type=int, help="image side in pixels; images are resized to size x size")
    pretrain.add_argument("--preprocess", default="auto", choices=["auto", "unit", "caffe", "tf", "torch", "none"],
                          help="pixel preprocessing: auto = the architecture's own; unit = x/255")
    pretrain.add_argument("--pooling", default="flatten", choices=["flatten", "avg", "max"], help="how the feature map becomes a vector")
    pretrain.add_argument("--batch-size", type=int, help="images per contrastive batch (2 views each)")
    pretrain.add_argument("--schedule", help="unfreezing rounds layers:lr:epochs, comma-separated; layers is a count, a layer name or 'all'")
    pretrain.add_argument("--temperature", type=float, help="softmax temperature of NT-Xent")
    pretrain.add_argument("--feat-dims", help="widths of the projection head, comma-separated")
    pretrain.add_argument("--color-strength", type=float, help="colour-jitter strength s of the SimCLR augmentations")
    pretrain.add_argument("--seed", type=int, default=0, help="seed of the split, the augmented views and the head")
    pretrain.add_argument("--workers", type=int, default=1, help="data-loading threads")
    pretrain.add_argument("--out", help="output folder (default: a new folder under runs/)")
    return parser


def main(argv=None):
    """Run `simclr-wrap`; returns the exit status (0 ok, 2 bad input)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return COMMANDS[args.command](args)
    except (ValueError, TypeError, OSError, RuntimeError) as error:
        print(f"simclr-wrap {args.command}: error: {error}", file=sys.stderr)
        return 2


def run_pretrain(args):
    from data_generators import SimCLRAugmentation, digits_demo
    from evaluation.pretraining import parse_schedule, pretrain

    defaults = DATA_DEFAULTS if args.data else DEMO_DEFAULTS
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    out = args.out or os.path.join("runs", "pretrain-" + datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
    augmentation = {"color_strength": args.color_strength}
    if args.data:
        data = args.data
    else:
        print("No --data given: running the offline demo on scikit-learn's digits with a small CNN.")
        data = digits_demo(size=args.size, seed=args.seed)
        augmentation.update(DEMO_AUGMENTATION)
    simclr = pretrain(
        data,
        args.backbone,
        out,
        weights=args.weights,
        size=args.size,
        preprocess=args.preprocess,
        schedule=parse_schedule(args.schedule),
        batch_size=args.batch_size,
        temperature=args.temperature,
        feat_dims=_ints(args.feat_dims, "--feat-dims"),
        pooling=args.pooling,
        augmentation=SimCLRAugmentation(**augmentation),
        seed=args.seed,
        workers=args.workers,
    )
    history = simclr.history_
    print(
        f"Done: {simclr.round_} rounds, val_nt_xent {history['val_nt_xent'][0]:.3f} -> "
        f"{history['val_nt_xent'][-1]:.3f}, val contrastive accuracy "
        f"{history['val_contrastive_accuracy'][0]:.3f} -> {history['val_contrastive_accuracy'][-1]:.3f}."
    )
    print(f"Adapted backbone: {os.path.join(out, 'base_model.keras')}; history, plots and checkpoints in {out}/")
    return 0


def _ints(text, option):
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"{option} must be comma-separated integers, got {text!r}") from None


COMMANDS = {"pretrain": run_pretrain}

if __name__ == "__main__":
    sys.exit(main())
