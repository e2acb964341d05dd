"""Argument checks for every package: one error type per kind of mistake.

A value of the wrong type raises TypeError; a value of the right type that is
out of range raises ValueError. Both name the argument and the value
received, as Keras does: "Expected batch_size to be an integer >= 2.
Received: batch_size=1". This module imports nothing but NumPy, so the model
floor (`simclr_wrap`) can use it without importing pandas or OpenCV.
"""

import numbers

import numpy as np


def _shown(value):
    # Numbers as they print (0, not np.int64(0)); anything else quoted, so that "0" differs from 0.
    if isinstance(value, numbers.Number) and not isinstance(value, bool):
        return value.item() if isinstance(value, np.generic) else value
    return repr(value)


def _fail(error, name, value, expected, why=None):
    reason = f" ({why})" if why else ""
    raise error(f"Expected {name} to be {expected}{reason}. Received: {name}={_shown(value)}")


def _bounds(minimum, maximum, exclusive_minimum=False):
    parts = []
    if minimum is not None:
        parts.append(f"{'>' if exclusive_minimum else '>='} {minimum}")
    if maximum is not None:
        parts.append(f"<= {maximum}")
    return " and ".join(parts)


def check_integer(name, value, minimum=None, maximum=None, why=None):
    """Return `value` as an int, or raise naming the argument `name`.

    Args:
        name: the argument's name, quoted in the error.
        value: the value to check. Booleans are refused: `True` is no size.
        minimum, maximum: the allowed range (inclusive), None for no bound.
        why: a reason shown with the range in the error.

    Returns:
        `value` as a Python int.

    Raises:
        TypeError: `value` is not an integer.
        ValueError: it is out of range.

    Example:
    >>> check_integer("batch_size", 32, minimum=2)
    32
    >>> check_integer("units", 0, minimum=1)
    Traceback (most recent call last):
    ...
    ValueError: Expected units to be an integer >= 1. Received: units=0
    """
    expected = " ".join(filter(None, ["an integer", _bounds(minimum, maximum)]))
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        _fail(TypeError, name, value, expected, why)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        _fail(ValueError, name, value, expected, why)
    return int(value)


def check_number(name, value, minimum=None, maximum=None, exclusive_minimum=False, why=None):
    """Return `value` as a float, or raise naming the argument `name`.

    Args:
        name: the argument's name, quoted in the error.
        value: the value to check (int or float, not bool, not NaN).
        minimum, maximum: the allowed range, None for no bound.
        exclusive_minimum: whether `value` must be strictly above `minimum`.
        why: a reason shown with the range in the error.

    Returns:
        `value` as a Python float.

    Raises:
        TypeError: `value` is not a number.
        ValueError: it is out of range.

    Example:
    >>> check_number("noise_std", 2)
    2.0
    >>> check_number("temperature", 0.0, minimum=0, exclusive_minimum=True)
    Traceback (most recent call last):
    ...
    ValueError: Expected temperature to be a number > 0. Received: temperature=0.0
    """
    expected = " ".join(filter(None, ["a number", _bounds(minimum, maximum, exclusive_minimum)]))
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value != value:
        _fail(TypeError, name, value, expected, why)
    too_low = minimum is not None and (value <= minimum if exclusive_minimum else value < minimum)
    if too_low or (maximum is not None and value > maximum):
        _fail(ValueError, name, value, expected, why)
    return float(value)


def check_positive(name, value, why=None):
    """Return `value` as a float if it is a number > 0, or raise naming `name`.

    Example:
    >>> check_positive("lr", 1e-4)
    0.0001
    """
    return check_number(name, value, minimum=0, exclusive_minimum=True, why=why)


def check_probability(name, value):
    """Return `value` as a float in [0, 1], or raise naming the argument `name`.

    Example:
    >>> check_probability("blur_prob", 0.5)
    0.5
    """
    return check_number(name, value, minimum=0, maximum=1)


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
    expected = f"a pair (low, high) of numbers with low <= high inside {'(' if lower_open else '['}{lower}, {upper}]"
    try:
        low, high = (check_number(name, bound) for bound in value)
    except (TypeError, ValueError):
        _fail(TypeError, name, value, expected)
    low_ok = low > lower if lower_open else low >= lower
    if not (low_ok and low <= high <= upper):
        _fail(ValueError, name, value, expected)
    return (low, high)


def check_bool(name, value):
    """Return `value` if it is a bool, or raise TypeError naming the argument `name`.

    0 and 1 are refused, to catch arguments passed in the wrong position.

    Example:
    >>> check_bool("flip", False)
    False
    """
    if not isinstance(value, (bool, np.bool_)):
        _fail(TypeError, name, value, "True or False")
    return bool(value)


def check_choice(name, value, choices):
    """Return `value` if it is one of `choices`, or raise ValueError naming `name`.

    Example:
    >>> check_choice("pooling", "avg", ("flatten", "avg", "max"))
    'avg'
    >>> check_choice("pooling", "mean", ("flatten", "avg", "max"))
    Traceback (most recent call last):
    ...
    ValueError: Expected pooling to be one of ['flatten', 'avg', 'max']. Received: pooling='mean'
    >>> check_choice("jit_compile", True, (True, False, "auto")), check_choice("channels", 3, (1, 3))
    (True, 3)
    """
    # True is not 1 and 1 is not True: a bool matches only a bool choice.
    matches = [choice for choice in choices if isinstance(choice, bool) == isinstance(value, (bool, np.bool_))
               and choice == value]
    if not matches:
        _fail(ValueError, name, value, f"one of {list(choices)}")
    return value


def check_image_size(width, height, channels):
    """Raise unless width and height are positive ints and channels is 1 or 3.

    Example:
    >>> check_image_size(80, 80, 3)
    """
    check_integer("width", width, minimum=1)
    check_integer("height", height, minimum=1)
    check_integer("channels", channels)
    check_choice("channels", channels, (1, 3))
