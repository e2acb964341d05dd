"""The fine-tuned classifier: a cloned backbone, a small head, gradual unfreezing."""

import logging
import math

import keras
import numpy as np

from evaluation.frozen_prefix import DEFAULT_CACHE_BYTES, ShuffledArrays, round_cache
from evaluation.pretraining import resolve_all_layers
from simclr_wrap.callbacks import RoundNumber
from simclr_wrap.heads import pooling_layer
from simclr_wrap.unfreezing import check_schedule, first_unfrozen_index, parameter_counts, set_unfrozen_layers

logger = logging.getLogger(__name__)

STATISTICS_IMAGES = 64  # training images whose features start the head's statistics, when given as arrays


def classifier_model(base_model, n_classes, *, pooling="flatten", hidden_units=32, regularisation=1e-4, seed=0):
    """Build a classifier on a copy of `base_model`, as in the SimCLR reference.

    The model is `image -> backbone -> pooling -> BatchNormalization ->
    Dense(hidden_units, "swish") -> Dense(n_classes, "softmax")`, with an L1
    penalty on both Dense kernels. The backbone is a clone of `base_model`
    with its weights and name, so training the classifier never changes
    `base_model`, and every classifier built from it starts from the same
    backbone weights. All layers are trainable; `finetune_classifier` decides
    which backbone layers train.

    Args:
        base_model: a Keras backbone of one image input with a known shape;
            it must be clonable by `keras.models.clone_model` (a subclassed
            model needs `get_config`).
        n_classes: number of classes, at least 2.
        pooling: "flatten", "avg" or "max": how the backbone's feature map
            becomes a vector.
        hidden_units: width of the hidden Dense layer.
        regularisation: L1 factor on the Dense kernels (0 for none).
        seed: non-negative int seed of the Dense kernels' initial values.

    Returns:
        A new functional `keras.Model` (not compiled) whose layer named
        `base_model.name` is the cloned backbone.

    Example:
    >>> backbone = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3)], name="cnn")
    >>> model = classifier_model(backbone, 3, pooling="avg")
    >>> model.output_shape, model.get_layer("cnn") is backbone
    ((None, 3), False)
    """
    if not isinstance(base_model, keras.Model):
        raise TypeError(f"base_model must be a keras.Model, got {type(base_model).__name__}")
    _check_int("n_classes", n_classes, minimum=2)
    _check_int("hidden_units", hidden_units, minimum=1)
    _check_int("seed", seed, minimum=0)
    if isinstance(regularisation, bool) or not isinstance(regularisation, (int, float)) or not regularisation >= 0:
        raise ValueError(f"regularisation must be a number >= 0, got regularisation={regularisation!r}")
    pool = pooling_layer(pooling)  # before cloning, so that a bad pooling fails fast
    backbone = _clone(base_model)
    inputs = keras.Input(_input_shape(base_model), name="image")
    features = pool(backbone(inputs))
    if len(features.shape) != 2 or features.shape[-1] is None:
        raise ValueError(
            f"backbone {base_model.name!r} gives features of shape {features.shape} after pooling={pooling!r}; "
            "the classifier needs vectors of a known size (try pooling='avg')"
        )
    # Set after the call above, which builds a clone that was not built yet.
    backbone.set_weights(base_model.get_weights())
    regulariser = keras.regularizers.L1(regularisation) if regularisation else None
    x = keras.layers.BatchNormalization(name="head_batchnorm")(features)  # the reference's stabiliser
    x = keras.layers.Dense(
        hidden_units, activation="swish", kernel_regularizer=regulariser,
        kernel_initializer=keras.initializers.GlorotUniform(seed), name="hidden",
    )(x)
    outputs = keras.layers.Dense(
        n_classes, activation="softmax", kernel_regularizer=regulariser,
        kernel_initializer=keras.initializers.GlorotUniform(seed + 1), name="predictions",
    )(x)
    return keras.Model(inputs, outputs, name=f"{base_model.name}_classifier")


def finetune_classifier(
    base_model,
    train_data,
    val_data,
    test_data,
    *,
    schedule=((0, 1e-3, 10), (2, 1e-4, 5)),
    pooling="flatten",
    hidden_units=32,
    regularisation=1e-4,
    patience=3,
    unfreeze_batchnorm=False,
    callbacks=None,
    cache_frozen=True,
    cache_bytes=DEFAULT_CACHE_BYTES,
    seed=0,
    verbose=0,
):
    """Fine-tune a classifier on a copy of `base_model`; return its test accuracy.

    The classifier of `classifier_model` trains in rounds of gradual
    unfreezing. Each round makes the last layers of the backbone trainable
    (the head always trains), compiles with a fresh Adam at the round's
    learning rate and fits with early stopping on `val_data`'s loss,
    restoring the round's best weights. A round whose best validation loss
    is no better than an earlier round's is undone, so each round starts
    from, and the result is, the weights of the lowest validation loss seen.
    The head's BatchNormalization starts its moving statistics at those of
    the first training batch rather than at (0, 1), which the few steps of
    a small label fraction would not move far enough.

    While the first backbone layers stay frozen and the data is not
    augmented, a round computes their activations once and trains the rest
    (`cache_frozen`; see `evaluation.frozen_prefix`): the same model and
    gradients, one forward pass of the prefix instead of one per epoch.

    Only `val_data` selects the model; `test_data` is evaluated once, after
    training, and nothing depends on it but the reported accuracy. Nothing
    draws from global random state: the generators shuffle with their own
    seeds, and (images, one_hot) arrays are visited in their order.

    Args:
        base_model: the backbone; it is cloned and never changed.
        train_data: a `DataGeneratorClass` (or another
            `keras.utils.PyDataset`, or an `(images, one_hot)` pair of
            arrays) giving images and one-hot labels; the number of classes
            is its `classes`' length or the one-hot width.
        val_data: the same for validation: early stopping and the choice
            among rounds. Its classes must be those of `train_data`.
        test_data: the same for the final, single evaluation.
        schedule: rounds `(num_of_unfrozen_layers, lr, epochs)`: the last N
            backbone layers train (layers without weights count; 0 trains
            only the head; "all" every layer) or a layer name (that layer
            and the rest), with Adam at `lr` for at most `epochs` epochs.
            Every round is checked before any training.
        pooling, hidden_units, regularisation, seed: as in `classifier_model`.
        patience: epochs without a lower validation loss before a round stops.
        unfreeze_batchnorm: whether BatchNormalization layers of the
            backbone train inside the unfrozen range; frozen ones run in
            inference mode (see `set_unfrozen_layers`).
        callbacks: extra Keras callbacks for every round's `fit`; in a
            cached round their `model` is the suffix model that trains.
        cache_frozen: train from cached activations of the frozen prefix
            where that gives the same result (see above).
        cache_bytes: the most memory the cached activations may take; a
            round that needs more trains end to end.
        verbose: Keras' `fit` and `evaluate` verbosity.

    Returns:
        A dict: `accuracy` (on `test_data`), `val_accuracy` (of the final
        model), `epochs` (run in all), `rounds` (per round:
        `num_of_unfrozen_layers`, `lr`, `epochs` run, `best_val_loss`,
        `trainable_parameters`, `kept`), `history` (per-epoch lists over all
        rounds, with a `round` key counted from 1) and `model` (the trained
        classifier).

    Example:
    >>> backbone = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(2, 3)], name="cnn")
    >>> images, one_hot = np.zeros((6, 8, 8, 3), "float32"), np.eye(2, dtype="float32")[[0, 1] * 3]
    >>> data = (images, one_hot)
    >>> result = finetune_classifier(backbone, data, data, data, schedule=[(0, 1e-3, 1), (1, 1e-4, 1)])
    >>> result["epochs"], result["history"]["round"]
    (2, [1, 2])
    """
    _check_int("patience", patience, minimum=0)
    rounds = _check_schedule(base_model, schedule)
    n_classes = _n_classes(train_data)
    for name, data in (("val_data", val_data), ("test_data", test_data)):
        known = hasattr(train_data, "classes") and hasattr(data, "classes")
        if known and list(data.classes) != list(train_data.classes):
            raise ValueError(
                f"{name} has classes {list(data.classes)} but train_data has {list(train_data.classes)}; "
                "build it with classes=train_data.classes so that the one-hot columns agree"
            )
    model = classifier_model(
        base_model, n_classes, pooling=pooling, hidden_units=hidden_units, regularisation=regularisation, seed=seed
    )
    backbone = model.get_layer(base_model.name)
    _start_head_statistics(model, train_data)
    history, summaries = {}, []
    best_loss, best_weights = math.inf, None
    for number, (layers, lr, epochs) in enumerate(rounds, start=1):
        set_unfrozen_layers(backbone, layers, unfreeze_batchnorm)
        # A change of trainable layers takes effect only when compiled again.
        model.compile(optimizer=keras.optimizers.Adam(lr), loss="categorical_crossentropy", metrics=["accuracy"])
        trainable, frozen = parameter_counts(model)
        logger.info(
            "classifier round %d: %r unfrozen layers of %r, lr=%g, up to %d epochs; %s trainable and %s "
            "non-trainable parameters", number, layers, base_model.name, lr, epochs, f"{trainable:,}", f"{frozen:,}",
        )
        cache = None
        if cache_frozen and epochs:
            cache = round_cache(model, base_model.name, first_unfrozen_index(backbone, layers), train_data, val_data,
                                cache_bytes)
        if cache is None:
            trained, train_arguments, validation = model, _fit_arguments(train_data), val_data
        else:
            trained, validation = cache.suffix, cache.val
            train_arguments = {"x": ShuffledArrays(*cache.train, getattr(train_data, "batch_size", 32), seed + number)}
            trained.compile(optimizer=keras.optimizers.Adam(lr), loss="categorical_crossentropy", metrics=["accuracy"])
        early_stopping = keras.callbacks.EarlyStopping(
            monitor="val_loss", mode="min", patience=patience, restore_best_weights=True
        )
        fitted = trained.fit(
            **train_arguments,
            validation_data=validation,
            epochs=epochs,
            shuffle=False,  # generators shuffle with their own seed; arrays keep their order
            callbacks=[RoundNumber(number), early_stopping, *(callbacks or [])],
            verbose=verbose,
        )
        for key, values in fitted.history.items():
            history.setdefault(key, []).extend(values)
        val_losses = fitted.history.get("val_loss", [])
        if not all(math.isfinite(loss) for loss in val_losses):
            logger.warning("classifier round %d: validation loss not finite (%s); training diverged",
                           number, val_losses)
        round_best = min((loss for loss in val_losses if math.isfinite(loss)), default=math.inf)
        kept = round_best < best_loss
        if kept:
            best_loss, best_weights = round_best, model.get_weights()
        elif best_weights is not None:
            model.set_weights(best_weights)
        summaries.append({
            "num_of_unfrozen_layers": layers, "lr": lr, "epochs": len(fitted.epoch),
            "best_val_loss": round_best if math.isfinite(round_best) else None,
            "trainable_parameters": trainable, "kept": kept,
        })
    val_accuracy = model.evaluate(**_fit_arguments(val_data), verbose=verbose, return_dict=True)["accuracy"]
    accuracy = model.evaluate(**_fit_arguments(test_data), verbose=verbose, return_dict=True)["accuracy"]
    logger.info("fine-tuned classifier on %r: val accuracy %.3f, test accuracy %.3f",
                base_model.name, val_accuracy, accuracy)
    return {
        "accuracy": float(accuracy),
        "val_accuracy": float(val_accuracy),
        "epochs": sum(summary["epochs"] for summary in summaries),
        "rounds": summaries,
        "history": history,
        "model": model,
    }


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {name}={value!r}")


def _check_schedule(base_model, schedule):
    """The rounds of `schedule` as `(layers, lr, epochs)`, "all" resolved, each checked against `base_model`."""
    return check_schedule(base_model, resolve_all_layers(schedule, base_model))


def _clone(base_model):
    """A copy of `base_model`'s architecture, same name, new (unset) weights."""
    try:
        return keras.models.clone_model(base_model)
    except (NotImplementedError, TypeError, ValueError) as error:
        raise ValueError(
            f"cannot clone backbone {base_model.name!r} ({type(base_model).__name__}) for the classifier, which "
            f"must leave it unchanged: {error}. Give a functional or Sequential model, or implement get_config."
        ) from error


def _input_shape(base_model):
    try:
        shape = base_model.input_shape
    except (AttributeError, ValueError):
        shape = None  # a subclassed model has none
    if not isinstance(shape, tuple) or len(shape) < 2:
        raise ValueError(
            f"cannot tell the image shape of backbone {base_model.name!r} (input_shape {shape}); "
            "give a model of one image input, e.g. wrapped in a functional model"
        )
    return shape[1:]


def _n_classes(train_data):
    """The number of classes: the generator's `classes`, else the one-hot width."""
    if hasattr(train_data, "classes"):
        return len(train_data.classes)
    if isinstance(train_data, tuple) and len(train_data) == 2:
        one_hot = train_data[1]
    elif isinstance(train_data, keras.utils.PyDataset):
        one_hot = train_data[0][1]
    else:
        raise TypeError(
            "train_data must be a DataGeneratorClass, a keras.utils.PyDataset or an (images, one_hot) "
            f"pair, got {type(train_data).__name__}"
        )
    shape = np.shape(one_hot)
    if len(shape) != 2:
        raise ValueError(f"train_data must give one-hot labels of shape (batch, n_classes), got shape {shape}")
    return shape[1]


def _start_head_statistics(model, train_data):
    """Start the head's moving statistics at those of the first training batch.

    Why: they start at mean 0 and variance 1 and move 1 % a step, so after
    the few steps of a small label fraction the evaluated model normalises
    its features with statistics that are mostly the initial ones.
    """
    images = train_data[0][:STATISTICS_IMAGES] if isinstance(train_data, tuple) else train_data[0][0]
    pooled = keras.Model(model.input, model.get_layer("pooling").output)
    features = keras.ops.convert_to_numpy(pooled(images, training=False))
    batchnorm = model.get_layer("head_batchnorm")
    batchnorm.moving_mean.assign(features.mean(axis=0))
    batchnorm.moving_variance.assign(features.var(axis=0))


def _fit_arguments(data):
    """`x` (and `y`) of `fit` and `evaluate` for a data source or an (images, one_hot) pair."""
    if isinstance(data, tuple):
        images, one_hot = data
        return {"x": images, "y": one_hot}
    return {"x": data}
