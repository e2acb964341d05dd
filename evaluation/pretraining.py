"""One path from image files to an adapted backbone: data, views, SimCLR rounds."""

import logging
import os

from data_generators import (
    DataGeneratorSimCLR,
    SimCLRAugmentation,
    load_frame,
    read_images,
    save_augmentation_grid,
    split_sources,
)
from data_generators.files import check_output_folder
from evaluation.monitors import OnlineLinearProbe
from evaluation.report import plot_training_curves
from simclr_wrap import SimCLR
from simclr_wrap.backbones import get_preprocessing, load_backbone
from simclr_wrap.distribute import strategy_scope

logger = logging.getLogger(__name__)

ALL_LAYERS = "all"
VAL_FRACTION = TEST_FRACTION = 0.15


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
    """Replace "all" in a schedule by the backbone's number of layers.

    Entries that are not rounds pass through unchanged, so that
    `check_schedule` reports them with their round number.
    """
    return [
        (len(base_model.layers), *entry[1:])
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
    n_images = len(data[0]) if isinstance(data, tuple) else len(load_frame(data))
    # Capped at half: with too few images for two batches the generators
    # report batch_size against the images there are.
    val_fraction = min(max(VAL_FRACTION, batch_size / n_images), 0.5)
    return split_sources(data, val_fraction, TEST_FRACTION, seed)


def pretrain(
    data,
    backbone,
    out,
    *,
    weights=None,
    size=80,
    preprocess="auto",
    schedule=((1, 1e-4, 5), (2, 1e-5, 5)),
    batch_size=32,
    temperature=0.1,
    feat_dims=(2048, 128),
    pooling="flatten",
    augmentation=None,
    seed=0,
    workers=1,
    probe_every=0,
    probe_fraction=0.1,
    positives="view",
    queue_size=10000,
    resume=False,
    strategy=None,
    verbose="auto",
):
    """Adapt a backbone to `data` with a SimCLR schedule and write the results.

    Writes to `out`: `base_model_round_{k}.keras` after each round,
    `base_model.keras` (the adapted backbone), `simclr_best.keras`,
    `history.csv`, `training_curves.png` and `augmentations.png`.

    Args:
        data: what `split_sources` takes; SimCLR trains on the "train"
            part and validates on "val", without labels; "test" is unused.
        backbone: a `load_backbone` name or `.keras` path, or a Keras model.
        out: output folder (created; must not be a file).
        weights, preprocess: as in `load_backbone` (preprocess is also
            used with a model given directly; "auto" is then "unit").
        size: image side in pixels; images are resized to size x size.
        schedule: `(num_of_unfrozen_layers, lr, epochs)` rounds; "all"
            unfreezes every layer.
        batch_size, temperature, feat_dims, pooling: as in `SimCLR`.
        augmentation: a `SimCLRAugmentation` (default: its defaults).
        seed: seed of the split, the views and the head.
        workers: data-loading threads.
        probe_every: every that many epochs, an `OnlineLinearProbe` fits a
            linear classifier on `probe_fraction` of the training labels and
            logs its validation accuracy (`val_probe_accuracy`); 0 for none.
            Needs labelled data; the test split is never read.
        probe_fraction: share of the training labels the probe sees.
        positives, queue_size: SimCLR ("view") or NNCLR
            ("nearest_neighbour"), as in `SimCLR`.
        strategy: a `tf.distribute` strategy to train under (e.g.
            `MirroredStrategy()` for every GPU of the machine); a backbone
            given by name is built in its scope, a model must have been.
            `batch_size` is the global batch.
        resume: keep the schedule's state in `out/resume/` after every
            epoch, and go on from it when `out` holds the state of an
            interrupted run of the same schedule (see `SimCLR.train_schedule`).
        verbose: Keras' `fit` verbosity.

    Returns:
        The trained `SimCLR` wrapper.
    """
    out = check_output_folder(out)
    if isinstance(backbone, str):
        with strategy_scope(strategy):
            base_model, preprocess_input = load_backbone(backbone, (size, size, 3), weights, preprocess)
    else:
        base_model = backbone
        preprocess_input = get_preprocessing("unit" if preprocess == "auto" else preprocess)
    channels = base_model.input_shape[-1]
    schedule = resolve_all_layers(list(schedule), base_model)
    augmentation = augmentation or SimCLRAugmentation()
    parts = split_for_pretraining(data, batch_size, seed)
    train, val = parts["train"], parts["val"]
    common = dict(
        batch_size=batch_size, width=size, height=size, channels=channels,
        preprocess_input=preprocess_input, augmentation=augmentation, seed=seed, workers=workers,
    )
    # The wrapper first: its errors name the backbone, where the generators' would name an argument.
    simclr = SimCLR(
        base_model, batch_size, feat_dims_ph=feat_dims, num_of_unfrozen_layers=schedule[0][0],
        temperature=temperature, lr=schedule[0][1], pooling=pooling, seed=seed, save_path=out,
        positives=positives, queue_size=queue_size, strategy=strategy,
    )
    simclr.check_schedule(schedule)
    train_views = DataGeneratorSimCLR(train, subset="train", **common)
    val_views = DataGeneratorSimCLR(val, subset="val", **common)
    save_augmentation_grid(
        _first_images(train, 8, size, channels), os.path.join(out, "augmentations.png"), augmentation, seed=seed
    )
    monitors = []
    if probe_every:
        if _labels(train) is None:
            raise ValueError("probe_every needs labelled training data; these images have no labels")
        monitors.append(OnlineLinearProbe(
            base_model, train, val, width=size, height=size, channels=channels, preprocess_input=preprocess_input,
            pooling=pooling, fraction=probe_fraction, every=probe_every, seed=seed,
        ))
    simclr.train_schedule(train_views, val_views, schedule, callbacks=monitors, verbose=verbose, resume=resume)
    simclr.save_base_model(os.path.join(out, "base_model.keras"))
    plot_training_curves(simclr.history_, os.path.join(out, "training_curves.png"))
    return simclr


def _labels(source):
    """The labels of a DataFrame or `(images, labels)` source, or None."""
    return source[1] if isinstance(source, tuple) else source.get("class_label")


def _first_images(source, count, size, channels):
    """The first `count` raw images of a DataFrame or `(images, labels)` source."""
    if isinstance(source, tuple):
        return source[0][:count]
    return read_images(list(source["filename"][:count]), size, size, channels)
