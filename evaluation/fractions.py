"""Stratified, seeded subsets of the training labels, and the parameter checks the probes share."""

import logging
import math
from fractions import Fraction

import numpy as np

from data_generators.checks import check_integer, check_number

logger = logging.getLogger(__name__)


def check_labels(labels, name="labels"):
    """Return `labels` as a non-empty 1-D array, or raise naming `name`.

    Args:
        labels: a sequence of class labels (ints or strings).
        name: the argument's name, for the error message.

    Returns:
        A 1-D `np.ndarray`.

    Raises:
        TypeError: `labels` is not a sequence (a single label, None).
        ValueError: it is empty or not 1-D.

    Example:
    >>> check_labels(["cat", "dog"]).tolist()
    ['cat', 'dog']
    >>> check_labels([])
    Traceback (most recent call last):
    ...
    ValueError: Expected labels to be a non-empty 1-D sequence of class labels. Received: labels of shape (0,)
    """
    expected = f"Expected {name} to be a non-empty 1-D sequence of class labels"
    array = np.asarray(labels)
    if array.ndim == 0:
        raise TypeError(f"{expected}. Received: {name}={labels!r}")
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{expected}. Received: {name} of shape {array.shape}")
    return array


def check_fraction(fraction, name="fraction"):
    """Return `fraction` as a float, or raise naming `name` if it is not a number in (0, 1].

    Args:
        fraction: the share to check; bools, strings and NaN are refused.
        name: the argument's name, for the error message.

    Returns:
        `float(fraction)`.

    Raises:
        TypeError: `fraction` is not a number (or is NaN).
        ValueError: it is outside (0, 1].

    Example:
    >>> check_fraction(0.2)
    0.2
    >>> check_fraction(0)
    Traceback (most recent call last):
    ...
    ValueError: Expected fraction to be a number > 0 and <= 1 (a share of the training labels). Received: fraction=0
    """
    return check_number(name, fraction, minimum=0, maximum=1, exclusive_minimum=True,
                        why="a share of the training labels")


def _allocate(counts, fraction, classes):
    """How many images of each class a subset of `fraction` of the labels holds (see `label_subset`)."""
    # The fraction is read as the decimal it prints as (0.2 is exactly 1/5), so that
    # quotas such as 0.2 × 282 = 56.4 are exact and their ties are real ties, not float noise.
    share = Fraction(str(fraction))
    total = math.floor(share * int(counts.sum()) + Fraction(1, 2))  # halves up, unlike round()
    quotas = [share * int(count) for count in counts]
    allocation = np.array([math.floor(quota) for quota in quotas])
    # Largest remainder first; among equal remainders the larger class, then the earlier class.
    ranked = sorted(range(len(counts)), key=lambda c: (-(quotas[c] - allocation[c]), -counts[c], c))
    allocation[ranked[: total - int(allocation.sum())]] += 1
    if total < len(counts):
        empty = int(np.flatnonzero(allocation == 0)[0])
        raise ValueError(
            f"fraction={fraction} gives {total} labels for {len(counts)} classes, which leaves class "
            f"{classes[empty].item()!r} without an image (it has {counts[empty]}); use a larger fraction"
        )
    for empty in np.flatnonzero(allocation == 0):
        # The image comes from the largest allocation (the earliest class among equals), so the total stays exact.
        allocation[int(np.argmax(allocation))] -= 1
        allocation[empty] = 1
    return allocation


def label_subset(labels, fraction, seed=0):
    """Indices of a stratified, seeded subset holding `fraction` of the labels.

    The subset holds round(fraction × n) labels, rounding halves up (floor of
    x + 0.5, not Python's round-half-to-even). The products are exact for the
    decimal the fraction prints as: 0.285 × 100 is 28.5, so 29 labels, not
    the float 28.499999999999996. The labels are shared among the
    classes in proportion to their sizes by the largest-remainder method:
    each class gets the floor of fraction × its size, and the labels left go
    to the largest remainders (ties to the larger class, then to the earlier
    class in sorted order). Every class keeps at least one image: one taken
    from the largest allocation (the earliest class among equals), so the
    total stays exact.

    The images of each class are the head of a random permutation of its
    images, drawn from one `np.random.default_rng(seed)` class by class in
    sorted order: the same seed gives the same subset, and with the same seed
    a class's images at a larger allocation include those at a smaller one.
    The subsets of two fractions therefore nest whenever no class gets fewer
    images at the larger fraction; the largest-remainder method does not
    promise that for close fractions (0.11 and 0.12 of classes of 27, 23, 23
    and 14 images give the last 2 and 1), but it holds for fractions as far
    apart as 1, 0.2 and 0.05 on classes of 20 images or more.

    Args:
        labels: 1-D class labels of the training images (ints or strings).
        fraction: share of the labels to keep, in (0, 1]; 1 keeps every index.
        seed: int >= 0 for the draw.

    Returns:
        Sorted int indices into `labels`.

    Raises:
        TypeError: naming an argument of the wrong type.
        ValueError: naming an argument out of range, or naming a class that
            the fraction leaves without an image (fewer labels than classes).

    Example:
    >>> labels = ["cat"] * 6 + ["dog"] * 4
    >>> subset = label_subset(labels, 0.5, seed=0)
    >>> len(subset), sorted(np.asarray(labels)[subset].tolist())
    (5, ['cat', 'cat', 'cat', 'dog', 'dog'])
    >>> label_subset(labels, 1.0).tolist() == list(range(10))
    True
    """
    labels = check_labels(labels)
    fraction = check_fraction(fraction)
    seed = check_integer("seed", seed, minimum=0)
    classes, codes = np.unique(labels, return_inverse=True)
    allocation = _allocate(np.bincount(codes), fraction, classes)
    logger.debug("fraction %g of %d labels: %s", fraction, len(labels),
                 dict(zip(classes.tolist(), allocation.tolist())))
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(np.flatnonzero(codes == c))[:size] for c, size in enumerate(allocation)]
    return np.sort(np.concatenate(chosen))


def parse_fractions(text):
    """Parse the CLI's `--fractions`: comma-separated shares such as "1.0,0.2,0.05" or "100%,20%,5%".

    Args:
        text: the option's value.

    Returns:
        A tuple of floats in (0, 1], in the order given.

    Raises:
        ValueError: naming `--fractions` and the item at fault (not a number,
            outside (0, 1], or given twice).

    Example:
    >>> parse_fractions("1.0,0.2,0.05")
    (1.0, 0.2, 0.05)
    >>> parse_fractions("100%, 20%, 5%")
    (1.0, 0.2, 0.05)
    """
    fractions = []
    for item in str(text).split(","):
        item = item.strip()
        try:
            value = float(item[:-1]) / 100 if item.endswith("%") else float(item)
            value = check_fraction(value, "--fractions")
        except (TypeError, ValueError):
            raise ValueError(
                f"--fractions must be comma-separated shares in (0, 1] such as 1.0,0.2,0.05 or 100%,20%,5%; "
                f"got {item!r} in {text!r}"
            ) from None
        if value in fractions:
            raise ValueError(f"--fractions must not repeat a share; got {item!r} twice in {text!r}")
        fractions.append(value)
    return tuple(fractions)
