"""The `simclr-wrap` command line: pretrain, benchmark, embed.

Every option is a row of `OPTIONS`: its flag, the group it configures (the
backbone, SimCLR, the augmentation, the schedule, the online probe, the
fine-tuned classifier, the benchmark) and the key it sets there. Defaults
are not repeated here: a flag that is not given leaves its key out, and the
object it configures applies its own default; `--help` shows that default,
read from the object.
"""

import argparse
import datetime
import inspect
import logging
import os
import re
import sys

PREPROCESS_CHOICES = ["auto", "unit", "caffe", "tf", "torch", "none"]
POOLING_CHOICES = ["flatten", "avg", "max"]
AUGMENT_ON = ["auto", "host", "device"]  # evaluation.pretraining.AUGMENT_ON, kept here for a fast --help
DEFAULT_BACKBONE = "small_cnn"


def _int_or_auto(text):
    return text if text == "auto" else int(text)


def _ints(text):
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _switch(text):
    """'true' / 'false' (also yes/no, 1/0) as a bool."""
    value = text.strip().lower()
    if value in ("true", "yes", "1"):
        return True
    if value in ("false", "no", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _size(text):
    """"80" as (80, 80), "48x64" as (48, 64): height and width in pixels."""
    parts = text.lower().replace("×", "x").split("x")
    try:
        sizes = tuple(int(part) for part in parts)
    except ValueError:
        sizes = ()
    if len(sizes) not in (1, 2) or min(sizes, default=0) < 1:
        raise argparse.ArgumentTypeError(f"expected SIDE or HEIGHTxWIDTH in pixels, e.g. 80 or 48x64, got {text!r}")
    return sizes * 2 if len(sizes) == 1 else sizes


def _jit(text):
    return "auto" if text.strip().lower() == "auto" else _switch(text)


def _schedule(text):
    from evaluation.pretraining import parse_schedule

    try:
        return parse_schedule(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _fractions(text):
    from evaluation.fractions import parse_fractions

    try:
        return parse_fractions(text)
    except (TypeError, ValueError) as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _names(text):
    return tuple(part.strip() for part in text.split(",") if part.strip())


class Option:
    """One command-line flag: what it sets, and where its default comes from.

    Args:
        flags: the flag and its aliases.
        group: "backbone", "simclr", "augmentation", "schedule", "probe",
            "finetune", "benchmark" or "run" (arguments of the command itself).
        key: the key it sets in its group.
        commands: the commands that take it.
        help: what it does.
        parse: turns the text into the value (argparse's `type`).
        choices, action: as in argparse; action "store_true" sets True,
            "store_false" sets False.
    """

    def __init__(self, flags, group, key, commands, help, parse=None, choices=None, action=None):
        self.flags, self.group, self.key, self.commands = flags, group, key, commands
        self.help, self.parse, self.choices, self.action = help, parse, choices, action

    def add_to(self, parser):
        arguments = dict(dest=f"{self.group}.{self.key}", default=None, help=f"{self.help} ({_default_text(self)})")
        if self.action:
            arguments["action"] = self.action
        else:
            arguments.update(type=self.parse, choices=self.choices,
                             metavar=self.flags[0].lstrip("-").upper().replace("-", "_"))
            if self.choices:
                del arguments["metavar"]
        parser.add_argument(*self.flags, **arguments)


BOTH = ("pretrain", "benchmark")
ALL = ("pretrain", "benchmark", "embed")
OPTIONS = [
    # The run itself.
    Option(("--data",), "run", "data", BOTH, "folder with one subfolder of images per class, or a "
           "filename,label,split CSV (a folder is split 70/15/15, stratified and seeded)"),
    Option(("--out",), "run", "out", BOTH, "output folder"),
    Option(("--data",), "embed", "data", ("embed",), "folder of class subfolders, or a filename,label,split CSV"),
    Option(("--out",), "embed", "out", ("embed",), "output file, .csv or .npy"),
    Option(("--pooling",), "embed", "pooling", ("embed",), "how the feature map becomes a vector; none: the "
           "pooling a .keras backbone was adapted with, else avg", choices=POOLING_CHOICES),
    Option(("--seed",), "run", "seed", BOTH, "seed of the split, the views, the label subsets and the heads", int),
    Option(("--workers",), "run", "workers", ("pretrain",), "data-loading threads", int),
    Option(("--augment-on",), "run", "augment_on", ("pretrain",), "where the views are made: host (NumPy, in the "
           "loading threads), device (TensorFlow ops in the training step) or auto (device where there is a GPU)",
           choices=AUGMENT_ON),
    Option(("--resume",), "run", "resume", BOTH, "pretrain: save the schedule's state after every epoch in "
           "OUT/resume and go on from the last finished epoch; benchmark: keep the cells in OUT/results.json and "
           "go on with the rest", action="store_true"),
    Option(("--overwrite",), "run", "overwrite", BOTH, "replace a non-empty --out (without it, or --resume, a "
           "non-empty --out is refused)", action="store_true"),
    Option(("--tensorboard",), "run", "tensorboard", ("pretrain",), "write TensorBoard logs of every round to "
           "this folder"),
    Option(("--verbose",), "run", "verbose", ALL, "show TensorFlow's start-up log messages", action="store_true"),
    Option(("--mirrored",), "run", "mirrored", ("pretrain",), "train on every GPU of this machine "
           "(tf.distribute.MirroredStrategy); --batch-size is then the global batch", action="store_true"),
    Option(("--multi-worker",), "run", "multi_worker", ("pretrain",), "train as one worker of a cluster of "
           "machines described by the TF_CONFIG environment variable (tf.distribute.MultiWorkerMirroredStrategy; "
           "run the same command on every worker); --batch-size is then the global batch; only the chief writes "
           "--out", action="store_true"),
    Option(("--adapted",), "run", "adapted", ("benchmark",), "a .keras backbone adapted earlier: evaluate it "
           "instead of running SimCLR"),
    # Backbone.
    Option(("--backbone",), "backbone", "source", ALL, "keras.applications name (vgg16, mobilenet_v2, resnet50, "
           "...), small_cnn, or a .keras model file"),
    Option(("--weights",), "backbone", "weights", ALL, "'imagenet' or a .weights.h5 file for a named backbone"),
    Option(("--size",), "backbone", "input_shape", ALL, "image size of a named backbone, SIDE or HEIGHTxWIDTH "
           "in pixels; a .keras file keeps its own", _size),
    Option(("--preprocess",), "backbone", "preprocess", ALL, "pixel preprocessing: auto = the architecture's "
           "own (x/255 for small_cnn and .keras files); unit = x/255", choices=PREPROCESS_CHOICES),
    Option(("--pooling",), "simclr", "pooling", BOTH, "how the feature map becomes a vector",
           choices=POOLING_CHOICES),
    # SimCLR.
    Option(("--batch-size",), "simclr", "batch_size", BOTH, "images per contrastive batch (2 views each)", int),
    Option(("--temperature",), "simclr", "temperature", BOTH, "softmax temperature of NT-Xent", float),
    Option(("--feat-dims-ph", "--feat-dims"), "simclr", "feat_dims_ph", BOTH,
           "widths of the projection head, comma-separated", _ints),
    Option(("--ph-regul",), "simclr", "ph_regul", BOTH, "L1 factor on the projection head's kernels", float),
    Option(("--ph-activation",), "simclr", "ph_activation", BOTH, "activation of the head's hidden layers"),
    Option(("--optimizer",), "simclr", "optimizer", BOTH, "Keras optimizer name (adam, sgd, adamw, rmsprop, ...); "
           "each round starts a fresh one at its learning rate"),
    Option(("--unfreeze-batchnorm",), "simclr", "unfreeze_batchnorm", BOTH, "train BatchNormalization layers "
           "inside the unfrozen range (batch statistics) instead of keeping them in inference mode",
           action="store_true"),
    Option(("--sync-batchnorm",), "simclr", "sync_batchnorm", ("pretrain",), "with --unfreeze-batchnorm and "
           "--mirrored, batch statistics over the global batch", action="store_true"),
    Option(("--early-stopping-patience",), "simclr", "early_stopping_patience", BOTH,
           "epochs without a better val_nt_xent before a round stops", int),
    Option(("--reduce-lr-patience",), "simclr", "reduce_lr_patience", BOTH,
           "epochs without improvement before the learning rate is halved", int),
    Option(("--jit-compile",), "simclr", "jit_compile", BOTH, "compile the step with XLA: auto, true or false", _jit),
    Option(("--positives",), "simclr", "positives", BOTH, "view: SimCLR; nearest_neighbour: NNCLR, positives "
           "from a queue of past projections", choices=["view", "nearest_neighbour"]),
    Option(("--queue-size",), "simclr", "queue_size", BOTH, "NNCLR's queue of past projections", int),
    Option(("--same-view-negatives",), "simclr", "same_view_negatives", BOTH, "whether the other views of the "
           "same side are negatives (false with nearest_neighbour: the NNCLR paper's loss)", _switch),
    Option(("--view-bank",), "simclr", "view_bank", BOTH, "views per image M (even) of a view bank: a round that "
           "trains only the layers after a frozen prefix runs the prefix once over M views of every image and trains "
           "the rest from them (its first M/2 epochs as without, later ones on new pairs of the stored views)", int),
    Option(("--precision",), "simclr", "precision", BOTH, "dtype policy of the backbone and head while SimCLR trains "
           "(NT-Xent stays float32): float32 keeps the backbone's own; auto = mixed_bfloat16 on GPUs and CPUs with "
           "bfloat16, mixed_float16 on older GPUs, else float32",
           choices=["float32", "mixed_bfloat16", "mixed_float16", "auto"]),
    Option(("--color-strength",), "augmentation", "color_strength", BOTH,
           "colour-jitter strength s of the SimCLR augmentations", float),
    Option(("--schedule",), "schedule", "schedule", BOTH, "SimCLR's unfreezing rounds layers:lr:epochs, "
           "comma-separated; layers is a count, a layer name or 'all'", _schedule),
    Option(("--probe-every",), "probe", "every", BOTH, "every N epochs, log the validation accuracy of a linear "
           "probe on a few training labels (val_probe_accuracy); 0 for none", int),
    Option(("--probe-fraction",), "probe", "fraction", BOTH, "share of the training labels the probe sees", float),
    # The benchmark and its fine-tuned classifier.
    Option(("--finetune-schedule",), "finetune", "schedule", ("benchmark",),
           "the fine-tuned classifier's rounds, layers:lr:epochs", _schedule),
    Option(("--no-frozen-cache",), "finetune", "cache_frozen", ("benchmark",), "fine-tune end to end instead of "
           "from cached activations of the frozen layers (same results, slower)", action="store_false"),
    Option(("--distill-temperature",), "distill", "temperature", ("benchmark",), "softmax temperature of the "
           "fine-tuned teacher's predictions that the distilled student learns", float),
    Option(("--distill-schedule",), "distill", "schedule", ("benchmark",), "the distilled student's rounds, "
           "layers:lr:epochs", _schedule),
    Option(("--fractions",), "benchmark", "fractions", ("benchmark",), "shares of the training labels", _fractions),
    Option(("--runs",), "benchmark", "runs", ("benchmark",), "repeated runs per cell (other label subsets and "
           "seeds)", int),
    Option(("--pretrain-runs",), "benchmark", "pretrain_runs", ("benchmark",), "repeated SimCLR runs", int),
    Option(("--classifiers",), "benchmark", "classifiers", ("benchmark",), "which classifiers to run, "
           "comma-separated", _names),
    Option(("--knn-k",), "knn", "k", ("benchmark",), "neighbours of the kNN classifier, or auto: chosen by "
           "leave-one-out on the labelled images, at most the smallest class's count", _int_or_auto),
    Option(("--knn-weights",), "knn", "weights", ("benchmark",), "the kNN's votes: similarity (exp(cos/T), "
           "the self-supervised literature's) or uniform (a majority vote)", choices=["similarity", "uniform"]),
    Option(("--knn-temperature",), "knn", "temperature", ("benchmark",), "T of the kNN's similarity weights",
           float),
    Option(("--supervised-baseline",), "benchmark", "supervised_baseline", ("benchmark",),
           "also train the architecture from random initialisation on the same labels", action="store_true"),
]


def _owner_defaults(group):
    """The defaults of the object a group configures, read from its constructor or function."""
    from data_generators import SimCLRAugmentation
    from evaluation.benchmark import Benchmark
    from evaluation.distill import DistilledClassifier
    from evaluation.embed import export_embeddings
    from evaluation.finetune import FineTunedClassifier
    from evaluation.knn import KNNProbe
    from evaluation.pretraining import DEFAULT_SCHEDULE, pretrain
    from simclr_wrap import SimCLR
    from simclr_wrap.backbones import load_backbone

    if group == "simclr":
        return SimCLR.default_config()
    if group == "schedule":
        return {"schedule": DEFAULT_SCHEDULE}
    owner = {"augmentation": SimCLRAugmentation, "finetune": FineTunedClassifier, "benchmark": Benchmark,
             "distill": DistilledClassifier,
             "knn": KNNProbe,
             "run": pretrain, "backbone": load_backbone, "embed": export_embeddings}[group]
    defaults = {name: parameter.default for name, parameter in inspect.signature(owner).parameters.items()
                if parameter.default is not inspect.Parameter.empty}
    if group == "backbone":
        defaults["source"] = DEFAULT_BACKBONE
        defaults["input_shape"] = "x".join(map(str, defaults["input_shape"][:2]))
    return defaults


def _default_text(option):
    if option.action == "store_true":
        return "default: off"
    if option.group == "probe":
        return "default: 0.1" if option.key == "fraction" else "default: 0, no probe"
    defaults = _owner_defaults(option.group)
    if option.key not in defaults:
        return {("run", "data"): "default: the offline digits demo", ("run", "out"): "default: a new folder under runs/",
                ("embed", "data"): "required", ("embed", "out"): "required",
                ("distill", "schedule"): "default: that of --finetune-schedule"}.get((option.group, option.key),
                                                                             "default: none")
    text = f"default: {_as_typed(defaults[option.key])}"
    demo = DEMO_PRESET.get(option.group, {}).get(option.key)
    if demo is not None:
        text += f"; without --data: {_as_typed(demo)}"
    return text


def _as_typed(value):
    """A default as one would type it: 2048,128 and 1:0.0001:5,2:1e-05:5."""
    if value is None:
        return "none"
    if isinstance(value, tuple) and len(value) == 2 and all(isinstance(part, int) for part in value):
        return "x".join(map(str, value))  # an image size
    if isinstance(value, (tuple, list)):
        return ",".join(":".join(map(str, part)) if isinstance(part, (tuple, list)) else str(part) for part in value)
    return value


# Without --data the commands run the offline digits demo (see evaluation.demo), with these settings.
DEMO_PRESET = {
    "backbone": {"input_shape": (32, 32)},
    "simclr": {"pooling": "avg", "batch_size": 64, "temperature": 0.2, "feat_dims_ph": (128, 64)},
    "schedule": {"schedule": [("all", 1e-3, 10)]},
    "finetune": {"schedule": [(0, 1e-3, 30), ("all", 1e-4, 5)]},
    "benchmark": {"classifiers": ["linear", "knn", "fine_tuned", "distilled"]},
}


def build_parser():
    """The argument parser of every `simclr-wrap` command."""
    parser = argparse.ArgumentParser(
        prog="simclr-wrap",
        description="SimCLR self-supervised adaptation of any Keras backbone to your images.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    descriptions = {
        "pretrain": ("adapt a backbone to a folder of images with a SimCLR schedule",
                     "Adapt a backbone to your images with SimCLR and gradual unfreezing. Without --data it runs "
                     "an offline demo on scikit-learn's digits with a small CNN (under a minute)."),
        "benchmark": ("linear, kNN and fine-tuned accuracy at label fractions, before and after SimCLR",
                      "Evaluate a backbone at fractions of the labels, adapt it with SimCLR on the training images "
                      "(no labels), evaluate it again, and write report.md, results.json and plots. Without --data "
                      "it tells the story in miniature, offline: a small CNN trained with labels on digits 0-4 is "
                      "adapted to digits 5-9 (a few minutes)."),
        "embed": ("export the pooled backbone embedding of every image",
                  "Write the pooled embedding of every image of --data, with its file name and label, to --out "
                  "(.csv: one row per image; .npy: the array, with a .index.csv beside it)."),
    }
    for command, (summary, description) in descriptions.items():
        sub = commands.add_parser(command, help=summary, description=description)
        for option in OPTIONS:
            if command in option.commands:
                option.add_to(sub)
    return parser


def groups_from(args, command):
    """The options given on the command line, by group: {group: {key: value}}.

    Without --data the demo preset fills what was not given.
    """
    groups = {}
    for option in OPTIONS:
        if command not in option.commands:
            continue
        value = getattr(args, f"{option.group}.{option.key}")
        if value is not None:
            groups.setdefault(option.group, {})[option.key] = value
    if command != "embed" and not groups.get("run", {}).get("data"):
        for group, preset in DEMO_PRESET.items():
            for key, value in preset.items():
                groups.setdefault(group, {}).setdefault(key, value)
    return groups


def main(argv=None):
    """Run `simclr-wrap`; returns the exit status (0 ok, 2 bad input)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--verbose" not in argv:
        _import_tensorflow_quietly()
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit:  # argparse has printed the usage and the error (or the help)
        return exit.code
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return COMMANDS[args.command](groups_from(args, args.command), args.command)
    except (ValueError, TypeError, OSError, RuntimeError) as error:
        print(f"simclr-wrap {args.command}: error: {_explained(error)}", file=sys.stderr)
        return 2
    except Exception as error:
        message = _explained(error)
        if message is None:
            raise
        print(f"simclr-wrap {args.command}: error: {message}", file=sys.stderr)
        return 2


def _import_tensorflow_quietly():
    """Import TensorFlow without its start-up log lines (CUDA probing, CPU features).

    TF_CPP_MIN_LOG_LEVEL hides its later C++ messages, but TensorFlow 2.21
    writes the lines logged before absl's logging is initialised straight to
    file descriptor 2, so that is pointed at /dev/null for the import alone.
    Python's own errors during the import are raised after it is restored.
    Without TensorFlow (Keras on JAX, say) there is nothing to quieten.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow  # noqa: F401
    except ImportError:
        pass
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _explained(error):
    """The message for the user: ours as it is; from a TensorFlow op error, the Python error it wraps.

    A data-loading error raised while TensorFlow runs the input pipeline
    reaches us wrapped in a `tf.errors.OpError` whose text holds ours; None
    when the error is neither.
    """
    tensorflow = sys.modules.get("tensorflow")
    if tensorflow is None or not isinstance(error, tensorflow.errors.OpError):
        return str(error) if isinstance(error, (ValueError, TypeError, OSError, RuntimeError)) else None
    found = re.search(r"(?:ValueError|FileNotFoundError|OSError|TypeError): (.+)", error.message)
    return found.group(1).strip() if found else error.message.strip().splitlines()[0]


def _backbone(groups):
    from simclr_wrap.backbones import Backbone

    options = dict(groups.get("backbone", {}))
    size = options.pop("input_shape", None)
    return Backbone(options.pop("source", DEFAULT_BACKBONE), input_shape=None if size is None else (*size, 3),
                    **options)


def _prepare(groups, command):
    """The data, the backbone and the output folder of a pretrain or benchmark run."""
    from data_generators.files import check_run_folder
    from evaluation.demo import DEMO_AUGMENTATION

    run = groups.get("run", {})
    out = run.get("out") or os.path.join("runs", f"{command}-" + datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
    check_run_folder(out, overwrite=bool(run.get("overwrite")), resume=bool(run.get("resume")), name="--out")
    backbone = _backbone(groups)
    if run.get("data"):
        return run["data"], backbone, out
    groups["augmentation"] = {**DEMO_AUGMENTATION, **groups.get("augmentation", {})}
    size = backbone.input_shape[0]  # the demo's images are square
    if command == "benchmark" and backbone.source == DEFAULT_BACKBONE and backbone.weights is None:
        from evaluation.demo import digits_story
        from simclr_wrap.backbones import Backbone

        print("No --data given: the offline demo. A small CNN is trained with labels on digits 0-4, "
              "then adapted with SimCLR to digits 5-9 and evaluated there.")
        model, data = digits_story(size=size, seed=run.get("seed", 0))
        return data, Backbone(model, preprocess="unit"), out
    from data_generators import digits_demo

    print("No --data given: running the offline demo on scikit-learn's digits.")
    return digits_demo(size=size, seed=run.get("seed", 0)), backbone, out


def _probe(groups):
    probe = groups.get("probe", {})
    return probe if probe.get("every") else None


def run_pretrain(groups, command):
    from evaluation.pretraining import pretrain

    run = groups.get("run", {})
    strategy = None
    if run.get("mirrored") and run.get("multi_worker"):
        raise ValueError("Expected at most one of --mirrored (the GPUs of this machine) and --multi-worker (the "
                         "machines of TF_CONFIG, each with its GPUs). Received: both")
    if run.get("mirrored"):
        import tensorflow as tf

        strategy = tf.distribute.MirroredStrategy()
        print(f"MirroredStrategy over {strategy.num_replicas_in_sync} device(s)")
    if run.get("multi_worker"):
        from simclr_wrap.distribute import multi_worker_strategy
        from simclr_wrap.training_loop import worker_of

        strategy = multi_worker_strategy()
        index, workers, chief = worker_of(strategy)
        print(f"MultiWorkerMirroredStrategy: worker {index} of {workers}{' (the chief)' if chief else ''}, "
              f"{strategy.num_replicas_in_sync} replicas in all")
    # After the strategy: MultiWorkerMirroredStrategy must start before TensorFlow does anything else.
    data, backbone, out = _prepare(groups, command)
    optional = {key: run[key] for key in ("seed", "workers", "augment_on", "resume", "overwrite", "tensorboard")
                if key in run}
    optional.update({"schedule": groups["schedule"]["schedule"]} if "schedule" in groups else {})
    simclr = pretrain(data, backbone, out, simclr=groups.get("simclr"), augmentation=groups.get("augmentation"),
                      probe=_probe(groups), strategy=strategy, **optional)
    history = simclr.history_
    if history.get("val_nt_xent"):
        print(
            f"Done: {simclr.round_} rounds, val_nt_xent {history['val_nt_xent'][0]:.3f} -> "
            f"{history['val_nt_xent'][-1]:.3f}, val contrastive accuracy "
            f"{history['val_contrastive_accuracy'][0]:.3f} -> {history['val_contrastive_accuracy'][-1]:.3f}."
        )
    else:
        print(f"Done: {simclr.round_} rounds, no epoch trained.")
    print(f"Adapted backbone: {os.path.join(out, 'base_model.keras')}; history, plots and checkpoints in {out}/")
    return 0


def run_benchmark(groups, command):
    from evaluation.benchmark import Benchmark
    from evaluation.report import markdown_table, summary_table

    data, backbone, out = _prepare(groups, command)
    run = groups.get("run", {})
    config = dict(groups.get("benchmark", {}))
    config.update({"seed": run["seed"]} if "seed" in run else {})
    config.update({"schedule": groups["schedule"]["schedule"]} if "schedule" in groups else {})
    distill = dict(groups.get("distill", {}))
    if "schedule" in distill:
        distill["student"] = {"schedule": distill.pop("schedule")}
    benchmark = Benchmark(**config, simclr=groups.get("simclr"), augmentation=groups.get("augmentation"),
                          probe=_probe(groups), finetune=groups.get("finetune"), knn=groups.get("knn"),
                          distill=distill)
    records = benchmark.run(data, backbone, out, adapted=run.get("adapted"), resume=bool(run.get("resume")),
                            overwrite=bool(run.get("overwrite")))
    print(markdown_table(summary_table(records)))
    print(f"Report: {os.path.join(out, 'report.md')}; every run in {os.path.join(out, 'results.json')}")
    return 0


def run_embed(groups, command):
    from evaluation.embed import export_embeddings

    options = dict(groups.get("embed", {}))
    for required in ("data", "out"):
        if not options.get(required):
            raise ValueError(f"embed needs --{required}")
    path = export_embeddings(options.pop("data"), _backbone(groups), options.pop("out"), **options)
    print(f"Embeddings written to {path}")
    return 0


COMMANDS = {"pretrain": run_pretrain, "benchmark": run_benchmark, "embed": run_embed}

if __name__ == "__main__":
    sys.exit(main())
