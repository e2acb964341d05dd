"""The SimCLR wrapper: building around any backbone, training rounds, saving."""

import json
import logging
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from simclr_wrap import NonFiniteLossError, SimCLR
from simclr_wrap.model import check_options
from tests.conftest import TINY_SIZE
from tests.simclr_wrap.test_losses import identity_target, vectorised_nt_xent

BATCH = 4
HEAD = (16, 8)


def view_batches(n_batches=2, batch_size=BATCH, size=TINY_SIZE, seed=0, noise=0.05, noise_seed=None):
    """A dataset of ((view_a, view_b), target): two noisy copies of random images."""
    images = np.random.default_rng(seed).uniform(0, 1, (n_batches * batch_size, size, size, 3)).astype("float32")
    rng = np.random.default_rng(seed if noise_seed is None else noise_seed)
    noisy = lambda: (images + rng.normal(0, noise, images.shape)).astype("float32")
    targets = np.tile(identity_target(batch_size), (n_batches, 1))
    return tf.data.Dataset.from_tensor_slices(((noisy(), noisy()), targets)).batch(batch_size)


class CallRecorder(keras.Model):
    """A subclassed backbone that records the batch size of every call."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv2D(4, 3, strides=2)
        self.batch_sizes = []

    def call(self, images):
        self.batch_sizes.append(images.shape[0])
        return self.conv(images)


def test_backbone_runs_once_on_both_views():
    backbone = CallRecorder()
    simclr = SimCLR(backbone, BATCH, feat_dims_ph=HEAD, input_shape=(TINY_SIZE, TINY_SIZE, 3), save_path=None)
    backbone.batch_sizes.clear()
    views = np.zeros((BATCH, TINY_SIZE, TINY_SIZE, 3), "float32")
    output = simclr.SimCLR_model([views, views])
    assert backbone.batch_sizes == [2 * BATCH]
    assert tuple(output.shape) == (BATCH, 4 * BATCH)
    assert [t.name for t in simclr.SimCLR_model.inputs] == ["view_a", "view_b"]


def test_outputs_equal_softmax_cosine_sim_of_the_projections(tiny_backbone):
    simclr = SimCLR(tiny_backbone, BATCH, feat_dims_ph=HEAD, temperature=0.5, save_path=None, seed=0)
    batches = view_batches(1)
    (view_a, view_b), _ = next(iter(batches))
    projector = keras.Model(simclr.SimCLR_model.inputs, simclr.SimCLR_model.get_layer("projection_2").output)
    projections = projector([view_a, view_b]).numpy()
    loss = simclr.SimCLR_model.evaluate(batches, verbose=0, return_dict=True)
    assert loss["nt_xent"] == pytest.approx(vectorised_nt_xent(projections[:BATCH], projections[BATCH:], 0.5), abs=1e-5)


def test_reference_style_positional_arguments_fail_loudly(tiny_backbone):
    with pytest.raises(TypeError):
        SimCLR(tiny_backbone, BATCH, HEAD)


def test_wraps_sequential_and_real_keras_applications_backbones():
    sequential = keras.Sequential([keras.Input((TINY_SIZE, TINY_SIZE, 3)), keras.layers.Conv2D(4, 3)])
    assert SimCLR(sequential, BATCH, feat_dims_ph=HEAD, save_path=None).input_shape == (TINY_SIZE, TINY_SIZE, 3)
    mobilenet = keras.applications.MobileNetV2(weights=None, include_top=False, input_shape=(32, 32, 3), alpha=0.35)
    simclr = SimCLR(mobilenet, BATCH, feat_dims_ph=HEAD, pooling="avg", num_of_unfrozen_layers="block_16_project", save_path=None)
    assert simclr.SimCLR_model.output_shape == (None, None)
    names = [layer.name for layer in mobilenet.layers]
    expected = [layer.name for layer in mobilenet.layers[names.index("block_16_project"):]
                if not isinstance(layer, keras.layers.BatchNormalization)]  # frozen BN stays in inference mode
    assert [layer.name for layer in mobilenet.layers if layer.trainable] == expected
    assert expected[0] == "block_16_project" and "Conv_1" in expected and "out_relu" in expected


def test_input_shape_is_needed_only_when_the_backbone_has_none():
    fully_convolutional = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(4, 3)])
    with pytest.raises(ValueError, match="pass input_shape"):
        SimCLR(fully_convolutional, BATCH, feat_dims_ph=HEAD, save_path=None)
    assert SimCLR(fully_convolutional, BATCH, feat_dims_ph=HEAD, input_shape=(8, 8, 3), save_path=None).input_shape == (8, 8, 3)
    with pytest.raises(ValueError, match="pass input_shape"):
        SimCLR(CallRecorder(), BATCH, feat_dims_ph=HEAD, save_path=None)
    with pytest.raises(ValueError, match=r"input_shape=\(8, 8, 1\) does not fit"):
        SimCLR(fully_convolutional, BATCH, feat_dims_ph=HEAD, input_shape=(8, 8, 1), save_path=None)


@pytest.mark.parametrize("kwargs,match", [
    ({"batch_size": 1}, "batch_size"),
    ({"batch_size": 0}, "batch_size"),
    ({"temperature": 0.0}, "temperature"),
    ({"pooling": "mean"}, "pooling"),
    ({"lr": -1.0}, "lr"),
    ({"num_of_unfrozen_layers": 99}, "Received: num_of_unfrozen_layers=99"),
])
def test_rejects_bad_arguments(tiny_backbone, kwargs, match):
    kwargs = {"batch_size": BATCH, "feat_dims_ph": HEAD, "save_path": None, **kwargs}
    with pytest.raises(ValueError, match=match):
        SimCLR(tiny_backbone, **kwargs)


@pytest.mark.parametrize("kwargs,match", [
    ({"batch_size": 4.0}, r"Expected batch_size to be an integer >= 2 .*Received: batch_size=4.0"),
    ({"temperature": "0.1"}, r"Expected temperature to be a number > 0. Received: temperature='0.1'"),
    ({"unfreeze_batchnorm": 1}, r"Expected unfreeze_batchnorm to be True or False. Received: unfreeze_batchnorm=1"),
    ({"early_stopping_patience": 2.5}, "early_stopping_patience"),
])
def test_a_value_of_the_wrong_type_is_a_type_error(tiny_backbone, kwargs, match):
    with pytest.raises(TypeError, match=match):
        SimCLR(tiny_backbone, **{"feat_dims_ph": HEAD, "save_path": None, **kwargs})


def test_get_config_rebuilds_the_same_wrapper(tiny_backbone, tmp_path):
    simclr = SimCLR(tiny_backbone, BATCH, feat_dims_ph=HEAD, temperature=0.2, ph_regul=1e-5, optimizer="sgd",
                    unfreeze_batchnorm=True, early_stopping_patience=3, seed=7, save_path=tmp_path, pooling="avg",
                    jit_compile=True)
    config = simclr.get_config()
    assert json.loads(json.dumps(config)) == config  # JSON as it is, for results and resume checks
    assert config["temperature"] == 0.2 and config["feat_dims_ph"] == list(HEAD) and config["seed"] == 7
    assert config["jit_compile"] is True
    with pytest.raises(ValueError, match="Received: jit_compile=1"):
        SimCLR(tiny_backbone, BATCH, feat_dims_ph=HEAD, save_path=None, jit_compile=1)
    again = SimCLR.from_config(config, tiny_backbone)
    assert again.get_config() == config
    assert set(config) == set(SimCLR.default_config()) and SimCLR.default_config()["queue_size"] == 10000


def test_any_keras_optimizer_trains_each_round_afresh_at_its_rate(tiny_backbone):
    simclr = SimCLR(tiny_backbone, BATCH, feat_dims_ph=HEAD, optimizer="sgd", lr=0.05, save_path=None)
    first = simclr.SimCLR_model.optimizer
    assert isinstance(first, keras.optimizers.SGD) and float(first.learning_rate) == pytest.approx(0.05)
    simclr.unfreeze_and_train(view_batches(), None, num_of_unfrozen_layers=2, lr=0.01, epochs=1, verbose=0)
    second = simclr.SimCLR_model.optimizer
    assert isinstance(second, keras.optimizers.SGD) and second is not first
    assert float(second.learning_rate) == pytest.approx(0.01)
    momentum = SimCLR(tiny_backbone, BATCH, feat_dims_ph=HEAD, save_path=None,
                      optimizer=keras.optimizers.SGD(momentum=0.9))
    assert momentum.SimCLR_model.optimizer.momentum == 0.9
    with pytest.raises(ValueError, match="Expected optimizer to be a Keras optimizer"):
        SimCLR(tiny_backbone, BATCH, feat_dims_ph=HEAD, optimizer="adamm", save_path=None)


def test_unknown_options_are_named():
    with pytest.raises(ValueError, match=r"unknown SimCLR option\(s\) \['temprature'\]"):
        check_options({"temprature": 0.1})


def test_rejects_backbones_that_cannot_be_wrapped():
    four_channels = keras.Sequential([keras.Input((8, 8, 4)), keras.layers.Conv2D(2, 3)], name="rgba_net")
    with pytest.raises(ValueError, match="'rgba_net' takes images with 4 channels"):
        SimCLR(four_channels, BATCH, feat_dims_ph=HEAD, save_path=None)
    vector_out = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(5)], name="vec")
    with pytest.raises(ValueError, match="'vec' outputs shape .*pooling='avg'"):
        SimCLR(vector_out, BATCH, feat_dims_ph=HEAD, pooling="avg", save_path=None)
    assert SimCLR(vector_out, BATCH, feat_dims_ph=HEAD, save_path=None)  # flatten of a vector is the vector
    inputs = keras.Input((8, 8, 3))
    two_outputs = keras.Model(inputs, [keras.layers.Conv2D(2, 3)(inputs), keras.layers.Conv2D(2, 1)(inputs)], name="two")
    with pytest.raises(ValueError, match="'two'"):
        SimCLR(two_outputs, BATCH, feat_dims_ph=HEAD, save_path=None)


def test_schedule_is_checked_before_any_training(tiny_backbone):
    simclr = SimCLR(tiny_backbone, BATCH, feat_dims_ph=HEAD, save_path=None)
    with pytest.raises(ValueError, match="schedule round 2: .*Received: num_of_unfrozen_layers=50"):
        simclr.train_schedule(view_batches(), None, [(1, 1e-3, 1), (50, 1e-4, 1)])
    with pytest.raises(ValueError, match="schedule round 1: .*epochs.*-2"):
        simclr.train_schedule(view_batches(), None, [(1, 1e-3, -2)])
    with pytest.raises(ValueError, match="schedule round 1: Expected lr to be a number > 0. Received: lr=0"):
        simclr.train_schedule(view_batches(), None, [(1, 0, 1)])
    assert simclr.round_ == 0


def test_warns_when_a_round_unfreezes_nothing_new(tiny_backbone, caplog):
    simclr = SimCLR(tiny_backbone, BATCH, feat_dims_ph=HEAD, num_of_unfrozen_layers=4, save_path=None)
    with caplog.at_level(logging.WARNING, logger="simclr_wrap"):
        simclr._unfreeze(3)  # relu2 and pool2 have no weights, conv2 is outside, bn2 stays frozen
    assert "makes no new layer of 'tiny_backbone' trainable" in caplog.text


def test_rejects_data_with_another_batch_size(tiny_backbone):
    class Batches:
        batch_size = 8

    simclr = SimCLR(tiny_backbone, BATCH, feat_dims_ph=HEAD, save_path=None)
    with pytest.raises(ValueError, match="data_train gives batches of 8 images but SimCLR has batch_size=4"):
        simclr.train(Batches(), None, epochs=1)


def test_schedule_trains_reports_and_saves_every_round(tiny_backbone, tmp_path):
    simclr = SimCLR(tiny_backbone, BATCH, feat_dims_ph=HEAD, ph_regul=1e-3, lr=1e-3, save_path=tmp_path, seed=0)
    histories = simclr.train_schedule(view_batches(), view_batches(seed=1), [(3, 1e-3, 2), ("conv1", 1e-3, 1)], verbose=0)
    assert len(histories) == 2 and simclr.round_ == 2
    logs = simclr.history_
    for key in ("nt_xent", "val_nt_xent", "contrastive_accuracy", "val_contrastive_accuracy"):
        assert len(logs[key]) == 3
    assert logs["round"] == [1, 1, 2]
    # the head's L1 penalty is in `loss` but not in `nt_xent`
    penalty = 1e-3 * sum(float(np.abs(simclr.SimCLR_model.get_layer(f"projection_{i}").kernel).sum()) for i in (1, 2))
    assert logs["loss"][-1] - logs["nt_xent"][-1] == pytest.approx(penalty, rel=0.05)
    assert sorted(os.listdir(tmp_path)) == ["base_model_round_1.keras", "base_model_round_2.keras", "history.csv", "simclr_best.keras"]
    with open(tmp_path / "history.csv") as csv:
        assert len(csv.read().strip().splitlines()) == 1 + 3

    images = np.random.default_rng(5).uniform(size=(BATCH, TINY_SIZE, TINY_SIZE, 3)).astype("float32")
    backbone = keras.models.load_model(tmp_path / "base_model_round_2.keras")
    np.testing.assert_allclose(backbone.predict(images, verbose=0), tiny_backbone.predict(images, verbose=0), atol=1e-6)
    simclr.save(tmp_path / "simclr.keras")
    reloaded = keras.models.load_model(tmp_path / "simclr.keras")
    np.testing.assert_allclose(reloaded.predict([images, images], verbose=0), simclr.predict([images, images], verbose=0), atol=1e-6)
    assert simclr.predict(view_batches(), verbose=0).shape == (2 * BATCH, 4 * BATCH)


def test_training_lowers_nt_xent(tiny_backbone):
    simclr = SimCLR(tiny_backbone, BATCH, feat_dims_ph=HEAD, save_path=None, seed=0)
    # the same images with other noise: what the model learns of them carries over
    train, val = view_batches(4, noise=0.1), view_batches(4, noise=0.1, noise_seed=1)
    before = simclr.SimCLR_model.evaluate(val, verbose=0, return_dict=True)["nt_xent"]
    simclr.unfreeze_and_train(train, val, num_of_unfrozen_layers=7, lr=3e-3, epochs=6, verbose=0)
    assert simclr.history_["val_nt_xent"][-1] < before


def test_a_non_finite_loss_stops_the_round_and_keeps_the_last_good_weights(tiny_backbone, tmp_path):
    simclr = SimCLR(tiny_backbone, BATCH, feat_dims_ph=HEAD, lr=1e-2, save_path=tmp_path, seed=0)
    simclr.train(view_batches(), epochs=1, verbose=0)
    good = [w.copy() for w in simclr.SimCLR_model.get_weights()]
    views, targets = next(iter(view_batches(n_batches=3).unbatch().batch(3 * BATCH)))
    targets = targets.numpy()
    targets[BATCH + 1] = np.nan  # in the second batch: a NaN the backbone's ReLU and max pooling cannot hide
    broken = tf.data.Dataset.from_tensor_slices((views, targets)).batch(BATCH)
    with pytest.raises(NonFiniteLossError, match=r"round 2, epoch 1, batch 2: the loss became nan.*lr=0.01, temperature=0.1"):
        simclr.train(broken, epochs=3, verbose=0)
    for before, after in zip(good, simclr.SimCLR_model.get_weights()):
        np.testing.assert_array_equal(before, after)
    assert not os.path.exists(tmp_path / "base_model_round_2.keras")  # nothing saved for the broken round
