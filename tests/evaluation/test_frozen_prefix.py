"""The cached frozen prefix computes what the whole classifier computes, and is used only where it may be."""

import logging

import keras
import numpy as np
import pytest
import tensorflow as tf

from data_generators import DataGeneratorClass, SimCLRAugmentation
from evaluation.finetune import classifier_head, classifier_model, finetune_classifier
from evaluation.frozen_prefix import CachedRound, FrozenPrefix, ShuffledArrays, cacheable, round_cache
from simclr_wrap.prefix_cut import chain_start
from simclr_wrap.unfreezing import first_unfrozen_index, set_unfrozen_layers
from tests.conftest import TINY_SIZE, make_tiny_backbone


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
    cache = FrozenPrefix(backbone, classifier_head(model), first_unfrozen_index(backbone, unfrozen))
    assert cache.available
    assert_suffix_is_the_model(cache, model, images, one_hot)


def test_a_cut_inside_a_residual_block_means_end_to_end_and_one_in_front_of_it_a_suffix_graph():
    backbone = residual_backbone()
    names = [layer.name for layer in backbone.layers]
    assert chain_start(backbone) == names.index("conv3")
    model = classifier_model(backbone, 3, pooling="avg", hidden_units=8)
    backbone, head = model.get_layer("residual"), classifier_head(model)
    assert not FrozenPrefix(backbone, head, names.index("add")).available  # conv1 and conv2 both cross the cut
    assert not FrozenPrefix(backbone, head, 1).available  # nothing frozen has weights
    for name in ("conv3", len(names)):  # a chain after the cut, or only the head trains
        assert FrozenPrefix(backbone, head, name if isinstance(name, int) else names.index(name)).available
    # In front of conv2 only conv1's output crosses: it feeds both conv2 and the sum.
    set_unfrozen_layers(backbone, "conv2")
    cache = FrozenPrefix(backbone, head, names.index("conv2"))
    assert cache.available and cache.prefix.output.shape[1:] == (TINY_SIZE, TINY_SIZE, 4)
    images, one_hot = images_and_labels()
    assert_suffix_is_the_model(cache, model, images, one_hot)


def test_only_unaugmented_data_within_the_memory_bound_is_cached(tiny_backbone):
    model = classifier_model(tiny_backbone, 3, pooling="avg")
    images, one_hot = images_and_labels()
    plain = DataGeneratorClass((images * 255, one_hot.argmax(1)), batch_size=4, width=TINY_SIZE, height=TINY_SIZE)
    augmented = DataGeneratorClass((images * 255, one_hot.argmax(1)), batch_size=4, width=TINY_SIZE,
                                   height=TINY_SIZE, augmentation=SimCLRAugmentation())
    assert cacheable(plain) and cacheable((images, one_hot))
    assert not cacheable(augmented) and not cacheable(ShuffledArrays(images, one_hot, 4, 0))
    last = len(tiny_backbone.layers)
    backbone, head = model.get_layer("tiny_backbone"), classifier_head(model)
    assert round_cache(backbone, head, last, augmented, plain) is None
    assert round_cache(backbone, head, last, plain, plain, max_bytes=100) is None
    cache = round_cache(backbone, head, last, plain, (images[:6], one_hot[:6]))
    assert isinstance(cache, CachedRound) and cache.cut == last
    assert cache.train[0].shape == (10, 4, 4, 8) and cache.val[0].shape == (6, 4, 4, 8)
    np.testing.assert_array_equal(cache.val[1], one_hot[:6])
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


def test_a_sequential_backbone_is_a_chain_from_its_first_layer():
    backbone = keras.Sequential([keras.Input((TINY_SIZE, TINY_SIZE, 3)), keras.layers.Conv2D(4, 3, name="conv1"),
                                 keras.layers.ReLU(name="relu"), keras.layers.Conv2D(2, 3, name="conv2")])
    assert chain_start(backbone) == 1  # a Sequential model's layers leave out its input


def test_the_suffix_ends_in_the_head_it_is_given_whatever_its_layers_are_called(tiny_backbone):
    # A classifier whose head has other layers and names than evaluation.finetune's.
    images, _ = images_and_labels()
    inputs = keras.Input((TINY_SIZE, TINY_SIZE, 3))
    features = tiny_backbone(inputs)
    outputs = keras.layers.Dense(3, activation="softmax", name="scores")(keras.layers.Flatten(name="vector")(features))
    model = keras.Model(inputs, outputs)
    head = keras.Model(model.get_layer("vector").input, model.output)
    set_unfrozen_layers(tiny_backbone, "conv2")
    frozen = FrozenPrefix(tiny_backbone, head, first_unfrozen_index(tiny_backbone, "conv2"))
    assert [layer.name for layer in frozen.suffix.layers[1:-1]] == ["conv2", "bn2", "relu2", "pool2"]
    assert frozen.suffix.layers[-1] is head
    activations, _ = frozen.activations((images, np.zeros((len(images), 3), "float32")))
    np.testing.assert_allclose(frozen.suffix.predict(activations, verbose=0), model.predict(images, verbose=0),
                               rtol=1e-5, atol=1e-6)


def nested_backbone():
    """image -> Rescaling -> the tiny backbone (a model nested as one layer) -> Conv2D."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((TINY_SIZE, TINY_SIZE, 3), name="outer_image")
    x = keras.layers.Rescaling(2.0, offset=-1.0, name="rescale")(inputs)
    # No bias: the head's BatchNormalization would cancel its gradient, which Adam then blows up from float noise.
    outputs = keras.layers.Conv2D(6, 1, use_bias=False, name="after")(make_tiny_backbone(name="inner")(x))
    return keras.Model(inputs, outputs, name="nested")


# The nested backbone's layers, as unfreezing counts them: outer_image, rescale, image, conv1, pool1, conv2,
# bn2, relu2, pool2, after.
@pytest.mark.parametrize("unfrozen", [0, 1, "after", 4, "conv2", "pool1", "pool2"])
def test_a_nested_backbone_is_cut_where_unfreezing_counts_even_inside_the_nested_model(unfrozen):
    model = classifier_model(nested_backbone(), 3, pooling="avg", hidden_units=8)
    backbone = model.get_layer("nested")
    set_unfrozen_layers(backbone, unfrozen)
    images, one_hot = images_and_labels()
    first = first_unfrozen_index(backbone, unfrozen)
    cache = FrozenPrefix(backbone, classifier_head(model), first)
    assert cache.available and cache.cut == first
    suffix_names = [layer.name for layer in cache.suffix.layers[1:-1]]
    names = ["outer_image", "rescale", "image", "conv1", "pool1", "conv2", "bn2", "relu2", "pool2", "after"]
    assert suffix_names == names[first:]  # the nested model's layers after the cut, then the outer ones
    assert_suffix_is_the_model(cache, model, images, one_hot)


@pytest.mark.parametrize("unfrozen", ["inner", "conv1", 10])
def test_a_nested_backbone_whose_frozen_layers_hold_no_weights_trains_end_to_end(unfrozen):
    model = classifier_model(nested_backbone(), 3, pooling="avg")
    backbone = model.get_layer("nested")
    assert not FrozenPrefix(backbone, classifier_head(model), first_unfrozen_index(backbone, unfrozen)).available


def test_a_residual_block_inside_a_nested_model_is_cut_in_front_of_it_not_inside_it():
    inputs = keras.Input((TINY_SIZE, TINY_SIZE, 3), name="outer_image")
    outputs = keras.layers.Conv2D(2, 1, name="after")(residual_backbone()(keras.layers.Rescaling(2.0)(inputs)))
    model = classifier_model(keras.Model(inputs, outputs, name="outer"), 3, pooling="avg", hidden_units=8)
    backbone, head = model.get_layer("outer"), classifier_head(model)
    # outer_image, rescaling, input, conv1, conv2, add, conv3, after
    assert not FrozenPrefix(backbone, head, first_unfrozen_index(backbone, "add")).available
    for name in ("conv2", "conv3", "after"):
        assert FrozenPrefix(backbone, head, first_unfrozen_index(backbone, name)).available
    set_unfrozen_layers(backbone, "conv2")
    images, one_hot = images_and_labels()
    assert_suffix_is_the_model(FrozenPrefix(backbone, head, first_unfrozen_index(backbone, "conv2")), model, images,
                               one_hot)


def test_a_nested_mobilenet_is_cut_inside_wherever_one_tensor_crosses():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3), name="outer_image")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1, name="rescale")(inputs)
    mobilenet = keras.applications.MobileNetV2(weights=None, include_top=False, input_shape=(32, 32, 3), alpha=0.35)
    model = classifier_model(keras.Model(inputs, keras.layers.Conv2D(8, 1, name="after")(mobilenet(x)),
                                         name="nested2"), 3, pooling="avg", hidden_units=8)
    backbone, head = model.get_layer("nested2"), classifier_head(model)
    images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    for unfrozen in (1, 5, "block_11_expand", "block_13_expand", "block_16_expand"):
        set_unfrozen_layers(backbone, unfrozen)
        cache = FrozenPrefix(backbone, head, first_unfrozen_index(backbone, unfrozen))
        assert cache.available, unfrozen
        activations, _ = cache.activations((images, np.zeros((4, 3), "float32")))
        np.testing.assert_allclose(cache.suffix.predict(activations, verbose=0), model.predict(images, verbose=0),
                                   rtol=1e-5, atol=1e-6)
    assert [layer.name for layer in cache.suffix.layers[1:4]] == ["block_16_expand", "block_16_expand_BN",
                                                                  "block_16_expand_relu"]
    for unfrozen in (20, "block_15_add", "block_15_project"):  # inside a residual block: its skip crosses too
        assert not FrozenPrefix(backbone, head, first_unfrozen_index(backbone, unfrozen)).available


def test_finetuning_a_nested_backbone_from_cached_activations_gives_what_end_to_end_training_gives(caplog):
    # One batch per epoch: the cached round's shuffled order and the arrays' order give the same steps.
    train, val, test = images_and_labels(12, seed=1), images_and_labels(6, seed=2), images_and_labels(6, seed=3)
    results = {}
    for cache_frozen in (False, True):
        with caplog.at_level(logging.INFO, logger="evaluation.frozen_prefix"):
            caplog.clear()
            results[cache_frozen] = finetune_classifier(
                nested_backbone(), train, val, test, schedule=[(0, 1e-2, 2), ("conv2", 1e-2, 2)], hidden_units=8,
                patience=5, cache_frozen=cache_frozen, seed=0)
        if cache_frozen:  # both rounds were cached: the second cut inside the nested model, in front of conv2
            assert "first 10 layers of 'nested'" in caplog.text and "first 5 layers of 'nested'" in caplog.text
    end_to_end, cached = results[False], results[True]
    assert [r["num_of_unfrozen_layers"] for r in cached["rounds"]] == [0, "conv2"]
    for key in ("loss", "accuracy", "val_accuracy"):
        np.testing.assert_allclose(cached["history"][key], end_to_end["history"][key], rtol=1e-5, atol=1e-6)
    # The head's BatchNormalization (batch statistics in training) all but cancels the gradient of conv2's
    # bias: Adam, which divides by the gradient's size, turns the float noise of that near-zero gradient into
    # steps of up to about a tenth of the learning rate, seen only by the moving statistics of validation.
    # A layer trained in one run and not in the other would differ by about lr per step (1e-2).
    np.testing.assert_allclose(cached["history"]["val_loss"], end_to_end["history"]["val_loss"], rtol=2e-3)
    for a, b in zip(cached["model"].get_weights(), end_to_end["model"].get_weights()):
        np.testing.assert_allclose(a, b, rtol=0, atol=3e-3)
    start = nested_backbone().get_layer("inner")
    for result in (cached, end_to_end):
        inner = result["model"].get_layer("nested").get_layer("inner")
        for name, trained in (("conv1", False), ("conv2", True)):
            moved = np.abs(inner.get_layer(name).kernel.numpy() - start.get_layer(name).kernel.numpy()).max()
            assert (moved > 5e-3) == trained, (name, moved)


def assert_suffix_is_the_model(cache, model, images, one_hot):
    """The cached suffix on the prefix's activations gives the whole model's predictions and gradients."""
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
    assert {id(v) for v in cache.suffix.trainable_variables} == {id(v) for v in model.trainable_variables}
    for whole, cached in zip(*gradients):
        np.testing.assert_allclose(cached.numpy(), whole.numpy(), rtol=1e-5, atol=1e-6)


def prefix_of(backbone, unfrozen):
    """The FrozenPrefix of a fresh classifier on a clone of `backbone` (same weights), `unfrozen` layers training."""
    clone = keras.models.clone_model(backbone)
    clone.set_weights(backbone.get_weights())
    model = classifier_model(clone, 3, pooling="avg", hidden_units=8)
    inner = model.get_layer(clone.name)
    set_unfrozen_layers(inner, unfrozen)
    return FrozenPrefix(inner, classifier_head(model), first_unfrozen_index(inner, unfrozen))


def file_generator(frame, rows, shuffle=False):
    from data_generators import take_rows

    return DataGeneratorClass(take_rows(frame, rows), batch_size=4, width=TINY_SIZE, height=TINY_SIZE,
                              classes=sorted(set(frame["class_label"])), shuffle=shuffle, seed=1)


def test_prefix_activations_are_computed_once_per_image_prefix_and_weights(tiny_image_folder):
    from data_generators import frame_from_folder
    from evaluation.frozen_prefix import PrefixActivations

    frame = frame_from_folder(tiny_image_folder)
    everything, subset = np.arange(len(frame)), np.arange(0, len(frame), 3)
    backbone = make_tiny_backbone()
    memo = PrefixActivations()
    # One cell on every image, then a classifier of another cell (a clone) on a shuffled subset of them.
    first = prefix_of(backbone, 0).activations(file_generator(frame, everything), memo)
    assert (memo.misses, memo.hits) == (len(frame), 0)
    later = prefix_of(backbone, 0)
    shuffled = file_generator(frame, subset, shuffle=True)
    got, one_hot = later.activations(shuffled, memo)
    assert (memo.misses, memo.hits) == (len(frame), len(subset))
    order = subset[shuffled.image_order()]
    np.testing.assert_allclose(got, first[0][order], atol=1e-6)
    fresh, fresh_labels = later.activations(shuffled)  # what the prefix computes without the memo
    np.testing.assert_allclose(got, fresh, atol=1e-5)
    np.testing.assert_array_equal(one_hot, fresh_labels)
    # Another cut, or other weights: other activations, computed.
    prefix_of(backbone, 2).activations(file_generator(frame, subset), memo)
    assert memo.misses == len(frame) + len(subset)
    changed = make_tiny_backbone()
    changed.set_weights([weight + 1.0 for weight in backbone.get_weights()])
    other = prefix_of(changed, 0).activations(file_generator(frame, subset), memo)[0]
    assert memo.misses == len(frame) + 2 * len(subset)
    assert not np.allclose(other, first[0][subset])


def test_prefix_activations_of_a_changed_file_or_beyond_the_budget_are_computed(tiny_image_folder):
    import os

    import cv2

    from data_generators import frame_from_folder
    from evaluation.frozen_prefix import PrefixActivations

    frame = frame_from_folder(tiny_image_folder)
    rows = np.arange(4)
    backbone = make_tiny_backbone()
    memo = PrefixActivations()
    before = prefix_of(backbone, 0).activations(file_generator(frame, rows), memo)[0]
    path = frame["filename"].iloc[0]
    cv2.imwrite(path, np.zeros((TINY_SIZE + 3, TINY_SIZE + 3, 3), np.uint8))
    os.utime(path, ns=(0, os.stat(path).st_mtime_ns + 1_000_000))
    after = prefix_of(backbone, 0).activations(file_generator(frame, rows), memo)[0]
    assert memo.misses == 5 and not np.allclose(after[0], before[0])
    np.testing.assert_array_equal(after[1:], before[1:])
    small = PrefixActivations(max_bytes=before[0].nbytes)  # room for one image's activations
    again = [prefix_of(backbone, 0).activations(file_generator(frame, rows), small)[0] for _ in range(2)]
    np.testing.assert_allclose(again[0], again[1], atol=1e-6)
    assert (small.misses, small.hits) == (4 + 3, 1)
