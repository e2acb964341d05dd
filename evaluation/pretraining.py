"""One path from image files to an adapted backbone: data, views, SimCLR rounds."""

import importlib.util
import json
import logging
import os

import keras

from data_generators import (
    DataGeneratorSimCLR,
    SimCLRAugmentation,
    load_frame,
    save_augmentation_grid,
    split_sources,
)
from data_generators.checks import check_choice, check_integer
from data_generators.files import atomic_output, check_run_folder, staged_folder
from data_generators.sources import ImageSource
from data_generators.visualize import images_from_every_class
from evaluation.monitors import OnlineLinearProbe
from evaluation.report import plot_training_curves
from simclr_wrap import SimCLR
from simclr_wrap.backbones import PREPROCESSING, Backbone, preprocessing_name
from simclr_wrap.model import check_options
from simclr_wrap.monitors import features_barely_vary
from simclr_wrap.precision import gpu_compute_capabilities
from simclr_wrap.training_loop import is_multi_worker, worker_of
from simclr_wrap.unfreezing import flat_layers

logger = logging.getLogger(__name__)

ALL_LAYERS = "all"
VAL_FRACTION = TEST_FRACTION = 0.15
DEFAULT_SCHEDULE = ((1, 1e-4, 5), (2, 1e-5, 5))
# Set by `pretrain` from its own arguments, not taken from the `simclr` options.
SET_BY_PRETRAIN = ("save_path", "num_of_unfrozen_layers", "lr", "input_shape", "augmentation", "preprocess")
AUGMENT_ON = ("auto", "host", "device")
CONFIG_FILE = "pretrain_config.json"


def parse_schedule(text):
    """Parse "layers:lr:epochs,..." into a list of rounds.

    `layers` is an int (the last N layers train), a layer name, or "all".

    Example:
    >>> parse_schedule("1:1e-4:5,block5_conv1:1e-5:3")
    [(1, 0.0001, 5), ('block5_conv1', 1e-05, 3)]
    """
    rounds = []
    for number, part in enumerate(text.split(","), start=1):
        fields = part.strip().split(":")
        if len(fields) != 3:
            raise ValueError(f"schedule round {number} is {part!r}; expected layers:lr:epochs, e.g. 2:1e-4:5")
        layers, lr, epochs = fields
        try:
            rounds.append((int(layers) if layers.lstrip("-").isdigit() else layers, float(lr), int(epochs)))
        except ValueError:
            raise ValueError(f"schedule round {number} is {part!r}; lr must be a number and epochs an int") from None
    return rounds


def resolve_all_layers(schedule, base_model):
    """Replace "all" in a schedule by the backbone's number of layers (nested models' layers included).

    Entries that are not rounds pass through unchanged, so that
    `check_schedule` reports them with their round number.
    """
    return [
        (len(flat_layers(base_model)), *entry[1:])
        if isinstance(entry, (tuple, list)) and len(entry) > 0 and entry[0] == ALL_LAYERS else entry
        for entry in schedule
    ]


def split_for_pretraining(data, batch_size, seed=0):
    """Split `data` as the benchmark does, with at least one validation batch.

    Test images are chosen first and do not depend on the validation share
    (see `stratified_split`), so a folder pretrained on here and benchmarked
    later with the same seed keeps its test images unseen by SimCLR.

    Returns:
        The dict of `split_sources`.
    """
    if isinstance(data, dict):
        return split_sources(data)
    if isinstance(data, (str, os.PathLike)):
        data = load_frame(data)  # a folder is listed once, not for each use below
    n_images = ImageSource(data, width=1, height=1).n_images  # counts; reads no image
    val_fraction = min(max(VAL_FRACTION, batch_size / n_images), 0.5)
    parts = split_sources(data, val_fraction, TEST_FRACTION, seed)
    sizes = {name: ImageSource(part, width=1, height=1).n_images for name, part in parts.items() if part is not None}
    available = n_images - sizes.get("test", 0)
    if sizes.get("train", 0) < batch_size or sizes.get("val", 0) < batch_size:
        raise ValueError(
            f"Expected batch_size to be at most {available // 2}: the {n_images} images keep {sizes.get('test', 0)} "
            f"for testing, and SimCLR needs one batch for training and one for validation out of the other "
            f"{available}. Received: batch_size={batch_size}"
        )
    if val_fraction > VAL_FRACTION:
        logger.warning(
            "the validation split is raised from %d %% to %d %% of the %d images so that it holds one batch of "
            "%d: %d images for training, %d for validation", round(100 * VAL_FRACTION), round(100 * val_fraction),
            n_images, batch_size, sizes["train"], sizes["val"])
    return parts


def pretrain(
    data,
    backbone,
    out,
    *,
    schedule=DEFAULT_SCHEDULE,
    simclr=None,
    augmentation=None,
    probe=None,
    seed=0,
    workers=1,
    augment_on="auto",
    resume=False,
    overwrite=False,
    tensorboard=None,
    strategy=None,
    verbose="auto",
):
    """Adapt a backbone to `data` with a SimCLR schedule and write the results.

    Everything that can be checked is checked before the first step: the
    options, the schedule against the backbone, the split against the batch
    size, and that every training and validation image decodes.

    Writes to `out`: `base_model_round_{k}.keras` after each round,
    `base_model.keras` (the adapted backbone), `simclr_best.keras`,
    `history.csv`, `training_curves.png`, `augmentations.png` and
    `pretrain_config.json` (the backbone's source, image shape and
    preprocessing, the SimCLR and augmentation configs, the dtype policy
    its `precision` meant on this machine, the schedule and seed: how the
    backbone was adapted and how to feed it). Each backbone
    file also carries its image shape, pooling and preprocessing inside
    (`simclr_wrap.callbacks.read_model_metadata`), which `load_backbone`
    and `embed` use.

    Args:
        data: what `split_sources` takes; SimCLR trains on the "train"
            part and validates on "val", without labels; "test" is never read.
        backbone: a `Backbone`, or what `Backbone.of` takes (a name, a
            `.keras` path or a Keras model; its config dict).
        out: output folder (created; must not be a file).
        schedule: `(num_of_unfrozen_layers, lr, epochs)` rounds; "all"
            unfreezes every layer.
        simclr: `SimCLR` options as a dict (`SimCLR.default_config()` lists
            them with their defaults): batch size, temperature, head,
            optimizer, pooling, NNCLR, patience, ... `save_path` is `out`,
            `num_of_unfrozen_layers` and `lr` come from the first round and
            `input_shape` from the backbone; `seed` defaults to `seed`.
        augmentation: a `SimCLRAugmentation` or its config dict (default:
            its defaults).
        probe: options of an `OnlineLinearProbe` as a dict (`every`,
            `fraction`), or None for none: every `every` epochs a linear
            probe on `fraction` of the training labels logs its validation
            accuracy (`val_probe_accuracy`). Needs labelled data.
        seed: seed of the split, the views and (unless `simclr` sets it) the
            projection head.
        workers: data-loading threads.
        augment_on: where the views are made: "host" (NumPy, in the
            data-loading threads), "device" (Keras ops inside the
            training step, on the GPU where there is one: `SimCLR`'s
            `augmentation`; the same views for the same seed), or "auto":
            "device" where TensorFlow sees a GPU, else "host" (on a CPU the
            step would do the work the loading threads do beside it).
        resume: write in `out` itself and keep the schedule's state in
            `out/resume/` after every epoch; go on from it when `out` holds
            the state of an interrupted run of the same schedule (see
            `SimCLR.train_schedule`).
        overwrite: replace an existing non-empty `out`. Without `resume`
            the outputs are written to a temporary folder beside `out` and
            moved into place when training has succeeded, so a failed run
            leaves `out` as it was; a non-empty `out` is refused unless
            `overwrite` or `resume`.
        tensorboard: a folder for TensorBoard logs of every round, or None.
        strategy: a `tf.distribute` strategy to train under (e.g.
            `MirroredStrategy()` for every GPU of the machine); a backbone
            given by name is built in its scope, a model must have been.
            The batch size is then the global batch. Under
            `MultiWorkerMirroredStrategy` every worker runs `pretrain` with
            the same arguments (the data at the same path on each machine);
            the chief writes `out`, the others train their share of every
            batch and write nothing.
        verbose: Keras' `fit` verbosity.

    Returns:
        The trained `SimCLR` wrapper.
    """
    if resume and overwrite:
        raise ValueError("Expected at most one of resume=True (go on with the run in out) and overwrite=True "
                         "(replace it). Received: both")
    # Under several workers only the chief writes (see SimCLR's strategy); the others' `out` is never made.
    chief = worker_of(strategy)[2] if is_multi_worker(strategy) else True
    out = check_run_folder(out, overwrite=overwrite, resume=resume) if chief else os.fspath(out)
    check_integer("seed", seed, minimum=0)
    if tensorboard is not None and importlib.util.find_spec("tensorboard") is None:
        raise ValueError(f"tensorboard={os.fspath(tensorboard)!r} needs the tensorboard package: "
                         "pip install 'simclr-wrap[tensorboard]' (or pip install tensorboard)")
    spec = Backbone.of(backbone)
    augmentation = _augmentation(augmentation)
    options = dict(check_options(dict(simclr or {})))
    fixed = sorted(set(options) & set(SET_BY_PRETRAIN))
    if fixed:
        raise ValueError(f"simclr options {fixed} are set by pretrain (save_path from out, num_of_unfrozen_layers "
                         "and lr from the schedule's first round, input_shape from the backbone, augmentation and "
                         "preprocess from augmentation, augment_on and the backbone); remove them")
    check_choice("augment_on", augment_on, AUGMENT_ON)
    base_model, preprocess_input = spec.load(strategy)
    in_step = _views_in_step(augment_on, preprocess_input)
    if in_step:
        options.update(augmentation=augmentation, preprocess=preprocessing_name(preprocess_input or "none"))
    schedule = resolve_all_layers(list(schedule), base_model)
    if not schedule:
        raise ValueError("Expected schedule to hold at least one round (layers, lr, epochs). Received: schedule=[]")
    first_round = schedule[0] if isinstance(schedule[0], (tuple, list)) and len(schedule[0]) == 3 else (1, 1e-4, 0)
    options.setdefault("seed", seed)
    # The wrapper first: its errors name the backbone, where the generators' would name an argument.
    simclr_model = SimCLR(base_model, **options, num_of_unfrozen_layers=first_round[0], lr=first_round[1],
                          save_path=out, strategy=strategy)
    schedule = simclr_model.check_schedule(schedule)
    height, width, channels = simclr_model.input_shape
    parts = split_for_pretraining(data, simclr_model.batch_size, seed)
    train, val = parts["train"], parts["val"]
    common = dict(batch_size=simclr_model.batch_size, width=width, height=height, channels=channels,
                  preprocess_input=None if in_step else preprocess_input, augmentation=augmentation, seed=seed,
                  workers=workers, augment_in_model=in_step)
    train_views = DataGeneratorSimCLR(train, subset="train", **common)
    val_views = DataGeneratorSimCLR(val, subset="val", **common)
    train_images = ImageSource(train, width, height, channels)
    for part in (train, val):  # a corrupt file fails now, naming it, not in the middle of an epoch
        ImageSource(part, width, height, channels).check_decodable()
    first_images = val_views[0][0][0]
    if in_step and preprocess_input is not None:
        first_images = preprocess_input(first_images)
    _warn_if_features_barely_vary(base_model, simclr_model, first_images)
    monitors = []
    if probe:
        if train_images.labels is None:
            raise ValueError("probe needs labelled training data; these images have no labels")
        monitors.append(OnlineLinearProbe(
            base_model, train, val, width=width, height=height, channels=channels, preprocess_input=preprocess_input,
            pooling=simclr_model.pooling, seed=seed, **probe,
        ))
    simclr_model.backbone_metadata.update(preprocess=preprocessing_name(preprocess_input),
                                          source=spec.get_config()["source"])
    if not chief:
        simclr_model.train_schedule(train_views, val_views, schedule, callbacks=monitors, verbose=0, resume=resume)
        return simclr_model
    with staged_folder(out, overwrite=overwrite, resume=resume) as folder:
        simclr_model.save_path = folder
        _write_config(folder, spec, simclr_model, augmentation, schedule, seed)
        images, labels = images_from_every_class(train_images, 8)
        save_augmentation_grid(images, os.path.join(folder, "augmentations.png"), augmentation, seed=seed,
                               titles=None if labels is None else [str(label) for label in labels])
        if tensorboard is not None:
            monitors.append(keras.callbacks.TensorBoard(log_dir=os.fspath(tensorboard)))
        simclr_model.train_schedule(train_views, val_views, schedule, callbacks=monitors, verbose=verbose,
                                    resume=resume)
        simclr_model.save_base_model(os.path.join(folder, "base_model.keras"))
        plot_training_curves(simclr_model.history_, os.path.join(folder, "training_curves.png"))
    simclr_model.save_path = out
    return simclr_model


def _views_in_step(augment_on, preprocess_input):
    """Whether the views are made inside the training step (see `pretrain`'s `augment_on`)."""
    affine = preprocess_input is None or preprocessing_name(preprocess_input) in PREPROCESSING
    if augment_on == "device" and not affine:
        raise ValueError(f"augment_on='device' needs one of the preprocessings {list(PREPROCESSING)}, which the "
                         f"step applies after its views; the backbone's is {preprocessing_name(preprocess_input)!r}: "
                         "use augment_on='host'")
    if augment_on == "auto":
        on_device = bool(gpu_compute_capabilities()) and affine
        logger.info("views made %s", "inside the training step, on the GPU" if on_device else
                    "on the host, in the data-loading threads (no GPU)" if affine else
                    "on the host (the backbone's preprocessing is not one the step can apply)")
        return on_device
    return augment_on == "device"


def _warn_if_features_barely_vary(base_model, simclr_model, views):
    """Say so, before training, when the backbone's features are nearly constant on the first batch.

    The usual cause is a randomly initialised backbone whose BatchNormalization
    layers stay frozen in inference mode (moving statistics of 0 and 1, which
    a random network never matched): its features shrink layer after layer
    (to about 1e-11 in MobileNetV2) and SimCLR cannot learn.
    """
    batchnorm = [layer for layer in flat_layers(base_model) if isinstance(layer, keras.layers.BatchNormalization)]
    if batchnorm and simclr_model.unfreeze_batchnorm:
        return  # training will use batch statistics: inference-mode features would not tell
    features = keras.ops.convert_to_numpy(base_model(views, training=False))
    if not features_barely_vary(features):
        return
    frozen = [layer for layer in batchnorm if not layer.trainable]
    cause = (f"{len(frozen)} BatchNormalization layers stay frozen in inference mode; a randomly initialised "
             "backbone needs them trained: pass --unfreeze-batchnorm (unfreeze_batchnorm=True), or pretrained "
             "--weights" if frozen and not simclr_model.unfreeze_batchnorm else
             "check the backbone's weights and the input scaling (--preprocess)")
    logger.warning("backbone %r gives features that barely vary from image to image on the first validation "
                   "batch, so SimCLR has little to learn from: %s.", base_model.name, cause)


def _augmentation(augmentation):
    """A `SimCLRAugmentation` from itself, its config dict or None (the defaults)."""
    if augmentation is None:
        return SimCLRAugmentation()
    if isinstance(augmentation, dict):
        return SimCLRAugmentation.from_config(augmentation)
    if not isinstance(augmentation, SimCLRAugmentation):
        raise TypeError("Expected augmentation to be a SimCLRAugmentation or its config dict. "
                        f"Received: augmentation={augmentation!r}")
    return augmentation


def _write_config(out, spec, simclr_model, augmentation, schedule, seed):
    """What produced the adapted backbone, as JSON beside it."""
    config = {
        "backbone": {**spec.get_config(), "input_shape": list(simclr_model.input_shape)},
        "simclr": simclr_model.get_config(),
        "policy": simclr_model.policy,  # what precision (maybe "auto") meant on the machine that trained
        "augmentation": augmentation.get_config(),
        "schedule": [list(entry) for entry in schedule],
        "seed": seed,
    }
    with atomic_output(os.path.join(out, CONFIG_FILE)) as tmp, open(tmp, "w") as file:
        json.dump(config, file, indent=2, default=str)
