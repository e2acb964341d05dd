"""SoftmaxCosineSim: output layout, masking, dtype and serialisation."""

import keras
import numpy as np
import pytest

from simclr_wrap import SoftmaxCosineSim
from simclr_wrap.keras_compat import attached_logits
from simclr_wrap.layers import NearestNeighbourQueue


def reference_output(projections, temperature):
    z = projections / np.linalg.norm(projections, axis=1, keepdims=True)
    batch_size = len(z) // 2
    a, b = z[:batch_size], z[batch_size:]

    def softmax_without_self(similar_other, similar_same):
        logits = np.concatenate([similar_other, similar_same], axis=1) / temperature
        logits[:, batch_size:][np.eye(batch_size, dtype=bool)] = -np.inf
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    return np.concatenate([softmax_without_self(a @ b.T, a @ a.T), softmax_without_self(b @ a.T, b @ b.T)], axis=1)


def test_output_layout_matches_reference_blocks():
    projections = np.random.default_rng(0).normal(size=(10, 6)).astype("float32")
    output = np.asarray(SoftmaxCosineSim(temperature=0.3)(projections))
    assert output.shape == (5, 20)
    np.testing.assert_allclose(output, reference_output(projections.astype("float64"), 0.3), atol=1e-6)
    np.testing.assert_allclose(output[:, :10].sum(axis=1), 1, atol=1e-6)
    np.testing.assert_allclose(output[:, 10:].sum(axis=1), 1, atol=1e-6)
    # self-similarities (aa and bb diagonals) are masked out
    assert np.all(np.diagonal(output[:, 5:10]) == 0) and np.all(np.diagonal(output[:, 15:20]) == 0)


def test_batch_size_comes_from_the_input_at_run_time():
    layer = SoftmaxCosineSim(temperature=0.1)
    rng = np.random.default_rng(1)
    assert layer(rng.normal(size=(4, 3)).astype("float32")).shape == (2, 8)
    assert layer(rng.normal(size=(12, 3)).astype("float32")).shape == (6, 24)


def test_computes_in_float32_under_mixed_precision():
    layer = SoftmaxCosineSim(temperature=0.1)
    assert layer.compute_dtype == "float32"
    clone = SoftmaxCosineSim.from_config(layer.get_config())
    assert clone.temperature == 0.1 and clone.compute_dtype == "float32"


def test_attaches_the_logits_of_its_probabilities():
    projections = np.random.default_rng(3).normal(size=(8, 5)).astype("float32")
    output = SoftmaxCosineSim(temperature=0.01)(projections)
    logits = np.asarray(attached_logits(output), "float64")
    assert logits.shape == (4, 16)
    # each half's softmax is the output; the self-similarities are masked with a huge negative logit
    for half in (slice(0, 8), slice(8, 16)):
        e = np.exp(logits[:, half] - logits[:, half].max(axis=1, keepdims=True))
        np.testing.assert_allclose(np.asarray(output)[:, half], e / e.sum(axis=1, keepdims=True), atol=1e-6)
        assert np.all(np.diagonal(logits[:, half][:, 4:]) < -1e8)
    z = projections / np.linalg.norm(projections, axis=1, keepdims=True)
    np.testing.assert_allclose(logits[:, :4], z[:4] @ z[4:].T / 0.01, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("temperature", [0, -0.5])
def test_rejects_non_positive_temperature(temperature):
    with pytest.raises(ValueError, match=f"Expected temperature to be a number > 0. Received: temperature={temperature}"):
        SoftmaxCosineSim(temperature=temperature)


@pytest.mark.parametrize("arguments", [{"temperature": "0.1"}, {"temperature": None}, {"temperature": 0.1, "same_view_negatives": 1}])
def test_rejects_arguments_of_the_wrong_type(arguments):
    with pytest.raises(TypeError, match=f"Expected {list(arguments)[-1]} to be"):
        SoftmaxCosineSim(**arguments)


def test_queue_rejects_a_bad_size():
    with pytest.raises(ValueError, match="Expected queue_size to be an integer >= 1. Received: queue_size=0"):
        NearestNeighbourQueue(queue_size=0)
    with pytest.raises(TypeError, match="Expected queue_size to be an integer"):
        NearestNeighbourQueue(queue_size=2.5)


def test_serialises_inside_a_model(tmp_path):
    inputs = keras.Input((5,))
    model = keras.Model(inputs, SoftmaxCosineSim(temperature=0.2)(keras.layers.Dense(4)(inputs)))
    path = str(tmp_path / "m.keras")
    model.save(path)
    x = np.random.default_rng(2).normal(size=(6, 5)).astype("float32")
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    # the loaded layer still hands its logits to the loss
    np.testing.assert_allclose(attached_logits(loaded(x)), attached_logits(model(x)), atol=1e-5)
