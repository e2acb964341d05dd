"""NT-Xent of `SoftmaxCosineSim` output against an independent NumPy NT-Xent."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from simclr_wrap import NTXent, SoftmaxCosineSim, contrastive_accuracy, nt_xent
from simclr_wrap.losses import contrastive_metrics
from tests.conftest import FLOAT32_IN_SUBPROCESS

# float32's smallest normal number: the log of probabilities floored there stops at -87.34.
SMALLEST_NORMAL_FLOAT32 = float(np.finfo("float32").tiny)


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


def reference_nt_xent_and_gradient(projections, temperature):
    """NT-Xent of the SimCLR paper and its gradient with respect to the projections, in float64.

    With s_ik = sim(z_i, z_k) / temperature, anchor i with positive j has
    l(i, j) = -log(exp(s_ij) / sum_{k != i} exp(s_ik)) = log(1 + sum_{k != i, j} exp(s_ik - s_ij)),
    written the second way so that neither a loss of 1e-30 nor one of 400
    loses digits; the loss is the mean over all 2B anchors. Rows 0..B-1 are
    the first views, B..2B-1 the second views, and i's positive is i +- B.
    """
    z = np.asarray(projections, "float64")
    n = len(z)
    norms = np.linalg.norm(z, axis=1, keepdims=True)
    u = z / norms
    s = u @ u.T / temperature
    rows = np.arange(n)
    positive = (rows + n // 2) % n
    to_positive = s - s[rows, positive][:, None]  # s_ik - s_ij
    to_positive[rows, rows] = -np.inf  # k != i
    to_positive[rows, positive] = -np.inf  # k != j
    top = to_positive.max(axis=1, keepdims=True)
    logsumexp = top[:, 0] + np.log(np.exp(to_positive - top).sum(axis=1))
    losses = np.logaddexp(0, logsumexp)
    # dL/ds_ik = (p_ik - [k == j]) / n, with p_ik = exp(s_ik - s_ij - l(i, j)) and 1 - p_ij = sum_{k != j} p_ik.
    p = np.exp(to_positive - losses[:, None])
    d_s = p / n
    d_s[rows, positive] = -p.sum(axis=1) / n
    d_u = (d_s + d_s.T) @ u / temperature
    d_z = (d_u - u * np.sum(u * d_u, axis=1, keepdims=True)) / norms
    return float(np.mean(losses)), d_z


def layer_nt_xent_and_gradient(projections, temperature):
    """NT-Xent of `SoftmaxCosineSim` + `NTXent` and its gradient, by `tf.GradientTape`."""
    projections = tf.constant(projections, "float32")
    with tf.GradientTape() as tape:
        tape.watch(projections)
        loss = NTXent()(identity_target(len(projections) // 2), SoftmaxCosineSim(temperature=temperature)(projections))
    return float(loss), tape.gradient(loss, projections).numpy()


def assert_gradient_close(actual, expected, rtol=1e-4):
    # Relative per element, with a floor of rtol times the largest element: an element that is
    # almost 0 by cancellation cannot have its own relative precision in float32.
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * np.abs(expected).max())


def projections_of(case, rng):
    z_a = rng.normal(size=(8, 16))
    if case == "random":
        z_b = rng.normal(size=z_a.shape)
    elif case == "badly_wrong":  # every positive maximally dissimilar
        z_b = -z_a
    else:  # nearly right: in 4 dimensions the negatives are close enough for the loss to stay above 1e-38
        z_a = rng.normal(size=(8, 4))
        z_b = z_a + 0.05 * rng.normal(size=z_a.shape)
    return np.concatenate([z_a, z_b]).astype("float32")


def tiny_model(temperature, dims):
    """Two views -> an identity Dense (so the projections are the inputs) -> `SoftmaxCosineSim`."""
    view_a, view_b = keras.Input((dims,)), keras.Input((dims,))
    views = keras.layers.Concatenate(axis=0)([view_a, view_b])
    projections = keras.layers.Dense(dims, use_bias=False, kernel_initializer="identity")(views)
    return keras.Model([view_a, view_b], SoftmaxCosineSim(temperature=temperature)(projections))


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
def test_low_precision_projections_at_low_temperature_are_exact(dtype):
    rng = np.random.default_rng(1)
    z_a = rng.normal(size=(16, 32)).astype("float32")
    z_b = -z_a  # every positive maximally dissimilar: the hardest case for underflow
    projections = keras.ops.cast(np.concatenate([z_a, z_b]), dtype)
    output = SoftmaxCosineSim(temperature=0.05)(projections)
    assert output.dtype == "float32"
    loss = float(NTXent()(identity_target(16), output))
    # The layer computes in float32 from the rounded projections: exact for those.
    rounded = np.asarray(keras.ops.cast(projections, "float32"))
    assert loss == pytest.approx(reference_nt_xent_and_gradient(rounded, 0.05)[0], rel=1e-4)


def test_loss_and_gradient_are_exact_when_probabilities_underflow():
    z_a = np.eye(4, 8, dtype="float32")
    assert layer_nt_xent_and_gradient(np.concatenate([z_a, -z_a]), 0.005)[0] == pytest.approx(
        200 + np.log(6), rel=1e-6)  # -log(e^-200 / (e^-200 + 6 e^0)); a saddle point, where the gradient is 0
    z_a = np.random.default_rng(2).normal(size=(4, 8)).astype("float32")
    projections = np.concatenate([z_a, -z_a])
    output = SoftmaxCosineSim(temperature=0.005)(projections)  # logits span 400
    assert np.all(np.asarray(output)[identity_target(4) == 1] == 0)  # every positive underflows
    loss, gradient = layer_nt_xent_and_gradient(projections, 0.005)
    expected, expected_gradient = reference_nt_xent_and_gradient(projections, 0.005)
    assert loss == pytest.approx(expected, rel=1e-4)
    assert np.all(np.isfinite(gradient)) and np.abs(gradient).max() > 0
    assert_gradient_close(gradient, expected_gradient)


def test_reference_matches_the_naive_loss_and_finite_differences():
    rng = np.random.default_rng(11)
    z_a = rng.normal(size=(3, 4))
    for z_b, temperature in [(z_a + 0.5 * rng.normal(size=z_a.shape), 0.5), (-z_a, 0.01)]:
        projections = np.concatenate([z_a, z_b])
        value, gradient = reference_nt_xent_and_gradient(projections, temperature)
        assert value == pytest.approx(naive_nt_xent(z_a, z_b, temperature), rel=1e-12)
        step = 1e-6
        differences = np.zeros_like(projections)
        for index in np.ndindex(*projections.shape):
            shift = np.zeros_like(projections)
            shift[index] = step
            differences[index] = (reference_nt_xent_and_gradient(projections + shift, temperature)[0]
                                  - reference_nt_xent_and_gradient(projections - shift, temperature)[0]) / (2 * step)
        assert_gradient_close(gradient, differences, rtol=1e-6)


@pytest.mark.parametrize("case", ["random", "badly_wrong", "nearly_right"])
@pytest.mark.parametrize("temperature", [0.005, 0.01, 0.1, 1.0])
def test_value_and_gradient_match_float64_reference(temperature, case):
    projections = projections_of(case, np.random.default_rng(int(temperature * 1000)))
    expected, expected_gradient = reference_nt_xent_and_gradient(projections, temperature)
    loss, gradient = layer_nt_xent_and_gradient(projections, temperature)
    assert loss == pytest.approx(expected, rel=1e-4)
    assert np.abs(gradient).max() > 0
    assert_gradient_close(gradient, expected_gradient)


def test_a_tiny_loss_keeps_its_value_and_gradient():
    # Positives far closer than any negative: each anchor's loss is about 1e-25, below float32's
    # resolution next to 1, so log p(positive) and 1 - p(positive) would both round to 0.
    rng = np.random.default_rng(4)
    z_a = rng.normal(size=(8, 32))
    projections = np.concatenate([z_a, z_a + 0.1 * rng.normal(size=z_a.shape)]).astype("float32")
    expected, expected_gradient = reference_nt_xent_and_gradient(projections, 0.01)
    assert 1e-35 < expected < 1e-15
    loss, gradient = layer_nt_xent_and_gradient(projections, 0.01)
    assert loss == pytest.approx(expected, rel=1e-4)
    assert_gradient_close(gradient, expected_gradient)


def badly_wrong_views(batch_size=8, dims=16):
    z_a = np.random.default_rng(6).normal(size=(batch_size, dims)).astype("float32")
    return z_a, -z_a


@pytest.mark.parametrize("jit_compile", [False, True])
def test_fit_and_evaluate_use_the_exact_loss(jit_compile):
    z_a, z_b = badly_wrong_views()
    projections = np.concatenate([z_a, z_b])
    expected, expected_gradient = reference_nt_xent_and_gradient(projections, 0.01)
    assert expected > 100  # the log of the probabilities would stop at 87.34
    model = tiny_model(0.01, dims=16)
    model.compile(optimizer=keras.optimizers.SGD(1.0), loss=NTXent(), metrics=contrastive_metrics(),
                  jit_compile=jit_compile)
    logs = model.evaluate([z_a, z_b], identity_target(8), batch_size=8, verbose=0, return_dict=True)
    assert logs["loss"] == pytest.approx(expected, rel=1e-4)
    assert logs["nt_xent"] == pytest.approx(expected, rel=1e-4)
    # One step of plain SGD moves the kernel by minus its gradient, projections^T dL/dprojections.
    kernel = model.get_weights()[0]
    model.train_on_batch([z_a, z_b], identity_target(8))
    assert_gradient_close(kernel - model.get_weights()[0], projections.T.astype("float64") @ expected_gradient)


def test_a_saved_and_loaded_model_uses_the_exact_loss(tmp_path):
    z_a, z_b = badly_wrong_views()
    model = tiny_model(0.01, dims=16)
    model.compile(optimizer="sgd", loss=NTXent(), metrics=contrastive_metrics())
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    logs = loaded.evaluate([z_a, z_b], identity_target(8), batch_size=8, verbose=0, return_dict=True)
    expected = reference_nt_xent_and_gradient(np.concatenate([z_a, z_b]), 0.01)[0]
    assert logs["loss"] == pytest.approx(expected, rel=1e-4)
    assert logs["nt_xent"] == pytest.approx(expected, rel=1e-4)


@pytest.fixture
def mixed_float16():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    yield
    keras.config.set_dtype_policy(previous)


def test_evaluate_is_exact_under_mixed_precision(mixed_float16):
    z_a, z_b = badly_wrong_views()
    model = tiny_model(0.01, dims=16)
    assert model.layers[-1].compute_dtype == "float32" and model.layers[-2].compute_dtype == "float16"
    model.compile(optimizer="sgd", loss=NTXent(), metrics=contrastive_metrics())
    logs = model.evaluate([z_a, z_b], identity_target(8), batch_size=8, verbose=0, return_dict=True)
    # The identity Dense rounds the projections to float16; from there on all is float32.
    rounded = np.concatenate([z_a, z_b]).astype("float16").astype("float32")
    assert logs["nt_xent"] == pytest.approx(reference_nt_xent_and_gradient(rounded, 0.01)[0], rel=1e-4)


def measure_mirrored():
    """Loss and one SGD step of `tiny_model` under MirroredStrategy on two logical CPUs."""
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    z_a, z_b = badly_wrong_views()
    with strategy.scope():
        model = tiny_model(0.01, dims=16)
        model.compile(optimizer=keras.optimizers.SGD(1.0), loss=NTXent(), metrics=contrastive_metrics())
    logs = model.evaluate([z_a, z_b], identity_target(8), batch_size=8, verbose=0, return_dict=True)
    kernel = model.get_weights()[0]
    model.fit([z_a, z_b], identity_target(8), batch_size=8, epochs=1, shuffle=False, verbose=0)
    return {"replicas": strategy.num_replicas_in_sync, "loss": logs["loss"], "nt_xent": logs["nt_xent"],
            "step": (kernel - model.get_weights()[0]).tolist()}


def test_mirrored_strategy_uses_the_exact_loss():
    # Two logical CPUs must be set before TensorFlow starts: measure in a child process.
    script = textwrap.dedent(f"""
        import json, sys
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        sys.path.insert(0, {os.getcwd()!r})
        {FLOAT32_IN_SUBPROCESS}
        from tests.simclr_wrap.test_losses import measure_mirrored
        print("REPORT " + json.dumps(measure_mirrored()))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    lines = [line for line in result.stdout.splitlines() if line.startswith("REPORT ")]
    assert lines, result.stderr[-4000:]
    report = json.loads(lines[-1][len("REPORT "):])
    z_a, z_b = badly_wrong_views()
    projections = np.concatenate([z_a, z_b])
    expected, expected_gradient = reference_nt_xent_and_gradient(projections, 0.01)
    assert report["replicas"] == 2
    assert report["loss"] == pytest.approx(expected, rel=1e-4)
    assert report["nt_xent"] == pytest.approx(expected, rel=1e-4)
    assert_gradient_close(np.array(report["step"]), projections.T.astype("float64") @ expected_gradient)


def test_bare_probabilities_fall_back_to_their_log():
    rng = np.random.default_rng(8)
    z_a = rng.normal(size=(4, 6)).astype("float32")
    z_b = (z_a + 0.5 * rng.normal(size=z_a.shape)).astype("float32")
    output = SoftmaxCosineSim(temperature=0.5)(np.concatenate([z_a, z_b]))
    bare = np.asarray(output)  # no logits attached: today's log of the probabilities
    expected = -np.mean(np.log(bare[identity_target(4) == 1].astype("float64")))
    assert float(np.mean(nt_xent(identity_target(4), bare))) == pytest.approx(expected, rel=1e-6)
    assert float(np.mean(nt_xent(identity_target(4), output))) == pytest.approx(expected, rel=1e-5)
    # Where the positives underflow, the bare probabilities can only give the floor's -log.
    z_a, z_b = badly_wrong_views()
    bare = np.asarray(SoftmaxCosineSim(temperature=0.01)(np.concatenate([z_a, z_b])))
    floored = float(np.mean(nt_xent(identity_target(8), bare)))
    assert floored == pytest.approx(-np.log(SMALLEST_NORMAL_FLOAT32), rel=1e-6)


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
