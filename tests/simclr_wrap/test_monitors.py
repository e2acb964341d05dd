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


@pytest.mark.parametrize("threshold, error", [(-0.1, ValueError), ("0.1", TypeError), (None, TypeError)])
def test_collapse_threshold_is_checked(threshold, error):
    with pytest.raises(error, match="Expected collapse_threshold to be a number >= 0. Received: collapse_threshold="):
        ProjectionMonitor(None, None, collapse_threshold=threshold)


def squashed(backbone):
    """`backbone` with its BatchNormalization's moving variance huge: frozen, it outputs about 1e-12."""
    backbone.get_layer("bn2").moving_variance.assign(np.full(8, 1e24, "float32"))
    return backbone


def test_a_collapse_from_a_backbone_whose_features_barely_vary_points_to_unfreeze_batchnorm(tiny_backbone, caplog):
    # Not passed the backbone: the monitor finds it in the SimCLR projector.
    simclr = SimCLR(squashed(tiny_backbone), BATCH, feat_dims_ph=HEAD, num_of_unfrozen_layers=7, save_path=None,
                    seed=0)
    assert not tiny_backbone.get_layer("bn2").trainable  # frozen in inference mode, the default
    with caplog.at_level(logging.WARNING, logger="simclr_wrap.monitors"):
        simclr.train(IndexedViews(0), IndexedViews(1), epochs=1, verbose=0)
    assert simclr.history_["val_projection_std"][-1] < 0.1
    assert "epoch 1: the projections are collapsing (val_projection_std" in caplog.text
    assert "its features barely vary from image to image" in caplog.text
    assert "1 of its BatchNormalization layers are frozen in inference mode" in caplog.text
    assert "unfreeze_batchnorm=True (--unfreeze-batchnorm on the command line)" in caplog.text
    assert "higher temperature" not in caplog.text


def collapsed_projector():
    """Every image projected to the same vector; no backbone nested in it."""
    inputs = [keras.Input((TINY_SIZE, TINY_SIZE, 3)), keras.Input((TINY_SIZE, TINY_SIZE, 3))]
    return keras.Model(inputs, keras.layers.Concatenate(axis=0)([keras.layers.Flatten()(x) for x in inputs]) * 0 + 1)


@pytest.mark.parametrize("squash, cause", [
    (False, "The backbone's features do vary (std "),
    (True, "The likely cause is the backbone: its features barely vary"),
])
def test_the_backbone_given_tells_whether_its_features_vary(tiny_backbone, caplog, squash, cause):
    views = next(iter(IndexedViews(0)))[0]
    backbone = squashed(tiny_backbone) if squash else tiny_backbone
    backbone.get_layer("bn2").trainable = False
    with caplog.at_level(logging.WARNING, logger="simclr_wrap.monitors"):
        ProjectionMonitor(collapsed_projector(), views, backbone=backbone).on_epoch_end(0, {})
    assert cause in caplog.text
    assert ("unfreeze_batchnorm=True" in caplog.text) == squash
    assert ("Try a higher temperature, a lower learning rate or stronger augmentations." in caplog.text) != squash


def test_features_that_do_not_vary_without_frozen_batchnorm_point_to_the_weights(caplog):
    views = next(iter(IndexedViews(0)))[0]
    constant = keras.Sequential([keras.Input((TINY_SIZE, TINY_SIZE, 3)), keras.layers.Conv2D(
        4, 3, kernel_initializer="zeros", bias_initializer="ones")])
    with caplog.at_level(logging.WARNING, logger="simclr_wrap.monitors"):
        ProjectionMonitor(collapsed_projector(), views, backbone=constant).on_epoch_end(0, {})
    assert "its features barely vary" in caplog.text and "Check its weights" in caplog.text
    assert "unfreeze_batchnorm" not in caplog.text


def test_the_backbone_argument_is_checked():
    with pytest.raises(TypeError, match="Expected backbone to be a Keras model or None. Received: backbone=3"):
        ProjectionMonitor(None, None, backbone=3)
