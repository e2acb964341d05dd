"""DataGeneratorSimCLR: batches, errors, and views that depend only on (seed, epoch, index)."""

import logging
import os
from concurrent.futures import ThreadPoolExecutor

import keras
import numpy as np
import pandas as pd
import pytest

from data_generators import DataGeneratorSimCLR, SimCLRAugmentation, contrastive_target, frame_from_folder

SIZE = 16


def generator(data, **kwargs):
    kwargs = {"batch_size": 4, "width": SIZE, "height": SIZE, **kwargs}
    return DataGeneratorSimCLR(data, **kwargs)


def batches(dataset):
    return [dataset[index] for index in range(len(dataset))]


def assert_same_batches(first, second):
    assert len(first) == len(second)
    for ((a1, b1), t1), ((a2, b2), t2) in zip(first, second):
        assert np.array_equal(a1, a2) and np.array_equal(b1, b2) and np.array_equal(t1, t2)


@pytest.fixture
def split_frame(tiny_image_folder):
    frame = frame_from_folder(tiny_image_folder)
    frame["split"] = (["train"] * 4 + ["val"] + ["test"]) * 3
    return frame


def test_batches_are_view_pairs_with_the_contrastive_target(tiny_image_folder):
    dataset = generator(tiny_image_folder, batch_size=4)
    assert len(dataset) == 4 and dataset.n_images == 18 and dataset.epoch == 0
    assert dataset.class_labels == ["circle", "square", "stripes"]
    (view_a, view_b), target = dataset[3]
    for view in (view_a, view_b):
        assert view.shape == (4, SIZE, SIZE, 3) and view.dtype == np.float32
        assert view.min() >= 0 and view.max() <= 255
    assert not np.allclose(view_a, view_b)
    assert np.array_equal(target, contrastive_target(4))
    with pytest.raises(IndexError, match="batch index 4"):
        dataset[4]


def test_remainder_is_dropped_and_logged_once(tiny_image_folder, caplog, no_augmentation):
    with caplog.at_level(logging.INFO, logger="data_generators"):
        dataset = generator(tiny_image_folder, batch_size=5, augmentation=no_augmentation)
    assert len(dataset) == 3
    assert [record.getMessage() for record in caplog.records if "left out" in record.getMessage()] == [
        "3 of the 18 images of subset 'train' are left out of each epoch (only whole batches of 5)"
    ]
    assert all(len(view_a) == 5 for (view_a, _), _ in batches(dataset))


def test_subset_selects_split_rows(split_frame):
    train, val = generator(split_frame, subset="train"), generator(split_frame, subset="val", batch_size=3)
    assert (train.n_images, val.n_images) == (12, 3)
    assert train.shuffle and not val.shuffle
    assert val.class_labels == ["circle", "square", "stripes"]
    with pytest.raises(ValueError, match="subset='val' selects no rows"):
        generator(split_frame[split_frame["split"] != "val"], subset="val")
    with pytest.raises(ValueError, match=r"Expected subset to be one of \['train', 'val', 'test'\]. "
                                         r"Received: subset='validation'"):
        generator(split_frame, subset="validation")
    with pytest.raises(ValueError, match="Received: subset=None"):
        generator(split_frame, subset=None)


def test_batch_size_errors_name_batch_size_and_the_data(split_frame):
    with pytest.raises(ValueError, match="Expected batch_size to be at most the 12 images of subset 'train'. "
                                         "Received: batch_size=13"):
        generator(split_frame, batch_size=13)
    with pytest.raises(ValueError, match=r"Expected batch_size to be an integer >= 2 "
                                         r"\(a contrastive batch needs negatives\)\. "
                                         r"Received: batch_size=1"):
        generator(split_frame, batch_size=1)
    with pytest.raises(TypeError, match="Received: batch_size='8'"):
        generator(split_frame, batch_size="8")


def test_missing_files_are_found_at_construction(split_frame):
    os.remove(split_frame["filename"][5])
    with pytest.raises(FileNotFoundError, match=os.path.basename(split_frame["filename"][5])):
        generator(split_frame, subset="test", batch_size=2)


def test_arrays_are_resized_and_labels_are_optional(numbered_images, no_augmentation):
    images, _ = numbered_images
    dataset = generator((images, None), width=5, height=6, augmentation=no_augmentation, shuffle=False)
    (view_a, view_b), _ = dataset[0]
    assert view_a.shape == (4, 6, 5, 3) and dataset.class_labels is None
    assert np.array_equal(view_a, view_b) and np.array_equal(view_a[:, 0, 0, 0], [0, 10, 20, 30])


def test_gray_views_and_preprocess_input(tiny_image_folder):
    dataset = generator(tiny_image_folder, channels=1, preprocess_input=lambda images: images / 127.5 - 1)
    (view_a, _), _ = dataset[0]
    assert view_a.shape == (4, SIZE, SIZE, 1) and view_a.dtype == np.float32
    assert view_a.min() >= -1 and view_a.max() <= 1


def test_epoch_order_is_seeded_and_covers_distinct_images(numbered_images, no_augmentation, numbers_of):
    dataset = generator(numbered_images, augmentation=no_augmentation, batch_size=6, seed=3)
    first_epoch = [numbers_of(view_a) for (view_a, _), _ in batches(dataset)]
    dataset.on_epoch_end()
    second_epoch = [numbers_of(view_a) for (view_a, _), _ in batches(dataset)]
    for epoch in (first_epoch, second_epoch):
        seen = sum(epoch, [])
        assert len(seen) == 18 and len(set(seen)) == 18
    assert first_epoch != second_epoch
    again = generator(numbered_images, augmentation=no_augmentation, batch_size=6, seed=3)
    assert [numbers_of(view_a) for (view_a, _), _ in batches(again)] == first_epoch


def test_train_views_change_with_the_epoch_but_not_otherwise(tiny_image_folder):
    dataset = generator(tiny_image_folder)
    epoch_0 = batches(dataset)
    assert_same_batches(epoch_0, batches(dataset))  # asking twice gives the same
    dataset.on_epoch_end()
    assert dataset.epoch == 1
    epoch_1 = batches(dataset)
    assert not np.allclose(epoch_0[0][0][0], epoch_1[0][0][0])
    fresh = generator(tiny_image_folder)
    fresh.epoch = 1
    assert_same_batches(epoch_1, batches(fresh))
    assert not np.allclose(batches(generator(tiny_image_folder, seed=1))[0][0][0], epoch_0[0][0][0])


def test_val_views_are_the_same_every_epoch(split_frame):
    dataset = generator(split_frame, subset="val", batch_size=3)
    epoch_0 = batches(dataset)
    dataset.on_epoch_end()
    dataset.on_epoch_end()
    assert dataset.epoch == 0
    assert_same_batches(epoch_0, batches(dataset))


def test_batches_do_not_depend_on_the_order_or_thread_they_are_made_in(tiny_image_folder):
    expected = batches(generator(tiny_image_folder, workers=0))
    threaded = generator(tiny_image_folder, workers=2)
    assert threaded.workers == 2
    with ThreadPoolExecutor(max_workers=4) as pool:
        made = list(pool.map(threaded.__getitem__, reversed(range(len(threaded)))))
    assert_same_batches(expected, made[::-1])
    assert_same_batches(expected, list(iter(threaded)))


def test_keras_thread_workers_see_the_same_batches(tiny_image_folder):
    view_a, view_b = keras.Input((SIZE, SIZE, 3)), keras.Input((SIZE, SIZE, 3))
    model = keras.Model([view_a, view_b], keras.layers.Concatenate()([view_a, view_b]))
    expected = {}
    for workers in (0, 2):
        dataset = generator(tiny_image_folder, workers=workers, augmentation=SimCLRAugmentation(noise_std=2.0))
        direct = batches(dataset)
        expected[workers] = np.concatenate([np.concatenate([a, b], axis=-1) for (a, b), _ in direct])
        np.testing.assert_array_equal(model.predict(dataset, verbose=0), expected[workers])
        assert dataset.epoch == 1  # Keras ended the epoch
    np.testing.assert_array_equal(expected[0], expected[2])


def test_multiprocessing_workers_give_the_same_views_each_epoch(tiny_image_folder):
    view_a, view_b = keras.Input((SIZE, SIZE, 3)), keras.Input((SIZE, SIZE, 3))
    model = keras.Model([view_a, view_b], keras.layers.Concatenate()([view_a, view_b]))
    seen = {}
    for options in ({"workers": 0}, {"workers": 2, "use_multiprocessing": True}):
        dataset = generator(tiny_image_folder, augmentation=SimCLRAugmentation(noise_std=2.0), **options)
        seen[options["workers"]] = [model.predict(dataset, verbose=0) for _ in range(2)]  # each ends an epoch
    for epoch in range(2):
        np.testing.assert_array_equal(seen[0][epoch], seen[2][epoch])
    assert not np.array_equal(seen[2][0], seen[2][1])  # workers saw the epoch advance


def test_unknown_pydataset_argument_is_refused(tiny_image_folder):
    with pytest.raises(TypeError, match="worker"):
        generator(tiny_image_folder, worker=2)
    with pytest.raises(TypeError, match="Expected augmentation to be a callable .* Received: augmentation='strong'"):
        generator(tiny_image_folder, augmentation="strong")
    frame = pd.DataFrame({"filename": frame_from_folder(tiny_image_folder)["filename"]})
    with pytest.raises(ValueError, match="class_label"):
        generator(frame)


@pytest.mark.parametrize("options", [
    {},
    {"augmentation": SimCLRAugmentation(noise_std=4.0), "preprocess_input": lambda x: x / 127.5 - 1},
    {"augmentation": SimCLRAugmentation(noise_std=4.0), "augment_in_model": True},
])
def test_a_shard_of_a_batch_is_those_rows_of_the_whole_batch(tiny_image_folder, options):
    data = generator(frame_from_folder(tiny_image_folder), batch_size=8, seed=3, **options)
    data.epoch = 2
    rows = np.array([4, 5, 6, 7])  # the second of two workers
    (first, second), target = data[1]
    (shard_first, shard_second), shard_target = data.shard_of_batch(1, rows)
    np.testing.assert_array_equal(shard_first, first[rows])
    np.testing.assert_array_equal(shard_second, second[rows])
    np.testing.assert_array_equal(shard_target, target[rows])
    assert shard_target.shape == (4, 32)


def test_a_shard_reads_only_its_own_images(tiny_image_folder, monkeypatch):
    from data_generators.cache import DecodedImageCache

    cache = DecodedImageCache()
    monkeypatch.setattr("data_generators.cache._cache", cache)
    data = generator(frame_from_folder(tiny_image_folder), batch_size=8)
    data.shard_of_batch(0, np.array([0, 1, 2]))
    assert cache.misses == 3  # a worker decodes its rows' files, not the whole batch's


@pytest.mark.parametrize("rows", [[], [8], [-1], [[0, 1]]])
def test_a_shard_outside_the_batch_is_refused(tiny_image_folder, rows):
    data = generator(frame_from_folder(tiny_image_folder), batch_size=8)
    with pytest.raises(IndexError, match="Expected rows of a batch of 8 images"):
        data.shard_of_batch(0, np.array(rows, dtype=np.int64))
