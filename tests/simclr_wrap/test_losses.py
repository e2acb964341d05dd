"""NT-Xent of `SoftmaxCosineSim` output against an independent NumPy NT-Xent."""

import keras
import numpy as np
import pytest

from simclr_wrap import NTXent, SoftmaxCosineSim, contrastive_accuracy, nt_xent


def identity_target(batch_size):
    eye, zeros = np.eye(batch_size), np.zeros((batch_size, batch_size))
    return np.concatenate([eye, zeros, eye, zeros], axis=1).astype("float32")


def permuted_target(permutation):
    """Target when view_b[j] is the second view of image permutation[j]."""
    batch_size = len(permutation)
    ab = np.zeros((batch_size, batch_size), "float32")
    ab[permutation, np.arange(batch_size)] = 1
    zeros = np.zeros_like(ab)
    return np.concatenate([ab, zeros, ab.T, zeros], axis=1)


def naive_nt_xent(z_a, z_b, temperature, partner_of_a=None):
    """NT-Xent as written in the SimCLR paper, one anchor at a time."""
    views = np.concatenate([z_a, z_b]).astype("float64")
    n, batch_size = len(views), len(z_a)
    partner_of_a = np.arange(batch_size) if partner_of_a is None else partner_of_a
    positive = {}
    for i in range(batch_size):
        positive[i] = batch_size + partner_of_a[i]
        positive[batch_size + partner_of_a[i]] = i

    def sim(u, v):
        return u @ v / (np.linalg.norm(u) * np.linalg.norm(v))

    total = 0.0
    for k in range(n):
        numerator = np.exp(sim(views[k], views[positive[k]]) / temperature)
        denominator = sum(np.exp(sim(views[k], views[m]) / temperature) for m in range(n) if m != k)
        total += -np.log(numerator / denominator)
    return total / n


def vectorised_nt_xent(z_a, z_b, temperature):
    """NT-Xent with a log-sum-exp over the masked 2B x 2B similarity matrix."""
    views = np.concatenate([z_a, z_b]).astype("float64")
    views /= np.linalg.norm(views, axis=1, keepdims=True)
    logits = views @ views.T / temperature
    np.fill_diagonal(logits, -np.inf)
    n, batch_size = len(views), len(z_a)
    positives = np.concatenate([np.arange(batch_size, n), np.arange(batch_size)])
    top = logits.max(axis=1, keepdims=True)
    log_denominator = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
    return float(np.mean(log_denominator - logits[np.arange(n), positives]))


def model_nt_xent(z_a, z_b, temperature, target=None):
    output = SoftmaxCosineSim(temperature=temperature)(np.concatenate([z_a, z_b]))
    target = identity_target(len(z_a)) if target is None else target
    return float(NTXent()(target, output))


@pytest.mark.parametrize("batch_size,dims,temperature", [(2, 3, 1.0), (4, 8, 0.1), (8, 16, 0.5), (5, 4, 0.05)])
def test_nt_xent_equals_numpy_references(batch_size, dims, temperature):
    rng = np.random.default_rng(batch_size * dims)
    z_a = rng.normal(size=(batch_size, dims)).astype("float32")
    z_b = (z_a + 0.5 * rng.normal(size=z_a.shape)).astype("float32")
    naive = naive_nt_xent(z_a, z_b, temperature)
    assert vectorised_nt_xent(z_a, z_b, temperature) == pytest.approx(naive, abs=1e-9)
    assert model_nt_xent(z_a, z_b, temperature) == pytest.approx(naive, abs=1e-5)


def test_nt_xent_with_permuted_second_views():
    rng = np.random.default_rng(7)
    z_a = rng.normal(size=(6, 5)).astype("float32")
    z_b = (z_a + 0.3 * rng.normal(size=z_a.shape)).astype("float32")
    permutation = rng.permutation(6)
    shuffled_b = z_b[permutation]  # shuffled_b[j] is the view of image permutation[j]
    partner_of_a = np.argsort(permutation)
    expected = naive_nt_xent(z_a, shuffled_b, 0.2, partner_of_a)
    assert expected == pytest.approx(naive_nt_xent(z_a, z_b, 0.2), abs=1e-9)
    assert model_nt_xent(z_a, shuffled_b, 0.2, permuted_target(permutation)) == pytest.approx(expected, abs=1e-5)


def test_categorical_crossentropy_is_not_nt_xent():
    rng = np.random.default_rng(3)
    z_a, z_b = rng.normal(size=(2, 4, 6)).astype("float32")
    output = SoftmaxCosineSim(temperature=0.1)(np.concatenate([z_a, z_b]))
    crossentropy = float(keras.losses.CategoricalCrossentropy()(identity_target(4), output))
    assert abs(crossentropy - naive_nt_xent(z_a, z_b, 0.1)) > 1e-3


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision_projections_at_low_temperature_stay_finite(dtype):
    rng = np.random.default_rng(1)
    z_a = rng.normal(size=(16, 32)).astype("float32")
    z_b = -z_a  # every positive maximally dissimilar: the hardest case for underflow
    projections = keras.ops.cast(np.concatenate([z_a, z_b]), dtype)
    output = SoftmaxCosineSim(temperature=0.05)(projections)
    assert output.dtype == "float32"
    loss = float(NTXent()(identity_target(16), output))
    assert np.isfinite(loss)
    assert loss == pytest.approx(naive_nt_xent(z_a, z_b, 0.05), rel=1e-2)


def test_loss_and_gradient_stay_finite_when_probabilities_underflow():
    z_a = np.eye(4, 8, dtype="float32")
    z_b = -z_a
    output = SoftmaxCosineSim(temperature=0.005)(np.concatenate([z_a, z_b]))  # logits span 400
    assert float(keras.ops.min(output)) == 0.0  # masked self-similarities and underflowed positives
    loss = NTXent()(identity_target(4), output)
    assert np.isfinite(float(loss))


def test_contrastive_accuracy_counts_anchors_whose_positive_is_nearest():
    z_a = np.eye(4, dtype="float32")
    z_b = z_a.copy()
    z_b[3] = z_a[2]  # b_3 is closest to a_2; a_2's nearest is b_2 (tied with b_3), b_2 too
    output = SoftmaxCosineSim(temperature=0.1)(np.concatenate([z_a, z_b]))
    per_row = np.asarray(contrastive_accuracy(identity_target(4), output))
    assert per_row[:2].tolist() == [1.0, 1.0]
    assert per_row[3] < 1.0
    assert float(np.mean(nt_xent(identity_target(4), output))) > 0


def test_ntxent_round_trips_through_config():
    loss = NTXent(name="contrastive")
    clone = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(clone, NTXent) and clone.name == "contrastive"
