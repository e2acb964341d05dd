"""SoftmaxCosineSim: output layout, masking, dtype and serialisation."""

import keras
import numpy as np
import pytest

from simclr_wrap import SoftmaxCosineSim


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
    layer = SoftmaxCosineSim()
    rng = np.random.default_rng(1)
    assert layer(rng.normal(size=(4, 3)).astype("float32")).shape == (2, 8)
    assert layer(rng.normal(size=(12, 3)).astype("float32")).shape == (6, 24)


def test_computes_in_float32_under_mixed_precision():
    layer = SoftmaxCosineSim(temperature=0.1)
    assert layer.compute_dtype == "float32"
    clone = SoftmaxCosineSim.from_config(layer.get_config())
    assert clone.temperature == 0.1 and clone.compute_dtype == "float32"


@pytest.mark.parametrize("temperature", [0, -0.5])
def test_rejects_non_positive_temperature(temperature):
    with pytest.raises(ValueError, match="temperature"):
        SoftmaxCosineSim(temperature=temperature)


def test_serialises_inside_a_model(tmp_path):
    inputs = keras.Input((5,))
    model = keras.Model(inputs, SoftmaxCosineSim(temperature=0.2)(keras.layers.Dense(4)(inputs)))
    path = str(tmp_path / "m.keras")
    model.save(path)
    x = np.random.default_rng(2).normal(size=(6, 5)).astype("float32")
    np.testing.assert_allclose(keras.models.load_model(path).predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
