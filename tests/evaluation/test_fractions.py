"""Stratified label subsets: exact totals, proportional shares, determinism, and the CLI's --fractions."""

import math

import numpy as np
import pytest

from evaluation.fractions import label_subset, parse_fractions

# Class sizes like TrashNet's five largest classes, 1673 images in all.
TRASHNET_SIZES = {"cardboard": 282, "glass": 351, "metal": 287, "paper": 416, "plastic": 337}


def _trashnet_labels(shuffled=True):
    labels = np.concatenate([[name] * size for name, size in TRASHNET_SIZES.items()])
    return np.random.default_rng(1).permutation(labels) if shuffled else labels


def _class_counts(labels, subset):
    names, counts = np.unique(np.asarray(labels)[subset], return_counts=True)
    return dict(zip(names.tolist(), counts.tolist()))


@pytest.mark.parametrize("fraction, expected", [
    # 0.2: quotas 56.4, 70.2, 57.4, 83.2, 67.4 floor to 333 of round(334.6) = 335; the two labels
    # left go to the remainders 0.4, tied among three classes, so to the two larger (plastic, metal).
    (0.2, {"cardboard": 56, "glass": 70, "metal": 58, "paper": 83, "plastic": 68}),
    # 0.05: quotas 14.1, 17.55, 14.35, 20.8, 16.85 floor to 81 of round(83.65) = 84; the three left
    # go to the largest remainders 0.85 (plastic), 0.8 (paper) and 0.55 (glass).
    (0.05, {"cardboard": 14, "glass": 18, "metal": 14, "paper": 21, "plastic": 17}),
])
def test_trashnet_sizes_give_exact_total_and_largest_remainder_shares(fraction, expected):
    labels = _trashnet_labels()
    subset = label_subset(labels, fraction, seed=0)
    assert len(subset) == math.floor(fraction * len(labels) + 0.5) == sum(expected.values())
    counts = _class_counts(labels, subset)
    assert counts == expected
    for name, size in TRASHNET_SIZES.items():
        assert abs(counts[name] - fraction * size) < 1


def test_subset_is_sorted_unique_valid_indices():
    labels = _trashnet_labels()
    subset = label_subset(labels, 0.2, seed=3)
    assert subset.dtype.kind == "i"
    assert np.all(np.diff(subset) > 0) and subset[0] >= 0 and subset[-1] < len(labels)


def test_half_rounds_up():
    # 0.25 × 10 = 2.5: three labels, where Python's round would give two.
    subset = label_subset(["a"] * 5 + ["b"] * 5, 0.25)
    assert len(subset) == 3
    # The remainders (0.25 each) and the sizes tie, so the earlier class gets the extra label.
    assert _class_counts(["a"] * 5 + ["b"] * 5, subset) == {"a": 2, "b": 1}


def test_products_are_exact_for_the_decimal_given():
    assert 0.285 * 100 < 28.5  # in floats, which would round to 28
    assert len(label_subset([0] * 100, 0.285)) == 29


@pytest.mark.parametrize("sizes, expected", [
    ({"a": 10, "b": 30}, {"a": 1, "b": 5}),
    ({"a": 30, "b": 10}, {"a": 5, "b": 1}),
])
def test_tied_remainder_goes_to_the_larger_class(sizes, expected):
    # 0.15 × 10 = 1.5 and 0.15 × 30 = 4.5: both remainders are 0.5, and round(6.0) leaves one label.
    labels = np.concatenate([[name] * size for name, size in sizes.items()])
    assert _class_counts(labels, label_subset(labels, 0.15)) == expected


def test_every_class_keeps_an_image_taken_from_the_largest_allocation():
    labels = ["common"] * 100 + ["rare"]
    subset = label_subset(labels, 0.1)
    # round(10.1) = 10 labels; the rare class's quota of 0.1 would round to none.
    assert _class_counts(labels, subset) == {"common": 9, "rare": 1}


@pytest.mark.parametrize("fraction", [0.003, 0.005, 0.05, 0.5])
def test_each_class_at_least_one(fraction):
    labels = _trashnet_labels()
    counts = _class_counts(labels, label_subset(labels, fraction, seed=2))
    assert set(counts) == set(TRASHNET_SIZES) and min(counts.values()) >= 1


def test_same_seed_same_subset_other_seed_other_subset():
    labels = _trashnet_labels()
    np.testing.assert_array_equal(label_subset(labels, 0.2, seed=7), label_subset(labels, 0.2, seed=7))
    assert not np.array_equal(label_subset(labels, 0.2, seed=7), label_subset(labels, 0.2, seed=8))


def test_smaller_fraction_nests_in_larger_with_the_same_seed():
    labels = _trashnet_labels()
    small, large = label_subset(labels, 0.05, seed=4), label_subset(labels, 0.2, seed=4)
    assert set(small.tolist()) <= set(large.tolist())


def test_fraction_one_is_everything():
    labels = _trashnet_labels()
    np.testing.assert_array_equal(label_subset(labels, 1.0, seed=5), np.arange(len(labels)))


def test_int_labels_in_any_order():
    labels = np.array([7, 3, 7, 3, 7, 3, 7, 3])
    subset = label_subset(labels, 0.5, seed=0)
    assert sorted(labels[subset].tolist()) == [3, 3, 7, 7]


@pytest.mark.parametrize("fraction, error", [
    (0, ValueError), (-0.1, ValueError), (1.5, ValueError),
    (float("nan"), TypeError), (True, TypeError), ("0.2", TypeError), (None, TypeError),
])
def test_bad_fraction_is_named(fraction, error):
    expected = r"Expected fraction to be a number > 0 and <= 1 \(a share of the training labels\)\. Received: fraction="
    with pytest.raises(error, match=expected):
        label_subset(["a", "b"], fraction)


def test_fraction_too_small_for_the_classes_names_a_class_and_the_fraction():
    labels = _trashnet_labels()
    # round(0.002 × 1673) = 3 labels for 5 classes.
    with pytest.raises(ValueError, match=r"fraction=0\.002 .* class 'cardboard' without an image"):
        label_subset(labels, 0.002)


@pytest.mark.parametrize("labels, error, message", [
    ([], ValueError, r"Received: labels of shape \(0,\)"),
    ([[0, 1], [1, 0]], ValueError, r"Received: labels of shape \(2, 2\)"),
    ("cat", TypeError, "Received: labels='cat'"),
])
def test_bad_labels_are_named(labels, error, message):
    with pytest.raises(error, match="Expected labels to be a non-empty 1-D sequence of class labels. " + message):
        label_subset(labels, 0.5)


@pytest.mark.parametrize("seed, error", [(-1, ValueError), (1.5, TypeError), (True, TypeError)])
def test_bad_seed_is_named(seed, error):
    with pytest.raises(error, match=f"Expected seed to be an integer >= 0. Received: seed={seed!r}"):
        label_subset(["a", "b"], 1.0, seed=seed)


@pytest.mark.parametrize("text, expected", [
    ("1.0,0.2,0.05", (1.0, 0.2, 0.05)),
    ("100%,20%,5%", (1.0, 0.2, 0.05)),
    (" 0.5 , 10% ", (0.5, 0.1)),
    ("1", (1.0,)),
])
def test_parse_fractions(text, expected):
    assert parse_fractions(text) == expected


@pytest.mark.parametrize("text, item", [
    ("1.0,abc", "'abc'"),
    ("1.0,,0.2", "''"),
    ("1.0,1.5", "'1.5'"),
    ("0,0.5", "'0'"),
    ("120%", "'120%'"),
    ("0.2,20%", "'20%' twice"),
])
def test_parse_fractions_names_the_option_and_the_bad_item(text, item):
    with pytest.raises(ValueError, match=f"--fractions .*got {item}"):
        parse_fractions(text)
