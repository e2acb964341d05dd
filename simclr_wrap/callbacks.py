"""Callbacks of a SimCLR run: atomic best checkpoint, round number, defaults."""

import json
import logging
import math
import os
import zipfile

import keras

from data_generators.checks import check_choice
from data_generators.files import atomic_output

logger = logging.getLogger(__name__)


METADATA_ENTRY = "simclr_wrap.json"


def save_model_atomically(model, path, metadata=None):
    """Save `model` to a `.keras` file through a temporary file and a rename.

    A kill while saving leaves the previous file intact instead of a
    truncated archive that would fail to load.

    Args:
        model: a Keras model.
        path: destination ending in ".keras".
        metadata: an optional JSON dict stored inside the archive as
            `simclr_wrap.json` (Keras ignores it; `read_model_metadata`
            reads it back), e.g. how a backbone was fed while adapted.

    Returns:
        `path`.

    Example:
    >>> import tempfile
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> path = save_model_atomically(model, tempfile.mkdtemp() + "/m.keras")
    """
    path = os.fspath(path)
    if not path.endswith(".keras"):
        raise ValueError(f"Expected path to end in .keras (the format models are saved in). Received: path={path!r}")
    with atomic_output(path) as tmp:
        model.save(tmp)
        if metadata is not None:
            with zipfile.ZipFile(tmp, "a") as archive:
                archive.writestr(METADATA_ENTRY, json.dumps(metadata))
    return path


def read_model_metadata(path):
    """The metadata `save_model_atomically` stored in a `.keras` file, or None.

    Example:
    >>> import tempfile
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> path = save_model_atomically(model, tempfile.mkdtemp() + "/m.keras", metadata={"pooling": "avg"})
    >>> read_model_metadata(path), keras.models.load_model(path).output_shape
    ({'pooling': 'avg'}, (None, 1))
    """
    try:
        with zipfile.ZipFile(os.fspath(path)) as archive:
            if METADATA_ENTRY not in archive.namelist():
                return None
            return json.loads(archive.read(METADATA_ENTRY))
    except (OSError, zipfile.BadZipFile, ValueError):
        return None


class AtomicModelCheckpoint(keras.callbacks.Callback):
    """Save the model, atomically, each time `monitor` reaches a new best.

    Unlike `keras.callbacks.ModelCheckpoint` the file is never half written,
    and the best value is kept across `fit` calls, so over several unfreezing
    rounds the file holds the best model of the whole schedule.

    Args:
        filepath: destination ending in ".keras".
        monitor: the logged quantity to watch, e.g. "val_nt_xent".
        mode: "min" or "max".
        save: the function `save(model, path)` that writes the file
            (`SimCLR`'s saves the layers in their own dtype policies).

    Example:
    >>> checkpoint = AtomicModelCheckpoint("best.keras", monitor="val_nt_xent")
    """

    def __init__(self, filepath, monitor="val_nt_xent", mode="min", save=save_model_atomically):
        super().__init__()
        self.save = save
        self.mode = check_choice("mode", mode, ("min", "max"))
        self.filepath = os.fspath(filepath)
        self.monitor = monitor
        self.best = math.inf if mode == "min" else -math.inf

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            logger.warning("AtomicModelCheckpoint: %r is not in the logs %s", self.monitor, sorted(logs or {}))
            return
        improved = value < self.best if self.mode == "min" else value > self.best
        if improved:
            self.best = float(value)
            self.save(self.model, self.filepath)


class RoundNumber(keras.callbacks.Callback):
    """Add the unfreezing round to the epoch logs (history and CSV).

    Must come before `CSVLogger` in the callback list, which reads the same
    logs dictionary afterwards.

    Args:
        round_index: the round, counted from 1.
    """

    def __init__(self, round_index):
        super().__init__()
        self.round_index = int(round_index)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["round"] = self.round_index


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss; the model holds its last good weights."""


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stop at the first NaN or infinite loss and put back the weights of the last good epoch.

    Unlike `keras.callbacks.TerminateOnNaN`, the model does not keep the
    broken weights: it returns to those it had at the start of the epoch
    in which the loss broke (the last finished epoch), and `error` says
    where it happened and what usually causes it. The caller raises it
    after `fit` returns, so that no later round starts from a diverged model.

    Args:
        round_index: the unfreezing round, counted from 1, for the message.
        hints: likely causes to name, e.g. "lr=0.1, temperature=0.05".

    Attributes:
        error: a `NonFiniteLossError`, or None while the loss stays finite.

    Example:
    >>> guard = StopOnNonFiniteLoss(round_index=2, hints="lr=0.001")
    >>> guard.error is None
    True
    """

    def __init__(self, round_index, hints=""):
        super().__init__()
        self.round_index, self.hints = int(round_index), hints
        self.error, self._epoch, self._good_weights = None, 0, None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._good_weights = self.model.get_weights()

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None or math.isfinite(float(loss)) or self.error is not None:
            return
        self.model.set_weights(self._good_weights)
        self.model.stop_training = True
        self.error = NonFiniteLossError(
            f"round {self.round_index}, epoch {self._epoch + 1}, batch {batch + 1}: the loss became {float(loss)}. "
            f"Training stopped and the model is back at its weights from the start of epoch {self._epoch + 1}. "
            f"Likely causes: a learning rate too high or a temperature too low ({self.hints}), or input "
            "images with NaN or infinite values."
        )


class ScheduleEpoch(keras.callbacks.Callback):
    """Number the training data's epochs (which seed its views) by the schedule's epoch count.

    A seeded generator such as `DataGeneratorSimCLR` draws its views from its
    own epoch counter, which Keras advances each time it ends an epoch of the
    data, once more per `fit` than there are epochs (after peeking at the
    data). Setting the counter at the start of every epoch to the number of
    epochs the schedule has run makes the views depend only on that, so a
    resumed schedule sees the views the uninterrupted one would have.

    Args:
        data: the training data; its `epoch` attribute is set.
        epochs_before: epochs the schedule ran before this `fit`.
    """

    def __init__(self, data, epochs_before):
        super().__init__()
        self.data, self.epochs_before = data, int(epochs_before)

    def on_epoch_begin(self, epoch, logs=None):
        self.data.epoch = self.epochs_before + epoch
