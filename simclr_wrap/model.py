"""The `SimCLR` wrapper: any Keras backbone, a projection head, NT-Xent training."""

import contextlib
import inspect
import logging
import os

import keras
import numpy as np

from data_generators.augment import VIEW_PARAMETERS, SimCLRAugmentation
from data_generators.checks import check_bool, check_choice, check_integer, check_positive, check_number
from simclr_wrap.backbones import PREPROCESSING, get_preprocessing, preprocessing_name

from simclr_wrap.callbacks import (
    AtomicModelCheckpoint,
    RoundNumber,
    ScheduleEpoch,
    StopOnNonFiniteLoss,
    save_model_atomically,
)
from simclr_wrap.distribute import (
    check_global_batch,
    check_model_in_scope,
    current_strategy,
    strategy_scope,
    synchronise_batchnorm,
)
from simclr_wrap.heads import POOLINGS, pooling_layer, projection_layers
from simclr_wrap.layers import NearestNeighbourQueue, SoftmaxCosineSim
from simclr_wrap.losses import NTXent, contrastive_metrics
from simclr_wrap.monitors import ProjectionMonitor
from simclr_wrap.precision import PRECISIONS, computing_in, resolve_precision
from simclr_wrap.resume import (
    ResumableEarlyStopping,
    ResumableReduceLROnPlateau,
    ResumeState,
    load_best_weights,
    restore_callbacks,
)
from simclr_wrap.training_loop import (
    StrategyFit,
    broadcast_arrays,
    broadcast_from_chief,
    broadcast_json,
    is_multi_worker,
    worker_of,
)
from simclr_wrap.unfreezing import check_schedule, parameter_counts, set_unfrozen_layers
from simclr_wrap.view_bank import BankBatches, BankTrainer, bank_plan, fill_bank, first_trainable_index
from simclr_wrap.views import AugmentedViews, preprocessing_as_affine

logger = logging.getLogger(__name__)


class SimCLR:
    """SimCLR self-supervised training of an existing Keras backbone.

    Each step takes the two augmented views of B images as two inputs,
    `view_a` and `view_b`, each (B, H, W, C). They are concatenated and the
    backbone runs once on all 2·B images; its output is pooled, passed
    through the projection head and `SoftmaxCosineSim`, whose (B, 4·B) output
    is trained against the `[I|O|I|O]` target with NT-Xent. Training goes
    in rounds of gradual unfreezing: in each, the last layers of the
    backbone train with a learning rate for some epochs.

    Args:
        base_model: the Keras backbone (Functional, Sequential or subclassed)
            mapping (H, W, C) images to a feature map or vector. Changed in
            place: after training it is the adapted backbone.
        batch_size: images per contrastive batch, B (each step sees 2·B
            views and 2·B - 2 negatives per anchor). Data generators given to
            `train` must use it.
        feat_dims_ph: widths of the projection head's Dense layers.
        num_of_unfrozen_layers: backbone layers that train at first: the last
            N (layers without weights count) or a layer name (that layer and
            the rest). See `unfreeze_and_train`.
        temperature: softmax temperature of `SoftmaxCosineSim`.
        lr: learning rate of the first round.
        optimizer: the optimizer each round compiles afresh at its
            learning rate: a Keras optimizer, its name ("adam", "sgd",
            "adamw", ...) or its config (`keras.optimizers.serialize`); its
            own learning rate is replaced by the round's. Default Adam.
        ph_regul: L1 factor on the head's kernels. The default, 1e-6, puts
            the penalty at about 2 % of the initial NT-Xent for a 2048-wide
            head on 2048 features, so it regularises without dominating; the
            reference's 0.005 made it about 100 times the loss. `nt_xent` is
            reported without it in any case.
        ph_activation: activation of the head's hidden layers.
        pooling: "flatten", "avg" or "max": how the backbone's feature map
            becomes a vector.
        input_shape: (H, W, C) of the images; needed only when the backbone
            does not fix it (built with `input_shape=None`, or an unbuilt
            subclassed model).
        unfreeze_batchnorm: whether BatchNormalization layers inside the
            unfrozen range train (batch statistics, updated moving averages)
            or stay in inference mode with their pretrained statistics (the
            default, as Keras' transfer-learning guide advises for small
            data). Frozen ones always run in inference mode.
        seed: seed of the projection head's initial weights (None: random).
        save_path: folder for the best checkpoint (`simclr_best.keras`), the
            adapted backbone after each round (`base_model_round_{k}.keras`)
            and the history (`history.csv`); None writes nothing.
        early_stopping_patience: epochs without a better monitored NT-Xent
            before a round stops (its best weights are restored).
        reduce_lr_patience: epochs without improvement before the learning
            rate is halved.
        jit_compile: Keras' `compile` option: True compiles the training
            step with XLA; "auto" (the default) does so on GPUs only, since
            on CPUs it measured no faster (see `benchmarks/RESULTS.md`).
            For mixed precision, see `precision`.
        positives: "view" (SimCLR: an anchor's positive is the other view
            of its image) or "nearest_neighbour" (NNCLR: the anchor is
            replaced, in the cross-view blocks, by its nearest neighbour in a
            queue of past first-view projections; see
            `NearestNeighbourQueue`). The (B, 4·B) output and its `[I|O|I|O]`
            target stay the same; the aa and bb blocks stay as extra
            negatives, where the paper has none (`same_view_negatives`).
        queue_size: projections kept in NNCLR's queue (at least
            `batch_size`); saved with the model.
        same_view_negatives: whether the other views of the same side (aa,
            bb) are negatives; False with "nearest_neighbour" gives the
            paper's NNCLR loss exactly.
        strategy: a `tf.distribute.Strategy` (`MirroredStrategy` for the
            devices of one machine, `MultiWorkerMirroredStrategy` across
            machines) to train under; None takes the one whose scope is open
            (or one device). The backbone must have been built inside its
            scope. `batch_size` is then the global batch, split evenly over
            the replicas, and the negatives of every anchor come from the
            whole global batch (the views are gathered across replicas), so
            the loss is the single-device loss on the global batch. Under
            `MultiWorkerMirroredStrategy`, where Keras' `fit` fails, rounds
            train through `simclr_wrap.training_loop.StrategyFit` (the same
            callbacks, each worker reading its rows of every batch), only the
            chief writes to `save_path`, and a resumed schedule continues
            from the chief's state, sent to every worker.
        augmentation: None (the data gives the two views, as
            `DataGeneratorSimCLR` does by default), or a
            `SimCLRAugmentation` or its config: the views are made inside
            the training step, on the device that runs it, by
            `simclr_wrap.views.AugmentedViews` from the images and the
            parameters the data gives (`DataGeneratorSimCLR(...,
            augmentation=the same, augment_in_model=True)`); the model's
            inputs are then `images` and `view_parameters`.
        preprocess: with `augmentation`, the backbone's preprocessing,
            applied in the step after it: a mode name of
            `simclr_wrap.backbones.PREPROCESSING` or one of its functions
            (None: none). Without `augmentation` the data preprocesses.
        sync_batchnorm: with `unfreeze_batchnorm=True`, compute the batch
            statistics of the backbone's BatchNormalization layers over the
            global batch rather than per replica (Keras' `synchronized`
            BatchNormalization), as SimCLR does; the saved backbone keeps the
            setting.
        view_bank: None (every epoch runs the whole backbone), or M, an
            even number of views per image: a round that trains only the
            layers after a frozen prefix of the backbone runs the prefix once
            over M views of every image (its first M / 2 epochs' views), then
            trains the rest from those activations: its first M / 2 epochs
            as without a bank, the later ones on new pairs of the stored
            views (see `simclr_wrap.view_bank`). Rounds it cannot serve
            (see `bank_plan`) train end to end, saying why.
        precision: the dtype policy the backbone, the pooling and the
            projection head compute in while `train` runs: "auto" (the
            default) picks by the hardware (`simclr_wrap.precision.policy_for`:
            bfloat16 on GPUs and CPUs that compute it, float16 on older
            GPUs, else float32; `policy` says which); "float32" leaves every
            layer's policy as the backbone was built (float32, or mixed
            where the user built it so, e.g. under
            `keras.mixed_precision.set_global_policy`); "mixed_bfloat16" or
            "mixed_float16" set it for each round (the variables stay
            float32; "mixed_float16" wraps the optimizer in a
            `keras.optimizers.LossScaleOptimizer`). `SoftmaxCosineSim` and
            NT-Xent compute in float32 whatever the policy. The layers get
            their own policies back when `train` returns, so the adapted
            backbone, the round backbones and `simclr_best.keras` are saved
            computing as they were given. bfloat16 is the default where the
            hardware computes it because its validation linear probes after
            SimCLR matched float32's within the spread between pretraining
            runs (4 runs each, VGG16 and MobileNetV2 on TrashNet;
            benchmarks/RESULTS.md); pass "float32" to turn it off.

    Besides NT-Xent and the contrastive accuracy, each epoch logs the
    correlation accuracy and the projection std of the first validation
    batch (`val_correlation_accuracy`, `val_projection_std`; see
    `simclr_wrap.monitors`) when the data can be indexed, and warns when the
    projections collapse.

    Every option but `base_model` and `strategy` is in `get_config()`, and
    `SimCLR.from_config(config, base_model)` builds the same wrapper again;
    `SimCLR.default_config()` gives the defaults. `pretrain`, the benchmark
    and the command line pass these configs along rather than re-declaring
    the options.

    Example:
    >>> backbone = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(4, 3)])
    >>> simclr = SimCLR(backbone, batch_size=4, feat_dims_ph=(16, 8), save_path=None)
    >>> [t.name for t in simclr.SimCLR_model.inputs]
    ['view_a', 'view_b']
    >>> SimCLR.from_config(simclr.get_config(), backbone).get_config() == simclr.get_config()
    True
    """

    def __init__(
        self,
        base_model,
        batch_size=32,
        *,
        feat_dims_ph=(2048, 128),
        num_of_unfrozen_layers=1,
        temperature=0.1,
        lr=1e-4,
        optimizer="adam",
        ph_regul=1e-6,
        ph_activation="swish",
        pooling="flatten",
        input_shape=None,
        unfreeze_batchnorm=False,
        seed=None,
        save_path="simclr_checkpoints",
        early_stopping_patience=5,
        reduce_lr_patience=2,
        jit_compile="auto",
        positives="view",
        queue_size=10000,
        same_view_negatives=True,
        strategy=None,
        sync_batchnorm=False,
        augmentation=None,
        preprocess=None,
        view_bank=None,
        precision="auto",
    ):
        if not isinstance(base_model, keras.Model):
            raise TypeError(f"Expected base_model to be a keras.Model. Received: base_model={type(base_model).__name__}")
        self.base_model = base_model
        self.batch_size = check_integer("batch_size", batch_size, minimum=2, why="a contrastive batch needs negatives")
        self.feat_dims_ph = tuple(check_integer("feat_dims_ph", width, minimum=1) for width in _sequence(
            "feat_dims_ph", feat_dims_ph))
        self.temperature = check_positive("temperature", temperature)
        self.lr = check_positive("lr", lr)
        self.optimizer = _optimizer_config(optimizer)
        self.ph_regul = check_number("ph_regul", ph_regul, minimum=0)
        self.ph_activation = keras.activations.serialize(keras.activations.get(ph_activation))
        self.pooling = check_choice("pooling", pooling, POOLINGS)
        self.input_shape = _image_input_shape(base_model, input_shape)
        self.unfreeze_batchnorm = check_bool("unfreeze_batchnorm", unfreeze_batchnorm)
        self.seed = None if seed is None else check_integer("seed", seed, minimum=0)
        self.save_path = None if save_path is None else os.fspath(save_path)
        self.early_stopping_patience = check_integer("early_stopping_patience", early_stopping_patience, minimum=0)
        self.reduce_lr_patience = check_integer("reduce_lr_patience", reduce_lr_patience, minimum=0)
        self.jit_compile = check_choice("jit_compile", jit_compile, (True, False, "auto"))
        self.positives = check_choice("positives", positives, ("view", "nearest_neighbour"))
        self.queue_size = check_integer("queue_size", queue_size, minimum=self.batch_size if positives ==
                                        "nearest_neighbour" else 1, why="NNCLR's queue holds at least one batch")
        self.same_view_negatives = check_bool("same_view_negatives", same_view_negatives)
        self.strategy = current_strategy(strategy)
        self._multi_worker = is_multi_worker(self.strategy)
        # Under several workers only the chief writes files (the others would overwrite its, or fill their disks).
        self._writes = worker_of(self.strategy)[2] if self._multi_worker else True
        check_global_batch(self.strategy, batch_size)
        check_model_in_scope(self.strategy, base_model)
        self.sync_batchnorm = check_bool("sync_batchnorm", sync_batchnorm)
        self.augmentation, self.preprocess = _in_step_augmentation(augmentation, preprocess, self.input_shape)
        self.view_bank = None if view_bank is None else check_integer(
            "view_bank", view_bank, minimum=2, why="views per image, an even number (two per epoch of views)")
        if self.view_bank is not None and self.view_bank % 2:
            raise ValueError("Expected view_bank to be an even number of views per image (each epoch of the data "
                             f"gives two). Received: view_bank={view_bank}")
        self.precision = check_choice("precision", precision, PRECISIONS)
        # "auto" is decided here, once, and stays "auto" in the config, which may train on other hardware.
        self.policy = resolve_precision(self.precision)
        if self.precision == "auto":
            logger.info("precision='auto' trains in %s on this machine", self.policy)
        if self.sync_batchnorm:
            if not unfreeze_batchnorm:
                logger.warning("sync_batchnorm=True does nothing while unfreeze_batchnorm=False: frozen "
                               "BatchNormalization layers use their moving statistics")
            synchronise_batchnorm(base_model)
        self.round_ = 0
        self.history_ = {}
        # Saved inside every backbone file (see `save_base_model`); callers may add to it.
        self.backbone_metadata = {"input_shape": list(self.input_shape), "pooling": self.pooling}
        self._epochs_run = 0
        self._checkpoint = None
        # Within a round's `_in_precision`: puts the layers' own dtype policies back for a while, to save a file.
        self._as_given = contextlib.nullcontext
        self._strategy_fit = None
        self._trainable_ids = set()
        self.num_of_unfrozen_layers = None
        with strategy_scope(self.strategy):
            self.SimCLR_model = self._build()
        # No warning here: a schedule usually replaces this first setting before any training.
        self._unfreeze(num_of_unfrozen_layers, warn=False)
        self._compile(self.lr)

    # Configuration

    def get_config(self):
        """Every option of the constructor but `base_model` and `strategy`, JSON-serialisable.

        `num_of_unfrozen_layers` and `lr` are those set now (they change with
        each round of a schedule).
        """
        return {
            "batch_size": self.batch_size,
            "feat_dims_ph": list(self.feat_dims_ph),
            "num_of_unfrozen_layers": self.num_of_unfrozen_layers,
            "temperature": self.temperature,
            "lr": self.lr,
            "optimizer": self.optimizer,
            "ph_regul": self.ph_regul,
            "ph_activation": self.ph_activation,
            "pooling": self.pooling,
            "input_shape": list(self.input_shape),
            "unfreeze_batchnorm": self.unfreeze_batchnorm,
            "seed": self.seed,
            "save_path": self.save_path,
            "early_stopping_patience": self.early_stopping_patience,
            "reduce_lr_patience": self.reduce_lr_patience,
            "jit_compile": self.jit_compile,
            "positives": self.positives,
            "queue_size": self.queue_size,
            "same_view_negatives": self.same_view_negatives,
            "sync_batchnorm": self.sync_batchnorm,
            "augmentation": None if self.augmentation is None else self.augmentation.get_config(),
            "preprocess": self.preprocess,
            "view_bank": self.view_bank,
            "precision": self.precision,
        }

    @classmethod
    def from_config(cls, config, base_model, strategy=None):
        """A wrapper around `base_model` with the options of `config` (from `get_config`)."""
        return cls(base_model, **check_options(config), strategy=strategy)

    @classmethod
    def default_config(cls):
        """The constructor's defaults, as `get_config` would give them (without `input_shape`).

        Example:
        >>> SimCLR.default_config()["temperature"]
        0.1
        """
        parameters = inspect.signature(cls.__init__).parameters
        return {name: parameter.default for name, parameter in parameters.items()
                if name not in ("self", "base_model", "strategy")}

    # Building

    def _inputs_and_views(self):
        """The model's inputs and the (2·B, H, W, C) views the backbone runs on, view a's first."""
        if self.augmentation is None:
            inputs = [keras.Input(self.input_shape, name="view_a"), keras.Input(self.input_shape, name="view_b")]
            return inputs, keras.layers.Concatenate(axis=0, name="views")(inputs)
        inputs = [keras.Input(self.input_shape, name="images"),
                  keras.Input((2, len(VIEW_PARAMETERS)), name="view_parameters")]
        matrix, shift = preprocessing_as_affine(
            None if self.preprocess is None else get_preprocessing(self.preprocess), self.input_shape[-1])
        return inputs, AugmentedViews(self.augmentation, matrix, shift, name="views")(*inputs)

    def _build(self):
        inputs, views = self._inputs_and_views()
        try:
            features = self.base_model(views)
        except Exception as error:
            raise ValueError(
                f"could not run backbone {self.base_model.name!r} on images of shape "
                f"{self.input_shape}: {error}"
            ) from error
        _check_poolable(self.base_model.name, features, self.pooling)
        queue = None
        if self.positives == "nearest_neighbour":
            queue = NearestNeighbourQueue(queue_size=self.queue_size, seed=self.seed or 0, name="support_queue")
        self._tail_layers = (
            pooling_layer(self.pooling),
            projection_layers(self.feat_dims_ph, self.ph_activation, self.ph_regul, seed=self.seed),
            queue,
            SoftmaxCosineSim(temperature=self.temperature, same_view_negatives=self.same_view_negatives,
                             name="softmax_cosine_sim"),
        )
        projections, similarities = self._tail(features)
        # Shares every layer with the SimCLR model: what ProjectionMonitor watches.
        self._projector = keras.Model(inputs, projections, name="simclr_projector")
        return keras.Model(inputs, similarities, name="simclr")

    def _tail(self, features):
        """`(projections, similarities)` of the backbone's features of both views: pooling, head, SoftmaxCosineSim.

        The same layers, hence the same weights, in every graph they are
        applied to: the SimCLR model's and a view bank's (`BankTrainer`).
        """
        pooling, head, queue, similarity = self._tail_layers
        projections = pooling(features)
        for layer in head:
            projections = layer(projections)
        anchors = None if queue is None else queue(projections)
        return projections, similarity(projections, anchors=anchors)

    def _compile(self, lr):
        self.lr = check_positive("lr", lr)
        with strategy_scope(self.strategy):
            self._compile_model(self.SimCLR_model, _new_optimizer(self.optimizer, self.lr))
        # Its compiled step holds the optimizer: a new one for each compile.
        self._strategy_fit = StrategyFit(self.SimCLR_model, self.strategy, self.batch_size) if self._multi_worker else None

    def _compile_model(self, model, optimizer):
        """Compile `model` (the SimCLR model, or a `BankTrainer` of it) with NT-Xent and the contrastive metrics."""
        if self.policy == "mixed_float16" and not isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            # float16 gradients of small losses underflow to 0: scaled up for the backward pass, down for the update.
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        model.compile(optimizer=optimizer, loss=NTXent(), metrics=contrastive_metrics(), jit_compile=self.jit_compile)

    def _unfreeze(self, num_of_unfrozen_layers, warn=True):
        set_unfrozen_layers(self.base_model, num_of_unfrozen_layers, self.unfreeze_batchnorm)
        trainable_ids = {id(weight) for weight in self.base_model.trainable_weights}
        repeated = num_of_unfrozen_layers == self.num_of_unfrozen_layers  # warned about already
        if warn and num_of_unfrozen_layers not in (0, None) and not repeated and not trainable_ids - self._trainable_ids:
            logger.warning(
                "num_of_unfrozen_layers=%r makes no new layer of %r trainable (the last layers "
                "have no weights, or were trainable already)",
                num_of_unfrozen_layers,
                self.base_model.name,
            )
        self._trainable_ids = trainable_ids
        self.num_of_unfrozen_layers = num_of_unfrozen_layers

    # Training

    def train(self, data_train, data_val=None, epochs=1, callbacks=None, verbose="auto"):
        """Train one round with the layers and learning rate set now.

        Args:
            data_train: a `DataGeneratorSimCLR` (or any Keras data source
                giving `((view_a, view_b), target)` batches of B images).
            data_val: the same for validation; its NT-Xent (`val_nt_xent`)
                drives checkpointing, early stopping and the learning rate.
                Without it they follow the training `nt_xent`.
            epochs: epochs of this round (0 skips training).
            callbacks: extra Keras callbacks, run before the default ones (so
                that what they add to the logs is checkpointed and written).
            verbose: Keras' `fit` verbosity.

        Returns:
            The round's `keras.callbacks.History`.

        Raises:
            NonFiniteLossError: the loss became NaN or infinite; the round
                stopped and the model is back at the weights of its last
                finished epoch (nothing is saved for the round).
        """
        return self._fit_round(data_train, data_val, epochs, callbacks, verbose)

    def _fit_round(self, data_train, data_val, epochs, callbacks, verbose, initial_epoch=0, resume=None):
        """`train`, optionally going on from a saved state.

        Args:
            initial_epoch: epochs of this round finished before an interruption.
            resume: `(store, state, epochs_before)` to save the schedule's state
                after every epoch (`ResumeState`), continuing the round's
                callbacks from `state` (None for a round that starts afresh);
                `epochs_before` counts the schedule's epochs before the round.
        """
        check_integer("epochs", epochs, minimum=0)
        for name, data in (("data_train", data_train), ("data_val", data_val)):
            self._check_batches(name, data)
        self.round_ += 1
        trainable, frozen = parameter_counts(self.SimCLR_model)
        logger.info(
            "round %d: %r unfrozen layers of %r, lr=%g, %d epochs; %s trainable and %s non-trainable parameters",
            self.round_, self.num_of_unfrozen_layers, self.base_model.name, self.lr, epochs,
            f"{trainable:,}", f"{frozen:,}",
        )
        guard = StopOnNonFiniteLoss(self.round_, hints=f"lr={self.lr:g}, temperature={self.temperature:g}")
        defaults = self._round_callbacks(monitor="nt_xent" if data_val is None else "val_nt_xent")
        tail = []
        if resume is not None:
            store, state, epochs_before = resume
            early_stopping, plateau = defaults[1], defaults[2]
            checkpoint = self._checkpoint if self.save_path is not None and self._writes else None
            if state is not None:
                restore_callbacks(state, early_stopping, plateau, checkpoint, self._best_weights(state, store.folder))
            if self._writes:
                # Last: it records what every other callback made of the epoch.
                tail = [store.round_writer(self.round_, epochs_before, self.history_, early_stopping, plateau,
                                           checkpoint)]
        # The view bank's prefix pass too: it computes what the round's backbone would.
        with self._in_precision():
            fit = self.SimCLR_model.fit if self._strategy_fit is None else self._strategy_fit.fit
            batches_train, batches_val, banks = data_train, data_val, []
            bank_round = self._view_bank_round(data_train, data_val, epochs, initial_epoch, verbose)
            if bank_round is not None:
                trainer, batches_train, batches_val, banks = bank_round
                fit = trainer.fit
            try:
                history = fit(
                    batches_train,
                    validation_data=batches_val,
                    epochs=epochs,
                    initial_epoch=initial_epoch,
                    shuffle=False,  # the generators shuffle, seeded; Keras would ignore it for them anyway
                    # The guard first, so that no other callback sees a diverged epoch as its last.
                    # Extra callbacks before the default ones, so that what they log
                    # reaches the checkpoint, early stopping and the CSV file.
                    callbacks=[guard, *self._numbering(batches_train, initial_epoch),
                               *self._monitors(data_train, data_val), *(callbacks or []), *defaults, *tail],
                    verbose=verbose,
                )
            finally:
                for bank in banks:
                    bank.close()
        self._epochs_run += len(history.epoch)
        for key, values in history.history.items():
            self.history_.setdefault(key, []).extend(values)
        if guard.error is not None:
            raise guard.error
        self._end_round()
        return history

    @contextlib.contextmanager
    def _in_precision(self):
        """Within the block the backbone, the pooling and the head compute in `precision` (see `computing_in`).

        The NNCLR queue and `SoftmaxCosineSim` are left out: they compute in float32.
        """
        pooling, head, _, _ = self._tail_layers
        with computing_in(self.policy, [self.base_model, pooling, *head], compiled=[self.SimCLR_model]) as as_given:
            self._as_given = as_given
            try:
                yield
            finally:
                self._as_given = contextlib.nullcontext

    def _view_bank_round(self, data_train, data_val, epochs, initial_epoch, verbose):
        """`(trainer, training batches, validation batches, banks)` for a round from a view bank, or None.

        The training bank holds the views of the round's first
        `view_bank / 2` epochs, counted in the schedule, so a resumed round
        builds the same bank; the validation data's views, the same every
        epoch, are one epoch's.
        """
        if self.view_bank is None:
            return None
        cut, why_not = bank_plan(self.base_model, self.view_bank, epochs, data_train, data_val, self._multi_worker)
        if cut is None:
            logger.info("round %d trains end to end, without a view bank: %s", self.round_, why_not)
            return None
        prefix, suffix = cut
        inputs, views = self._inputs_and_views()
        encoder = keras.Model(inputs, prefix(views), name="view_bank_encoder")
        folder = self.save_path if self.save_path is not None and self._writes else None
        first_epoch = self._epochs_run - initial_epoch
        logger.info("round %d: a view bank of %d views per image through the first %d layers of %r",
                    self.round_, self.view_bank, first_trainable_index(self.base_model), self.base_model.name)
        banks = [fill_bank(encoder, data_train, first_epoch, self.view_bank, folder, verbose=verbose)]
        try:
            batches_train = BankBatches(banks[0], self.batch_size, data_train.seed, first_epoch, len(data_train))
            batches_val = None
            if data_val is not None:
                banks.append(fill_bank(encoder, data_val, data_val.epoch, 2, folder, verbose=verbose))
                batches_val = BankBatches(banks[1], self.batch_size, data_val.seed, data_val.epoch, len(data_val),
                                          replay_only=True)
            with strategy_scope(self.strategy):
                shape = tuple(encoder.output.shape[1:])
                activations = [keras.Input(shape, name="activations_a"), keras.Input(shape, name="activations_b")]
                features = keras.layers.Concatenate(axis=0, name="views")(activations)
                for layer in suffix:
                    features = layer(features)
                trainer = BankTrainer(self.SimCLR_model, activations, self._tail(features)[1],
                                      name="simclr_view_bank")
                # The SimCLR model's optimizer, built for its variables in its order, so that the resume state
                # (the SimCLR model's weights and optimizer) holds the moments the trainer uses.
                optimizer = self.SimCLR_model.optimizer
                if not optimizer.built:
                    optimizer.build(self.SimCLR_model.trainable_variables)
                self._compile_model(trainer, optimizer)
        except BaseException:
            for bank in banks:
                bank.close()
            raise
        return trainer, batches_train, batches_val, banks

    def _check_batches(self, name, data):
        """Raise before `fit` if `data`'s batch size or image shape differ from this wrapper's.

        Data that can be indexed (a `keras.utils.PyDataset` such as
        `DataGeneratorSimCLR`) is checked on its first batch.
        """
        if data is None:
            return
        size = getattr(data, "batch_size", self.batch_size)
        if size != self.batch_size:
            raise ValueError(f"{name} gives batches of {size} images but SimCLR has batch_size={self.batch_size}")
        if not (hasattr(data, "__getitem__") and hasattr(data, "__len__")) or len(data) == 0:
            return
        inputs = data[0][0]
        shapes = [tuple(getattr(part, "shape", ())) for part in inputs] if isinstance(inputs, (tuple, list)) else []
        expected = [tuple(tensor.shape[1:]) for tensor in self.SimCLR_model.inputs]
        if len(shapes) != 2 or any(shape[1:] != want for shape, want in zip(shapes, expected)):
            if self.augmentation is None:
                what = (f"views of shape {shapes} but backbone {self.base_model.name!r} takes images of shape "
                        f"{tuple(self.input_shape)}")
            else:
                what = (f"inputs of shape {shapes} but this SimCLR makes its views in the step: it takes (images, "
                        f"view_parameters) of shapes {expected}; build the generator with augment_in_model=True and")
            raise ValueError(
                f"{name} gives {what}: build the generator with width={self.input_shape[1]}, "
                f"height={self.input_shape[0]}, channels={self.input_shape[2]}"
            )
        if self.augmentation is not None and getattr(data, "augmentation", self.augmentation).get_config() != \
                self.augmentation.get_config():
            raise ValueError(f"{name} draws the parameters of {data.augmentation!r} but this SimCLR applies those of "
                             f"{self.augmentation!r}: give both the same augmentation")

    def _end_round(self):
        if self.save_path is not None and self._writes:
            self.save_base_model(os.path.join(self.save_path, f"base_model_round_{self.round_}.keras"))

    def unfreeze_and_train(self, data_train, data_val=None, *, num_of_unfrozen_layers, lr, epochs, callbacks=None, verbose="auto"):
        """Unfreeze the last `num_of_unfrozen_layers` layers, then `train` a round.

        The model is compiled again with a fresh Adam optimizer at `lr`, as
        a change of trainable layers requires.

        Args:
            data_train, data_val, epochs, callbacks, verbose: as in `train`.
            num_of_unfrozen_layers: the last N layers of the backbone train
                (layers without weights count; a warning says when nothing
                new becomes trainable), or a layer name to train from.
            lr: learning rate of the round.

        Returns:
            The round's `keras.callbacks.History`.
        """
        self._unfreeze(num_of_unfrozen_layers)
        self._compile(lr)
        return self.train(data_train, data_val, epochs, callbacks, verbose)

    def train_schedule(self, data_train, data_val, schedule, callbacks=None, verbose="auto", resume=False):
        """Run a whole gradual-unfreezing schedule, checked before it starts.

        With `resume=True` (needs `save_path`) the state of the schedule is
        written after every epoch to `<save_path>/resume/` (see
        `simclr_wrap.resume`), and a run of the same schedule that was
        interrupted, by Ctrl-C or a killed process, goes on from its last
        finished epoch: finished rounds are skipped, and the weights, the
        optimizer, the round's early-stopping, learning-rate and checkpoint
        state, the history and the generator's epoch (hence its views) are
        as they were. A checkpoint file that was cut short or changed raises
        `CorruptCheckpointError` instead of being loaded.

        Args:
            data_train, data_val, callbacks, verbose: as in `train`.
            schedule: list of `(num_of_unfrozen_layers, lr, epochs)` rounds.
            resume: save and resume the schedule's state.

        Returns:
            The list of the rounds' `keras.callbacks.History` (of the rounds
            run in this call).

        Example:
        >>> # simclr.train_schedule(train_gen, val_gen, [(1, 1e-4, 5), ("block5_conv1", 1e-5, 5)])
        """
        schedule = self.check_schedule(schedule)
        if not resume:
            return [
                self.unfreeze_and_train(
                    data_train, data_val, num_of_unfrozen_layers=layers, lr=lr, epochs=epochs,
                    callbacks=callbacks, verbose=verbose,
                )
                for layers, lr, epochs in schedule
            ]
        if self.save_path is None:
            raise ValueError("resume=True needs a save_path to keep the state in")
        store = ResumeState(os.path.join(self.save_path, "resume"), schedule)
        state = store.load() if self._writes else None
        if self._multi_worker:
            state = broadcast_json(self.strategy, state)  # the chief's: the other workers' may be older or absent
        histories, epochs_before = [], 0
        for number, (layers, lr, epochs) in enumerate(schedule, start=1):
            if state is not None and number < state["round"]:
                continue  # finished before the interruption; its weights come with the state
            resumed = state if state is not None and number == state["round"] else None
            state = None
            self._unfreeze(layers)
            self._compile(lr)
            initial_epoch = 0
            if resumed is not None:
                self._load_state(store, resumed)
                epochs_before = resumed["epochs_before_round"] + resumed["epochs_in_round"]
                if resumed["stopped"] or resumed["epochs_in_round"] >= epochs:
                    # The round had finished: what its end does is left, the best weights first.
                    best = self._best_weights(resumed, store.folder)
                    if best is not None:
                        self.SimCLR_model.set_weights(best)
                    self.round_ += 1
                    self._end_round()
                    continue
                initial_epoch = resumed["epochs_in_round"]
            round_start = epochs_before - initial_epoch
            histories.append(self._fit_round(data_train, data_val, epochs, callbacks, verbose, initial_epoch,
                                             resume=(store, resumed, round_start)))
            epochs_before += len(histories[-1].epoch)
        return histories

    def _load_state(self, store, state):
        """Put back the weights, the optimizer, the round, the history and the epoch count of `state`."""
        # The optimizer's variables exist only once it is built for this round's trainable weights.
        with strategy_scope(self.strategy):
            self.SimCLR_model.optimizer.build(self.SimCLR_model.trainable_variables)
        if self._writes:
            self.SimCLR_model.load_weights(os.path.join(store.folder, state["weights"]))
        if self._multi_worker:
            broadcast_from_chief(self.strategy, self.SimCLR_model.weights + self.SimCLR_model.optimizer.variables)
        self.round_ = state["round"] - 1
        self.history_ = {key: list(values) for key, values in state["history"].items()}
        self._epochs_run = state["epochs_before_round"] + state["epochs_in_round"]
        logger.info("resuming round %d after its epoch %d (from %s)", state["round"], state["epochs_in_round"],
                    store.folder)

    def _best_weights(self, state, folder):
        """EarlyStopping's best weights saved with `state` (None without), on every worker the chief's."""
        if not self._multi_worker:
            return load_best_weights(state, folder)
        if not state.get("best_weights"):
            return None
        if self._writes:
            best = load_best_weights(state, folder)
        else:
            best = [np.zeros(weight.shape, weight.dtype) for weight in self.SimCLR_model.weights]
        return broadcast_arrays(self.strategy, best)

    def check_schedule(self, schedule):
        """Validate a schedule against this backbone and return it as tuples.

        Raises:
            ValueError: naming the round and the value at fault.
        """
        return check_schedule(self.base_model, schedule)

    def _numbering(self, data_train, initial_epoch):
        """A `ScheduleEpoch` for training data whose views follow its `epoch`."""
        return [ScheduleEpoch(data_train, self._epochs_run - initial_epoch)] if hasattr(data_train, "epoch") else []

    def _monitors(self, data_train, data_val):
        """A `ProjectionMonitor` on the first batch of the validation data (else the training data).

        Only for data that can be indexed (a `keras.utils.PyDataset` such as
        `DataGeneratorSimCLR`); the batch is taken once, so every epoch of the
        round is scored on the same views.
        """
        data, prefix = (data_val, "val_") if data_val is not None else (data_train, "")
        if not (hasattr(data, "__getitem__") and hasattr(data, "__len__")) or len(data) == 0:
            return []
        views, _ = data[0]
        return [ProjectionMonitor(self._projector, tuple(views), prefix=prefix, backbone=self.base_model)]

    def _round_callbacks(self, monitor):
        callbacks = [
            RoundNumber(self.round_),
            ResumableEarlyStopping(
                monitor=monitor, mode="min", patience=self.early_stopping_patience, restore_best_weights=True
            ),
            ResumableReduceLROnPlateau(
                monitor=monitor, mode="min", factor=0.5, patience=self.reduce_lr_patience, min_lr=self.lr / 100
            ),
        ]
        if self.save_path is not None and self._writes:
            if self._checkpoint is None or self._checkpoint.monitor != monitor:
                self._checkpoint = AtomicModelCheckpoint(os.path.join(self.save_path, "simclr_best.keras"), monitor,
                                                         save=self._save_as_given)
            os.makedirs(self.save_path, exist_ok=True)
            callbacks += [
                self._checkpoint,
                keras.callbacks.CSVLogger(os.path.join(self.save_path, "history.csv"), append=True),
            ]
        return callbacks

    # Inference and saving

    def predict(self, data, **kwargs):
        """Return the (B, 4·B) similarity matrices of `data`, stacked over batches."""
        return self.SimCLR_model.predict(data, **kwargs)

    def save(self, path):
        """Save the whole SimCLR model (backbone, head, layer) as `.keras`, atomically."""
        return self._save_as_given(self.SimCLR_model, path)

    def save_base_model(self, path):
        """Save the (adapted) backbone alone as `.keras`, atomically.

        The file carries `backbone_metadata` (image shape, pooling, and what
        the caller added, such as the preprocessing), which `load_backbone`
        reads back (`read_model_metadata`).
        """
        return self._save_as_given(self.base_model, path, metadata=self.backbone_metadata)

    def _save_as_given(self, model, path, metadata=None):
        """`save_model_atomically` with every layer in its own dtype policy, also in the middle of a mixed round."""
        with self._as_given():
            return save_model_atomically(model, path, metadata=metadata)


def _in_step_augmentation(augmentation, preprocess, input_shape):
    """`(augmentation, preprocess mode name)` checked: `SimCLRAugmentation` or None, and a mode name or None."""
    if augmentation is None:
        if preprocess is not None:
            raise ValueError("Expected preprocess=None without augmentation: the data preprocesses the views it makes. "
                             f"Received: preprocess={preprocess!r}")
        return None, None
    if isinstance(augmentation, dict):
        augmentation = SimCLRAugmentation.from_config(augmentation)
    if not isinstance(augmentation, SimCLRAugmentation):
        raise TypeError("Expected augmentation to be a SimCLRAugmentation, its config dict or None. "
                        f"Received: augmentation={augmentation!r}")
    if preprocess is None:
        return augmentation, None
    mode = preprocessing_name(get_preprocessing(preprocess))
    if mode not in PREPROCESSING:
        raise ValueError(f"Expected preprocess to be one of {list(PREPROCESSING)} (or its function) when the views "
                         f"are made in the step. Received: preprocess={preprocess!r}")
    preprocessing_as_affine(PREPROCESSING[mode], input_shape[-1])  # raises for a mode the channels do not fit
    return augmentation, mode


def check_options(config):
    """Return `config` if every key is a `SimCLR` option, else raise naming the unknown ones.

    Example:
    >>> check_options({"temperature": 0.2})
    {'temperature': 0.2}
    """
    if not isinstance(config, dict):
        raise TypeError(f"Expected the SimCLR options to be a dict. Received: {type(config).__name__}")
    unknown = sorted(set(config) - set(SimCLR.default_config()))
    if unknown:
        raise ValueError(f"unknown SimCLR option(s) {unknown}; the options are {sorted(SimCLR.default_config())}")
    return config


def _sequence(name, value):
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise TypeError(f"Expected {name} to be a sequence of integers. Received: {name}={value!r}")
    return list(value)


def _optimizer_config(optimizer):
    """The serialised form of an optimizer given as an instance, a name or a config."""
    try:
        return keras.optimizers.serialize(keras.optimizers.get(optimizer))
    except (ValueError, TypeError) as error:
        raise ValueError(
            "Expected optimizer to be a Keras optimizer, its name (e.g. 'adam', 'sgd') or its config. "
            f"Received: optimizer={optimizer!r} ({error})"
        ) from None


def _new_optimizer(config, lr):
    """A fresh optimizer of `config` at learning rate `lr` (each round starts with new moments)."""
    optimizer = keras.optimizers.deserialize(config)
    optimizer.learning_rate = lr
    return optimizer


def _image_input_shape(base_model, input_shape):
    """The (H, W, C) a backbone takes, from the model or from `input_shape`."""
    name = base_model.name
    try:
        model_shape = base_model.input_shape
    except (AttributeError, ValueError):
        model_shape = None  # an unbuilt subclassed model
    if isinstance(model_shape, list):
        if len(model_shape) != 1:
            raise ValueError(f"backbone {name!r} has {len(model_shape)} inputs; SimCLR wraps a backbone of one image input")
        model_shape = model_shape[0]
    model_shape = None if model_shape is None else tuple(model_shape[1:])
    if input_shape is not None:
        input_shape = tuple(int(size) for size in input_shape)
        if model_shape is not None and (
            len(model_shape) != len(input_shape)
            or any(m is not None and m != i for m, i in zip(model_shape, input_shape))
        ):
            raise ValueError(f"input_shape={input_shape} does not fit backbone {name!r}, which takes {model_shape}")
        model_shape = input_shape
    if model_shape is None or None in model_shape:
        raise ValueError(
            f"cannot tell the image size of backbone {name!r} (its input shape is {model_shape}); "
            "pass input_shape=(height, width, channels)"
        )
    if len(model_shape) != 3:
        raise ValueError(f"backbone {name!r} takes inputs of shape {model_shape}; SimCLR needs (height, width, channels) images")
    if model_shape[-1] not in (1, 3):
        raise ValueError(
            f"backbone {name!r} takes images with {model_shape[-1]} channels; SimCLR's image pipeline gives 1 or 3"
        )
    return model_shape


def _check_poolable(name, features, pooling):
    shape = tuple(features.shape) if hasattr(features, "shape") else None
    if shape is None or isinstance(features, (list, tuple, dict)):
        raise ValueError(f"backbone {name!r} must output one tensor to pool, got {type(features).__name__}")
    if pooling != "flatten" and len(shape) != 4:
        raise ValueError(
            f"backbone {name!r} outputs shape {shape}; pooling={pooling!r} needs a "
            "(batch, height, width, channels) feature map, use pooling='flatten'"
        )
    if len(shape) < 2 or None in shape[1:]:
        raise ValueError(
            f"backbone {name!r} outputs shape {shape}, which cannot be pooled into a vector of known size"
        )
