"""NNCLR: the support queue, nearest-neighbour positives, and the paper's form of the loss."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from simclr_wrap import NTXent, SimCLR
from simclr_wrap.layers import NearestNeighbourQueue, SoftmaxCosineSim
from tests.simclr_wrap.test_losses import identity_target, vectorised_nt_xent
from tests.simclr_wrap.test_model import BATCH, HEAD, view_batches


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def numpy_nnclr_nt_xent(z_a, z_b, queue, temperature, same_view_negatives=True):
    """NNCLR's NT-Xent from raw projections: NN(a_i) vs b, NN(b_i) vs a, plus aa / bb negatives."""
    a, b, queue = unit(z_a.astype("float64")), unit(z_b.astype("float64")), unit(queue.astype("float64"))
    nearest = lambda x: queue[np.argmax(x @ queue.T, axis=1)]
    losses = []
    for anchors, own, other in ((nearest(a), a, b), (nearest(b), b, a)):
        for i in range(len(a)):
            cross = anchors[i] @ other.T / temperature
            same = np.delete(own[i] @ own.T, i) / temperature if same_view_negatives else np.array([])
            logits = np.concatenate([cross, same])
            losses.append(np.log(np.exp(logits).sum()) - cross[i])
    return float(np.mean(losses))


@pytest.mark.parametrize("same_view_negatives", [True, False])
def test_nearest_neighbour_output_matches_a_numpy_nnclr(same_view_negatives):
    rng = np.random.default_rng(0)
    z_a, z_b, queue = rng.normal(size=(4, 6)), rng.normal(size=(4, 6)), rng.normal(size=(20, 6))
    layer = NearestNeighbourQueue(queue_size=20)
    layer.build((None, 6))
    layer.queue.assign(unit(queue).astype("float32"))
    projections = np.concatenate([z_a, z_b]).astype("float32")
    output = SoftmaxCosineSim(temperature=0.2, same_view_negatives=same_view_negatives)(
        projections, anchors=layer(projections))
    loss = float(NTXent()(identity_target(4), output))
    assert loss == pytest.approx(numpy_nnclr_nt_xent(z_a, z_b, queue, 0.2, same_view_negatives), rel=1e-5)


def test_a_queue_holding_the_other_views_gives_simclr_cross_view_terms():
    rng = np.random.default_rng(1)
    z_b = rng.normal(size=(4, 8))
    z_a = z_b + rng.normal(0, 1e-3, z_b.shape)  # each a_i's nearest neighbour among the b's is b_i
    layer = NearestNeighbourQueue(queue_size=4)
    layer.build((None, 8))
    layer.queue.assign(unit(z_b).astype("float32"))
    projections = np.concatenate([z_a, z_b]).astype("float32")
    anchors = keras.ops.convert_to_numpy(layer(projections))
    np.testing.assert_allclose(anchors[:4], unit(z_b), atol=1e-6)  # the positive of a_i is its other view
    nnclr = SoftmaxCosineSim(temperature=0.5)(projections, anchors=anchors)
    simclr = SoftmaxCosineSim(temperature=0.5)(np.concatenate([z_b, z_b]).astype("float32"))
    # a's rows: NN(a_i) = b_i against b, as SimCLR's rows for views b_i, b_j (up to the aa block)
    ab = lambda out: keras.ops.convert_to_numpy(out)[:, :4] / keras.ops.convert_to_numpy(out)[:, :4].sum(1, keepdims=True)
    np.testing.assert_allclose(ab(nnclr), ab(simclr), rtol=1e-5)


def test_an_almost_random_queue_gives_a_finite_loss_and_gradients(tiny_backbone):
    simclr = SimCLR(tiny_backbone, BATCH, feat_dims_ph=HEAD, positives="nearest_neighbour", queue_size=64,
                    temperature=0.05, save_path=None, seed=0)
    (views, target), = view_batches(n_batches=1).as_numpy_iterator()
    with tf.GradientTape() as tape:
        loss = NTXent()(target, simclr.SimCLR_model(list(views), training=True))
    gradients = tape.gradient(loss, simclr.SimCLR_model.trainable_variables)
    assert np.isfinite(float(loss))
    assert all(g is not None and np.isfinite(g.numpy()).all() for g in gradients)
    assert any(np.abs(g.numpy()).sum() > 0 for g in gradients)  # straight-through: gradients reach the head


def test_queue_holds_the_last_projections_of_the_first_views_and_is_saved(tiny_backbone, tmp_path):
    simclr = SimCLR(tiny_backbone, BATCH, feat_dims_ph=HEAD, positives="nearest_neighbour", queue_size=3 * BATCH,
                    save_path=None, seed=0)
    batches = list(view_batches(n_batches=2, seed=3).as_numpy_iterator())
    queue = simclr.SimCLR_model.get_layer("support_queue")
    initial = queue.queue.numpy().copy()
    projector = simclr._projector
    expected = []
    for views, target in batches:
        before = projector(list(views), training=False).numpy()  # the weights of this step, before its update
        simclr.SimCLR_model.train_on_batch(list(views), target)
        expected.insert(0, unit(before[:BATCH]))
    np.testing.assert_allclose(queue.queue.numpy()[: 2 * BATCH], np.concatenate(expected), atol=1e-5)
    np.testing.assert_array_equal(queue.queue.numpy()[2 * BATCH:], initial[:BATCH])  # the oldest dropped
    simclr.save(tmp_path / "nnclr.keras")
    reloaded = keras.models.load_model(tmp_path / "nnclr.keras")
    np.testing.assert_array_equal(reloaded.get_layer("support_queue").queue.numpy(), queue.queue.numpy())


def test_view_positives_are_plain_simclr(tiny_backbone):
    simclr = SimCLR(tiny_backbone, BATCH, feat_dims_ph=HEAD, save_path=None, seed=0)
    (views, target), = view_batches(n_batches=1).as_numpy_iterator()
    projections = simclr._projector(list(views)).numpy()
    loss = float(NTXent()(target, simclr.SimCLR_model(list(views))))
    assert loss == pytest.approx(vectorised_nt_xent(projections[:BATCH], projections[BATCH:], 0.1), rel=1e-5)
    with pytest.raises(ValueError, match=r"Expected queue_size to be an integer >= 4 .*Received: queue_size=2"):
        SimCLR(tiny_backbone, BATCH, feat_dims_ph=HEAD, positives="nearest_neighbour", queue_size=2, save_path=None)
    with pytest.raises(ValueError, match="Expected positives to be one of"):
        SimCLR(tiny_backbone, BATCH, positives="neighbours", save_path=None)
