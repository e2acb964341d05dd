"""The linear probe: separable and inseparable features, C chosen on the training data only, errors.

The probe's own solver (`fit_multinomial`) is checked against an independent
reference, the probe as it was before issue 12: sklearn's `GridSearchCV` over
a `StandardScaler` + `LogisticRegression` pipeline.
"""

import logging
import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

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
    seen, scaled = [], []
    real_fit = evaluation.linear.fit_multinomial

    def spy_fit(features, labels, *args, **kwargs):
        seen.append((np.array(features), np.array(labels)))
        return real_fit(features, labels, *args, **kwargs)

    class SpyScaler(StandardScaler):
        def fit(self, X, y=None, **params):
            scaled.append(np.array(X))
            return super().fit(X, y, **params)

    monkeypatch.setattr(evaluation.linear, "fit_multinomial", spy_fit)
    monkeypatch.setattr(evaluation.linear, "StandardScaler", SpyScaler)
    train_features, train_labels = blobs(10, spread=8.0, seed=0)
    test_features, test_labels = blobs(10, spread=8.0, seed=1)
    probe = LinearProbe(Cs=5, cv=3).fit(train_features, train_labels)
    probe.evaluate(test_features, test_labels)
    probe.predict(test_features)
    assert len(seen) == 2  # the search over the folds, then the fit on all the labelled images
    for features, labels in seen:
        np.testing.assert_array_equal(features, train_features)
        np.testing.assert_array_equal(labels, train_labels)  # class codes of labels 0, 1, 2 are themselves
    # One scaler per fold, fitted on the fold's training rows only, then one on all of them.
    folds = StratifiedKFold(3, shuffle=True, random_state=0).split(train_features, train_labels)
    expected = [train_features[rows] for rows, _ in folds] + [train_features]
    assert len(scaled) == len(expected)
    for got, want in zip(scaled, expected):
        np.testing.assert_array_equal(got, want)


def test_test_labels_do_not_change_the_fitted_probe():
    train_features, train_labels = blobs(10, spread=8.0, seed=0)
    test_features, test_labels = blobs(10, spread=8.0, seed=1)
    probe = LinearProbe(Cs=5, cv=3).fit(train_features, train_labels)
    before = (probe.C_, probe.coef_.copy(), probe.predict(test_features))
    probe.evaluate(test_features, np.random.default_rng(0).permutation(test_labels))
    assert probe.C_ == before[0]
    np.testing.assert_array_equal(probe.coef_, before[1])
    np.testing.assert_array_equal(probe.predict(test_features), before[2])


def test_same_seed_same_probe():
    # Overlapping blobs, so that the choice of C depends on the fold split.
    features, labels = blobs(15, spread=12.0, seed=2)
    first, second = (LinearProbe(Cs=6, cv=3, seed=4).fit(features, labels) for _ in range(2))
    assert first.C_ == second.C_
    np.testing.assert_array_equal(first.coef_, second.coef_)
    np.testing.assert_array_equal(first.intercept_, second.intercept_)
    np.testing.assert_array_equal(first.cv_log_loss_, second.cv_log_loss_)
    other = LinearProbe(Cs=6, cv=3, seed=5).fit(features, labels)
    assert not np.array_equal(other.cv_log_loss_, first.cv_log_loss_)  # the seed does pick the folds


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


def scaled_data(n_per_class=40, n_classes=3, dim=6, seed=0):
    """Overlapping classes; heavy-tailed and offset features, so a fold's statistics differ from the whole's."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_classes), n_per_class)
    features = rng.normal(size=(len(labels), dim)) + 1.5 * np.eye(n_classes, dim)[labels]
    features[:, 0] *= rng.lognormal(0, 1.5, len(labels))
    features[:, 1] = features[:, 1] * 50 + 300
    return features, labels


def reference_search(features, labels, Cs, cv, seed, pipeline=True):
    """The CV log-loss of each C by sklearn, the scaler fitted inside each fold (or, pipeline=False, before)."""
    model = LogisticRegression(max_iter=10000, tol=1e-8)
    if pipeline:
        model, grid = make_pipeline(StandardScaler(), model), {"logisticregression__C": list(Cs)}
    else:
        features, grid = StandardScaler().fit_transform(features), {"C": list(Cs)}
    search = GridSearchCV(model, grid, scoring="neg_log_loss", refit=False,
                          cv=StratifiedKFold(cv, shuffle=True, random_state=seed))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return -search.fit(features, labels).cv_results_["mean_test_score"]


@pytest.mark.parametrize("n_classes, seed, dtype", [
    (2, 0, np.float64), (3, 0, np.float64), (2, 1, np.float64), (3, 1, np.float64), (5, 3, np.float64),
    (3, 4, np.float32), (5, 5, np.float32)])
def test_the_search_agrees_with_sklearn(n_classes, seed, dtype):
    Cs = np.logspace(-3, 2, 6)
    features, labels = scaled_data(n_classes=n_classes, seed=seed)
    features = features.astype(dtype)
    probe = LinearProbe(Cs=Cs, cv=4, seed=seed).fit(features, labels)
    losses = reference_search(features, labels, Cs, 4, seed)
    np.testing.assert_allclose(probe.cv_log_loss_, losses, rtol=1e-3)
    best = int(np.argmin(losses))
    assert probe.C_ == Cs[best] or losses[list(Cs).index(probe.C_)] <= 1.01 * losses[best]
    # The final fit: sklearn's LogisticRegression at the chosen C, on the standardised labelled images.
    reference = make_pipeline(StandardScaler(), LogisticRegression(C=probe.C_, max_iter=10000, tol=1e-8))
    reference.fit(features, labels)
    test_features, _ = scaled_data(n_classes=n_classes, seed=seed + 100)
    agree = np.mean(probe.predict(test_features) == reference.predict(test_features))
    assert agree >= 0.99
    np.testing.assert_allclose(probe.predict_proba(test_features), reference.predict_proba(test_features), atol=2e-3)


def test_the_log_loss_clips_as_sklearn_at_the_features_precision():
    # One held-out image far outside its fold's training range is predicted with a probability far below
    # float32's eps: sklearn's log-loss (GridSearchCV's score) counts it as -log(eps) of the features' dtype.
    Cs = [1e3]
    features, labels = scaled_data(n_per_class=12, n_classes=2, dim=3, seed=6)
    toward_other_class = np.sign(features[labels != labels[0], 0].mean() - features[labels == labels[0], 0].mean())
    features[0, 0] = 1e4 * toward_other_class
    for dtype in (np.float32, np.float64):
        x = features.astype(dtype)
        probe = LinearProbe(Cs=Cs + [1e4], cv=3, seed=0).fit(x, labels)
        np.testing.assert_allclose(probe.cv_log_loss_, reference_search(x, labels, Cs + [1e4], 3, 0), rtol=2e-3)


def test_the_scaler_is_fitted_inside_each_fold():
    Cs = np.logspace(-3, 2, 6)
    features, labels = scaled_data(n_classes=3, seed=2)
    inside = reference_search(features, labels, Cs, 4, seed=2)
    before = reference_search(features, labels, Cs, 4, seed=2, pipeline=False)
    # The construction: standardising all the labelled images before splitting picks another C.
    assert np.argmin(inside) != np.argmin(before)
    probe = LinearProbe(Cs=Cs, cv=4, seed=2).fit(features, labels)
    assert probe.C_ == Cs[np.argmin(inside)]
    np.testing.assert_allclose(probe.cv_log_loss_, inside, rtol=1e-3)

