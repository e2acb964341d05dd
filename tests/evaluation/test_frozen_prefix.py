"""The cached frozen prefix computes what the whole classifier computes, and is used only where it may be."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from data_generators import DataGeneratorClass, SimCLRAugmentation
from evaluation.finetune import classifier_model
from evaluation.frozen_prefix import FrozenPrefixCache, ShuffledArrays, cacheable, chain_start, round_cache
from simclr_wrap.unfreezing import first_unfrozen_index, set_unfrozen_layers
from tests.conftest import TINY_SIZE


def residual_backbone():
    """conv1 -> conv2 -> add(conv1, conv2) -> conv3: a residual block spans conv2."""
    inputs = keras.Input((TINY_SIZE, TINY_SIZE, 3))
    first = keras.layers.Conv2D(4, 3, padding="same", name="conv1")(inputs)
    second = keras.layers.Conv2D(4, 3, padding="same", name="conv2")(first)
    joined = keras.layers.Add(name="add")([first, second])
    outputs = keras.layers.Conv2D(6, 3, name="conv3")(joined)
    return keras.Model(inputs, outputs, name="residual")


def images_and_labels(n=10, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 1, (n, TINY_SIZE, TINY_SIZE, 3)).astype("float32")
    return images, np.eye(3, dtype="float32")[rng.integers(0, 3, n)]


@pytest.mark.parametrize("unfrozen", [0, 4, "conv2"])
def test_suffix_on_cached_activations_predicts_and_trains_as_the_whole_model(tiny_backbone, unfrozen):
    model = classifier_model(tiny_backbone, 3, pooling="avg", hidden_units=8)
    backbone = model.get_layer("tiny_backbone")
    set_unfrozen_layers(backbone, unfrozen)
    images, one_hot = images_and_labels()
    cache = FrozenPrefixCache(model, "tiny_backbone", first_unfrozen_index(backbone, unfrozen))
    assert cache.available
    activations, labels = cache.activations((images, one_hot))
    np.testing.assert_array_equal(labels, one_hot)
    np.testing.assert_allclose(cache.suffix.predict(activations, verbose=0), model.predict(images, verbose=0),
                               rtol=1e-5, atol=1e-6)
    loss = keras.losses.CategoricalCrossentropy()
    gradients = []
    for network, inputs in ((model, images), (cache.suffix, activations)):
        with tf.GradientTape() as tape:
            value = loss(one_hot, network(inputs, training=True))
        gradients.append(tape.gradient(value, cache.suffix.trainable_variables))
    assert {v.path for v in cache.suffix.trainable_variables} == {v.path for v in model.trainable_variables}
    for whole, cached in zip(*gradients):
        np.testing.assert_allclose(cached.numpy(), whole.numpy(), rtol=1e-5, atol=1e-6)


def test_a_residual_block_spanning_the_cut_means_end_to_end():
    backbone = residual_backbone()
    names = [layer.name for layer in backbone.layers]
    assert chain_start(backbone) == names.index("conv3")
    model = classifier_model(backbone, 3, pooling="avg")
    assert not FrozenPrefixCache(model, "residual", names.index("conv2")).available  # add still reads conv1
    assert FrozenPrefixCache(model, "residual", names.index("conv3")).available
    assert FrozenPrefixCache(model, "residual", len(names)).available  # only the head trains
    assert not FrozenPrefixCache(model, "residual", 1).available  # nothing frozen has weights


def test_only_unaugmented_data_within_the_memory_bound_is_cached(tiny_backbone):
    model = classifier_model(tiny_backbone, 3, pooling="avg")
    images, one_hot = images_and_labels()
    plain = DataGeneratorClass((images * 255, one_hot.argmax(1)), batch_size=4, width=TINY_SIZE, height=TINY_SIZE)
    augmented = DataGeneratorClass((images * 255, one_hot.argmax(1)), batch_size=4, width=TINY_SIZE,
                                   height=TINY_SIZE, augmentation=SimCLRAugmentation())
    assert cacheable(plain) and cacheable((images, one_hot))
    assert not cacheable(augmented) and not cacheable(ShuffledArrays(images, one_hot, 4, 0))
    last = len(tiny_backbone.layers)
    assert round_cache(model, "tiny_backbone", last, augmented, plain) is None
    assert round_cache(model, "tiny_backbone", last, plain, plain, max_bytes=100) is None
    cache = round_cache(model, "tiny_backbone", last, plain, (images, one_hot))
    assert cache.train[0].shape == (10, 4, 4, 8) and cache.val[0].shape == (10, 4, 4, 8)
    np.testing.assert_array_equal(cache.train[1], plain._one_hot)  # a generator is read in its order


def test_shuffled_arrays_give_every_row_once_per_epoch_in_a_seeded_order():
    x = np.arange(10)
    batches = ShuffledArrays(x, x * 2, batch_size=4, seed=3)
    orders = []
    for _ in range(2):
        rows = [batches[index] for index in range(len(batches))]
        order = np.concatenate([r[0] for r in rows])
        np.testing.assert_array_equal(np.concatenate([r[1] for r in rows]), order * 2)
        assert sorted(order.tolist()) == list(range(10)) and len(rows[-1][0]) == 2
        orders.append(order.tolist())
        batches.on_epoch_end()
    assert orders[0] != orders[1]
    again = ShuffledArrays(x, x, batch_size=4, seed=3)
    assert np.concatenate([again[i][0] for i in range(3)]).tolist() == orders[0]
