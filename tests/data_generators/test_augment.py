"""SimCLRAugmentation: shapes, range, seeding, and each step on its own."""

import numpy as np
import pytest

from data_generators import SimCLRAugmentation

ALL_OFF = dict(crop=False, flip=False, color_jitter=False, grayscale_prob=0.0, blur=False, noise_std=0.0)


def random_images(batch=16, size=16, channels=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (batch, size, size, channels), dtype=np.uint8)


def smooth_images(batch=16, size=16):
    """Coloured gradients: a crop or blur of them stays close but not equal."""
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    rows, columns = np.meshgrid(ramp, ramp, indexing="ij")
    image = np.stack([columns, rows, 255 - columns], axis=-1)
    return np.broadcast_to(image, (batch, size, size, 3)).copy()


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("dtype", [np.uint8, np.float64])
def test_views_keep_shape_and_range_and_change_pixels(channels, dtype):
    images = random_images(channels=channels).astype(dtype)
    views = SimCLRAugmentation(noise_std=4.0)(images, np.random.default_rng(0))
    assert views.shape == images.shape and views.dtype == np.float32
    assert views.min() >= 0 and views.max() <= 255
    assert np.mean(np.abs(views - images)) > 10
    assert np.array_equal(images, random_images(channels=channels).astype(dtype))  # input untouched


def test_views_depend_only_on_the_generator_state():
    images = random_images()
    augment = SimCLRAugmentation(noise_std=1.0)
    first = augment(images, np.random.default_rng(7))
    assert np.array_equal(first, augment(images, np.random.default_rng(7)))
    assert not np.allclose(first, augment(images, np.random.default_rng(8)))


def test_everything_off_is_the_identity():
    images = random_images()
    assert np.array_equal(SimCLRAugmentation(**ALL_OFF)(images, np.random.default_rng(0)), images)


def test_whole_image_crop_is_exact():
    images = random_images()
    augment = SimCLRAugmentation(**{**ALL_OFF, "crop": True, "crop_area": (1.0, 1.0), "crop_aspect": (1.0, 1.0)})
    assert np.array_equal(augment(images, np.random.default_rng(0)), images)


@pytest.mark.parametrize(
    "switch",
    [
        {"crop": True, "crop_area": (0.1, 0.3)},
        {"flip": True},
        {"color_jitter": True, "color_jitter_prob": 1.0},
        {"grayscale_prob": 1.0},
        {"blur": True, "blur_prob": 1.0, "blur_sigma": (1.0, 2.0)},
        {"noise_std": 5.0},
    ],
    ids=["crop", "flip", "color_jitter", "grayscale", "blur", "noise"],
)
def test_each_step_switches_on_alone(switch):
    images = smooth_images()
    views = SimCLRAugmentation(**{**ALL_OFF, **switch})(images, np.random.default_rng(0))
    assert views.shape == images.shape
    changed = np.any(np.abs(views - images) > 1e-3, axis=(1, 2, 3))
    assert changed.any()
    assert views.min() >= 0 and views.max() <= 255


def test_flip_mirrors_about_half_of_the_images():
    images = random_images(batch=64)
    views = SimCLRAugmentation(**{**ALL_OFF, "flip": True})(images, np.random.default_rng(0))
    flipped = np.array([np.array_equal(v, i[:, ::-1]) for v, i in zip(views, images)])
    kept = np.array([np.array_equal(v, i) for v, i in zip(views, images)])
    assert np.all(flipped ^ kept) and 16 < flipped.sum() < 48


def test_grayscale_gives_equal_channels_of_luma():
    images = random_images()
    views = SimCLRAugmentation(**{**ALL_OFF, "grayscale_prob": 1.0})(images, np.random.default_rng(0))
    luma = images @ np.array([0.299, 0.587, 0.114])
    np.testing.assert_allclose(views[..., 0], luma, atol=1e-3)
    assert np.array_equal(views[..., 0], views[..., 2])


def test_blur_smooths_and_keeps_a_flat_image_flat():
    images = random_images()
    augment = SimCLRAugmentation(**{**ALL_OFF, "blur": True, "blur_prob": 1.0, "blur_sigma": (1.5, 1.5)})
    assert augment(images, np.random.default_rng(0)).std() < 0.8 * images.std()
    flat = np.full((4, 16, 16, 3), 90, np.uint8)
    np.testing.assert_allclose(augment(flat, np.random.default_rng(0)), 90, atol=1e-3)


def test_crop_zooms_into_a_part_of_the_image():
    images = smooth_images(batch=32, size=32)
    views = SimCLRAugmentation(**{**ALL_OFF, "crop": True, "crop_area": (0.1, 0.1)})(images, np.random.default_rng(0))
    # A tenth of the area spans about a third of the horizontal ramp.
    spans = views[:, 0, -1, 0] - views[:, 0, 0, 0]
    assert np.all(spans < 0.5 * 255) and np.all(spans > 0.15 * 255)


def test_one_channel_images_get_brightness_and_contrast_only():
    images = random_images(channels=1)
    augment = SimCLRAugmentation(**{**ALL_OFF, "color_jitter": True, "color_jitter_prob": 1.0, "grayscale_prob": 1.0})
    views = augment(images, np.random.default_rng(0))
    assert views.shape == images.shape and not np.allclose(views, images)


def test_config_round_trip():
    augment = SimCLRAugmentation(crop_area=(0.2, 0.9), flip=False, noise_std=2)
    config = augment.get_config()
    assert config["crop_area"] == (0.2, 0.9) and config["flip"] is False and config["noise_std"] == 2.0
    assert SimCLRAugmentation(**config).get_config() == config
    assert SimCLRAugmentation.from_config(config).get_config() == config
    assert len(config) == 12


@pytest.mark.parametrize(
    "arguments, error, name",
    [
        ({"crop_area": (0.5, 0.2)}, ValueError, "crop_area"),
        ({"crop_area": (0.0, 1.0)}, ValueError, "crop_area"),
        ({"crop_aspect": (1.0,)}, TypeError, "crop_aspect"),
        ({"color_jitter_prob": 1.5}, ValueError, "color_jitter_prob"),
        ({"grayscale_prob": -0.1}, ValueError, "grayscale_prob"),
        ({"blur_sigma": (0.0, 1.0)}, ValueError, "blur_sigma"),
        ({"flip": 1}, TypeError, "flip"),
        ({"noise_std": -1}, ValueError, "noise_std"),
        ({"color_strength": "strong"}, TypeError, "color_strength"),
    ],
)
def test_invalid_arguments_are_named(arguments, error, name):
    with pytest.raises(error, match=name):
        SimCLRAugmentation(**arguments)


def test_invalid_calls_are_named():
    augment = SimCLRAugmentation()
    with pytest.raises(ValueError, match=r"Expected images of shape \(B, H, W, C\) with C 1 or 3\. "
                                         r"Received: images of shape \(2, 8, 8, 4\)"):
        augment(np.zeros((2, 8, 8, 4), np.uint8), np.random.default_rng(0))
    with pytest.raises(TypeError, match=r"Expected rng to be a numpy\.random\.Generator .* Received: rng=0"):
        augment(random_images(), 0)
