"""The linear probe: separable and inseparable features, C chosen on the training data only, errors."""

import logging

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

import evaluation.linear
from evaluation.linear import LinearProbe


def blobs(n_per_class, n_classes=3, dim=8, spread=1.0, seed=0):
    """Gaussian blobs around centres 20 apart on the axes: linearly separable at spread 1."""
    rng = np.random.default_rng(seed)
    centres = 20.0 * np.eye(n_classes, dim)
    labels = np.repeat(np.arange(n_classes), n_per_class)
    return centres[labels] + rng.normal(0, spread, (len(labels), dim)), labels


def chance_band(p, n):
    """Accuracy of predictions independent of the truth: within four standard deviations of p."""
    return 4 * np.sqrt(p * (1 - p) / n)


def test_separable_blobs_are_classified_perfectly():
    train_features, train_labels = blobs(30, seed=0)
    test_features, test_labels = blobs(30, seed=1)
    probe = LinearProbe(Cs=5, cv=3).fit(train_features, train_labels)
    result = probe.evaluate(test_features, test_labels)
    assert result["accuracy"] == 1.0 == probe.score(test_features, test_labels)
    assert result["n_labels"] == probe.n_labels_ == 90
    assert result["C"] == probe.C_ and probe.C_ in np.logspace(-4, 4, 5)
    assert probe.classes_.tolist() == [0, 1, 2] and probe.n_folds_ == 3
    assert result["report"]["2"]["recall"] == 1.0 and result["report"]["accuracy"] == 1.0


def test_inseparable_features_score_near_chance():
    rng = np.random.default_rng(0)
    # The same distribution for both classes: labels carry no information about the features.
    train_features, test_features = rng.normal(size=(200, 10)), rng.normal(size=(2000, 10))
    train_labels, test_labels = rng.integers(0, 2, 200), rng.integers(0, 2, 2000)
    accuracy = LinearProbe(Cs=5, cv=3).fit(train_features, train_labels).score(test_features, test_labels)
    assert abs(accuracy - 0.5) < chance_band(0.5, 2000)


def test_cross_validation_sees_the_training_data_only(monkeypatch):
    seen = []

    class SpyGridSearchCV(evaluation.linear.GridSearchCV):
        def fit(self, X, y=None, **params):
            seen.append((np.array(X), np.array(y)))
            return super().fit(X, y, **params)

    monkeypatch.setattr(evaluation.linear, "GridSearchCV", SpyGridSearchCV)
    train_features, train_labels = blobs(10, spread=8.0, seed=0)
    test_features, test_labels = blobs(10, spread=8.0, seed=1)
    probe = LinearProbe(Cs=5, cv=3).fit(train_features, train_labels)
    probe.evaluate(test_features, test_labels)
    assert len(seen) == 1
    np.testing.assert_array_equal(seen[0][0], train_features)
    np.testing.assert_array_equal(seen[0][1], train_labels)


def test_test_labels_do_not_change_the_fitted_probe():
    train_features, train_labels = blobs(10, spread=8.0, seed=0)
    test_features, test_labels = blobs(10, spread=8.0, seed=1)
    probe = LinearProbe(Cs=5, cv=3).fit(train_features, train_labels)
    before = (probe.C_, probe.pipeline_[-1].coef_.copy(), probe.predict(test_features))
    probe.evaluate(test_features, np.random.default_rng(0).permutation(test_labels))
    assert probe.C_ == before[0]
    np.testing.assert_array_equal(probe.pipeline_[-1].coef_, before[1])
    np.testing.assert_array_equal(probe.predict(test_features), before[2])


def test_same_seed_same_probe():
    # Overlapping blobs, so that the choice of C depends on the fold split.
    features, labels = blobs(15, spread=12.0, seed=2)
    first, second = (LinearProbe(Cs=6, cv=3, seed=4).fit(features, labels) for _ in range(2))
    assert first.C_ == second.C_
    np.testing.assert_array_equal(first.pipeline_[-1].coef_, second.pipeline_[-1].coef_)


def test_folds_shrink_to_the_smallest_class(caplog):
    features, labels = blobs(6, seed=0)
    keep = np.r_[0:2, 6:18]  # two images of class 0, six of the others
    with caplog.at_level(logging.INFO, logger="evaluation.linear"):
        probe = LinearProbe(Cs=3, cv=5).fit(features[keep], labels[keep])
    assert probe.n_folds_ == 2
    assert "2 folds instead of cv=5: class 0 has only 2" in caplog.text


def test_a_class_with_one_image_skips_the_search(caplog):
    features, labels = blobs(5, seed=0)
    keep = np.r_[0:1, 5:15]
    with caplog.at_level(logging.INFO, logger="evaluation.linear"):
        probe = LinearProbe(Cs=3).fit(features[keep], labels[keep])
    assert probe.C_ == 1.0 and probe.n_folds_ == 0
    assert "class 0 has a single labelled image" in caplog.text
    test_features, test_labels = blobs(5, seed=1)
    assert probe.score(test_features, test_labels) == 1.0


def test_a_single_candidate_is_used_without_a_search():
    features, labels = blobs(5, seed=0)
    probe = LinearProbe(Cs=[0.5]).fit(features, labels)
    assert probe.C_ == 0.5 and probe.n_folds_ == 0


def test_string_labels():
    features, labels = blobs(5, n_classes=2, seed=0)
    names = np.array(["cat", "dog"])[labels]
    probe = LinearProbe(Cs=3, cv=2).fit(features, names)
    assert probe.predict(features).tolist() == names.tolist()


CS_EXPECTED = "Expected Cs to be an integer >= 1 or a non-empty sequence of positive finite numbers. "


@pytest.mark.parametrize("options, error, message", [
    ({"Cs": 0}, ValueError, CS_EXPECTED + "Received: Cs=0"),
    ({"Cs": []}, ValueError, CS_EXPECTED + r"Received: Cs=\[\]"),
    ({"Cs": [1.0, -1.0]}, ValueError, CS_EXPECTED + r"Received: Cs=\[1\.0, -1\.0\]"),
    ({"Cs": [1.0, float("inf")]}, ValueError, CS_EXPECTED),
    ({"Cs": True}, TypeError, CS_EXPECTED + "Received: Cs=True"),
    ({"Cs": ["1.0"]}, TypeError, CS_EXPECTED),
    ({"cv": 1}, ValueError, "Expected cv to be an integer >= 2. Received: cv=1"),
    ({"cv": 2.0}, TypeError, "Expected cv to be an integer >= 2. Received: cv=2.0"),
    ({"max_iter": 0}, ValueError, "Expected max_iter to be an integer >= 1. Received: max_iter=0"),
    ({"seed": -1}, ValueError, "Expected seed to be an integer >= 0. Received: seed=-1"),
    ({"seed": "0"}, TypeError, "Expected seed to be an integer >= 0. Received: seed='0'"),
])
def test_bad_parameters_are_named(options, error, message):
    with pytest.raises(error, match=message):
        LinearProbe(**options)


@pytest.mark.parametrize("features, labels, error, message", [
    (np.zeros(6), [0, 1] * 3, ValueError,
     r"Expected features to be 2-D \(samples, dimensions\)\. Received: features of shape \(6,\)"),
    (np.zeros((0, 3)), [], ValueError,
     r"Expected features to hold at least one sample .* Received: features of shape \(0, 3\)"),
    (np.full((4, 2), np.nan), [0, 1] * 2, ValueError, "Expected features to be finite. Received: features with NaN"),
    ([["a", "b"]] * 4, [0, 1] * 2, TypeError, "Expected features to be real numbers. Received: features of dtype <U1"),
    (np.zeros((4, 2)), [0, 1, 0], ValueError,
     r"Expected labels to have one entry per row of features \(4 rows\)\. Received: 3 labels"),
    (np.zeros((4, 2)), [0] * 4, ValueError, "Expected labels to hold at least 2 classes. Received: only class 0"),
])
def test_bad_training_data_is_named(features, labels, error, message):
    with pytest.raises(error, match=message):
        LinearProbe().fit(features, labels)


def test_predict_needs_a_fitted_probe_and_the_fitted_dimension():
    with pytest.raises(NotFittedError, match="not fitted yet"):
        LinearProbe().predict(np.zeros((2, 3)))
    features, labels = blobs(5, seed=0)
    probe = LinearProbe(Cs=[1.0]).fit(features, labels)
    with pytest.raises(ValueError, match="Expected features to have the 8 dimensions the probe was fitted on. "
                                         "Received: features of 3 dimensions"):
        probe.evaluate(np.zeros((2, 3)), [0, 1])
