"""The `simclr-wrap` command line: pretrain, benchmark, embed."""

import argparse
import datetime
import logging
import os
import sys

# Without --data the commands run the offline digits demo (see evaluation.demo).
DEMO_DEFAULTS = {
    "backbone": "small_cnn",
    "size": 32,
    "pooling": "avg",
    "batch_size": 64,
    "schedule": "all:1e-3:10",
    "temperature": 0.2,
    "feat_dims": "128,64",
    "color_strength": 0.5,
    "finetune_schedule": "0:1e-3:30,all:1e-4:5",
}
DATA_DEFAULTS = {
    "backbone": "small_cnn",
    "size": 80,
    "pooling": "flatten",
    "batch_size": 32,
    "schedule": "1:1e-4:5,2:1e-5:5",
    "temperature": 0.1,
    "feat_dims": "2048,128",
    "color_strength": 0.5,
    "finetune_schedule": "0:1e-3:30,2:1e-4:5",
}


def build_parser():
    """The argument parser of every `simclr-wrap` command."""
    parser = argparse.ArgumentParser(
        prog="simclr-wrap",
        description="SimCLR self-supervised adaptation of any Keras backbone to your images.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    defaults = f"Defaults without --data: {DEMO_DEFAULTS}; with --data: {DATA_DEFAULTS}."
    pretrain = commands.add_parser(
        "pretrain",
        help="adapt a backbone to a folder of images with a SimCLR schedule",
        description="Adapt a backbone to your images with SimCLR and gradual unfreezing. Without --data it "
        "runs an offline demo on scikit-learn's digits with a small CNN (under a minute). " + defaults,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _add_data_options(pretrain)
    _add_simclr_options(pretrain)
    pretrain.add_argument("--resume", action="store_true",
                          help="save the schedule's state after every epoch in OUT/resume, and go on from the last "
                          "finished epoch when OUT holds an interrupted run of the same schedule")
    pretrain.add_argument("--mirrored", action="store_true",
                          help="train on every GPU of this machine (tf.distribute.MirroredStrategy); --batch-size "
                          "is then the global batch, split over the GPUs, with negatives from all of it")
    benchmark = commands.add_parser(
        "benchmark",
        help="linear, kNN and fine-tuned accuracy at label fractions, before and after SimCLR",
        description="Evaluate a backbone at fractions of the labels, adapt it with SimCLR on the training "
        "images (no labels), evaluate it again, and write report.md, results.json and plots. Without --data "
        "it tells the story in miniature, offline: a small CNN trained with labels on digits 0-4 is adapted "
        "to digits 5-9 (a few minutes). " + defaults,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _add_data_options(benchmark)
    _add_simclr_options(benchmark)
    benchmark.add_argument("--finetune-schedule", help="the fine-tuned classifier's rounds, layers:lr:epochs")
    benchmark.add_argument("--fractions", default="1.0,0.2,0.05", help="shares of the training labels")
    benchmark.add_argument("--runs", type=int, default=3, help="repeated runs per cell (other label subsets and seeds)")
    benchmark.add_argument("--pretrain-runs", type=int, default=1, help="repeated SimCLR runs")
    benchmark.add_argument("--adapted", help="a .keras backbone adapted earlier: evaluate it instead of running SimCLR")
    benchmark.add_argument("--supervised-baseline", action="store_true",
                           help="also train the architecture from random initialisation on the same labels")
    benchmark.add_argument("--classifiers", default="linear,knn,fine_tuned", help="which classifiers to run")
    benchmark.add_argument("--knn-k", type=int, default=20, help="neighbours of the kNN classifier")
    benchmark.add_argument("--no-frozen-cache", action="store_true",
                           help="fine-tune end to end instead of from cached activations of the frozen layers "
                           "(same results, slower; for speed comparisons)")
    benchmark.add_argument("--resume", action="store_true",
                           help="go on with the benchmark in --out: cells in its results.json are kept, and an "
                           "interrupted SimCLR run goes on from its last finished epoch")
    embed = commands.add_parser(
        "embed",
        help="export the pooled backbone embedding of every image",
        description="Write the pooled embedding of every image of --data, with its file name and label, "
        "to --out (.csv: one row per image; .npy: the array, with a .index.csv beside it).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    embed.add_argument("--data", required=True, help="folder of class subfolders, or a filename,label,split CSV")
    embed.add_argument("--backbone", required=True, help="keras.applications name, small_cnn, or a .keras file")
    embed.add_argument("--weights", help="'imagenet' or a .weights.h5 file for a named backbone")
    embed.add_argument("--size", type=int, default=80, help="image side in pixels")
    embed.add_argument("--preprocess", default="auto", choices=PREPROCESS_CHOICES, help="pixel preprocessing")
    embed.add_argument("--pooling", default="avg", choices=POOLING_CHOICES, help="how the feature map becomes a vector")
    embed.add_argument("--out", required=True, help="output file, .csv or .npy")
    return parser


PREPROCESS_CHOICES = ["auto", "unit", "caffe", "tf", "torch", "none"]
POOLING_CHOICES = ["flatten", "avg", "max"]


def _add_data_options(parser):
    parser.add_argument("--data", help="folder with one subfolder of images per class, or a filename,label,split CSV "
                        "(a folder is split 70/15/15, stratified and seeded)")
    parser.add_argument("--backbone", help="keras.applications name (vgg16, mobilenet_v2, resnet50, ...), small_cnn, "
                        "or a .keras model file")
    parser.add_argument("--weights", help="'imagenet' or a .weights.h5 file for a named backbone "
                        "(default: random initialisation)")
    parser.add_argument("--size", type=int, help="image side in pixels; images are resized to size x size")
    parser.add_argument("--preprocess", default="auto", choices=PREPROCESS_CHOICES,
                        help="pixel preprocessing: auto = the architecture's own; unit = x/255")
    parser.add_argument("--pooling", choices=POOLING_CHOICES, help="how the feature map becomes a vector")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split, the views, the label subsets and the heads")
    parser.add_argument("--out", help="output folder (default: a new folder under runs/)")


def _add_simclr_options(parser):
    parser.add_argument("--batch-size", type=int, help="images per contrastive batch (2 views each)")
    parser.add_argument("--schedule", help="unfreezing rounds layers:lr:epochs, comma-separated; "
                        "layers is a count, a layer name or 'all'")
    parser.add_argument("--temperature", type=float, help="softmax temperature of NT-Xent")
    parser.add_argument("--feat-dims", help="widths of the projection head, comma-separated")
    parser.add_argument("--color-strength", type=float, help="colour-jitter strength s of the SimCLR augmentations")
    parser.add_argument("--workers", type=int, default=1, help="data-loading threads")
    parser.add_argument("--probe-every", type=int, default=0,
                        help="every N epochs, log the validation accuracy of a linear probe on a few training "
                        "labels (val_probe_accuracy); 0 for none")
    parser.add_argument("--probe-fraction", type=float, default=0.1, help="share of the training labels the probe sees")
    parser.add_argument("--positives", default="view", choices=["view", "nearest_neighbour"],
                        help="view: SimCLR; nearest_neighbour: NNCLR, positives from a queue of past projections")
    parser.add_argument("--queue-size", type=int, default=10000, help="NNCLR's queue of past projections")


def main(argv=None):
    """Run `simclr-wrap`; returns the exit status (0 ok, 2 bad input)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return COMMANDS[args.command](args)
    except (ValueError, TypeError, OSError, RuntimeError) as error:
        print(f"simclr-wrap {args.command}: error: {error}", file=sys.stderr)
        return 2


def _prepare(args):
    """Fill defaults; return (data, backbone, augmentation settings, out)."""
    from data_generators.files import check_output_folder
    from evaluation.demo import DEMO_AUGMENTATION

    defaults = DATA_DEFAULTS if args.data else DEMO_DEFAULTS
    for name, value in defaults.items():
        if getattr(args, name, "absent") is None:
            setattr(args, name, value)
    out = args.out or os.path.join("runs", f"{args.command}-" + datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
    check_output_folder(out, "--out")
    augmentation = {"color_strength": args.color_strength}
    if args.data:
        return args.data, args.backbone, augmentation, out
    augmentation.update(DEMO_AUGMENTATION)
    if args.command == "benchmark" and args.backbone == DEMO_DEFAULTS["backbone"] and not args.weights:
        from evaluation.demo import digits_story

        print("No --data given: the offline demo. A small CNN is trained with labels on digits 0-4, "
              "then adapted with SimCLR to digits 5-9 and evaluated there.")
        backbone, data = digits_story(size=args.size, seed=args.seed)
        args.preprocess = "unit"
        return data, backbone, augmentation, out
    from data_generators import digits_demo

    print("No --data given: running the offline demo on scikit-learn's digits.")
    return digits_demo(size=args.size, seed=args.seed), args.backbone, augmentation, out


def _simclr_options(args, augmentation):
    from data_generators import SimCLRAugmentation
    from evaluation.pretraining import parse_schedule

    return dict(
        weights=args.weights, size=args.size, preprocess=args.preprocess, pooling=args.pooling,
        schedule=parse_schedule(args.schedule), batch_size=args.batch_size, temperature=args.temperature,
        feat_dims=_ints(args.feat_dims, "--feat-dims"), augmentation=SimCLRAugmentation(**augmentation),
        seed=args.seed, probe_every=args.probe_every, probe_fraction=args.probe_fraction, positives=args.positives,
        queue_size=args.queue_size,
    )


def run_pretrain(args):
    from evaluation.pretraining import pretrain

    data, backbone, augmentation, out = _prepare(args)
    strategy = None
    if args.mirrored:
        import tensorflow as tf

        strategy = tf.distribute.MirroredStrategy()
        print(f"MirroredStrategy over {strategy.num_replicas_in_sync} device(s)")
    simclr = pretrain(data, backbone, out, workers=args.workers, resume=args.resume, strategy=strategy,
                      **_simclr_options(args, augmentation))
    history = simclr.history_
    print(
        f"Done: {simclr.round_} rounds, val_nt_xent {history['val_nt_xent'][0]:.3f} -> "
        f"{history['val_nt_xent'][-1]:.3f}, val contrastive accuracy "
        f"{history['val_contrastive_accuracy'][0]:.3f} -> {history['val_contrastive_accuracy'][-1]:.3f}."
    )
    print(f"Adapted backbone: {os.path.join(out, 'base_model.keras')}; history, plots and checkpoints in {out}/")
    return 0


def run_benchmark(args):
    from evaluation.benchmark import run_benchmark as benchmark
    from evaluation.fractions import parse_fractions
    from evaluation.pretraining import parse_schedule
    from evaluation.report import markdown_table, summary_table

    data, backbone, augmentation, out = _prepare(args)
    records = benchmark(
        data, backbone, out,
        finetune_schedule=parse_schedule(args.finetune_schedule), fractions=parse_fractions(args.fractions),
        runs=args.runs, pretrain_runs=args.pretrain_runs, adapted=args.adapted,
        supervised_baseline=args.supervised_baseline, classifiers=tuple(args.classifiers.split(",")),
        knn_k=args.knn_k, resume=args.resume, cache_frozen=not args.no_frozen_cache,
        **_simclr_options(args, augmentation),
    )
    print(markdown_table(summary_table(records)))
    print(f"Report: {os.path.join(out, 'report.md')}; every run in {os.path.join(out, 'results.json')}")
    return 0


def run_embed(args):
    from evaluation.embed import export_embeddings

    path = export_embeddings(args.data, args.backbone, args.out, weights=args.weights, size=args.size,
                             preprocess=args.preprocess, pooling=args.pooling)
    print(f"Embeddings written to {path}")
    return 0


def _ints(text, option):
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"{option} must be comma-separated integers, got {text!r}") from None


COMMANDS = {"pretrain": run_pretrain, "benchmark": run_benchmark, "embed": run_embed}

if __name__ == "__main__":
    sys.exit(main())
