"""Resuming an interrupted schedule: no epoch repeated or lost, the same result, corrupt files detected."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from data_generators import DataGeneratorSimCLR, frame_from_folder
from simclr_wrap import SimCLR
from simclr_wrap.resume import CorruptCheckpointError
from tests.conftest import FLOAT32_IN_SUBPROCESS, TINY_SIZE, make_tiny_backbone

SCHEDULE = [(3, 1e-3, 2), ("conv1", 1e-3, 2)]


class Interrupted(Exception):
    pass


class InterruptAt(keras.callbacks.Callback):
    """Raise in the middle of the `epoch`-th epoch of the whole run (counted from 1), once."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch, self.seen = epoch, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.seen += 1

    def on_train_batch_end(self, batch, logs=None):
        if self.seen == self.epoch and batch == 1:
            raise Interrupted(f"killed in epoch {self.epoch}")


def run(folder, save_path, interrupt_at=None):
    keras.utils.set_random_seed(0)
    frame = frame_from_folder(folder)
    options = dict(batch_size=4, width=TINY_SIZE, height=TINY_SIZE, seed=0)
    train, val = DataGeneratorSimCLR(frame, subset="train", **options), DataGeneratorSimCLR(frame, subset="val", **options)
    simclr = SimCLR(make_tiny_backbone(), 4, feat_dims_ph=(16, 8), save_path=save_path, seed=0,
                    early_stopping_patience=10)
    callbacks = [InterruptAt(interrupt_at)] if interrupt_at else []
    simclr.train_schedule(train, val, SCHEDULE, callbacks=callbacks, verbose=0, resume=True)
    return simclr


@pytest.mark.parametrize("interrupt_at", [2, 3])  # the end of round 1; the start of round 2
def test_an_interrupted_schedule_goes_on_from_its_last_finished_epoch(tiny_image_folder, tmp_path, interrupt_at):
    whole = run(tiny_image_folder, tmp_path / "whole")
    with pytest.raises(Interrupted):
        run(tiny_image_folder, tmp_path / "resumed", interrupt_at=interrupt_at)
    state = json.loads((tmp_path / "resumed" / "resume" / "state.json").read_text())
    assert state["epochs_before_round"] + state["epochs_in_round"] == interrupt_at - 1
    resumed = run(tiny_image_folder, tmp_path / "resumed")
    assert resumed.round_ == whole.round_ == 2
    assert resumed.history_["round"] == whole.history_["round"] == [1, 1, 2, 2]  # none repeated or lost
    np.testing.assert_allclose(resumed.history_["val_nt_xent"], whole.history_["val_nt_xent"], rtol=1e-4)
    for a, b in zip(resumed.SimCLR_model.get_weights(), whole.SimCLR_model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert sorted(os.listdir(tmp_path / "resumed")) == sorted(os.listdir(tmp_path / "whole"))


def test_a_truncated_checkpoint_is_reported_not_loaded(tiny_image_folder, tmp_path):
    with pytest.raises(Interrupted):
        run(tiny_image_folder, tmp_path, interrupt_at=2)
    folder = tmp_path / "resume"
    weights = folder / json.loads((folder / "state.json").read_text())["weights"]
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptCheckpointError, match=f"{weights.name}.*missing, truncated or changed"):
        run(tiny_image_folder, tmp_path)


def test_resumed_weights_equal_an_uninterrupted_run_exactly_with_op_determinism(tiny_image_folder, tmp_path):
    # In a subprocess: op determinism, once on, stays on for the whole process.
    script = textwrap.dedent(f"""
        import sys, numpy as np, tensorflow as tf
        sys.path.insert(0, {os.getcwd()!r})
        {FLOAT32_IN_SUBPROCESS}
        tf.config.experimental.enable_op_determinism()
        from tests.simclr_wrap.test_resume import Interrupted, run
        whole = run({tiny_image_folder!r}, {str(tmp_path / "whole")!r})
        try:
            run({tiny_image_folder!r}, {str(tmp_path / "resumed")!r}, interrupt_at=3)
        except Interrupted:
            pass
        resumed = run({tiny_image_folder!r}, {str(tmp_path / "resumed")!r})
        same = all(np.array_equal(a, b) for a, b in zip(whole.SimCLR_model.get_weights(),
                                                      resumed.SimCLR_model.get_weights()))
        print("EQUAL" if same else "DIFFERENT")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert result.stdout.strip().splitlines()[-1] == "EQUAL", result.stderr[-3000:]
