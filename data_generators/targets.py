"""The `[I|O|I|O]` target of a SimCLR batch."""

import numpy as np

from data_generators.checks import check_integer


def contrastive_target(batch_size, permutation=None):
    """The (B, 4B) one-hot target matching `SoftmaxCosineSim`'s output.

    Row i holds anchor a_i's distribution over `[b | a]` in columns 0..2B-1
    and anchor b_i's over `[a | b]` in columns 2B..4B-1. Each anchor's only
    positive is the other view of its own image, so the target is
    `[I | O | I | O]`. When the second views are shuffled, so that `view_b[j]`
    is a view of image `permutation[j]`, the blocks become `[P | O | P.T | O]`
    with `P[i, j] = 1` iff `permutation[j] == i`.

    Args:
        batch_size: B, the number of images (pairs of views); at least 2,
            since a contrastive batch needs negatives.
        permutation: optional sequence, a permutation of `range(B)`.

    Returns:
        A float32 array of shape (B, 4B).

    Example:
    >>> contrastive_target(2)
    array([[1., 0., 0., 0., 1., 0., 0., 0.],
           [0., 1., 0., 0., 0., 1., 0., 0.]], dtype=float32)
    """
    batch_size = check_integer("batch_size", batch_size, minimum=2, why="a contrastive batch needs negatives")
    if permutation is None:
        positives = np.eye(batch_size, dtype=np.float32)
    else:
        permutation = np.asarray(permutation)
        if permutation.shape != (batch_size,) or not np.array_equal(np.sort(permutation), np.arange(batch_size)):
            raise ValueError(
                f"Expected permutation to be a permutation of range(batch_size={batch_size}). "
                f"Received: permutation={permutation.tolist()}"
            )
        positives = np.zeros((batch_size, batch_size), np.float32)
        positives[permutation, np.arange(batch_size)] = 1.0
    negatives = np.zeros((batch_size, batch_size), np.float32)
    return np.concatenate([positives, negatives, positives.T, negatives], axis=1)
