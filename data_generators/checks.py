"""Validation of explicit parameters, with errors that name the argument."""

import numbers

import numpy as np


def check_integer(name, value, minimum=None):
    """Return `value` as an int, or raise naming the argument `name`.

    Args:
        name: the argument's name, quoted in the error.
        value: the value to check. Booleans are refused: `True` is no size.
        minimum: the smallest allowed value, or None for no bound.

    Returns:
        `value` as a Python int.

    Example:
    >>> check_integer("batch_size", 32, minimum=2)
    32
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {name}={value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {name}={value}")
    return int(value)


def check_number(name, value, minimum=None):
    """Return `value` as a float, or raise naming the argument `name`.

    Args:
        name: the argument's name, quoted in the error.
        value: the value to check (int or float, not bool, finite).
        minimum: the smallest allowed value, or None for no bound.

    Returns:
        `value` as a Python float.

    Example:
    >>> check_number("noise_std", 2)
    2.0
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value != value:
        raise TypeError(f"{name} must be a number, got {name}={value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {name}={value}")
    return float(value)


def check_probability(name, value):
    """Return `value` as a float in [0, 1], or raise naming the argument `name`.

    Args:
        name: the argument's name, quoted in the error.
        value: the probability to check.

    Returns:
        `value` as a Python float.

    Example:
    >>> check_probability("blur_prob", 0.5)
    0.5
    """
    value = check_number(name, value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {name}={value}")
    return value


def check_interval(name, value, lower, upper, lower_open=False):
    """Return `value` as a `(low, high)` float pair inside [lower, upper].

    Args:
        name: the argument's name, quoted in the error.
        value: a pair of numbers with `low <= high`.
        lower: the smallest allowed `low`.
        upper: the largest allowed `high`.
        lower_open: whether `low` must be strictly greater than `lower`.

    Returns:
        A tuple of two Python floats.

    Example:
    >>> check_interval("crop_area", (0.08, 1), 0.0, 1.0, lower_open=True)
    (0.08, 1.0)
    """
    try:
        low, high = (check_number(name, bound) for bound in value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a pair of numbers (low, high), got {name}={value!r}") from None
    low_ok = low > lower if lower_open else low >= lower
    if not (low_ok and low <= high <= upper):
        bracket = "(" if lower_open else "["
        raise ValueError(
            f"{name} must be (low, high) with low <= high inside {bracket}{lower}, {upper}], got {name}={value!r}"
        )
    return (low, high)


def check_bool(name, value):
    """Return `value` if it is a bool, or raise naming the argument `name`.

    Args:
        name: the argument's name, quoted in the error.
        value: the switch to check; 0 and 1 are refused, to catch arguments
            passed in the wrong position.

    Returns:
        `value`.

    Example:
    >>> check_bool("flip", False)
    False
    """
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {name}={value!r}")
    return bool(value)


def check_image_size(width, height, channels):
    """Raise unless width and height are positive ints and channels is 1 or 3.

    Args:
        width: image width in pixels.
        height: image height in pixels.
        channels: 1 (grayscale) or 3 (RGB).

    Example:
    >>> check_image_size(80, 80, 3)
    """
    check_integer("width", width, minimum=1)
    check_integer("height", height, minimum=1)
    if isinstance(channels, bool) or channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got channels={channels!r}")
