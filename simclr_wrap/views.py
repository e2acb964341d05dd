"""SimCLR's augmentations as TensorFlow ops: the two views made inside the training step.

The random parameters of a view are a dozen numbers per image, drawn on the
host by `SimCLRAugmentation.draw` from the generator's (seed, epoch, batch)
stream; the pixel work (crop and resample, flip, colour jitter, grayscale,
blur, noise, the backbone's preprocessing) runs here, in Keras ops, on the
device that runs the step. The views are then those of the NumPy path for the same
seed, whatever the device or the number of replicas a batch is split over,
and the NumPy path stays the reference (see tests/simclr_wrap/test_views.py).
"""

import math

import keras
import numpy as np
from keras import ops

from data_generators.augment import (LUMA_WEIGHTS, RGB_TO_YIQ, VIEW_PARAMETERS, YIQ_TO_RGB, SimCLRAugmentation,
                                     blur_radius)

_COLUMN = {name: index for index, name in enumerate(VIEW_PARAMETERS)}


def preprocessing_as_affine(preprocess, channels):
    """A backbone's preprocessing as `x @ matrix + shift` over each pixel's channels.

    Every preprocessing of `simclr_wrap.backbones.PREPROCESSING` is of this
    form (a channel order, a scale and a shift per channel); it is measured
    from the function itself, so a user's own affine preprocessing works too.

    Args:
        preprocess: a callable from float32 (B, H, W, C) images in [0, 255]
            to arrays of the same shape, or None for none.
        channels: C.

    Returns:
        `(matrix, shift)`: float64 arrays (C, C) and (C,).

    Raises:
        ValueError: `preprocess` is not affine per pixel (it mixes pixels or
            is not linear); such a preprocessing needs the views made on the
            host.

    Example:
    >>> from simclr_wrap.backbones import preprocess_caffe
    >>> matrix, shift = preprocessing_as_affine(preprocess_caffe, 3)
    >>> matrix[0].round(6).tolist(), shift.round(3).tolist()
    ([0.0, 0.0, 1.0], [-103.939, -116.779, -123.68])
    """
    if preprocess is None:
        return np.eye(channels), np.zeros(channels)

    def run(pixels):
        return np.asarray(preprocess(np.asarray(pixels, np.float32)), np.float64)

    shift = run(np.zeros((1, 1, 1, channels)))[0, 0, 0]
    matrix = np.stack([run(255.0 * np.eye(channels)[None, None, None, c])[0, 0, 0] - shift
                       for c in range(channels)]) / 255.0
    probe = np.random.default_rng(0).uniform(0, 255, (2, 3, 3, channels)).astype(np.float32)
    expected = run(probe)
    if expected.shape != probe.shape or not np.allclose(probe @ matrix + shift, expected, rtol=1e-4, atol=1e-3):
        name = getattr(preprocess, "__name__", repr(preprocess))
        raise ValueError(
            f"the preprocessing {name} is not an affine map of each pixel's channels, so the views cannot be "
            "made inside the training step; make them on the host (augment_on='host')"
        )
    return matrix, shift


@keras.saving.register_keras_serializable(package="simclr_wrap")
class AugmentedViews(keras.layers.Layer):
    """The two augmented, preprocessed views of every image, from parameters drawn on the host.

    Inputs: `images`, float (B, H, W, C) in [0, 255], and `parameters`,
    float32 (B, 2, len(VIEW_PARAMETERS)): `SimCLRAugmentation.draw`'s rows
    for view a and view b. Output: the (2·B, H, W, C) views, all view a's
    first, then the preprocessing: what the backbone takes. Computed in
    float32 whatever the dtype policy.

    Args:
        augmentation: the `SimCLRAugmentation` (or its config) whose
            parameters are given: which steps run, and the noise's std.
        preprocess_matrix, preprocess_shift: the backbone's preprocessing
            as `x @ matrix + shift` (see `preprocessing_as_affine`); None
            for none.

    Example:
    >>> layer = AugmentedViews(SimCLRAugmentation(blur=False))
    >>> rng = np.random.default_rng(0)
    >>> images = rng.uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    >>> parameters = np.stack([SimCLRAugmentation(blur=False).draw(images.shape, rng) for _ in range(2)], axis=1)
    >>> tuple(layer(images, parameters).shape)
    (4, 8, 8, 3)
    """

    def __init__(self, augmentation, preprocess_matrix=None, preprocess_shift=None, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if isinstance(augmentation, dict):
            augmentation = SimCLRAugmentation.from_config(augmentation)
        self.augmentation = augmentation
        self.preprocess_matrix = None if preprocess_matrix is None else np.asarray(preprocess_matrix, np.float64)
        self.preprocess_shift = None if preprocess_shift is None else np.asarray(preprocess_shift, np.float64)

    def get_config(self):
        config = super().get_config()
        config.update(
            augmentation=self.augmentation.get_config(),
            preprocess_matrix=None if self.preprocess_matrix is None else self.preprocess_matrix.tolist(),
            preprocess_shift=None if self.preprocess_shift is None else self.preprocess_shift.tolist(),
        )
        return config

    def call(self, images, parameters):
        images = ops.cast(images, "float32")
        parameters = ops.cast(parameters, "float32")
        views = ops.concatenate([self.view(images, parameters[:, index]) for index in range(2)], axis=0)
        if self.preprocess_matrix is not None:
            views = ops.matmul(views, ops.convert_to_tensor(self.preprocess_matrix, "float32"))
            views = views + ops.convert_to_tensor(self.preprocess_shift, "float32")
        return views

    def compute_output_shape(self, images_shape, parameters_shape):
        batch = None if images_shape[0] is None else 2 * images_shape[0]
        return (batch, *images_shape[1:])

    def view(self, images, parameters):
        """One view of every image, in [0, 255]: `SimCLRAugmentation.apply` in Keras ops."""
        augmentation = self.augmentation

        def column(name):
            return parameters[:, _COLUMN[name]]

        views = images
        if augmentation.crop:
            views = _resized_crop(views, column("top"), column("left"), column("box_height"), column("box_width"))
        views = ops.where(_per_image(column("flip")) > 0.5, ops.flip(views, axis=2), views)
        if augmentation.color_jitter:
            views = _color_jitter(views, column("brightness"), column("contrast"), column("saturation"),
                                  column("hue_turns"))
        if views.shape[-1] == 3:
            views = ops.where(_per_image(column("gray")) > 0.5, _luma(views) + ops.zeros_like(views), views)
        if augmentation.blur:
            views = _blur(views, column("blur_sigma"))
        if augmentation.noise_std > 0:
            views = views + augmentation.noise_std * _noise(views, column("noise_seed"))
        return ops.clip(views, 0.0, 255.0)


def _per_image(values):
    return values[:, None, None, None]


def _luma(images):
    """The (B, H, W, 1) luma of RGB images; one-channel images are their own."""
    if images.shape[-1] == 1:
        return images
    return ops.matmul(images, ops.convert_to_tensor(LUMA_WEIGHTS[:, None], "float32"))


def _sample_positions(start, box_size, size):
    """As the NumPy path's: pixel centres mapped into each box."""
    centres = ops.arange(size, dtype="float32") + 0.5
    positions = start[:, None] + centres[None, :] * (box_size[:, None] / size) - 0.5
    return ops.clip(positions, 0.0, size - 1.0)


def _resized_crop(images, top, left, box_height, box_width):
    """Each image's box, sampled back to the full size bilinearly."""
    height, width = images.shape[1], images.shape[2]
    rows = _sample_positions(top, box_height, height)
    columns = _sample_positions(left, box_width, width)
    row_low, column_low = ops.floor(rows), ops.floor(columns)
    row_weight = (rows - row_low)[:, :, None, None]
    column_weight = (columns - column_low)[:, None, :, None]
    row_low, column_low = ops.cast(row_low, "int32"), ops.cast(column_low, "int32")
    row_high, column_high = ops.minimum(row_low + 1, height - 1), ops.minimum(column_low + 1, width - 1)
    shape = ops.shape(images)

    def pick_rows(index):
        return ops.take_along_axis(images, ops.broadcast_to(index[:, :, None, None], shape), axis=1)

    def pick_columns(picked_rows, index):
        return ops.take_along_axis(picked_rows, ops.broadcast_to(index[:, None, :, None], shape), axis=2)

    def columns_of(picked_rows):
        return (pick_columns(picked_rows, column_low) * (1 - column_weight)
                + pick_columns(picked_rows, column_high) * column_weight)

    upper, lower = columns_of(pick_rows(row_low)), columns_of(pick_rows(row_high))
    return upper * (1 - row_weight) + lower * row_weight


def _color_jitter(images, brightness, contrast, saturation, hue_turns):
    """Brightness, contrast, saturation and hue, in that order, as the NumPy path's."""
    images = ops.clip(images * _per_image(brightness), 0.0, 255.0)
    mean_luma = ops.mean(_luma(images), axis=(1, 2, 3), keepdims=True)
    images = ops.clip(mean_luma + _per_image(contrast) * (images - mean_luma), 0.0, 255.0)
    if images.shape[-1] == 1:
        return images
    luma = _luma(images)
    images = ops.clip(luma + _per_image(saturation) * (images - luma), 0.0, 255.0)
    angles = 2 * math.pi * hue_turns
    cos, sin = ops.cos(angles), ops.sin(angles)
    zeros, ones = ops.zeros_like(angles), ops.ones_like(angles)
    rotations = ops.reshape(ops.stack([ones, zeros, zeros, zeros, cos, -sin, zeros, sin, cos], axis=1), (-1, 3, 3))
    to_yiq, to_rgb = (ops.convert_to_tensor(matrix, "float32") for matrix in (RGB_TO_YIQ, YIQ_TO_RGB))
    transforms = ops.matmul(ops.matmul(to_rgb, rotations), to_yiq)
    pixels = ops.reshape(images, (ops.shape(images)[0], -1, 3))
    rotated = ops.reshape(ops.matmul(pixels, ops.transpose(transforms, (0, 2, 1))), ops.shape(images))
    return ops.clip(rotated, 0.0, 255.0)


def _blur(images, sigmas):
    """Separable Gaussian blur, each image its own sigma; sigma 0 leaves an image as it is."""
    radius = blur_radius(images.shape[1], images.shape[2])
    offsets = ops.arange(-radius, radius + 1, dtype="float32")
    blurred = sigmas > 0
    safe = ops.where(blurred, sigmas, 1.0)
    kernels = ops.exp(-(offsets[None, :] ** 2) / (2.0 * safe[:, None] ** 2))
    kernels = kernels / ops.sum(kernels, axis=1, keepdims=True)
    result = images
    for axis in (1, 2):
        padding = [[0, 0]] * 4
        padding[axis] = [radius, radius]
        padded = ops.pad(result, padding, mode="reflect")
        length = result.shape[axis]
        total = 0.0
        for tap in range(2 * radius + 1):
            window = [slice(None)] * 4
            window[axis] = slice(tap, tap + length)
            total = total + kernels[:, tap, None, None, None] * padded[tuple(window)]
        result = total
    return ops.where(_per_image(blurred), result, images)


def _noise(images, seeds):
    """Standard normal noise per image from its own seed: the same whatever the batch is split into.

    TensorFlow's stateless generator: Keras' random ops take no seed tensor.
    """
    import tensorflow as tf

    return tf.map_fn(
        lambda seed: tf.random.stateless_normal(tf.shape(images)[1:], seed=tf.stack([seed, 0])),
        tf.cast(seeds, tf.int32), fn_output_signature=tf.float32,
    )
