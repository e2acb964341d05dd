"""Backbones: preprocessing against Keras, construction by name, .keras files, weights files and errors."""

import logging
import os
import pickle
import urllib.error
import urllib.request

import h5py
import keras
import numpy as np
import pytest
from keras.applications import imagenet_utils

from simclr_wrap.backbones import ARCHITECTURES
from simclr_wrap.backbones import _download_failed
from simclr_wrap.backbones import PREPROCESSING
from simclr_wrap.backbones import get_preprocessing
from simclr_wrap.backbones import load_backbone
from simclr_wrap.backbones import small_cnn

SIZE = 32


def images(shape=(2, 5, 4, 3), seed=0):
    return np.random.default_rng(seed).uniform(0, 255, shape).astype("float32")


@pytest.mark.parametrize("mode", ["caffe", "tf", "torch"])
def test_preprocessing_matches_keras_imagenet_utils(mode):
    x = images()
    expected = imagenet_utils.preprocess_input(x.copy(), mode=mode)
    output = PREPROCESSING[mode](x)
    assert isinstance(output, np.ndarray) and output.dtype == np.float32
    np.testing.assert_allclose(output, expected, atol=1e-4)
    np.testing.assert_array_equal(x, images())  # the input is not changed in place


def test_unit_and_none_preprocessing():
    x = images()
    np.testing.assert_allclose(PREPROCESSING["unit"](x), x / 255, rtol=1e-6)
    np.testing.assert_array_equal(PREPROCESSING["none"](x), x)


@pytest.mark.parametrize("mode", sorted(PREPROCESSING))
def test_preprocessing_pickles_and_takes_integer_images(mode):
    function = pickle.loads(pickle.dumps(PREPROCESSING[mode]))
    uint8_images = np.arange(3 * 4 * 3, dtype="uint8").reshape(1, 3, 4, 3)
    output = function(uint8_images)
    assert output.dtype == np.float32
    np.testing.assert_allclose(output, PREPROCESSING[mode](uint8_images.astype("float32")))


def test_per_channel_preprocessing_refuses_grayscale():
    with pytest.raises(ValueError, match="caffe.*RGB"):
        PREPROCESSING["caffe"](images((1, 4, 4, 1)))


def test_get_preprocessing():
    assert get_preprocessing("TF") is PREPROCESSING["tf"]

    def custom(x):
        return x

    assert get_preprocessing(custom) is custom
    with pytest.raises(ValueError, match=r"preprocess=.*'inception'.*") as error:
        get_preprocessing("inception")
    for mode in PREPROCESSING:
        assert repr(mode) in str(error.value)


def test_architecture_table():
    required = {"vgg16", "vgg19", "resnet50", "resnet101", "resnet50v2", "mobilenet", "mobilenet_v2",
                "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0", "efficientnet_b1",
                "efficientnet_b2", "efficientnet_b3", "densenet121", "inception_v3", "xception", "convnext_tiny"}
    assert required <= set(ARCHITECTURES)
    for name, (constructor, mode) in ARCHITECTURES.items():
        assert callable(constructor) and mode in PREPROCESSING, name
    assert ARCHITECTURES["vgg16"].preprocessing == "caffe"
    assert ARCHITECTURES["densenet121"].preprocessing == "torch"


@pytest.mark.parametrize(
    "name, mode, channels",
    [("vgg16", "caffe", 512), ("MobileNet-V2", "tf", 1280), ("mobilenet_v3_small", "none", 576)],
)
def test_load_application_without_weights(name, mode, channels):
    model, preprocess_fn = load_backbone(name, input_shape=(SIZE, SIZE, 3))
    assert preprocess_fn is PREPROCESSING[mode]
    assert len(model.output_shape) == 4 and model.output_shape[-1] == channels
    # include_top=False: no classifier at the end
    assert not isinstance(model.layers[-1], keras.layers.Dense)
    assert model(preprocess_fn(images((1, SIZE, SIZE, 3)))).shape[0] == 1


def test_explicit_preprocess_overrides_the_default():
    _, preprocess_fn = load_backbone("small_cnn", input_shape=(SIZE, SIZE, 3), preprocess="caffe")
    assert preprocess_fn is PREPROCESSING["caffe"]


@pytest.mark.parametrize("input_shape, output_shape", [((32, 32, 3), (8, 8, 128)), ((16, 24, 1), (4, 6, 128))])
def test_small_cnn_shapes(input_shape, output_shape):
    model = small_cnn(input_shape)
    assert model.name == "small_cnn" and model.output_shape == (None, *output_shape)
    assert sum(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers) == 3
    loaded, preprocess_fn = load_backbone("small_cnn", input_shape=input_shape)
    assert loaded.output_shape == model.output_shape and preprocess_fn is PREPROCESSING["unit"]


def test_small_cnn_refuses_tiny_images():
    with pytest.raises(ValueError, match="at least 16x16.*input_shape"):
        small_cnn((8, 8, 3))


def test_keras_file_round_trip(tmp_path, caplog):
    keras.utils.set_random_seed(0)
    model = small_cnn((SIZE, SIZE, 3))
    path = str(tmp_path / "backbone.keras")
    model.save(path)
    with caplog.at_level(logging.INFO, logger="simclr_wrap.backbones"):
        loaded, preprocess_fn = load_backbone(path, input_shape=(64, 64, 3))
    assert preprocess_fn is PREPROCESSING["unit"]
    assert "defaults to x/255; pass --preprocess / preprocess=" in caplog.text
    assert "input_shape=(64, 64, 3) is ignored" in caplog.text
    x = preprocess_fn(images((2, SIZE, SIZE, 3)))
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def test_weights_file_round_trip(tmp_path):
    model = small_cnn((SIZE, SIZE, 3))
    path = str(tmp_path / "small.weights.h5")
    model.save_weights(path)
    loaded, _ = load_backbone("small_cnn", input_shape=(SIZE, SIZE, 3), weights=path)
    for expected, actual in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(expected, actual)


def test_unknown_name():
    with pytest.raises(ValueError, match=r"name_or_path='resnet9000'") as error:
        load_backbone("resnet9000")
    for expected in ("'vgg16'", "'mobilenet_v2'", "'small_cnn'", "or a path to a .keras file"):
        assert expected in str(error.value)


def test_missing_files(tmp_path):
    missing_weights = str(tmp_path / "nowhere.weights.h5")
    with pytest.raises(FileNotFoundError, match="nowhere.weights.h5"):
        load_backbone("small_cnn", input_shape=(SIZE, SIZE, 3), weights=missing_weights)
    with pytest.raises(FileNotFoundError, match="nowhere.keras"):
        load_backbone(str(tmp_path / "nowhere.keras"))


def test_weights_must_be_a_weights_file():
    with pytest.raises(ValueError, match=r"weights=.*imagenett"):
        load_backbone("small_cnn", input_shape=(SIZE, SIZE, 3), weights="imagenett")
    with pytest.raises(ValueError, match=r"no ImageNet weights for small_cnn"):
        load_backbone("small_cnn", input_shape=(SIZE, SIZE, 3), weights="imagenet")
    with pytest.raises(ValueError, match=r"not a weights file.*architecture's name"):
        load_backbone("vgg16_notop.weights.h5")


def test_weights_file_for_another_architecture(tmp_path):
    path = str(tmp_path / "small_cnn.weights.h5")
    small_cnn((SIZE, SIZE, 3)).save_weights(path)
    with pytest.raises(ValueError, match=r"small_cnn\.weights\.h5.*does not fit the vgg16 architecture") as error:
        load_backbone("vgg16", input_shape=(SIZE, SIZE, 3), weights=path)
    assert error.value.__cause__ is not None


def test_weights_file_that_is_not_hdf5(tmp_path):
    path = tmp_path / "broken.weights.h5"
    path.write_text("not an HDF5 file")
    with pytest.raises(ValueError, match=r"broken\.weights\.h5.*small_cnn"):
        load_backbone("small_cnn", input_shape=(SIZE, SIZE, 3), weights=str(path))


def _vgg16_weights_are_cached():
    # Where keras.utils.get_file keeps them: $KERAS_HOME, else ~/.keras, else /tmp/.keras.
    homes = [os.environ.get("KERAS_HOME"), os.path.expanduser("~/.keras"), "/tmp/.keras"]
    name = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
    return any(home and os.path.exists(os.path.join(home, "models", name)) for home in homes)


@pytest.fixture
def offline(monkeypatch):
    """No network: every URL that urllib opens fails as it does without a connection."""
    if _vgg16_weights_are_cached():
        pytest.skip("the VGG16 ImageNet weights are in the Keras cache, so nothing is downloaded")
    opened = []

    def urlopen(url, *args, **kwargs):
        opened.append(getattr(url, "full_url", url))
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return opened


def test_imagenet_download_failure_suggests_a_weights_file(offline):
    with pytest.raises(RuntimeError, match=r"ImageNet weights for vgg16 could not be downloaded \(no network\?\)") as error:
        load_backbone("VGG16", input_shape=(SIZE, SIZE, 3), weights="imagenet")
    assert 'weights="path/to/vgg16_notop.weights.h5"' in str(error.value)
    assert "URL fetch failure" in str(error.value.__cause__)  # Keras' own error is kept as the cause
    assert offline and "vgg16" in offline[0]


def test_imagenet_argument_errors_are_not_reported_as_download_failures(offline):
    with pytest.raises(ValueError, match="at least 32"):
        load_backbone("vgg16", input_shape=(16, 16, 3), weights="imagenet")
    assert offline == []  # validation comes before the download


def _raised_while_handling(cause, error):
    try:
        try:
            raise cause
        except type(cause):
            raise error
    except Exception as raised:
        return raised


@pytest.mark.parametrize("error, failed", [
    # keras.utils.get_file raises a bare Exception while handling urllib's error.
    (_raised_while_handling(urllib.error.URLError("no route"), Exception("URL fetch failure on ...")), True),
    (_raised_while_handling(urllib.error.HTTPError("u", 503, "Service Unavailable", {}, None), Exception("...")), True),
    (ConnectionResetError("connection reset by peer"), True),
    (TimeoutError("timed out"), True),
    (ValueError("Input size must be at least 32x32; Received: input_shape=(16, 16, 3)"), False),
    (Exception("an error without a network error behind it"), False),
])
def test_a_download_failure_is_told_by_the_network_error_behind_it(error, failed):
    assert _download_failed(error) is failed


@pytest.mark.parametrize("input_shape", [(SIZE, SIZE, 2), (SIZE, SIZE, 4), (SIZE, SIZE), (0, SIZE, 3)])
def test_bad_input_shape(input_shape):
    with pytest.raises(ValueError, match=r"input_shape"):
        load_backbone("small_cnn", input_shape=input_shape)


def test_applications_need_three_channels():
    with pytest.raises(ValueError, match=r"3 channels.*Received: input_shape=\(32, 32, 1\)"):
        load_backbone("vgg16", input_shape=(SIZE, SIZE, 1))


def first_conv_kernel(model):
    return next(layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)).kernel.numpy()


@pytest.mark.parametrize(
    "name, filename, mode, output_shape",
    [
        ("vgg16", "vgg16_hed_notop.weights.h5", "caffe", (2, 2, 512)),
        # the nsfwjs MobileNetV2 expects x/255, not MobileNetV2's own [-1, 1]
        ("mobilenet_v2", "mobilenet_v2_nsfwjs_notop.weights.h5", "unit", (3, 3, 1280)),
    ],
)
def test_shared_backbones_load(shared_dir, name, filename, mode, output_shape):
    path = os.path.join(shared_dir, "backbones", filename)
    model, preprocess_fn = load_backbone(name, input_shape=(80, 80, 3), weights=path, preprocess=mode)
    assert model.output_shape == (None, *output_shape) and preprocess_fn is PREPROCESSING[mode]
    with h5py.File(path, "r") as weights_file:
        # Keras 3 stores layers by their class-derived names, in order: the first Conv2D is "conv2d".
        expected = weights_file["layers/conv2d/vars/0"][()]
    np.testing.assert_array_equal(first_conv_kernel(model), expected)
    random_model, _ = load_backbone(name, input_shape=(80, 80, 3))
    assert not np.allclose(first_conv_kernel(random_model), expected)


@pytest.mark.parametrize("input_shape", [32, (SIZE, "32", 3), (SIZE, SIZE, 3.0), (True, SIZE, 3)])
def test_input_shape_of_the_wrong_type(input_shape):
    with pytest.raises(TypeError, match=r"Expected input_shape to be \(height, width, channels\).*"
                                        r"Received: input_shape="):
        load_backbone("small_cnn", input_shape=input_shape)


def test_wrong_types_are_type_errors():
    with pytest.raises(TypeError, match="Expected preprocess to be one of .* or a callable. Received: preprocess=5"):
        get_preprocessing(5)
    with pytest.raises(TypeError, match="Expected name_or_path to be a backbone name"):
        load_backbone(16)
    with pytest.raises(TypeError, match="Expected weights to be None, 'imagenet' or a path. Received: weights=1"):
        load_backbone("small_cnn", weights=1)
