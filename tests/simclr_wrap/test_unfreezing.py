"""Gradual unfreezing: which layers train, BatchNormalization, parameter counts."""

import keras
import pytest

from simclr_wrap.unfreezing import first_unfrozen_index, parameter_counts, set_unfrozen_layers


def trainable_names(model):
    return [layer.name for layer in model.layers if layer.trainable]


def test_last_n_layers_train_counting_layers_without_weights(tiny_backbone):
    # layers: image, conv1, pool1, conv2, bn2, relu2, pool2
    set_unfrozen_layers(tiny_backbone, 4)
    assert trainable_names(tiny_backbone) == ["conv2", "relu2", "pool2"]  # bn2 frozen by default
    assert parameter_counts(tiny_backbone) == (3 * 3 * 4 * 8 + 8, 4 * 3 * 3 * 3 + 4 + 4 * 8)


def test_layer_name_unfreezes_from_that_layer(tiny_backbone):
    set_unfrozen_layers(tiny_backbone, "conv1", unfreeze_batchnorm=True)
    assert trainable_names(tiny_backbone) == ["conv1", "pool1", "conv2", "bn2", "relu2", "pool2"]
    assert parameter_counts(tiny_backbone)[1] == 2 * 8  # only the moving statistics


def test_zero_freezes_everything_and_frozen_batchnorm_runs_in_inference_mode(tiny_backbone):
    set_unfrozen_layers(tiny_backbone, 0)
    assert trainable_names(tiny_backbone) == [] and parameter_counts(tiny_backbone)[0] == 0
    bn = tiny_backbone.get_layer("bn2")
    before = [w.numpy().copy() for w in bn.non_trainable_weights]
    tiny_backbone(keras.random.normal((4, 16, 16, 3), seed=0), training=True)
    after = [w.numpy() for w in bn.non_trainable_weights]
    assert all((b == a).all() for b, a in zip(before, after))


def test_unfrozen_batchnorm_updates_its_statistics(tiny_backbone):
    set_unfrozen_layers(tiny_backbone, 3, unfreeze_batchnorm=True)
    bn = tiny_backbone.get_layer("bn2")
    assert bn.trainable
    before = bn.moving_mean.numpy().copy()
    tiny_backbone(keras.random.normal((4, 16, 16, 3), seed=0), training=True)
    assert (bn.moving_mean.numpy() != before).any()


@pytest.mark.parametrize("value,error,match", [
    (8, ValueError, "num_of_unfrozen_layers=8 .* has 7 layers"),
    (-1, ValueError, "num_of_unfrozen_layers=-1"),
    ("block5", ValueError, "'block5' is not a layer of 'tiny_backbone'"),
    (1.5, TypeError, "num_of_unfrozen_layers"),
])
def test_rejects_impossible_rounds(tiny_backbone, value, error, match):
    with pytest.raises(error, match=match):
        first_unfrozen_index(tiny_backbone, value)
