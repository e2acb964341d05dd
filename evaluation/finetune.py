"""The fine-tuned classifier: a cloned backbone, a small head, gradual unfreezing."""

import inspect
import logging
import math

import keras
import numpy as np

from data_generators.checks import check_bool, check_choice, check_integer, check_number
from evaluation.frozen_prefix import DEFAULT_CACHE_BYTES, FrozenPrefix, ShuffledArrays, cacheable, n_images, round_cache
from evaluation.pretraining import resolve_all_layers
from simclr_wrap.callbacks import RoundNumber
from simclr_wrap.heads import POOLINGS, pooling_layer
from simclr_wrap.unfreezing import check_schedule, first_unfrozen_index, parameter_counts, set_unfrozen_layers

logger = logging.getLogger(__name__)

STATISTICS_IMAGES = 64  # training images whose features start the head's statistics, when given as arrays
DEFAULT_SCHEDULE = ((0, 1e-3, 30), (2, 1e-4, 5))  # the head alone, then the last two backbone layers
POOLING_LAYER = "pooling"  # the head's first layer: its input is the backbone's output
HEAD_BATCHNORM = "head_batchnorm"


def classifier_model(base_model, n_classes, *, pooling="flatten", hidden_units=32, regularisation=1e-4, seed=0):
    """Build a classifier on a copy of `base_model`, as in the SimCLR reference.

    The model is `image -> backbone -> pooling -> BatchNormalization ->
    Dense(hidden_units, "swish") -> Dense(n_classes, "softmax")`, with an L1
    penalty on both Dense kernels. The backbone is a clone of `base_model`
    with its weights and name, so training the classifier never changes
    `base_model`, and every classifier built from it starts from the same
    backbone weights. All layers are trainable; `FineTunedClassifier`
    decides which backbone layers train.

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

    Raises:
        TypeError: an argument of the wrong type.
        ValueError: an argument out of range, or a backbone that cannot be
            cloned or gives no feature vector.

    Example:
    >>> backbone = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3)], name="cnn")
    >>> model = classifier_model(backbone, 3, pooling="avg")
    >>> model.output_shape, model.get_layer("cnn") is backbone
    ((None, 3), False)
    """
    if not isinstance(base_model, keras.Model):
        raise TypeError(f"Expected base_model to be a keras.Model. Received: base_model of type "
                        f"{type(base_model).__name__}")
    n_classes = check_integer("n_classes", n_classes, minimum=2)
    pooling, hidden_units, regularisation, seed = _check_head_options(pooling, hidden_units, regularisation, seed)
    backbone = _clone(base_model)
    inputs = keras.Input(_input_shape(base_model), name="image")
    features = pooling_layer(pooling, name=POOLING_LAYER)(backbone(inputs))
    if len(features.shape) != 2 or features.shape[-1] is None:
        raise ValueError(
            f"backbone {base_model.name!r} gives features of shape {features.shape} after pooling={pooling!r}; "
            "the classifier needs vectors of a known size (try pooling='avg')"
        )
    # Set after the call above, which builds a clone that was not built yet.
    backbone.set_weights(base_model.get_weights())
    regulariser = keras.regularizers.L1(regularisation) if regularisation else None
    x = keras.layers.BatchNormalization(name=HEAD_BATCHNORM)(features)  # the reference's stabiliser
    x = keras.layers.Dense(
        hidden_units, activation="swish", kernel_regularizer=regulariser,
        kernel_initializer=keras.initializers.GlorotUniform(seed), name="hidden",
    )(x)
    outputs = keras.layers.Dense(
        n_classes, activation="softmax", kernel_regularizer=regulariser,
        kernel_initializer=keras.initializers.GlorotUniform(seed + 1), name="predictions",
    )(x)
    return keras.Model(inputs, outputs, name=f"{base_model.name}_classifier")


def classifier_head(model):
    """The head of a `classifier_model`: from the backbone's feature map to the class probabilities.

    Args:
        model: a classifier of `classifier_model`.

    Returns:
        A functional `keras.Model` that shares its layers (and weights) with
        `model`: training one trains the other.

    Example:
    >>> backbone = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3)], name="cnn")
    >>> classifier_head(classifier_model(backbone, 3)).input_shape
    (None, 6, 6, 4)
    """
    return keras.Model(model.get_layer(POOLING_LAYER).input, model.output, name=f"{model.name}_head")


class FineTunedClassifier:
    """A classifier fine-tuned on a copy of a backbone by gradual unfreezing.

    The classifier of `classifier_model` trains in rounds. Each round makes
    the last layers of the backbone trainable (the head always trains),
    compiles with a fresh Adam at the round's learning rate and fits with
    early stopping on the validation loss, restoring the round's best
    weights. A round whose best validation loss is no better than an earlier
    round's is undone, so each round starts from, and the result is, the
    weights of the lowest validation loss seen. The head's
    BatchNormalization starts its moving statistics at those of the first
    training batch rather than at (0, 1), which the few steps of a small
    label fraction would not move far enough.

    While the first backbone layers stay frozen and the data is not
    augmented, a round computes their activations once and trains the rest
    (`cache_frozen`; see `evaluation.frozen_prefix`): the same model and
    gradients, one forward pass of the prefix instead of one per epoch.

    `fit` sees only training and validation data, so only the validation
    data selects the model; `evaluate` reads the test data once. Nothing
    draws from global random state: the generators shuffle with their own
    seeds, and (images, one_hot) arrays are visited in their order.

    Every option is checked here, before any training; the schedule's
    layers are checked against the backbone when `fit` receives it.

    Args:
        schedule: rounds `(num_of_unfrozen_layers, lr, epochs)`: the last N
            backbone layers train (layers without weights count; 0 trains
            only the head; "all" every layer) or a layer name (that layer
            and the rest), with Adam at `lr` for at most `epochs` epochs.
        pooling, hidden_units, regularisation, seed: as in `classifier_model`;
            `seed` also seeds the order of cached activations.
        patience: epochs without a lower validation loss before a round stops.
        unfreeze_batchnorm: whether BatchNormalization layers of the
            backbone train inside the unfrozen range; frozen ones run in
            inference mode (see `set_unfrozen_layers`).
        cache_frozen: train from cached activations of the frozen prefix
            where that gives the same result (see above).
        cache_bytes: the most memory (bytes) the cached activations may
            take; a round that needs more trains end to end.
        verbose: Keras' `fit` and `evaluate` verbosity (0, 1, 2 or "auto").

    Attributes (set by `fit`):
        model_: the trained classifier, compiled.
        rounds_: per round: `num_of_unfrozen_layers` ("all" resolved), `lr`,
            `epochs` run, `best_val_loss` (None when not finite),
            `best_epoch` (1-based, whose weights early stopping restored;
            None when no epoch ran), `trainable_parameters`, `kept`.
        history_: per-epoch lists over all rounds, with a `round` key
            counted from 1.
        epochs_: epochs run in all rounds.
        val_accuracy_: the accuracy of `model_` on the validation data.
        selected_: the weights `model_` holds: `round` (1-based, the last
            kept round), `epoch` (its `best_epoch`),
            `num_of_unfrozen_layers` and `lr`; all None when no round
            reached a finite validation loss.
        classes_: the training data's `classes`, or None for arrays.
        untrained_prefix_: the backbone's leading layers that no round
            unfroze, as a `FrozenPrefix` whose suffix shares the classifier's
            layers: their activations are those of the base model, so
            accuracies are computed from them where the data can be cached
            (and shared with other classifiers). None when the backbone
            cannot be cut there.

    Raises:
        TypeError: an option of the wrong type.
        ValueError: an option out of range.

    Example:
    >>> backbone = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(2, 3)], name="cnn")
    >>> images, one_hot = np.zeros((6, 8, 8, 3), "float32"), np.eye(2, dtype="float32")[[0, 1] * 3]
    >>> classifier = FineTunedClassifier(schedule=[(0, 1e-3, 1), (1, 1e-4, 1)], hidden_units=8)
    >>> classifier.get_config()["schedule"]
    [[0, 0.001, 1], [1, 0.0001, 1]]
    >>> classifier.fit(backbone, (images, one_hot), (images, one_hot)).epochs_
    2
    >>> sorted(classifier.evaluate((images, one_hot)))
    ['accuracy', 'selected', 'val_accuracy']
    """

    def __init__(
        self,
        *,
        schedule=DEFAULT_SCHEDULE,
        pooling="flatten",
        hidden_units=32,
        regularisation=1e-4,
        patience=3,
        unfreeze_batchnorm=False,
        cache_frozen=True,
        cache_bytes=DEFAULT_CACHE_BYTES,
        seed=0,
        verbose=0,
    ):
        self.schedule = tuple(check_schedule(None, schedule))
        self.pooling, self.hidden_units, self.regularisation, self.seed = _check_head_options(
            pooling, hidden_units, regularisation, seed)
        self.patience = check_integer("patience", patience, minimum=0)
        self.unfreeze_batchnorm = check_bool("unfreeze_batchnorm", unfreeze_batchnorm)
        self.cache_frozen = check_bool("cache_frozen", cache_frozen)
        self.cache_bytes = check_integer("cache_bytes", cache_bytes, minimum=0)
        self.verbose = verbose if verbose == "auto" else check_integer(
            "verbose", verbose, minimum=0, maximum=2, why="or 'auto'")

    @classmethod
    def _option_names(cls):
        """The options, as the constructor names them."""
        return [p.name for p in inspect.signature(cls.__init__).parameters.values() if p.kind is p.KEYWORD_ONLY]

    def get_config(self):
        """The options, JSON-serialisable (the schedule as lists); `from_config` rebuilds the estimator."""
        config = {name: getattr(self, name) for name in self._option_names()}
        config["schedule"] = [list(entry) for entry in self.schedule]
        return config

    @classmethod
    def from_config(cls, config):
        """A new, unfitted estimator with the options of `get_config`."""
        return cls(**config)

    def __repr__(self):
        options = ", ".join(f"{name}={value!r}" for name, value in self.get_config().items())
        return f"{type(self).__name__}({options})"

    def fit(self, base_model, train_data, val_data, callbacks=None, prefix_activations=None):
        """Fine-tune a classifier on a copy of `base_model`.

        Args:
            base_model: the backbone; it is cloned and never changed.
            train_data: a `DataGeneratorClass` (or another
                `keras.utils.PyDataset`, or an `(images, one_hot)` pair of
                arrays) giving images and one-hot labels; the number of
                classes is its `classes`' length or the one-hot width.
            val_data: the same for validation: early stopping and the choice
                among rounds. Its classes must be those of `train_data`.
            callbacks: extra Keras callbacks for every round's `fit`; in a
                cached round their `model` is the suffix model that trains.
            prefix_activations: a `frozen_prefix.PrefixActivations` shared
                with other classifiers of the same backbone (the benchmark
                passes one per stage): the frozen prefix's activations of
                images it holds are not computed again. None: computed
                for every round.

        Returns:
            self, with the fitted attributes set.

        Raises:
            ValueError: a schedule round that does not fit `base_model`
                (before any training), or splits of other classes.
        """
        rounds, n_classes = self._check_fit(base_model, train_data, val_data)
        self.classes_ = _classes(train_data)
        self.model_ = self._build(base_model, n_classes, train_data)
        backbone, head = self.model_.get_layer(base_model.name), classifier_head(self.model_)
        self.rounds_, self.history_ = [], {}
        kept_weights = None
        for number, (layers, lr, epochs) in enumerate(rounds, start=1):
            summary = self._train_round(number, backbone, head, layers, lr, epochs, train_data, val_data, callbacks,
                                        prefix_activations)
            summary["kept"], kept_weights = self._keep_or_undo(summary["best_val_loss"], kept_weights)
            self.rounds_.append(summary)
        self.epochs_ = sum(summary["epochs"] for summary in self.rounds_)
        self.selected_ = self._selected()
        self.untrained_prefix_ = self._untrained_prefix(backbone, head, rounds)
        self.val_accuracy_ = self._accuracy(val_data, prefix_activations)
        return self

    def evaluate(self, test_data, prefix_activations=None):
        """The accuracy of the fitted classifier on `test_data`, which is read once and selects nothing.

        Args:
            test_data: as `train_data` of `fit`, of the same classes.
            prefix_activations: as in `fit`: the activations of the
                untrained prefix for images it holds are not computed again.

        Returns:
            A dict: `accuracy` (on `test_data`), `val_accuracy` and
            `selected` (as `val_accuracy_` and `selected_`).
        """
        if not hasattr(self, "model_"):
            raise RuntimeError(f"This {type(self).__name__} is not fitted yet; call fit(...) before evaluate(...)")
        check_same_classes(self.classes_, test_data, "test_data")
        accuracy = self._accuracy(test_data, prefix_activations)
        logger.info("%s: val accuracy %.3f, test accuracy %.3f", self.model_.name, self.val_accuracy_, accuracy)
        return {"accuracy": accuracy, "val_accuracy": self.val_accuracy_, "selected": dict(self.selected_)}

    def _check_fit(self, base_model, train_data, val_data):
        """The schedule's rounds checked against `base_model` ("all" resolved), and the number of classes."""
        if not isinstance(base_model, keras.Model):
            raise TypeError(f"Expected base_model to be a keras.Model. Received: base_model of type "
                            f"{type(base_model).__name__}")
        rounds = check_schedule(base_model, resolve_all_layers(self.schedule, base_model))
        n_classes = _n_classes(train_data)
        check_same_classes(_classes(train_data), val_data, "val_data")
        return rounds, n_classes

    def _build(self, base_model, n_classes, train_data):
        """The classifier, its head's statistics started on the first training batch."""
        model = classifier_model(base_model, n_classes, pooling=self.pooling, hidden_units=self.hidden_units,
                                 regularisation=self.regularisation, seed=self.seed)
        _start_head_statistics(model, train_data)
        return model

    def _train_round(self, number, backbone, head, layers, lr, epochs, train_data, val_data, callbacks,
                     prefix_activations):
        """Unfreeze the round's layers and train; return the round's summary (all but `kept`)."""
        set_unfrozen_layers(backbone, layers, self.unfreeze_batchnorm)
        trainable, frozen = parameter_counts(self.model_)
        logger.info(
            "classifier round %d: %r unfrozen layers of %r, lr=%g, up to %d epochs; %s trainable and %s "
            "non-trainable parameters", number, layers, backbone.name, lr, epochs, f"{trainable:,}", f"{frozen:,}",
        )
        trained, train_arguments, validation = self._round_inputs(
            number, backbone, head, layers, epochs, train_data, val_data, prefix_activations)
        # A change of trainable layers takes effect only when compiled again; the classifier is compiled
        # even when its suffix trains, so that it can be evaluated and fitted further.
        self._compile([self.model_] + ([trained] if trained is not self.model_ else []), lr)
        early_stopping = keras.callbacks.EarlyStopping(
            monitor="val_loss", mode="min", patience=self.patience, restore_best_weights=True
        )
        fitted = trained.fit(
            **train_arguments,
            validation_data=validation,
            epochs=epochs,
            shuffle=False,  # generators shuffle with their own seed; arrays keep their order
            callbacks=[RoundNumber(number), early_stopping, *(callbacks or [])],
            verbose=self.verbose,
        )
        for key, values in fitted.history.items():
            self.history_.setdefault(key, []).extend(values)
        val_losses = fitted.history.get("val_loss", [])
        if not all(math.isfinite(loss) for loss in val_losses):
            logger.warning("classifier round %d: validation loss not finite (%s); training diverged",
                           number, val_losses)
        best = min((loss for loss in val_losses if math.isfinite(loss)), default=math.inf)
        return {
            "num_of_unfrozen_layers": layers, "lr": lr, "epochs": len(fitted.epoch),
            "best_val_loss": best if math.isfinite(best) else None,
            "best_epoch": early_stopping.best_epoch + 1 if fitted.epoch else None,
            "trainable_parameters": trainable,
        }

    def _round_inputs(self, number, backbone, head, layers, epochs, train_data, val_data, prefix_activations):
        """What trains this round and on what: `(model, fit's x (and y), validation_data)`.

        The suffix on cached activations of the frozen prefix where it may
        (see `round_cache`), else the whole classifier on the data.
        """
        cached = None
        if self.cache_frozen and epochs:
            cached = round_cache(backbone, head, first_unfrozen_index(backbone, layers), train_data, val_data,
                                 self.cache_bytes, prefix_activations)
        if cached is None:
            return self.model_, _fit_arguments(train_data), val_data
        batches = ShuffledArrays(*cached.train, getattr(train_data, "batch_size", 32), self.seed + number)
        return cached.suffix, {"x": batches}, cached.val

    @staticmethod
    def _compile(models, lr):
        """Compile each of `models` with a fresh Adam at `lr`: the one place where the classifier compiles."""
        for model in models:
            model.compile(optimizer=keras.optimizers.Adam(lr), loss="categorical_crossentropy", metrics=["accuracy"])

    def _keep_or_undo(self, round_best, kept_weights):
        """Keep the round just trained if its best validation loss is the lowest yet, else return to the kept weights.

        Returns:
            `(kept, the weights kept so far)`.
        """
        best_so_far = min((summary["best_val_loss"] for summary in self.rounds_ if summary["kept"]), default=math.inf)
        if round_best is not None and round_best < best_so_far:
            return True, self.model_.get_weights()
        if kept_weights is not None:
            self.model_.set_weights(kept_weights)
        return False, kept_weights

    def _selected(self):
        """Which round and epoch the final weights come from: the last kept round."""
        kept = [number for number, summary in enumerate(self.rounds_, start=1) if summary["kept"]]
        if not kept:
            return {"round": None, "epoch": None, "num_of_unfrozen_layers": None, "lr": None}
        summary = self.rounds_[kept[-1] - 1]
        return {"round": kept[-1], "epoch": summary["best_epoch"],
                "num_of_unfrozen_layers": summary["num_of_unfrozen_layers"], "lr": summary["lr"]}

    def _untrained_prefix(self, backbone, head, rounds):
        """The `FrozenPrefix` in front of the first layer any round unfroze, or None where it cannot be cut."""
        if not self.cache_frozen:
            return None
        cut = min(first_unfrozen_index(backbone, layers) for layers, _, _ in rounds)
        prefix = FrozenPrefix(backbone, head, cut)
        return prefix if prefix.available else None

    def predict_proba(self, data, prefix_activations=None):
        """The fitted classifier's class probabilities for every image of `data`, in one pass.

        Args:
            data: `(images, one_hot)` arrays or a generator of such batches,
                visited once in the order of its current epoch (its labels
                are not used).
            prefix_activations: as in `fit`.

        Returns:
            (N, n_classes) float32, one row per image in the order visited.
        """
        if not hasattr(self, "model_"):
            raise RuntimeError(f"This {type(self).__name__} is not fitted yet; call fit(...) before predict_proba(...)")
        return self._predict(data, prefix_activations)[0]

    def _predict(self, data, prefix_activations=None):
        """`(probabilities, one_hot)` of every image of `data`, in one pass.

        Where the data gives the same images every epoch and their activations
        fit in `cache_bytes`, the untrained prefix runs only on images
        `prefix_activations` does not hold, and the rest of the classifier on
        its activations: the same function as the whole classifier.
        """
        prefix = self.untrained_prefix_
        if (prefix is not None and cacheable(data)
                and prefix.bytes_per_image() * n_images(data) <= self.cache_bytes):
            activations, one_hot = prefix.activations(data, prefix_activations)
            return prefix.suffix.predict(activations, batch_size=64, verbose=0), one_hot
        batches = [data] if isinstance(data, tuple) else (data[index] for index in range(len(data)))
        probabilities, labels = [], []
        for images, one_hot in batches:
            probabilities.append(self.model_.predict(images, batch_size=64, verbose=0))
            labels.append(np.asarray(one_hot, np.float32))
        return np.concatenate(probabilities), np.concatenate(labels)

    def _accuracy(self, data, prefix_activations=None):
        """The classifier's accuracy on `data`, in one pass (see `_predict`)."""
        probabilities, one_hot = self._predict(data, prefix_activations)
        # Keras' "accuracy" for one-hot targets: the arg-max class against the label's.
        return float(np.mean(np.argmax(probabilities, axis=-1) == np.argmax(one_hot, axis=-1)))

def finetune_classifier(base_model, train_data, val_data, test_data, *, callbacks=None, **options):
    """Fine-tune a classifier on a copy of `base_model`; return its test accuracy.

    `FineTunedClassifier(**options).fit(base_model, train_data, val_data,
    callbacks)`, then `evaluate(test_data)`. The options are checked, and
    `test_data`'s classes compared with `train_data`'s, before any training.

    Args:
        base_model, train_data, val_data, callbacks: as in `FineTunedClassifier.fit`.
        test_data: the same as `train_data` for the final, single evaluation.
        **options: the options of `FineTunedClassifier`.

    Returns:
        A dict: `accuracy` (on `test_data`), `val_accuracy` (of the final
        model), `epochs` (run in all), `rounds`, `history`, `model` (the
        trained classifier) and `selected`: the estimator's `epochs_`,
        `rounds_`, `history_`, `model_` and `selected_`.

    Example:
    >>> backbone = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(2, 3)], name="cnn")
    >>> images, one_hot = np.zeros((6, 8, 8, 3), "float32"), np.eye(2, dtype="float32")[[0, 1] * 3]
    >>> data = (images, one_hot)
    >>> result = finetune_classifier(backbone, data, data, data, schedule=[(0, 1e-3, 1), (1, 1e-4, 1)])
    >>> result["epochs"], result["history"]["round"]
    (2, [1, 2])
    """
    classifier = FineTunedClassifier(**options)
    check_same_classes(_classes(train_data), test_data, "test_data")
    classifier.fit(base_model, train_data, val_data, callbacks=callbacks)
    scores = classifier.evaluate(test_data)
    return {
        "accuracy": scores["accuracy"],
        "val_accuracy": scores["val_accuracy"],
        "epochs": classifier.epochs_,
        "rounds": classifier.rounds_,
        "history": classifier.history_,
        "model": classifier.model_,
        "selected": scores["selected"],
    }


def _check_head_options(pooling, hidden_units, regularisation, seed):
    """The head's options of `classifier_model`, checked."""
    return (
        check_choice("pooling", pooling, POOLINGS),
        check_integer("hidden_units", hidden_units, minimum=1),
        check_number("regularisation", regularisation, minimum=0),
        check_integer("seed", seed, minimum=0),
    )


def _classes(data):
    """The classes of a data source, or None when it does not say (arrays)."""
    return list(data.classes) if hasattr(data, "classes") else None


def check_same_classes(classes, data, name):
    """Raise unless `data` has the training data's `classes` (when both say), naming `data` as `name`."""
    if classes is not None and hasattr(data, "classes") and list(data.classes) != classes:
        raise ValueError(
            f"{name} has classes {list(data.classes)} but train_data has {classes}; "
            "build it with classes=train_data.classes so that the one-hot columns agree"
        )


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
    pooled = keras.Model(model.input, model.get_layer(POOLING_LAYER).output)
    features = keras.ops.convert_to_numpy(pooled(images, training=False))
    batchnorm = model.get_layer(HEAD_BATCHNORM)
    batchnorm.moving_mean.assign(features.mean(axis=0))
    batchnorm.moving_variance.assign(features.var(axis=0))


def _fit_arguments(data):
    """`x` (and `y`) of `fit` and `evaluate` for a data source or an (images, one_hot) pair."""
    if isinstance(data, tuple):
        images, one_hot = data
        return {"x": images, "y": one_hot}
    return {"x": data}
