"""DataGeneratorClass: every image once per epoch, true last batch, one-hot labels."""

import numpy as np
import pytest

from data_generators import DataGeneratorClass, SimCLRAugmentation, frame_from_folder, read_images

SIZE = 16


def generator(data, **kwargs):
    kwargs = {"batch_size": 5, "width": SIZE, "height": SIZE, **kwargs}
    return DataGeneratorClass(data, **kwargs)


def test_batches_hold_images_and_one_hot_labels(tiny_image_folder):
    dataset = generator(tiny_image_folder)
    assert len(dataset) == 4 and dataset.n_images == 18
    assert dataset.classes == ["circle", "square", "stripes"]
    assert dataset.labels.tolist() == [0] * 6 + [1] * 6 + [2] * 6
    images, one_hot = dataset[1]
    assert images.shape == (5, SIZE, SIZE, 3) and images.dtype == np.float32
    assert one_hot.dtype == np.float32 and one_hot.tolist() == [[1, 0, 0]] + [[0, 1, 0]] * 4


def test_last_batch_has_its_true_size_and_exactly_its_images(tiny_image_folder):
    frame = frame_from_folder(tiny_image_folder)
    dataset = generator(frame)
    images, one_hot = dataset[3]
    assert images.shape == (3, SIZE, SIZE, 3) and one_hot.shape == (3, 3)
    np.testing.assert_array_equal(images, read_images(frame["filename"][15:], SIZE, SIZE).astype(np.float32))
    assert one_hot.argmax(axis=1).tolist() == [2, 2, 2]


def test_shuffle_visits_every_image_once_in_a_seeded_order(numbered_images, numbers_of):
    dataset = generator(numbered_images, batch_size=6, width=8, height=8, shuffle=True, seed=5)
    epochs = []
    for _ in range(2):
        order = sum((numbers_of(dataset[index][0]) for index in range(len(dataset))), [])
        assert sorted(order) == list(range(20))
        epochs.append(order)
        dataset.on_epoch_end()
    assert epochs[0] != epochs[1] and epochs[0] != list(range(20))
    again = generator(numbered_images, batch_size=6, width=8, height=8, shuffle=True, seed=5)
    assert sum((numbers_of(again[index][0]) for index in range(len(again))), []) == epochs[0]


def test_one_hot_follows_the_images_when_shuffled(numbered_images, numbers_of):
    dataset = generator(numbered_images, batch_size=7, width=8, height=8, shuffle=True)
    for index in range(len(dataset)):
        images, one_hot = dataset[index]
        assert one_hot.argmax(axis=1).tolist() == [number % 3 for number in numbers_of(images)]


def test_augmentation_changes_pixels_but_not_labels(tiny_image_folder):
    plain = generator(tiny_image_folder)
    augmented = generator(tiny_image_folder, augmentation=SimCLRAugmentation())
    for index in range(len(plain)):
        (plain_images, plain_labels), (views, labels) = plain[index], augmented[index]
        assert views.shape == plain_images.shape and views.min() >= 0 and views.max() <= 255
        assert np.array_equal(labels, plain_labels)
    assert not np.allclose(views, plain_images)
    assert np.array_equal(augmented[0][0], augmented[0][0])  # seeded by (seed, epoch, index)


def test_explicit_classes_set_the_column_order(numbered_images):
    images, numbers = numbered_images
    names = np.array(["red", "green", "blue"])[numbers]
    dataset = generator((images, names), classes=["blue", "green", "red"], width=8, height=8)
    assert dataset.labels[:3].tolist() == [2, 1, 0]
    assert dataset[0][1].shape == (5, 3)
    with pytest.raises(ValueError, match="class label 'red' of data is not in classes"):
        generator((images, names), classes=["blue", "green"], width=8, height=8)


def test_integer_labels_are_class_indices(numbered_images):
    images, numbers = numbered_images
    dataset = generator((images, numbers), width=8, height=8)
    assert dataset.classes == [0, 1, 2] and dataset.labels.tolist() == numbers.tolist()
    named = generator((images, numbers), classes=["a", "b", "c", "d"], width=8, height=8)
    assert named[0][1].shape == (5, 4)
    with pytest.raises(ValueError, match="label 2 of data is not an index into the 2 classes"):
        generator((images, numbers), classes=["a", "b"], width=8, height=8)


def test_integer_labels_among_the_classes_are_looked_up_by_value(numbered_images):
    images, numbers = numbered_images
    shifted = generator((images, numbers + 5), classes=[5, 6, 7], width=8, height=8)
    assert shifted.labels.tolist() == numbers.tolist()


def test_subsets_share_the_class_numbering(tiny_image_folder):
    frame = frame_from_folder(tiny_image_folder)
    frame["split"] = ["train"] * 12 + ["test"] * 6  # test holds only "stripes"
    test = generator(frame, subset="test")
    assert test.n_images == 6 and test.classes == ["circle", "square", "stripes"]
    assert test.labels.tolist() == [2] * 6
    assert test.subset == "test"


def test_errors_name_the_argument(numbered_images, tiny_image_folder):
    images, _ = numbered_images
    with pytest.raises(ValueError, match="data has no labels"):
        generator((images, None), width=8, height=8)
    with pytest.raises(ValueError, match=r"Expected batch_size to be an integer >= 1\. Received: batch_size=0"):
        generator(tiny_image_folder, batch_size=0)
    with pytest.raises(TypeError, match="Expected batch_size to be an integer >= 1. Received: batch_size=2.5"):
        generator(tiny_image_folder, batch_size=2.5)
    with pytest.raises(ValueError, match=r"Expected subset to be one of \['train', 'val', 'test', None\]. "
                                         r"Received: subset='holdout'"):
        generator(tiny_image_folder, subset="holdout")
    with pytest.raises(ValueError, match=r"Expected data labels of shape \(20,\), one per image\. "
                                         r"Received: labels of shape \(2,\)"):
        generator((images, [0, 1]), width=8, height=8)
    with pytest.raises(TypeError, match="Expected preprocess_input to be a callable or None. "
                                        "Received: preprocess_input='vgg16'"):
        generator(tiny_image_folder, preprocess_input="vgg16")
