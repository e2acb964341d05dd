"""The projection monitors: correlation accuracy, projection std, collapse warning, in the history."""

import logging

import keras
import numpy as np
import pytest

from simclr_wrap import SimCLR
from simclr_wrap.monitors import ProjectionMonitor, correlation_accuracy, projection_std
from tests.conftest import TINY_SIZE
from tests.simclr_wrap.test_model import BATCH, HEAD


def test_correlation_accuracy_counts_dimensions_matched_with_themselves():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(256, 6))
    assert correlation_accuracy(a, a + rng.normal(0, 0.1, a.shape)) == 1.0
    shifted = np.roll(a, 1, axis=1)  # each dimension of b is another dimension of a
    assert correlation_accuracy(a, shifted) == 0.0
    half = a.copy()
    half[:, :3] = rng.normal(size=(256, 3))  # three dimensions lose their partner
    # a loop over dimensions, independent of the vectorised form
    standard = lambda x: (x - x.mean(0)) / x.std(0)
    expected = np.mean([np.argmax([np.mean(standard(a)[:, i] * standard(half)[:, j]) for j in range(6)]) == i
                        for i in range(6)])
    assert correlation_accuracy(a, half) == expected


def test_projection_std_is_one_when_spread_and_zero_when_collapsed():
    spread = np.random.default_rng(1).normal(size=(4096, 64))
    assert abs(projection_std(spread) - 1.0) < 0.02
    assert projection_std(np.tile([[3.0, -1.0, 2.0]], (10, 1))) < 1e-12


def test_collapse_is_warned_with_epoch_and_value(caplog):
    inputs = [keras.Input((4,)), keras.Input((4,))]
    collapsed = keras.Model(inputs, keras.layers.Concatenate(axis=0)(inputs) * 0 + 1)
    views = (np.ones((8, 4), "float32"), np.ones((8, 4), "float32"))
    logs = {}
    with caplog.at_level(logging.WARNING):
        ProjectionMonitor(collapsed, views).on_epoch_end(2, logs)
    assert logs["val_projection_std"] == 0.0
    assert "epoch 3: the projections are collapsing (val_projection_std 0.000" in caplog.text


class IndexedViews(keras.utils.PyDataset):
    """Two batches of ((view_a, view_b), target), indexable like DataGeneratorSimCLR."""

    def __init__(self, seed):
        super().__init__()
        from tests.simclr_wrap.test_model import view_batches

        self.batches = list(view_batches(seed=seed).as_numpy_iterator())

    def __len__(self):
        return len(self.batches)

    def __getitem__(self, index):
        return self.batches[index]


def test_monitors_reach_the_history_and_the_csv(tiny_backbone, tmp_path):
    simclr = SimCLR(tiny_backbone, BATCH, feat_dims_ph=HEAD, save_path=tmp_path, seed=0)
    simclr.train(IndexedViews(0), IndexedViews(1), epochs=2, verbose=0)
    for key in ("val_correlation_accuracy", "val_projection_std"):
        assert len(simclr.history_[key]) == 2 and all(0 <= v <= 2 for v in simclr.history_[key])
    header = (tmp_path / "history.csv").read_text().splitlines()[0]
    assert "val_correlation_accuracy" in header and "val_projection_std" in header
    (view_a, view_b), _ = IndexedViews(1)[0]
    projections = simclr._projector.predict([view_a, view_b], verbose=0)
    assert simclr.history_["val_projection_std"][-1] == pytest.approx(projection_std(projections), rel=1e-6)
    assert projections.shape == (2 * BATCH, HEAD[-1]) and TINY_SIZE == view_a.shape[1]
