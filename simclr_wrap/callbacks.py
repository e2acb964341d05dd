"""Callbacks of a SimCLR run: atomic best checkpoint, round number, defaults."""

import logging
import math
import os

import keras

from data_generators.io import atomic_output

logger = logging.getLogger(__name__)


def save_model_atomically(model, path):
    """Save `model` to a `.keras` file through a temporary file and a rename.

    A kill while saving leaves the previous file intact instead of a
    truncated archive that would fail to load.

    Args:
        model: a Keras model.
        path: destination ending in ".keras".

    Returns:
        `path`.

    Example:
    >>> import tempfile
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> path = save_model_atomically(model, tempfile.mkdtemp() + "/m.keras")
    """
    path = os.fspath(path)
    if not path.endswith(".keras"):
        raise ValueError(f"model files are saved as .keras; got path={path!r}")
    with atomic_output(path) as tmp:
        model.save(tmp)
    return path


class AtomicModelCheckpoint(keras.callbacks.Callback):
    """Save the model, atomically, each time `monitor` reaches a new best.

    Unlike `keras.callbacks.ModelCheckpoint` the file is never half written,
    and the best value is kept across `fit` calls, so over several unfreezing
    rounds the file holds the best model of the whole schedule.

    Args:
        filepath: destination ending in ".keras".
        monitor: the logged quantity to watch, e.g. "val_nt_xent".
        mode: "min" or "max".

    Example:
    >>> checkpoint = AtomicModelCheckpoint("best.keras", monitor="val_nt_xent")
    """

    def __init__(self, filepath, monitor="val_nt_xent", mode="min"):
        super().__init__()
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got mode={mode!r}")
        self.filepath = os.fspath(filepath)
        self.monitor = monitor
        self.mode = mode
        self.best = math.inf if mode == "min" else -math.inf

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            logger.warning("AtomicModelCheckpoint: %r is not in the logs %s", self.monitor, sorted(logs or {}))
            return
        improved = value < self.best if self.mode == "min" else value > self.best
        if improved:
            self.best = float(value)
            save_model_atomically(self.model, self.filepath)


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
