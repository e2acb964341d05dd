"""Views made in the training step (TensorFlow ops) are the NumPy path's views, seeded alike."""

import keras
import numpy as np
import pytest

from data_generators import DataGeneratorSimCLR, SimCLRAugmentation
from data_generators.augment import VIEW_PARAMETERS
from simclr_wrap import SimCLR
from simclr_wrap.backbones import PREPROCESSING, preprocess_caffe
from simclr_wrap.views import AugmentedViews, preprocessing_as_affine
from tests.conftest import TINY_SIZE, make_tiny_backbone

CONFIGS = [
    {},
    {"crop": False, "blur": False, "flip": False},
    {"color_strength": 1.0, "grayscale_prob": 0.5, "blur_prob": 1.0, "crop_area": (0.2, 0.5)},
    {"color_jitter": False, "crop_aspect": (0.2, 5.0)},
]


def both_views(augmentation, images, seed):
    """The NumPy views a and b of one batch, and the parameters they were made from."""
    rng = np.random.default_rng(seed)
    parameters = np.stack([augmentation.draw(images.shape, rng) for _ in range(2)], axis=1)
    numpy_views = np.concatenate([augmentation.apply(images, parameters[:, view]) for view in range(2)])
    return numpy_views, parameters


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("shape", [(6, 20, 24, 3), (5, 17, 17, 1), (4, 80, 80, 3)])
def test_the_layer_applies_drawn_parameters_as_numpy_does(config, shape):
    images = np.random.default_rng(0).integers(0, 256, shape).astype("float32")
    augmentation = SimCLRAugmentation(**config)
    numpy_views, parameters = both_views(augmentation, images, seed=1)
    views = keras.ops.convert_to_numpy(AugmentedViews(augmentation)(images, parameters))
    np.testing.assert_allclose(views, numpy_views, atol=2e-3)  # of 255
    assert not np.allclose(views[: len(images)], images) or config.get("crop") is False


def test_parameters_are_drawn_as_the_numpy_call_draws_them():
    images = np.random.default_rng(0).integers(0, 256, (8, 24, 24, 3)).astype("uint8")
    augmentation = SimCLRAugmentation()
    rng = np.random.default_rng(3)
    drawn = augmentation.apply(images, augmentation.draw(images.shape, rng))
    np.testing.assert_array_equal(drawn, augmentation(images, np.random.default_rng(3)))
    columns = augmentation.draw((4000, 24, 24, 3), np.random.default_rng(4))
    column = {name: columns[:, index] for index, name in enumerate(VIEW_PARAMETERS)}
    area = column["box_height"] * column["box_width"] / 24**2
    assert 0.06 <= area.min() and area.max() <= 1.0 and 0.45 < area.mean() < 0.6  # boxes rounded to pixels
    aspect = column["box_width"] / column["box_height"]
    assert 0.6 < aspect.min() and aspect.max() < 1.6 and abs(np.log(aspect).mean()) < 0.03  # log-uniform in [3/4, 4/3]
    assert 0.47 < column["flip"].mean() < 0.53 and 0.17 < column["gray"].mean() < 0.23
    assert 0.47 < (column["blur_sigma"] > 0).mean() < 0.53
    assert 0.77 < (column["brightness"] != 1).mean() < 0.83  # colour jitter of probability 0.8


def test_noise_is_seeded_per_image_and_of_its_std():
    augmentation = SimCLRAugmentation(crop=False, flip=False, color_jitter=False, grayscale_prob=0, blur=False,
                                      noise_std=4.0)
    images = np.full((6, 32, 32, 3), 128.0, "float32")
    parameters = np.stack([augmentation.draw(images.shape, np.random.default_rng(seed), noise_seed=True)
                           for seed in (0, 1)], axis=1)
    layer = AugmentedViews(augmentation)
    views = keras.ops.convert_to_numpy(layer(images, parameters))
    assert abs(views.std() - 4.0) < 0.2 and abs(views.mean() - 128.0) < 0.2
    # A replica given half the batch makes the same views of its images.
    half = keras.ops.convert_to_numpy(layer(images[3:], parameters[3:]))
    np.testing.assert_allclose(half[:3], views[3:6], atol=1e-5)


@pytest.mark.parametrize("mode", sorted(PREPROCESSING))
def test_each_preprocessing_is_an_affine_map_of_the_channels(mode):
    matrix, shift = preprocessing_as_affine(PREPROCESSING[mode], 3)
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 5, 5, 3)).astype("float32")
    np.testing.assert_allclose(pixels @ matrix + shift, PREPROCESSING[mode](pixels), rtol=1e-5, atol=1e-4)


def test_a_preprocessing_that_mixes_pixels_is_refused():
    with pytest.raises(ValueError, match="not an affine map.*augment_on='host'"):
        preprocessing_as_affine(lambda x: x - x.mean(), 3)


def test_the_generator_s_parameters_make_its_own_views_in_the_model():
    images = np.random.default_rng(0).integers(0, 256, (12, TINY_SIZE, TINY_SIZE, 3)).astype("uint8")
    augmentation = SimCLRAugmentation(color_strength=1.0)
    options = dict(batch_size=4, width=TINY_SIZE, height=TINY_SIZE, augmentation=augmentation, seed=7)
    host = DataGeneratorSimCLR((images, None), preprocess_input=preprocess_caffe, **options)
    in_model = DataGeneratorSimCLR((images, None), augment_in_model=True, **options)
    layer = AugmentedViews(augmentation, *preprocessing_as_affine(preprocess_caffe, 3))
    for epoch in range(2):
        for index in (0, 2):
            (view_a, view_b), target = host[index]
            (raw, parameters), in_model_target = in_model[index]
            assert parameters.shape == (4, 2, len(VIEW_PARAMETERS))
            views = keras.ops.convert_to_numpy(layer(raw, parameters))
            np.testing.assert_allclose(views, np.concatenate([view_a, view_b]), atol=2e-3)
            np.testing.assert_array_equal(target, in_model_target)
        host.on_epoch_end()
        in_model.on_epoch_end()
    with pytest.raises(ValueError, match="preprocess_input=None with augment_in_model=True"):
        DataGeneratorSimCLR((images, None), augment_in_model=True, preprocess_input=preprocess_caffe,
                            **{**options, "augmentation": None})


def test_simclr_with_views_in_the_step_computes_the_host_path_s_loss_and_trains(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (16, TINY_SIZE, TINY_SIZE, 3)).astype("uint8")
    augmentation = SimCLRAugmentation()
    options = dict(batch_size=8, width=TINY_SIZE, height=TINY_SIZE, augmentation=augmentation, seed=3)
    host_data = DataGeneratorSimCLR((images, None), preprocess_input=PREPROCESSING["tf"], **options)
    step_data = DataGeneratorSimCLR((images, None), augment_in_model=True, **options)
    settings = dict(batch_size=8, feat_dims_ph=(16, 8), seed=0, save_path=None, temperature=0.2)
    host = SimCLR(make_tiny_backbone(), **settings)
    in_step = SimCLR(make_tiny_backbone(), augmentation=augmentation, preprocess="tf", **settings)
    assert [tensor.name for tensor in in_step.SimCLR_model.inputs] == ["images", "view_parameters"]
    in_step.SimCLR_model.set_weights(host.SimCLR_model.get_weights())
    host_loss = host.SimCLR_model.evaluate(host_data, verbose=0, return_dict=True)["nt_xent"]
    step_loss = in_step.SimCLR_model.evaluate(step_data, verbose=0, return_dict=True)["nt_xent"]
    assert step_loss == pytest.approx(host_loss, rel=1e-4)
    history = in_step.train(step_data, step_data, epochs=2, verbose=0)
    assert len(history.epoch) == 2 and np.isfinite(history.history["val_nt_xent"]).all()
    config = in_step.get_config()
    assert config["augmentation"] == augmentation.get_config() and config["preprocess"] == "tf"
    assert SimCLR.from_config(config, make_tiny_backbone()).get_config() == config
    path = in_step.save(tmp_path / "simclr.keras")
    reloaded = keras.models.load_model(path, compile=False)
    (raw, parameters), _ = step_data[0]
    np.testing.assert_allclose(reloaded.predict([raw, parameters], verbose=0),
                               in_step.SimCLR_model.predict([raw, parameters], verbose=0), atol=1e-5)


def test_data_and_model_that_disagree_on_where_the_views_are_made_are_refused():
    images = np.random.default_rng(0).integers(0, 256, (16, TINY_SIZE, TINY_SIZE, 3)).astype("uint8")
    options = dict(batch_size=8, width=TINY_SIZE, height=TINY_SIZE, seed=3)
    settings = dict(batch_size=8, feat_dims_ph=(16, 8), save_path=None)
    in_step = SimCLR(make_tiny_backbone(), augmentation={}, **settings)
    with pytest.raises(ValueError, match="augment_in_model=True"):
        in_step.train(DataGeneratorSimCLR((images, None), **options), epochs=1, verbose=0)
    other = DataGeneratorSimCLR((images, None), augment_in_model=True,
                                augmentation=SimCLRAugmentation(blur=False), **options)
    with pytest.raises(ValueError, match="give both the same augmentation"):
        in_step.train(other, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="Expected preprocess=None without augmentation"):
        SimCLR(make_tiny_backbone(), preprocess="tf", **settings)
    with pytest.raises(ValueError, match="Expected preprocess to be one of"):
        SimCLR(make_tiny_backbone(), augmentation={}, preprocess="inception", **settings)
