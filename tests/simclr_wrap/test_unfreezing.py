"""Gradual unfreezing: which layers train, BatchNormalization, parameter counts."""

import keras
import numpy as np
import pytest

from simclr_wrap import SimCLR
from simclr_wrap.unfreezing import check_schedule, first_unfrozen_index, parameter_counts, set_unfrozen_layers
from tests.simclr_wrap.test_model import BATCH, HEAD, view_batches


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


COUNT_EXPECTED = (r"Expected num_of_unfrozen_layers to be an integer >= 0 and <= 7 "
                  r"\('tiny_backbone' has 7 layers; a layer name is also accepted\)\. ")


@pytest.mark.parametrize("value,error,match", [
    (8, ValueError, COUNT_EXPECTED + "Received: num_of_unfrozen_layers=8"),
    (-1, ValueError, COUNT_EXPECTED + "Received: num_of_unfrozen_layers=-1"),
    ("block5", ValueError, r"Expected num_of_unfrozen_layers to be a number of layers or the name of a layer of "
                           r"'tiny_backbone', whose layers are \[.*\]\. Received: num_of_unfrozen_layers='block5'"),
    (1.5, TypeError, COUNT_EXPECTED + "Received: num_of_unfrozen_layers=1.5"),
    (True, TypeError, COUNT_EXPECTED + "Received: num_of_unfrozen_layers=True"),
])
def test_rejects_impossible_rounds(tiny_backbone, value, error, match):
    with pytest.raises(error, match=match):
        first_unfrozen_index(tiny_backbone, value)


@pytest.mark.parametrize("schedule,error,match", [
    ([(0, 1e-3, 1), (8, 1e-3, 1)], ValueError, "schedule round 2: " + COUNT_EXPECTED),
    ([(0, 1e-3, 1), (1, 0, 1)], ValueError, "schedule round 2: Expected lr to be a number > 0. Received: lr=0"),
    ([(0, "1e-3", 1)], TypeError, "schedule round 1: Expected lr to be a number > 0. Received: lr='1e-3'"),
    ([(0, 1e-3, -1)], ValueError, "schedule round 1: Expected epochs to be an integer >= 0. Received: epochs=-1"),
    ([(0, 1e-3, 1.0)], TypeError, "schedule round 1: Expected epochs to be an integer >= 0. Received: epochs=1.0"),
    ([(0, 1e-3, 1), (1, 1e-3)], ValueError,
     r"schedule round 2: Expected a round \(num_of_unfrozen_layers, lr, epochs\)\. Received: \(1, 0\.001\)"),
    ([5], TypeError, r"schedule round 1: Expected a round \(num_of_unfrozen_layers, lr, epochs\)\. Received: 5"),
    ([], ValueError, r"Expected schedule to hold at least one round .* Received: schedule=\[\]"),
])
def test_check_schedule_names_the_round_and_keeps_the_error_type(tiny_backbone, schedule, error, match):
    with pytest.raises(error, match=match):
        check_schedule(tiny_backbone, schedule)


def test_check_schedule_returns_plain_rounds(tiny_backbone):
    rounds = check_schedule(tiny_backbone, [(2, 1, np.int64(3)), ("bn2", np.float32(0.5), 0)])
    assert rounds == [(2, 1.0, 3), ("bn2", 0.5, 0)]
    assert [type(value) for value in rounds[0]] == [int, float, int]


# A backbone built the usual way: inputs -> Rescaling -> MobileNetV2 -> more layers.

MOBILENET_SIZE = 32


def mobilenet():
    return keras.applications.MobileNetV2(weights=None, include_top=False, alpha=0.35,
                                          input_shape=(MOBILENET_SIZE, MOBILENET_SIZE, 3))


def nested_mobilenet(inner=None):
    """image -> Rescaling -> MobileNetV2 -> Conv2D, MobileNetV2 one layer of the model's `layers`."""
    inputs = keras.Input((MOBILENET_SIZE, MOBILENET_SIZE, 3), name="image")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1, name="rescale")(inputs)
    outputs = keras.layers.Conv2D(8, 1, name="after")((mobilenet() if inner is None else inner)(x))
    return keras.Model(inputs, outputs, name="nested2")


def leaves(model):
    """Every layer of `model` and of the models nested in it, in the order of `layers`, depth first."""
    found = []
    for layer in model.layers:
        found.extend(leaves(layer) if isinstance(layer, keras.Model) else [layer])
    return found


def test_a_nested_mobilenet_unfreezes_as_the_same_network_built_flat():
    keras.utils.set_random_seed(0)
    flat, nested = mobilenet(), nested_mobilenet()
    inner = nested.layers[2]
    assert [layer.name for layer in nested.layers] == ["image", "rescale", inner.name, "after"]
    # the nested model's layers, its InputLayer included, stand where it stands
    names = [layer.name for layer in leaves(nested)]
    assert names[:2] == ["image", "rescale"] and names[3:] == [layer.name for layer in flat.layers[1:]] + ["after"]
    assert isinstance(leaves(nested)[2], keras.layers.InputLayer)  # as in flat.layers
    for unfrozen in (1, 5, 20, "block_16_expand"):
        training = set_unfrozen_layers(nested, unfrozen)
        # the last N layers of the nested model are the last N - 1 of the flat one, then "after"
        set_unfrozen_layers(flat, unfrozen if isinstance(unfrozen, str) else unfrozen - 1)
        expected = [layer.name for layer in flat.layers if layer.trainable] + ["after"]
        assert [layer.name for layer in training] == expected, unfrozen
        assert [layer.name for layer in leaves(nested) if layer.trainable] == expected, unfrozen
        # Keras passes a model's `trainable` on to its layers: the weights that train are exactly the leaves'
        trains = [w for layer in leaves(nested) if layer.trainable for w in layer.trainable_weights]
        assert {id(w) for w in nested.trainable_weights} == {id(w) for w in trains}, unfrozen
        assert len(nested.trainable_weights) == len(trains)
        assert inner.trainable == (unfrozen != 1)
        inner_trains = [w for layer in leaves(inner) if layer.trainable for w in layer.trainable_weights]
        assert {id(w) for w in inner.trainable_weights} == {id(w) for w in inner_trains}, unfrozen
        assert parameter_counts(nested)[0] == parameter_counts(flat)[0] + 8 * 1280 + 8
    # frozen BatchNormalization inside the nested model stays frozen and in inference mode
    bn = inner.get_layer("block_16_expand_BN")
    assert not bn.trainable and inner.get_layer("block_16_expand").trainable
    before = bn.moving_mean.numpy().copy()
    nested(keras.random.normal((4, MOBILENET_SIZE, MOBILENET_SIZE, 3), seed=0), training=True)
    np.testing.assert_array_equal(bn.moving_mean.numpy(), before)
    set_unfrozen_layers(nested, "block_16_expand", unfreeze_batchnorm=True)
    assert bn.trainable
    nested(keras.random.normal((4, MOBILENET_SIZE, MOBILENET_SIZE, 3), seed=0), training=True)
    assert (bn.moving_mean.numpy() != before).any()


def test_nested_layer_names_and_counts_are_checked_through_the_nested_models():
    nested = nested_mobilenet()
    inner = nested.layers[2]
    total = len(inner.layers) + 3
    assert first_unfrozen_index(nested, "block_16_expand") == 2 + [l.name for l in inner.layers].index(
        "block_16_expand")
    assert first_unfrozen_index(nested, inner.name) == 2  # a nested model's name: from its first layer
    assert first_unfrozen_index(nested, "after") == total - 1 and first_unfrozen_index(nested, total) == 0
    with pytest.raises(ValueError, match=(
            rf"Expected num_of_unfrozen_layers to be an integer >= 0 and <= {total} \('nested2' has {total} layers, "
            r"those of its nested models included; a layer name is also accepted\)\. "
            rf"Received: num_of_unfrozen_layers={total + 1}")):
        first_unfrozen_index(nested, total + 1)
    with pytest.raises(ValueError, match=(
            r"the name of a layer of 'nested2', whose layers are \['image', 'rescale', '[^']+', 'Conv1', .*, \.\.\., "
            rf".*'Conv_1_bn', 'out_relu', 'after'\] \({total} in all, nested models' layers included\)\. "
            r"Received: num_of_unfrozen_layers='block_99_expand'")):
        first_unfrozen_index(nested, "block_99_expand")
    rounds = [(1, 1e-3, 1), ("block_16_expand", 1e-4, 1), (total, 1e-5, 1)]
    assert check_schedule(nested, rounds) == [(1, 0.001, 1), ("block_16_expand", 0.0001, 1), (total, 1e-05, 1)]


def test_a_name_held_by_two_nested_models_is_refused_unless_it_is_a_top_level_layer():
    def block(name):
        return keras.Sequential([keras.Input((4,)), keras.layers.Dense(4, name="dense")], name=name)

    inputs = keras.Input((4,), name="x")
    model = keras.Model(inputs, block("second")(block("first")(inputs)), name="twice")
    with pytest.raises(ValueError, match=r"to name one layer of 'twice', but 2 layers of its nested models "
                                         r"\['first', 'second'\] are called so"):
        first_unfrozen_index(model, "dense")
    assert first_unfrozen_index(model, "second") == 2
    inputs = keras.Input((4,), name="x")
    top = keras.layers.Dense(4, name="dense")
    model = keras.Model(inputs, top(block("first")(inputs)), name="outer")
    assert first_unfrozen_index(model, "dense") == 2  # the top-level layer, as before nesting counted


def test_a_simclr_round_on_a_nested_mobilenet_trains_only_the_layers_from_the_one_named():
    keras.utils.set_random_seed(0)
    nested = nested_mobilenet()
    simclr = SimCLR(nested, BATCH, feat_dims_ph=HEAD, pooling="avg", num_of_unfrozen_layers="block_16_expand",
                    save_path=None, seed=0)
    names = [layer.name for layer in leaves(nested)]
    expected = [layer for layer in leaves(nested)[names.index("block_16_expand"):]
                if not isinstance(layer, keras.layers.BatchNormalization)]
    assert {id(w) for w in nested.trainable_weights} == {id(w) for layer in expected for w in layer.weights}
    before = [w.numpy().copy() for w in nested.weights]
    simclr.train_schedule(view_batches(size=MOBILENET_SIZE), None, [("block_16_expand", 1e-2, 1)], verbose=0)
    changed = {id(w) for w, old in zip(nested.weights, before) if not np.array_equal(w.numpy(), old)}
    assert changed == {id(w) for w in nested.trainable_weights}
    assert {w.path for w in nested.weights if id(w) in changed} == {
        "block_16_expand/kernel", "block_16_depthwise/kernel", "block_16_project/kernel", "Conv_1/kernel",
        "after/kernel", "after/bias"}
