"""Backbones for SimCLR: a `keras.applications` model by name, a small built-in CNN or a `.keras` file.

Each backbone comes with the preprocessing its weights expect, as a NumPy
function on float images in [0, 255] of shape (B, H, W, C).
"""

import collections
import http.client
import logging
import numbers
import os
import urllib.error
import warnings

import keras
import numpy as np

from simclr_wrap.callbacks import read_model_metadata

logger = logging.getLogger(__name__)

# ImageNet statistics, as in `keras.applications.imagenet_utils.preprocess_input`.
_CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68])
_TORCH_MEAN = np.array([0.485, 0.456, 0.406])
_TORCH_STD = np.array([0.229, 0.224, 0.225])


def _as_float(x):
    x = np.asarray(x)
    # Integer images (uint8 from a decoder) would wrap around or truncate.
    return x if np.issubdtype(x.dtype, np.floating) else x.astype("float32")


def _check_rgb(x, mode):
    if x.ndim < 1 or x.shape[-1] != 3:
        raise ValueError(
            f'Expected images with 3 channels for preprocessing "{mode}", whose per-channel ImageNet statistics '
            f"need RGB (last axis of size 3). Received: an array of shape {x.shape}"
        )


def preprocess_unit(x):
    """Scale images from [0, 255] to [0, 1].

    Args:
        x: array of images with values in [0, 255].

    Returns:
        A float array of the same shape (float32 for integer input, else x's dtype).

    Example:
    >>> preprocess_unit(np.full((1, 2, 2, 3), 255.0, "float32")).max()
    np.float32(1.0)
    """
    x = _as_float(x)
    return x / x.dtype.type(255)


def preprocess_caffe(x):
    """Convert RGB images to BGR and subtract the ImageNet mean, without scaling (VGG, ResNet).

    Args:
        x: array of RGB images (last axis 3) with values in [0, 255].

    Returns:
        A float array of the same shape.

    Example:
    >>> preprocess_caffe(np.zeros((1, 1, 1, 3), "float32"))[0, 0, 0]
    array([-103.939, -116.779, -123.68 ], dtype=float32)
    """
    x = _as_float(x)
    _check_rgb(x, "caffe")
    return x[..., ::-1] - _CAFFE_MEAN_BGR.astype(x.dtype)


def preprocess_tf(x):
    """Scale images from [0, 255] to [-1, 1] (MobileNet, Inception, Xception, ResNetV2).

    Args:
        x: array of images with values in [0, 255].

    Returns:
        A float array of the same shape.

    Example:
    >>> preprocess_tf(np.array([0.0, 255.0], "float32"))
    array([-1.,  1.], dtype=float32)
    """
    x = _as_float(x)
    return x / x.dtype.type(127.5) - x.dtype.type(1)


def preprocess_torch(x):
    """Scale images to [0, 1], then standardise each channel with ImageNet statistics (DenseNet).

    Args:
        x: array of RGB images (last axis 3) with values in [0, 255].

    Returns:
        A float array of the same shape.

    Example:
    >>> preprocess_torch(np.zeros((1, 1, 1, 3), "float32"))[0, 0, 0].round(4)
    array([-2.1179, -2.0357, -1.8044], dtype=float32)
    """
    x = _as_float(x)
    _check_rgb(x, "torch")
    return (x / x.dtype.type(255) - _TORCH_MEAN.astype(x.dtype)) / _TORCH_STD.astype(x.dtype)


def preprocess_none(x):
    """Return images unchanged, for models that rescale inside (EfficientNet, ConvNeXt, MobileNetV3).

    Args:
        x: array of images with values in [0, 255].

    Returns:
        `x` as a float array.

    Example:
    >>> preprocess_none(np.array([0.0, 255.0], "float32"))
    array([  0., 255.], dtype=float32)
    """
    return _as_float(x)


# Module-level functions rather than lambdas so that they pickle, which a
# `keras.utils.PyDataset` with `use_multiprocessing=True` needs.
PREPROCESSING = {
    "unit": preprocess_unit,
    "caffe": preprocess_caffe,
    "tf": preprocess_tf,
    "torch": preprocess_torch,
    "none": preprocess_none,
}


def preprocessing_name(preprocess):
    """The mode name of a preprocessing given by name or as one of `PREPROCESSING`'s functions.

    A function of the user's own is named by its `__name__`.

    Example:
    >>> preprocessing_name(preprocess_caffe), preprocessing_name("unit")
    ('caffe', 'unit')
    """
    if isinstance(preprocess, str):
        return preprocess
    for mode, function in PREPROCESSING.items():
        if function is preprocess:
            return mode
    return getattr(preprocess, "__name__", repr(preprocess))


def get_preprocessing(mode):
    """Return the preprocessing function for a mode name, or a callable as is.

    Args:
        mode: one of the names in `PREPROCESSING` ("unit", "caffe", "tf",
            "torch", "none"), or a callable taking a float array of images in
            [0, 255] of shape (B, H, W, C).

    Returns:
        A callable from NumPy arrays to NumPy arrays.

    Example:
    >>> get_preprocessing("tf")(np.array([255.0]))
    array([1.])
    """
    if callable(mode):
        return mode
    if isinstance(mode, str) and mode.lower() in PREPROCESSING:
        return PREPROCESSING[mode.lower()]
    error = ValueError if isinstance(mode, str) else TypeError
    raise error(f"Expected preprocess to be one of {list(PREPROCESSING)} or a callable. Received: preprocess={mode!r}")


Architecture = collections.namedtuple("Architecture", ["constructor", "preprocessing"])
Architecture.__doc__ = "A `keras.applications` constructor and the preprocessing mode its ImageNet weights expect."

# The preprocessing modes are those of each family's `preprocess_input`; the
# families that rescale inside the model (EfficientNet, EfficientNetV2,
# ConvNeXt, MobileNetV3) take [0, 255] as is.
ARCHITECTURES = {
    "vgg16": Architecture(keras.applications.VGG16, "caffe"),
    "vgg19": Architecture(keras.applications.VGG19, "caffe"),
    "resnet50": Architecture(keras.applications.ResNet50, "caffe"),
    "resnet101": Architecture(keras.applications.ResNet101, "caffe"),
    "resnet152": Architecture(keras.applications.ResNet152, "caffe"),
    "resnet50v2": Architecture(keras.applications.ResNet50V2, "tf"),
    "resnet101v2": Architecture(keras.applications.ResNet101V2, "tf"),
    "resnet152v2": Architecture(keras.applications.ResNet152V2, "tf"),
    "mobilenet": Architecture(keras.applications.MobileNet, "tf"),
    "mobilenet_v2": Architecture(keras.applications.MobileNetV2, "tf"),
    "mobilenet_v3_small": Architecture(keras.applications.MobileNetV3Small, "none"),
    "mobilenet_v3_large": Architecture(keras.applications.MobileNetV3Large, "none"),
    "efficientnet_b0": Architecture(keras.applications.EfficientNetB0, "none"),
    "efficientnet_b1": Architecture(keras.applications.EfficientNetB1, "none"),
    "efficientnet_b2": Architecture(keras.applications.EfficientNetB2, "none"),
    "efficientnet_b3": Architecture(keras.applications.EfficientNetB3, "none"),
    "efficientnet_b4": Architecture(keras.applications.EfficientNetB4, "none"),
    "efficientnet_b5": Architecture(keras.applications.EfficientNetB5, "none"),
    "efficientnet_b6": Architecture(keras.applications.EfficientNetB6, "none"),
    "efficientnet_b7": Architecture(keras.applications.EfficientNetB7, "none"),
    "efficientnet_v2_b0": Architecture(keras.applications.EfficientNetV2B0, "none"),
    "efficientnet_v2_b1": Architecture(keras.applications.EfficientNetV2B1, "none"),
    "efficientnet_v2_b2": Architecture(keras.applications.EfficientNetV2B2, "none"),
    "efficientnet_v2_b3": Architecture(keras.applications.EfficientNetV2B3, "none"),
    "efficientnet_v2_s": Architecture(keras.applications.EfficientNetV2S, "none"),
    "densenet121": Architecture(keras.applications.DenseNet121, "torch"),
    "densenet169": Architecture(keras.applications.DenseNet169, "torch"),
    "densenet201": Architecture(keras.applications.DenseNet201, "torch"),
    "inception_v3": Architecture(keras.applications.InceptionV3, "tf"),
    "inception_resnet_v2": Architecture(keras.applications.InceptionResNetV2, "tf"),
    "xception": Architecture(keras.applications.Xception, "tf"),
    "nasnet_mobile": Architecture(keras.applications.NASNetMobile, "tf"),
    "convnext_tiny": Architecture(keras.applications.ConvNeXtTiny, "none"),
    "convnext_small": Architecture(keras.applications.ConvNeXtSmall, "none"),
    "convnext_base": Architecture(keras.applications.ConvNeXtBase, "none"),
}

SMALL_CNN = "small_cnn"
_SMALL_CNN_FILTERS = (32, 64, 128)
_SMALL_CNN_MIN_SIZE = 16
_USER_MODEL_PREPROCESSING = "unit"
_WEIGHTS_SUFFIXES = (".weights.h5", ".h5")


def _validate_input_shape(input_shape):
    """`input_shape` as a tuple; TypeError for a non-sequence or non-integer sizes, ValueError for bad values."""
    expected = (
        "Expected input_shape to be (height, width, channels): sizes >= 1 (or None for any) and 1 (grayscale) "
        f"or 3 (RGB) channels. Received: input_shape={input_shape!r}"
    )
    try:
        shape = tuple(input_shape)
    except TypeError:
        raise TypeError(expected) from None
    if any(size is not None and (isinstance(size, bool) or not isinstance(size, numbers.Integral)) for size in shape):
        raise TypeError(expected)
    if len(shape) != 3 or any(size is not None and size < 1 for size in shape[:2]) or shape[2] not in (1, 3):
        raise ValueError(expected)
    return tuple(None if size is None else int(size) for size in shape)


def small_cnn(input_shape=(80, 80, 3)):
    """Build a small functional CNN, a backbone that trains in minutes on a CPU.

    Three convolutional blocks (32, 64 and 128 filters of 3x3, each followed
    by BatchNormalization and ReLU), with 2x2 max pooling after the first
    two, so the output is a (H/4, W/4, 128) feature map.

    Args:
        input_shape: (height, width, channels), sizes at least 16 (or None
            for any) and 1 or 3 channels.

    Returns:
        A `keras.Model` named "small_cnn", randomly initialised.

    Example:
    >>> small_cnn((32, 32, 3)).output_shape
    (None, 8, 8, 128)
    """
    input_shape = _validate_input_shape(input_shape)
    if any(size is not None and size < _SMALL_CNN_MIN_SIZE for size in input_shape[:2]):
        raise ValueError(
            f"Expected input_shape to be at least {_SMALL_CNN_MIN_SIZE}x{_SMALL_CNN_MIN_SIZE} for small_cnn. "
            f"Received: input_shape={input_shape!r}"
        )
    inputs = keras.Input(input_shape, name="image")
    x = inputs
    for block, filters in enumerate(_SMALL_CNN_FILTERS, start=1):
        # No bias: the BatchNormalization that follows has its own offset.
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"block{block}_conv")(x)
        x = keras.layers.BatchNormalization(name=f"block{block}_bn")(x)
        x = keras.layers.Activation("relu", name=f"block{block}_relu")(x)
        if block < len(_SMALL_CNN_FILTERS):
            x = keras.layers.MaxPooling2D(name=f"block{block}_pool")(x)
    return keras.Model(inputs, x, name=SMALL_CNN)


def _load_weights_file(model, weights, architecture):
    """Load a `.weights.h5` / `.h5` file into `model`, with errors that name the file and architecture."""
    path = os.fspath(weights)
    if not path.endswith(_WEIGHTS_SUFFIXES):
        raise ValueError(
            f"Expected weights to be None, 'imagenet' (keras.applications only) or a path to a "
            f"{' or '.join(_WEIGHTS_SUFFIXES)} file. Received: weights={weights!r}"
        )
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file not found: weights={path!r}")
    try:
        # Keras warns about each mismatched container before raising; the
        # error below says it once, so the warnings only matter on success.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model.load_weights(path)
    except (ValueError, KeyError, OSError, TypeError) as error:
        # Keras lists every layer that failed; its first line says enough here.
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(
            f"the weights file {path!r} does not fit the {architecture} architecture with "
            f"input_shape={model.input_shape[1:]}: {first_line}"
        ) from error
    for warning in caught:
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    logger.info("loaded weights %s into %s", path, architecture)


# What a failed download of ImageNet weights raises inside keras.applications:
# `keras.utils.get_file` turns urllib's URLError (HTTPError included) into a
# bare Exception raised while handling it, so the URLError is its
# `__context__`; a connection that drops in the middle of the transfer raises
# the socket's or http.client's own error. Argument errors of the
# constructors are ValueErrors with none of these in their chain.
_NETWORK_ERRORS = (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError)


def _download_failed(error):
    """Whether `error`, or an exception it was raised from or while handling, is a network error."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, _NETWORK_ERRORS):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


def _build_application(name, input_shape, weights):
    constructor = ARCHITECTURES[name].constructor
    if input_shape[2] != 3:
        raise ValueError(
            f"Expected input_shape to have 3 channels (RGB) for {name!r}, as all keras.applications models (use "
            f"{SMALL_CNN!r} or a .keras model for grayscale, or convert the images to RGB). "
            f"Received: input_shape={input_shape!r}"
        )
    if weights is None or weights == "imagenet":
        try:
            return constructor(include_top=False, weights=weights, input_shape=input_shape)
        except Exception as error:
            if weights != "imagenet" or not _download_failed(error):
                raise
            raise RuntimeError(
                f"the ImageNet weights for {name} could not be downloaded (no network?); "
                f'pass weights="path/to/{name}_notop.weights.h5" instead'
            ) from error
    model = constructor(include_top=False, weights=None, input_shape=input_shape)
    _load_weights_file(model, weights, name)
    return model


def _load_keras_file(path, input_shape, weights):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no Keras model file at name_or_path={path!r}")
    if weights == "imagenet":
        raise ValueError(
            f"Expected weights to be None or a weights file for the model file {path!r} (ImageNet weights exist "
            "for keras.applications names only). Received: weights='imagenet'"
        )
    model = keras.models.load_model(path, compile=False)
    saved_shape = model.input_shape[1:] if isinstance(model.input_shape, tuple) else model.input_shape
    if tuple(saved_shape) != input_shape:
        logger.info(
            "input_shape=%s is ignored for %s: the model's own input shape is %s", input_shape, path, saved_shape
        )
    if weights is not None:
        _load_weights_file(model, weights, path)
    return model


def _normalise_name(name):
    return name.strip().lower().replace("-", "_")


def load_backbone(name_or_path, input_shape=(80, 80, 3), weights=None, preprocess="auto"):
    """Build or load a backbone without its classification top, with its preprocessing.

    Args:
        name_or_path: one of:
            - a name in `ARCHITECTURES` (case-insensitive, "-" same as "_"),
              built by `keras.applications` with `include_top=False`;
            - "small_cnn", the built-in `small_cnn`;
            - a path to a `.keras` file, loaded with
              `keras.models.load_model(path, compile=False)`.
        input_shape: (height, width, channels) with 1 or 3 channels
            (`keras.applications` models need 3). Ignored for a `.keras`
            file, which has its own.
        weights: None (random initialisation, or the file's own weights for a
            `.keras` file), "imagenet" (`keras.applications` only; needs the
            network or Keras' cache) or a path to a `.weights.h5` / `.h5`
            file for this architecture.
        preprocess: "auto" (the mode of the architecture's ImageNet weights;
            "unit" for "small_cnn" and `.keras` files), a mode name of
            `PREPROCESSING` or a callable. Weights from elsewhere may expect
            another mode than the architecture's ImageNet one.

    Returns:
        A tuple `(model, preprocess_fn)`: the `keras.Model` and the function
        to apply to float images in [0, 255] before feeding them to it.

    Raises:
        TypeError: an argument of the wrong type.
        ValueError: unknown name, bad input_shape or preprocess, or a weights
            file that does not fit the architecture.
        FileNotFoundError: a missing `.keras` or weights file.
        RuntimeError: the ImageNet weights could not be downloaded.

    Example:
    >>> model, preprocess_fn = load_backbone("small_cnn", input_shape=(32, 32, 3))
    >>> model(preprocess_fn(np.full((2, 32, 32, 3), 128.0, "float32"))).shape
    TensorShape([2, 8, 8, 128])
    """
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(
            f"Expected name_or_path to be a backbone name or a path to a .keras file. "
            f"Received: name_or_path={name_or_path!r}"
        )
    if not (weights is None or isinstance(weights, (str, os.PathLike))):
        raise TypeError(f"Expected weights to be None, 'imagenet' or a path. Received: weights={weights!r}")
    input_shape = _validate_input_shape(input_shape)
    # Checked before any (slow) construction or download.
    preprocess_fn = None if preprocess == "auto" else get_preprocessing(preprocess)

    path = os.fspath(name_or_path)
    name = _normalise_name(path)
    if path.endswith(".keras"):
        model = _load_keras_file(path, input_shape, weights)
        default_mode = _USER_MODEL_PREPROCESSING
        saved_mode = (read_model_metadata(path) or {}).get("preprocess")
        if saved_mode in PREPROCESSING:
            default_mode = saved_mode  # the preprocessing the backbone was adapted with
            if preprocess_fn is not None and preprocess_fn is not PREPROCESSING[saved_mode]:
                logger.warning("%s was adapted with preprocess=%r; preprocess=%r overrides it",
                               path, saved_mode, preprocess)
        elif preprocess_fn is None:
            logger.warning(
                "preprocessing for a user model defaults to x/255; pass --preprocess / preprocess=... "
                "(one of %s or a callable) if %s expects another",
                list(PREPROCESSING),
                path,
            )
    elif path.endswith(_WEIGHTS_SUFFIXES):
        raise ValueError(
            f"Expected name_or_path to be a backbone name or a .keras model file, not a weights file, which holds "
            f"no architecture (pass the architecture's name and weights={path!r}, or save the whole model as "
            f".keras). Received: name_or_path={path!r}"
        )
    elif name == SMALL_CNN:
        if weights == "imagenet":
            raise ValueError(
                f"Expected weights to be None or a path for {SMALL_CNN} (there are no ImageNet weights for "
                f"{SMALL_CNN}). Received: weights='imagenet'"
            )
        model = small_cnn(input_shape)
        default_mode = _USER_MODEL_PREPROCESSING
        if weights is not None:
            _load_weights_file(model, weights, SMALL_CNN)
    elif name in ARCHITECTURES:
        model = _build_application(name, input_shape, weights)
        default_mode = ARCHITECTURES[name].preprocessing
    else:
        raise ValueError(
            f"Expected name_or_path to be one of {sorted([*ARCHITECTURES, SMALL_CNN])} or a path to a .keras "
            f"file. Received: name_or_path={name_or_path!r}"
        )

    if preprocess_fn is None:
        preprocess_fn = PREPROCESSING[default_mode]
    logger.info(
        "backbone %s: output %s, preprocessing %s",
        model.name,
        model.output_shape,
        getattr(preprocess_fn, "__name__", repr(preprocess_fn)),
    )
    return model, preprocess_fn


class Backbone:
    """Where a backbone comes from and how its images are fed: one object for every entry point.

    `pretrain`, the benchmark and `embed` take a `Backbone` (or anything
    `Backbone.of` turns into one), so that its source, image size, weights
    and preprocessing are resolved in one place.

    Args:
        source: a `load_backbone` name, a `.keras` file (a str or a
            `pathlib.Path`) or a `keras.Model`.
        input_shape: (height, width, channels) to build a named architecture
            at; None for `load_backbone`'s default. A `.keras` file or a model
            keeps its own.
        weights: as in `load_backbone` (None for a model given directly).
        preprocess: as in `load_backbone`; "auto" for a model given
            directly is "unit" (x / 255).

    Example:
    >>> backbone = Backbone("small_cnn", input_shape=(32, 32, 3))
    >>> model, preprocess_fn = backbone.load()
    >>> model.input_shape, backbone.get_config()["preprocess"]
    ((None, 32, 32, 3), 'auto')
    """

    def __init__(self, source, *, input_shape=None, weights=None, preprocess="auto"):
        if isinstance(source, os.PathLike):
            source = os.fspath(source)
        if not isinstance(source, (str, keras.Model)):
            raise TypeError(
                "Expected backbone to be a backbone name, a .keras file or a keras.Model. "
                f"Received: backbone={source!r}"
            )
        if isinstance(source, keras.Model) and weights is not None:
            raise ValueError(f"weights apply to a named backbone or a .keras file, not to the model {source.name!r}. "
                             f"Received: weights={weights!r}; load them into the model first")
        self.source = source
        self.input_shape = None if input_shape is None else _validate_input_shape(input_shape)
        self.weights = None if weights is None else os.fspath(weights)
        get_preprocessing("unit" if preprocess == "auto" else preprocess)  # fails now on a bad mode
        self.preprocess = preprocess

    @classmethod
    def of(cls, value):
        """`value` as a `Backbone`: a `Backbone`, its config dict, a name, a path or a model.

        Example:
        >>> Backbone.of("small_cnn").source
        'small_cnn'
        """
        if isinstance(value, cls):
            return value
        if isinstance(value, dict):
            return cls.from_config(value)
        return cls(value)

    def get_config(self):
        """The spec as JSON: a model given directly is named by its `name`."""
        return {
            "source": self.source.name if isinstance(self.source, keras.Model) else self.source,
            "input_shape": None if self.input_shape is None else list(self.input_shape),
            "weights": self.weights,
            "preprocess": preprocessing_name(self.preprocess),
        }

    @classmethod
    def from_config(cls, config):
        return cls(config["source"], input_shape=config.get("input_shape"), weights=config.get("weights"),
                   preprocess=config.get("preprocess", "auto"))

    @property
    def name(self):
        """The model's name for a model, else the name or path given."""
        return self.source.name if isinstance(self.source, keras.Model) else self.source

    def load(self, strategy=None):
        """Return `(model, preprocess_fn)`; a named backbone is built in `strategy`'s scope.

        A model given directly is returned as it is (not copied).
        """
        if isinstance(self.source, keras.Model):
            return self.source, get_preprocessing(_USER_MODEL_PREPROCESSING if self.preprocess == "auto"
                                                  else self.preprocess)
        from simclr_wrap.distribute import strategy_scope

        shape = {} if self.input_shape is None else {"input_shape": self.input_shape}
        with strategy_scope(strategy):
            return load_backbone(self.source, weights=self.weights, preprocess=self.preprocess, **shape)
