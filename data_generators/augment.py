"""SimCLR's random augmentations, vectorised over a batch of images."""

import math

import numpy as np

from data_generators.checks import check_bool, check_interval, check_number, check_probability

# torchvision's RandomResizedCrop draws this many boxes before falling back
# to the central crop.
_CROP_ATTEMPTS = 10
# ITU-R BT.601 luma, as in OpenCV's and torchvision's grayscale.
LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], np.float32)
RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
YIQ_TO_RGB = np.linalg.inv(RGB_TO_YIQ)
# The columns of `SimCLRAugmentation.draw`'s parameters: the crop box in pixels, then flags (0 or 1),
# jitter factors, hue in turns, and the blur's sigma (0: not blurred).
VIEW_PARAMETERS = ("top", "left", "box_height", "box_width", "flip", "brightness", "contrast", "saturation",
                   "hue_turns", "gray", "blur_sigma", "noise_seed")


class SimCLRAugmentation:
    """The random view of SimCLR (Chen et al., 2020), for a whole batch at once.

    Applied in this order, each image drawing its own parameters:

    1. random resized crop: a box of `crop_area` of the image's area and a
       log-uniform aspect ratio in `crop_aspect` (ten tries, then the
       central crop, as torchvision's `RandomResizedCrop`), resampled back to
       the input size bilinearly;
    2. horizontal flip with probability 1/2;
    3. colour jitter with probability `color_jitter_prob`, in the fixed order
       brightness, contrast, saturation, hue, with factors drawn from
       [1 - 0.8s, 1 + 0.8s] for the first three and a hue rotation in YIQ
       space of up to 0.2s of a full turn (s = `color_strength`);
    4. grayscale with probability `grayscale_prob`;
    5. Gaussian blur with probability `blur_prob`, sigma drawn from
       `blur_sigma`, a separable kernel of about a tenth of the image side,
       reflected at the borders;
    6. additive Gaussian noise of `noise_std` (pixel units), when above 0.

    Every step is vectorised with NumPy over the (B, H, W, C) batch.
    One-channel images skip saturation, hue and grayscale; brightness and
    contrast still apply. Turning every step off gives the identity.

    Args:
        crop: whether to apply the random resized crop.
        crop_area: (low, high) fraction of the image area kept, in (0, 1].
        crop_aspect: (low, high) width / height ratio of the crop box.
        flip: whether to flip half of the images horizontally.
        color_jitter: whether to apply colour jitter.
        color_strength: s, the strength of the colour jitter.
        color_jitter_prob: probability of jittering an image's colours.
        grayscale_prob: probability of turning an image gray (0 turns it off).
        blur: whether to apply the Gaussian blur.
        blur_prob: probability of blurring an image.
        blur_sigma: (low, high) range of the blur's sigma in pixels.
        noise_std: standard deviation of added noise in pixels (0 turns it off).

    Example:
    >>> import numpy as np
    >>> augment = SimCLRAugmentation(blur=False)
    >>> images = np.zeros((4, 16, 16, 3), np.uint8)
    >>> augment(images, np.random.default_rng(0)).shape
    (4, 16, 16, 3)
    """

    def __init__(
        self,
        *,
        crop=True,
        crop_area=(0.08, 1.0),
        crop_aspect=(3 / 4, 4 / 3),
        flip=True,
        color_jitter=True,
        color_strength=0.5,
        color_jitter_prob=0.8,
        grayscale_prob=0.2,
        blur=True,
        blur_prob=0.5,
        blur_sigma=(0.1, 2.0),
        noise_std=0.0,
    ):
        self.crop = check_bool("crop", crop)
        self.crop_area = check_interval("crop_area", crop_area, 0.0, 1.0, lower_open=True)
        self.crop_aspect = check_interval("crop_aspect", crop_aspect, 0.0, math.inf, lower_open=True)
        self.flip = check_bool("flip", flip)
        self.color_jitter = check_bool("color_jitter", color_jitter)
        self.color_strength = check_number("color_strength", color_strength, minimum=0.0)
        self.color_jitter_prob = check_probability("color_jitter_prob", color_jitter_prob)
        self.grayscale_prob = check_probability("grayscale_prob", grayscale_prob)
        self.blur = check_bool("blur", blur)
        self.blur_prob = check_probability("blur_prob", blur_prob)
        self.blur_sigma = check_interval("blur_sigma", blur_sigma, 0.0, math.inf, lower_open=True)
        self.noise_std = check_number("noise_std", noise_std, minimum=0.0)

    def get_config(self):
        """The constructor arguments, such that `SimCLRAugmentation(**config)` rebuilds it.

        Returns:
            A dict of plain Python values.

        Example:
        >>> SimCLRAugmentation(flip=False).get_config()["flip"]
        False
        """
        return {
            "crop": self.crop,
            "crop_area": self.crop_area,
            "crop_aspect": self.crop_aspect,
            "flip": self.flip,
            "color_jitter": self.color_jitter,
            "color_strength": self.color_strength,
            "color_jitter_prob": self.color_jitter_prob,
            "grayscale_prob": self.grayscale_prob,
            "blur": self.blur,
            "blur_prob": self.blur_prob,
            "blur_sigma": self.blur_sigma,
            "noise_std": self.noise_std,
        }

    @classmethod
    def from_config(cls, config):
        """Rebuild an augmentation from `get_config()`'s dict.

        Args:
            config: a dict as returned by `get_config`.

        Returns:
            A new `SimCLRAugmentation`.

        Example:
        >>> SimCLRAugmentation.from_config({"blur": False}).blur
        False
        """
        return cls(**config)

    def __repr__(self):
        arguments = ", ".join(f"{name}={value!r}" for name, value in self.get_config().items())
        return f"{type(self).__name__}({arguments})"

    def __call__(self, images, rng):
        """Draw one random view of every image of a batch.

        Args:
            images: array (B, H, W, C), C 1 or 3, uint8 or float in [0, 255].
            rng: the `numpy.random.Generator` every random choice comes from.

        Returns:
            A new float32 array of the same shape, values in [0, 255].

        Example:
        >>> import numpy as np
        >>> images = np.full((2, 8, 8, 1), 200, np.uint8)
        >>> view = SimCLRAugmentation()(images, np.random.default_rng(1))
        >>> view.dtype, view.shape
        (dtype('float32'), (2, 8, 8, 1))
        """
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[3] not in (1, 3):
            raise ValueError(
                f"Expected images of shape (B, H, W, C) with C 1 or 3. Received: images of shape {images.shape}"
            )
        if not (images.dtype == np.uint8 or np.issubdtype(images.dtype, np.floating)):
            raise TypeError(
                f"Expected images to be uint8 or float in [0, 255]. Received: images of dtype {images.dtype}"
            )
        if not isinstance(rng, np.random.Generator):
            raise TypeError(
                f"Expected rng to be a numpy.random.Generator (np.random.default_rng(seed)). Received: rng={rng!r}"
            )
        return self.rows_of_view(images, rng, np.arange(len(images)), len(images))

    def rows_of_view(self, images, rng, rows, batch_size):
        """Rows `rows` of the view `__call__` draws for a batch of `batch_size` images, from those rows alone.

        What a worker that holds only its share of a global batch needs: every
        random number of the whole batch is drawn from `rng` as `__call__`
        draws it (parameters, then noise), and the pixels of `rows` alone are
        made, so the rows are those of the whole batch's view.

        Args:
            images: array (len(rows), H, W, C), the batch's images at `rows`.
            rng: the batch's `numpy.random.Generator`.
            rows: int array, positions of `images` in the batch.
            batch_size: the whole batch's number of images.

        Example:
        >>> import numpy as np
        >>> batch = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3)).astype(np.uint8)
        >>> augmentation = SimCLRAugmentation(noise_std=5.0)
        >>> whole = augmentation(batch, np.random.default_rng(1))
        >>> part = augmentation.rows_of_view(batch[2:], np.random.default_rng(1), np.array([2, 3]), 4)
        >>> bool(np.array_equal(part, whole[2:]))
        True
        """
        shape = (int(batch_size), *np.shape(images)[1:])
        views = self.apply(images, self.draw(shape, rng)[rows])
        if self.noise_std > 0:
            views += self.noise_std * rng.standard_normal(shape, dtype=np.float32)[rows]
            np.clip(views, 0.0, 255.0, out=views)
        return views

    def draw(self, shape, rng, noise_seed=False):
        """Draw the random parameters of one view of every image of a batch.

        What `__call__` draws first, in the same order from the same `rng`, so
        `apply(images, draw(images.shape, rng))` is `__call__`'s view when
        `noise_std` is 0 (`__call__` then draws the noise itself from `rng`). The parameters are a few numbers per image, cheap
        to draw on the host; `simclr_wrap.views.AugmentedViews` applies them
        with Keras ops inside the training step.

        Args:
            shape: the batch's shape (B, H, W, C).
            rng: the `numpy.random.Generator` every random choice comes from.
            noise_seed: with `noise_std` > 0, also draw each image's
                `noise_seed`, from which the in-step path makes its noise (its
                views then follow another draw of the same distribution).

        Returns:
            A float64 array (B, len(VIEW_PARAMETERS)), columns in the order
            of `VIEW_PARAMETERS`. Steps turned off get the parameters of the
            identity (the whole image, factors 1, no flip, gray or blur).

        Example:
        >>> import numpy as np
        >>> SimCLRAugmentation().draw((2, 8, 8, 3), np.random.default_rng(0)).shape
        (2, 12)
        """
        batch, height, width, channels = shape
        # float64, as the steps drew them before: the NumPy views are those of earlier versions to the bit.
        parameters = np.zeros((batch, len(VIEW_PARAMETERS)), np.float64)
        column = {name: index for index, name in enumerate(VIEW_PARAMETERS)}
        parameters[:, [column["box_height"], column["box_width"]]] = height, width
        parameters[:, [column[name] for name in ("brightness", "contrast", "saturation")]] = 1.0
        if self.crop:
            boxes = _draw_crop_boxes(batch, height, width, rng, self.crop_area, self.crop_aspect)
            parameters[:, [column[name] for name in ("top", "left", "box_height", "box_width")]] = boxes
        if self.flip:
            parameters[:, column["flip"]] = rng.random(batch) < 0.5
        if self.color_jitter:
            jitter = _draw_color_jitter(batch, rng, self.color_strength, self.color_jitter_prob)
            parameters[:, [column[name] for name in ("brightness", "contrast", "saturation", "hue_turns")]] = jitter
        if self.grayscale_prob > 0 and channels == 3:
            parameters[:, column["gray"]] = rng.random(batch) < self.grayscale_prob
        if self.blur:
            blurred = rng.random(batch) < self.blur_prob
            sigmas = rng.uniform(*self.blur_sigma, size=batch)
            parameters[:, column["blur_sigma"]] = np.where(blurred, sigmas, 0.0)
        if noise_seed and self.noise_std > 0:
            # Exact in float32 below 2**24.
            parameters[:, column["noise_seed"]] = rng.integers(0, 2**24, size=batch)
        return parameters

    def apply(self, images, parameters):
        """Apply drawn parameters (see `draw`) to a batch of images, with NumPy.

        Args:
            images: array (B, H, W, C), C 1 or 3, in [0, 255].
            parameters: float array (B, len(VIEW_PARAMETERS)) from `draw`.

        Returns:
            A new float32 array of the same shape, values in [0, 255].
        """
        views = np.asarray(images).astype(np.float32)  # a copy: the steps below work in place
        values = {name: np.asarray(parameters)[:, index] for index, name in enumerate(VIEW_PARAMETERS)}
        if self.crop:
            views = _resized_crop(views, values["top"], values["left"], values["box_height"], values["box_width"])
        flipped = values["flip"] > 0.5
        views[flipped] = views[flipped, :, ::-1]
        if self.color_jitter:
            views = _color_jitter(views, values["brightness"], values["contrast"], values["saturation"],
                                  values["hue_turns"])
        grayed = values["gray"] > 0.5
        if grayed.any() and views.shape[3] == 3:
            views[grayed] = _luma(views[grayed])
        blurred = values["blur_sigma"] > 0
        if blurred.any():
            views[blurred] = _blur(views[blurred], values["blur_sigma"][blurred])
        return np.clip(views, 0.0, 255.0, out=views)


def _draw_crop_boxes(batch, height, width, rng, area_range, aspect_range):
    """(B, 4) boxes `top, left, box_height, box_width`, as torchvision's `RandomResizedCrop` draws them."""
    area = height * width * rng.uniform(*area_range, size=(batch, _CROP_ATTEMPTS))
    aspect = np.exp(rng.uniform(math.log(aspect_range[0]), math.log(aspect_range[1]), size=(batch, _CROP_ATTEMPTS)))
    box_widths = np.round(np.sqrt(area * aspect)).astype(np.int64)
    box_heights = np.round(np.sqrt(area / aspect)).astype(np.int64)
    fits = (box_widths >= 1) & (box_widths <= width) & (box_heights >= 1) & (box_heights <= height)
    first_fit = np.argmax(fits, axis=1)
    images_index = np.arange(batch)
    found = fits[images_index, first_fit]
    central_height, central_width = _central_box(height, width, aspect_range)
    box_height = np.where(found, box_heights[images_index, first_fit], central_height)
    box_width = np.where(found, box_widths[images_index, first_fit], central_width)
    top = np.where(found, np.floor(rng.random(batch) * (height - box_height + 1)), (height - box_height) // 2)
    left = np.where(found, np.floor(rng.random(batch) * (width - box_width + 1)), (width - box_width) // 2)
    return np.stack([top, left, box_height, box_width], axis=1)


def _resized_crop(images, top, left, box_height, box_width):
    """Each image's box, sampled back to the full size bilinearly."""
    height, width = images.shape[1:3]
    return _bilinear_sample(images, _sample_positions(top, box_height, height),
                            _sample_positions(left, box_width, width))


def _central_box(height, width, aspect_range):
    """torchvision's fallback: the whole image, cut to the nearest allowed aspect."""
    low, high = aspect_range
    if width / height < low:
        return round(width / low), width
    if width / height > high:
        return height, round(height * high)
    return height, width


def _sample_positions(start, box_size, size):
    """Source coordinates (B, size) of `size` output pixels spread over each box.

    Pixel centres map to pixel centres (align_corners=False), so a box that
    is the whole image samples every pixel exactly.
    """
    centres = np.arange(size, dtype=np.float32) + 0.5
    positions = start[:, None] + centres[None, :] * (box_size[:, None] / size) - 0.5
    return np.clip(positions, 0.0, size - 1.0)


def _bilinear_sample(images, rows, columns):
    """images[b] at fractional (rows[b, y], columns[b, x]) by its 4 neighbours."""
    height, width = images.shape[1:3]
    row_low = np.floor(rows).astype(np.int64)
    column_low = np.floor(columns).astype(np.int64)
    row_high = np.minimum(row_low + 1, height - 1)
    column_high = np.minimum(column_low + 1, width - 1)
    row_weight = (rows - row_low).astype(np.float32)[:, :, None, None]
    column_weight = (columns - column_low).astype(np.float32)[:, None, :, None]
    batch_index = np.arange(len(images))[:, None, None]

    def gather(row_index, column_index):
        return images[batch_index, row_index[:, :, None], column_index[:, None, :]]

    upper = gather(row_low, column_low) * (1 - column_weight) + gather(row_low, column_high) * column_weight
    lower = gather(row_high, column_low) * (1 - column_weight) + gather(row_high, column_high) * column_weight
    return upper * (1 - row_weight) + lower * row_weight


def _draw_color_jitter(batch, rng, strength, probability):
    """(B, 4) brightness, contrast and saturation factors and hue turns; 1, 1, 1, 0 for images left as they are."""
    jittered = rng.random(batch) < probability

    def factors(amount):
        return np.where(jittered, rng.uniform(max(0.0, 1.0 - amount), 1.0 + amount, size=batch), 1.0)

    brightness, contrast, saturation = factors(0.8 * strength), factors(0.8 * strength), factors(0.8 * strength)
    hue_turns = np.where(jittered, rng.uniform(-0.2 * strength, 0.2 * strength, size=batch), 0.0)
    return np.stack([brightness, contrast, saturation, hue_turns], axis=1)


def _color_jitter(images, brightness, contrast, saturation, hue_turns):
    """Brightness, contrast, saturation and hue, in that order; factor 1 (and angle 0) changes nothing."""

    def per_image(values):
        return np.asarray(values, np.float32)[:, None, None, None]

    images = np.clip(images * per_image(brightness), 0.0, 255.0)
    mean_luma = _luma(images).mean(axis=(1, 2, 3), keepdims=True)
    images = np.clip(mean_luma + per_image(contrast) * (images - mean_luma), 0.0, 255.0)
    if images.shape[3] == 1:
        return images
    luma = _luma(images)
    images = np.clip(luma + per_image(saturation) * (images - luma), 0.0, 255.0)
    return np.clip(_rotate_hue(images, 2 * np.pi * np.asarray(hue_turns, np.float64)), 0.0, 255.0)


def _rotate_hue(images, angles):
    """Rotate each RGB image's chroma by its angle (radians) in YIQ space."""
    cos, sin = np.cos(angles), np.sin(angles)
    rotations = np.zeros((len(angles), 3, 3))
    rotations[:, 0, 0] = 1.0
    rotations[:, 1, 1], rotations[:, 1, 2] = cos, -sin
    rotations[:, 2, 1], rotations[:, 2, 2] = sin, cos
    transforms = (YIQ_TO_RGB @ rotations @ RGB_TO_YIQ).astype(np.float32)
    pixels = images.reshape(len(images), -1, 3)
    return (pixels @ transforms.transpose(0, 2, 1)).reshape(images.shape)


def _luma(images):
    """The (B, H, W, 1) luma of RGB images; one-channel images are their own."""
    if images.shape[3] == 1:
        return images
    return images @ LUMA_WEIGHTS[:, None]


def blur_radius(height, width):
    """The Gaussian blur's kernel radius: SimCLR's kernel spans a tenth of the image side."""
    return max(1, round(0.1 * min(height, width)) // 2)


def _blur(images, sigmas):
    """Separable Gaussian blur of each image with its own sigma, borders reflected."""
    radius = blur_radius(*images.shape[1:3])
    offsets = np.arange(-radius, radius + 1)
    kernels = np.exp(-(offsets[None, :] ** 2) / (2.0 * np.asarray(sigmas, np.float64)[:, None] ** 2))
    kernels = (kernels / kernels.sum(axis=1, keepdims=True)).astype(np.float32)
    for axis in (1, 2):
        images = _convolve_axis(images, kernels, axis, radius)
    return images


def _convolve_axis(images, kernels, axis, radius):
    """Convolve each image with its own 1-d kernel along `axis`, borders reflected."""
    padding = [(0, 0)] * 4
    padding[axis] = (radius, radius)
    padded = np.pad(images, padding, mode="reflect")
    length = images.shape[axis]
    result = np.zeros_like(images)
    window = [slice(None)] * 4
    for tap in range(kernels.shape[1]):
        window[axis] = slice(tap, tap + length)
        result += kernels[:, tap, None, None, None] * padded[tuple(window)]
    return result
