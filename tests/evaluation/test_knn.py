"""The kNN probe: cosine similarity, hand-computed votes and ties, top-5, blocks, errors."""

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

import evaluation.knn
from evaluation.knn import KNNProbe
from tests.evaluation.test_linear import blobs, chance_band


def on_circle(degrees):
    radians = np.deg2rad(np.asarray(degrees, dtype=float))
    return np.stack([np.cos(radians), np.sin(radians)], axis=1)


def test_separable_blobs_are_classified_perfectly():
    train_features, train_labels = blobs(20, seed=0)
    test_features, test_labels = blobs(20, seed=1)
    result = KNNProbe(weights="uniform", k=5).fit(train_features, train_labels).evaluate(test_features, test_labels)
    assert result == {"top1": 1.0, "accuracy": 1.0, "k": 5, "n_labels": 60}


# Training images at 0° and 60° ("a"), 25° and 35° ("b"); the test image at 10° is
# 10° from a@0, 15° from b@25, 25° from b@35 and 50° from a@60.
CIRCLE_TRAIN, CIRCLE_LABELS = on_circle([0, 25, 35, 60]), ["a", "b", "b", "a"]


@pytest.mark.parametrize("k, expected", [
    (1, "a"),  # the nearest is a@0
    (2, "a"),  # one vote each; a's similarity cos 10° beats b's cos 15°
    (3, "b"),  # a@0, b@25, b@35: two votes to one
    (4, "b"),  # two votes each; cos 15° + cos 25° = 1.87 beats cos 10° + cos 50° = 1.63
])
def test_votes_on_a_circle(k, expected):
    probe = KNNProbe(weights="uniform", k=k).fit(CIRCLE_TRAIN, CIRCLE_LABELS)
    assert probe.predict(on_circle([10])).tolist() == [expected]


def test_a_tie_in_votes_and_similarity_goes_to_the_earlier_class():
    probe = KNNProbe(weights="uniform", k=2).fit([[1.0, 1.0], [1.0, -1.0]], ["b", "a"])
    assert probe.predict([[1.0, 0.0]]).tolist() == ["a"]


def test_among_equally_similar_neighbours_the_earlier_training_image_votes():
    probe = KNNProbe(weights="uniform", k=1).fit([[1.0, 0.0], [2.0, 0.0]], ["b", "a"])
    assert probe.predict([[1.0, 0.0]]).tolist() == ["b"]


def test_cosine_similarity_ignores_the_scale_of_each_vector():
    rng = np.random.default_rng(0)
    train_features, train_labels = rng.normal(size=(50, 6)), rng.integers(0, 4, 50)
    test_features = rng.normal(size=(30, 6))
    predictions = KNNProbe(weights="uniform", k=5).fit(train_features, train_labels).predict(test_features)
    scaled = KNNProbe(weights="uniform", k=5).fit(train_features * rng.uniform(0.1, 10, (50, 1)), train_labels)
    np.testing.assert_array_equal(scaled.predict(test_features * rng.uniform(0.1, 10, (30, 1))), predictions)


def test_inseparable_features_score_near_chance():
    rng = np.random.default_rng(0)
    train_features, test_features = rng.normal(size=(400, 16)), rng.normal(size=(2000, 16))
    train_labels, test_labels = rng.integers(0, 4, 400), rng.integers(0, 4, 2000)
    accuracy = KNNProbe(weights="uniform", k=10).fit(train_features, train_labels).evaluate(test_features, test_labels)["top1"]
    assert abs(accuracy - 0.25) < chance_band(0.25, 2000)


# Six classes, one training image each at 0°, 10°, ..., 50°; the test image at 0° ranks them in that order.
def six_classes():
    return KNNProbe(weights="uniform", k=6).fit(on_circle([0, 10, 20, 30, 40, 50]), list("abcdef"))


@pytest.mark.parametrize("truth, top1, top5", [("a", 1.0, 1.0), ("e", 0.0, 1.0), ("f", 0.0, 0.0)])
def test_top5_holds_the_five_best_ranked_classes(truth, top1, top5):
    result = six_classes().evaluate(on_circle([0]), [truth])
    assert (result["top1"], result["top5"]) == (top1, top5)


def test_top5_only_with_more_than_five_classes():
    features, labels = blobs(4, n_classes=5, seed=0)
    assert "top5" not in KNNProbe(weights="uniform", k=3).fit(features, labels).evaluate(features, labels)
    features, labels = blobs(4, n_classes=8, seed=0)
    test_features, test_labels = blobs(4, n_classes=8, seed=1)
    result = KNNProbe(weights="uniform", k=3).fit(features, labels).evaluate(test_features, test_labels)
    assert result["top1"] == result["top5"] == 1.0


def test_a_class_the_probe_never_saw_is_a_miss():
    assert six_classes().evaluate(on_circle([0, 0]), ["a", "z"])["top1"] == 0.5


def test_k_is_capped_by_the_training_images():
    result = KNNProbe(weights="uniform", k=20).fit(CIRCLE_TRAIN, CIRCLE_LABELS).evaluate(on_circle([10]), ["b"])
    assert result["k"] == 4 and result["top1"] == 1.0


def test_blocks_of_test_rows_give_the_same_result(monkeypatch):
    rng = np.random.default_rng(1)
    train_features, train_labels = rng.normal(size=(40, 5)), rng.integers(0, 7, 40)
    test_features, test_labels = rng.normal(size=(33, 5)), rng.integers(0, 7, 33)
    probe = KNNProbe(weights="uniform", k=7).fit(train_features, train_labels)
    whole = probe.evaluate(test_features, test_labels)
    monkeypatch.setattr(evaluation.knn, "_BLOCK_PAIRS", 100)  # two test rows a block
    assert probe.evaluate(test_features, test_labels) == whole


def test_fit_stores_unit_rows():
    probe = KNNProbe(weights="uniform", k=1).fit([[3.0, 4.0], [0.0, 0.0]], [1, 2])
    np.testing.assert_allclose(probe.features_, [[0.6, 0.8], [0.0, 0.0]])
    assert probe.classes_.tolist() == [1, 2] and probe.labels_.tolist() == [1, 2] and probe.k_ == 1


@pytest.mark.parametrize("k, error", [(0, ValueError), (-3, ValueError), (1.5, TypeError), (True, TypeError),
                                      ("5", TypeError)])
def test_bad_k_is_named(k, error):
    with pytest.raises(error, match=f"Expected k to be an integer >= 1. Received: k={k!r}"):
        KNNProbe(weights="uniform", k=k)


def test_bad_data_is_named():
    with pytest.raises(ValueError, match="Expected labels to have one entry per row of features"):
        KNNProbe().fit(np.zeros((3, 2)), [0, 1])
    with pytest.raises(NotFittedError, match="not fitted yet"):
        KNNProbe().predict(np.zeros((1, 2)))
    with pytest.raises(ValueError, match="Expected features to have the 2 dimensions"):
        six_classes().evaluate(np.zeros((1, 3)), ["a"])


def reference_weighted_knn(train, labels, test, k, temperature):
    """An independent, loop-by-loop similarity-weighted kNN (Wu et al., 2018)."""
    unit = lambda rows: rows / np.linalg.norm(rows, axis=1, keepdims=True)  # noqa: E731
    similarity = unit(np.asarray(test)) @ unit(np.asarray(train)).T
    predictions = []
    for row in similarity:
        nearest = np.argsort(-row, kind="stable")[:k]
        scores = {}
        for index in nearest:
            scores[labels[index]] = scores.get(labels[index], 0.0) + np.exp(row[index] / temperature)
        predictions.append(max(sorted(scores), key=lambda label: scores[label]))
    return predictions


@pytest.mark.parametrize("temperature, expected", [(1.0, "b"), (0.07, "b"), (0.01, "a")])
def test_similarity_weights_decide_the_circle(temperature, expected):
    # k=3: a@0 (cos 10°) against b@25 and b@35 (cos 15°, 25°): two votes beat one unless τ makes the nearest
    # weigh far more: at 0.07, 0.805 against 0.615 + 0.262; at 0.01, 0.219 against 0.033 + 0.000.
    probe = KNNProbe(k=3, weights="similarity", temperature=temperature).fit(CIRCLE_TRAIN, CIRCLE_LABELS)
    assert probe.predict(on_circle([10])).tolist() == [expected]
    assert reference_weighted_knn(CIRCLE_TRAIN, CIRCLE_LABELS, on_circle([10]), 3, temperature) == [expected]


@pytest.mark.parametrize("k, temperature", [(5, 0.07), (10, 0.5)])
def test_similarity_weighted_votes_match_an_independent_reference(k, temperature):
    rng = np.random.default_rng(0)
    train, test = rng.standard_normal((60, 8)), rng.standard_normal((40, 8))
    labels = np.array(["x", "y", "z"])[rng.integers(0, 3, 60)]
    probe = KNNProbe(k=k, weights="similarity", temperature=temperature).fit(train, labels)
    assert probe.predict(test).tolist() == reference_weighted_knn(train, labels, test, k, temperature)


def test_auto_k_is_chosen_by_leave_one_out_on_the_labelled_images_alone():
    rng = np.random.default_rng(1)
    train = rng.standard_normal((40, 5)) + np.repeat(np.eye(5)[:2] * 1.5, [28, 12], axis=0)
    labels = np.repeat(["big", "small"], [28, 12])
    probe = KNNProbe(k="auto").fit(train, labels)
    assert set(probe.loo_accuracy_) == {1, 2, 3, 5, 10}  # at most the 12 images of the smallest class
    for k, accuracy in probe.loo_accuracy_.items():
        hits = sum(reference_weighted_knn(np.delete(train, i, 0), np.delete(labels, i), train[i:i + 1], k, 0.07)
                   == [labels[i]] for i in range(len(train)))
        assert accuracy == pytest.approx(hits / len(train))
    best = max(probe.loo_accuracy_.values())
    assert probe.k_ == min(k for k, accuracy in probe.loo_accuracy_.items() if accuracy == best)
    assert probe.evaluate(train, labels)["k"] == probe.k_
    with pytest.raises(ValueError, match="temperature"):
        KNNProbe(temperature=0)
