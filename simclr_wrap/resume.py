"""Resuming an interrupted SimCLR schedule from its last finished epoch.

Keras' `BackupAndRestore` keeps the weights, the optimizer and the epoch, but
not what decides what happens next in a gradual-unfreezing schedule: the
round, the early-stopping and learning-rate-plateau counters and the best
value of the checkpoint. `ResumeState` keeps all of them. After every epoch it
writes, atomically and in this order, the model's weights with the optimizer
(`resume/epoch_{n}.weights.h5`), EarlyStopping's best weights
(`resume/epoch_{n}.best.npz`) and then `resume/state.json`, which names those
files and their SHA-256. A kill at any moment leaves the previous state.json
pointing at complete files; a file changed or cut short since is detected by
its hash and reported instead of loaded.
"""

import hashlib
import json
import logging
import math
import os

import keras
import numpy as np

from data_generators.files import atomic_output

logger = logging.getLogger(__name__)

STATE_FILE = "state.json"


class CorruptCheckpointError(ValueError):
    """A resume checkpoint file does not match what was written."""


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _number(value):
    """JSON cannot hold inf; None stands for it (an unset best)."""
    return None if value is None or not math.isfinite(float(value)) else float(value)


class ResumeState:
    """The saved state of a SimCLR schedule: read it back, and write it after every epoch.

    Args:
        folder: where the state lives (`<save_path>/resume`).
        schedule: the checked schedule; a saved state of another schedule
            is not resumed.
    """

    def __init__(self, folder, schedule):
        self.folder = os.fspath(folder)
        self.schedule = [list(map(_jsonable, entry)) for entry in schedule]

    def round_writer(self, round_number, epochs_before, history, early_stopping, plateau, checkpoint):
        """The callback that writes this round's state after each of its epochs.

        Args:
            round_number: the round, counted from 1.
            epochs_before: epochs of the schedule run before this round.
            history: the schedule's history before this round.
            early_stopping, plateau, checkpoint: the round's callbacks whose
                state is saved (`checkpoint` may be None).
        """
        return _RoundStateWriter(self, round_number, epochs_before, history, early_stopping, plateau, checkpoint)

    def load(self):
        """The saved state as a dict, or None when there is none for this schedule.

        Raises:
            CorruptCheckpointError: a file the state names is missing or
                differs from what was written (truncated, overwritten).
        """
        path = os.path.join(self.folder, STATE_FILE)
        if not os.path.exists(path):
            return None
        try:
            with open(path) as file:
                state = json.load(file)
        except (OSError, json.JSONDecodeError) as error:
            raise CorruptCheckpointError(f"resume state {path!r} cannot be read: {error}") from None
        if state.get("schedule") != self.schedule:
            logger.warning("resume state %r is of another schedule (%s); starting afresh", path, state.get("schedule"))
            return None
        for key in ("weights", "best_weights"):
            name = state.get(key)
            if name is None:
                continue
            file = os.path.join(self.folder, name)
            if not os.path.exists(file) or _sha256(file) != state["sha256"][key]:
                raise CorruptCheckpointError(
                    f"resume checkpoint {file!r} is missing, truncated or changed since it was written "
                    f"(its SHA-256 does not match {path!r}); delete {self.folder!r} to start afresh"
                )
        return state



class _RoundStateWriter(keras.callbacks.Callback):
    """Writes the schedule's state after every epoch of one round (see `ResumeState.round_writer`)."""

    def __init__(self, store, round_number, epochs_before, history, early_stopping, plateau, checkpoint):
        super().__init__()
        self.folder, self.schedule = store.folder, store.schedule
        self.round_number, self.epochs_before = round_number, epochs_before
        self._history = {key: list(values) for key, values in history.items()}
        self.early_stopping, self.plateau, self.checkpoint = early_stopping, plateau, checkpoint

    def on_epoch_end(self, epoch, logs=None):
        early_stopping, plateau, checkpoint = self.early_stopping, self.plateau, self.checkpoint
        stem = f"epoch_{self.epochs_before + epoch + 1}"
        weights = os.path.join(self.folder, stem + ".weights.h5")
        with atomic_output(weights) as tmp:
            self.model.save_weights(tmp)
        names = {"weights": os.path.basename(weights), "best_weights": None}
        if early_stopping.best_weights is not None:
            best = os.path.join(self.folder, stem + ".best.npz")
            with atomic_output(best) as tmp, open(tmp, "wb") as file:
                np.savez(file, *early_stopping.best_weights)
            names["best_weights"] = os.path.basename(best)
        for key, value in (logs or {}).items():
            self._history.setdefault(key, []).append(float(value))
        state = {
            "schedule": self.schedule,
            "round": self.round_number,
            "epochs_in_round": epoch + 1,
            "epochs_before_round": self.epochs_before,
            "history": self._history,
            "early_stopping": {"wait": early_stopping.wait, "best": _number(early_stopping.best),
                               "best_epoch": early_stopping.best_epoch},
            "plateau": {"wait": plateau.wait, "best": _number(plateau.best), "cooldown": plateau.cooldown_counter},
            "checkpoint_best": None if checkpoint is None else _number(checkpoint.best),
            "stopped": bool(self.model.stop_training),
            "sha256": {key: _sha256(os.path.join(self.folder, name)) for key, name in names.items() if name},
            **names,
        }
        with atomic_output(os.path.join(self.folder, STATE_FILE)) as tmp, open(tmp, "w") as file:
            json.dump(state, file)
        # Only now that the state names the new files are the old ones unneeded.
        keep = {name for name in names.values() if name}
        for name in os.listdir(self.folder):
            if name.startswith("epoch_") and name not in keep:
                os.remove(os.path.join(self.folder, name))


def load_best_weights(state, folder):
    """EarlyStopping's best weights saved with `state`, or None."""
    if not state.get("best_weights"):
        return None
    with np.load(os.path.join(folder, state["best_weights"])) as arrays:
        return [arrays[f"arr_{i}"] for i in range(len(arrays.files))]


def restore_callbacks(state, early_stopping, plateau, checkpoint, best_weights):
    """Make the round's callbacks continue from `state` (and EarlyStopping's `best_weights`) instead of afresh."""
    saved = state["early_stopping"]
    early_stopping.resume_from = dict(wait=saved["wait"], best=saved["best"], best_epoch=saved["best_epoch"],
                                      best_weights=best_weights)
    saved = state["plateau"]
    plateau.resume_from = dict(wait=saved["wait"], cooldown_counter=saved["cooldown"], best=saved["best"])
    if checkpoint is not None and state["checkpoint_best"] is not None:
        checkpoint.best = state["checkpoint_best"]


class _Resumable:
    """A callback whose counters, reset by `on_train_begin`, can continue from a saved state (`resume_from`)."""

    resume_from = None

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        for name, value in (self.resume_from or {}).items():
            if value is not None:  # None: as after the reset
                setattr(self, name, value)
        self.resume_from = None


class ResumableEarlyStopping(_Resumable, keras.callbacks.EarlyStopping):
    """`keras.callbacks.EarlyStopping` that can continue from a saved state."""


class ResumableReduceLROnPlateau(_Resumable, keras.callbacks.ReduceLROnPlateau):
    """`keras.callbacks.ReduceLROnPlateau` that can continue from a saved state."""


def _jsonable(value):
    return value if isinstance(value, (str, int, float)) else str(value)
