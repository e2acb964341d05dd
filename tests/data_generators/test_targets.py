"""contrastive_target: the [I|O|I|O] layout and its permuted form."""

import numpy as np
import pytest

from data_generators import contrastive_target


def test_identity_layout():
    target = contrastive_target(3)
    assert target.shape == (3, 12) and target.dtype == np.float32
    eye, zeros = np.eye(3), np.zeros((3, 3))
    assert np.array_equal(target, np.concatenate([eye, zeros, eye, zeros], axis=1))
    assert np.all(target.sum(axis=1) == 2)


def similarity_layout(view_a, view_b):
    """Row i: anchor a_i against [b | a], then anchor b_i against [a | b], self excluded."""
    batch_size = len(view_a)
    ab, aa, bb = view_a @ view_b.T, view_a @ view_a.T, view_b @ view_b.T
    aa[np.eye(batch_size, dtype=bool)] = -np.inf
    bb[np.eye(batch_size, dtype=bool)] = -np.inf
    return np.concatenate([ab, aa, ab.T, bb], axis=1)


@pytest.mark.parametrize("permutation", [None, [2, 0, 3, 1]])
def test_ones_mark_each_anchors_other_view(permutation):
    embeddings = np.eye(4)  # four orthogonal images: a view's best match is its twin
    order = np.arange(4) if permutation is None else np.array(permutation)
    layout = similarity_layout(embeddings, embeddings[order])
    target = contrastive_target(4, permutation)
    best_from_a = np.argmax(layout[:, :8], axis=1)
    best_from_b = np.argmax(layout[:, 8:], axis=1)
    assert np.array_equal(target[np.arange(4), best_from_a], np.ones(4))
    assert np.array_equal(target[np.arange(4), 8 + best_from_b], np.ones(4))
    assert target.sum() == 8


def test_permuted_blocks_are_p_and_its_transpose():
    permutation = [1, 2, 0]
    target = contrastive_target(3, permutation)
    p = np.zeros((3, 3))
    for j, i in enumerate(permutation):
        p[i, j] = 1
    assert np.array_equal(target[:, :3], p) and np.array_equal(target[:, 6:9], p.T)
    assert not target[:, 3:6].any() and not target[:, 9:].any()


def test_invalid_arguments_are_named():
    with pytest.raises(ValueError, match=r"Expected batch_size to be an integer >= 2 "
                                         r"\(a contrastive batch needs negatives\)\. "
                                         r"Received: batch_size=1"):
        contrastive_target(1)
    with pytest.raises(TypeError, match="Received: batch_size=True"):
        contrastive_target(True)
    with pytest.raises(ValueError, match=r"Expected permutation to be a permutation of range\(batch_size=3\)\. "
                                         r"Received: permutation=\[0, 0, 1\]"):
        contrastive_target(3, [0, 0, 1])
    with pytest.raises(ValueError, match="permutation"):
        contrastive_target(3, [0, 1])
