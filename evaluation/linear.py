"""A linear probe: logistic regression on standardised features, its C chosen by cross-validation."""

import logging
import numbers

import numpy as np
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, classification_report
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from data_generators.checks import check_integer
from evaluation.fractions import check_labels

logger = logging.getLogger(__name__)


def check_features(features, n_features=None):
    """Return `features` as a finite 2-D float array, or raise naming `features`.

    Args:
        features: (samples, dimensions) numbers.
        n_features: the number of dimensions a fitted probe expects, or None.

    Returns:
        A 2-D floating `np.ndarray` (float32 input stays float32).

    Raises:
        TypeError: the features are not real numbers.
        ValueError: not 2-D, empty, not finite, or of another dimension
            than `n_features`.

    Example:
    >>> check_features([[1, 2], [3, 4]]).dtype
    dtype('float64')
    >>> check_features([1, 2])
    Traceback (most recent call last):
    ...
    ValueError: Expected features to be 2-D (samples, dimensions). Received: features of shape (2,)
    """
    array = np.asarray(features)
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise TypeError(f"Expected features to be real numbers. Received: features of dtype {array.dtype}")
    if array.ndim != 2:
        raise ValueError(
            f"Expected features to be 2-D (samples, dimensions). Received: features of shape {array.shape}"
        )
    if 0 in array.shape:
        raise ValueError(
            "Expected features to hold at least one sample of at least one dimension. "
            f"Received: features of shape {array.shape}"
        )
    if not np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float64)
    if not np.isfinite(array).all():
        raise ValueError("Expected features to be finite. Received: features with NaN or infinity")
    if n_features is not None and array.shape[1] != n_features:
        raise ValueError(
            f"Expected features to have the {n_features} dimensions the probe was fitted on. "
            f"Received: features of {array.shape[1]} dimensions"
        )
    return array


def check_fitted(probe):
    """Raise sklearn's `NotFittedError` (a ValueError) if `probe` has not been fitted.

    Args:
        probe: a `LinearProbe` or `KNNProbe`; fitted once it has `n_features_in_`.

    Example:
    >>> check_fitted(LinearProbe())
    Traceback (most recent call last):
    ...
    sklearn.exceptions.NotFittedError: this LinearProbe is not fitted yet; call fit first
    """
    # Not sklearn's check_is_fitted: it wants the probes to be sklearn estimators, with tags.
    if not hasattr(probe, "n_features_in_"):
        raise NotFittedError(f"this {type(probe).__name__} is not fitted yet; call fit first")


def check_features_labels(features, labels, n_features=None):
    """Return `(features, labels)` checked as by `check_features` and `check_labels`, one label per row.

    Args:
        features: (samples, dimensions) numbers.
        labels: one class label per row of `features`.
        n_features: the number of dimensions a fitted probe expects, or None.

    Returns:
        `(features, labels)` as arrays.

    Example:
    >>> check_features_labels([[0.0], [1.0]], ["a"])
    Traceback (most recent call last):
    ...
    ValueError: Expected labels to have one entry per row of features (2 rows). Received: 1 labels
    """
    features = check_features(features, n_features)
    labels = check_labels(labels)
    if len(labels) != len(features):
        raise ValueError(
            f"Expected labels to have one entry per row of features ({len(features)} rows). "
            f"Received: {len(labels)} labels"
        )
    return features, labels


def _c_grid(Cs):
    """The candidate inverse regularisation strengths: an int gives that many from 1e-4 to 1e4 (log-spaced)."""
    expected = "Expected Cs to be an integer >= 1 or a non-empty sequence of positive finite numbers"
    if isinstance(Cs, numbers.Integral) and not isinstance(Cs, bool):
        if Cs < 1:
            raise ValueError(f"{expected}. Received: Cs={Cs}")
        return np.logspace(-4, 4, int(Cs))
    grid = np.asarray(Cs, dtype=object)
    if grid.ndim != 1 or not all(isinstance(c, numbers.Real) and not isinstance(c, bool) for c in grid):
        raise TypeError(f"{expected}. Received: Cs={Cs!r}")
    if grid.size == 0 or not all(0 < c < np.inf for c in grid):
        raise ValueError(f"{expected}. Received: Cs={Cs!r}")
    return grid.astype(np.float64)


class LinearProbe:
    """Logistic regression on standardised features, with C chosen by cross-validation on its training data.

    `fit` scales the features (`StandardScaler`) and fits a multinomial
    `LogisticRegression` (lbfgs). Its inverse regularisation strength C is
    the candidate of `Cs` with the best log-loss over a stratified k-fold
    cross-validation of the labelled images given to `fit`, and nothing else:
    the test images never take part. Log-loss rather than accuracy, because
    with a few labels the accuracy of a fold takes a handful of values and
    ties across many candidates. The scaler is fitted within each fold, so no
    fold sees the statistics of the one it is scored on.

    With few labels the folds shrink to the size of the smallest class (at
    least 2). If a class has a single image no fold split can hold it on both
    sides, so the probe skips the search and uses C=1.0 (logged). A single
    candidate in `Cs` is used as it is, without a search.

    Args:
        Cs: an int, that many candidates log-spaced from 1e-4 to 1e4 (as
            `LogisticRegressionCV`), or a sequence of positive candidates.
        cv: the number of folds, an int >= 2 (fewer when a class is smaller).
        max_iter: iterations of the lbfgs solver.
        seed: int >= 0 for the fold split (and the solver's `random_state`);
            the same seed gives the same probe.

    Attributes:
        classes_: the sorted class labels.
        C_: the chosen C.
        n_folds_: folds of the search, 0 where it was skipped.
        pipeline_: the fitted scaler and logistic regression.
        n_labels_: the number of training images.
        n_features_in_: the feature dimension.

    Example:
    >>> rng = np.random.default_rng(0)
    >>> features = np.concatenate([rng.normal(-3, 1, (20, 4)), rng.normal(3, 1, (20, 4))])
    >>> labels = np.repeat(["cat", "dog"], 20)
    >>> probe = LinearProbe(Cs=5, cv=3).fit(features, labels)
    >>> probe.predict([[-3.0, -3.0, -3.0, -3.0], [3.0, 3.0, 3.0, 3.0]]).tolist()
    ['cat', 'dog']
    >>> probe.score(features, labels)
    1.0
    """

    def __init__(self, *, Cs=10, cv=5, max_iter=2000, seed=0):
        self._grid = _c_grid(Cs)
        self.Cs = Cs
        self.cv = check_integer("cv", cv, minimum=2)
        self.max_iter = check_integer("max_iter", max_iter, minimum=1)
        self.seed = check_integer("seed", seed, minimum=0)

    def fit(self, features, labels):
        """Choose C by cross-validation on `(features, labels)`, then fit on all of them.

        Args:
            features: (n, d) training features.
            labels: n class labels, at least 2 classes.

        Returns:
            `self`.
        """
        features, labels = check_features_labels(features, labels)
        classes, counts = np.unique(labels, return_counts=True)
        if len(classes) < 2:
            raise ValueError(f"Expected labels to hold at least 2 classes. Received: only class {classes[0].item()!r}")
        pipeline = make_pipeline(
            StandardScaler(), LogisticRegression(max_iter=self.max_iter, random_state=self.seed)
        )
        smallest = int(np.argmin(counts))
        if len(self._grid) == 1:
            C, n_folds = float(self._grid[0]), 0
        elif counts[smallest] < 2:
            logger.info("class %r has a single labelled image, too few to cross-validate C: using C=1.0",
                        classes[smallest].item())
            C, n_folds = 1.0, 0
        else:
            n_folds = min(self.cv, int(counts[smallest]))
            if n_folds < self.cv:
                logger.info("%d folds instead of cv=%d: class %r has only %d labelled images",
                            n_folds, self.cv, classes[smallest].item(), counts[smallest])
            search = GridSearchCV(
                pipeline, {"logisticregression__C": list(self._grid)}, scoring="neg_log_loss",
                cv=StratifiedKFold(n_folds, shuffle=True, random_state=self.seed), refit=False,
            )
            C = float(search.fit(features, labels).best_params_["logisticregression__C"])
        self.pipeline_ = pipeline.set_params(logisticregression__C=C).fit(features, labels)
        self.classes_, self.C_, self.n_folds_ = classes, C, n_folds
        self.n_labels_, self.n_features_in_ = len(labels), features.shape[1]
        logger.debug("linear probe: %d labels, %d classes, C=%g (%d folds)", len(labels), len(classes), C, n_folds)
        return self

    def predict(self, features):
        """Return the predicted class label of each row of `features`."""
        check_fitted(self)
        return self.pipeline_.predict(check_features(features, self.n_features_in_))

    def score(self, features, labels):
        """Return the accuracy of the predictions for `features` against `labels`."""
        return self.evaluate(features, labels)["accuracy"]

    def evaluate(self, features, labels):
        """Score the probe on held-out `(features, labels)`.

        Returns:
            A dict: `accuracy`; `report`, sklearn's `classification_report`
            as a dict (zero_division=0); `n_labels`, the number of training
            images; `C`, the chosen C.
        """
        check_fitted(self)
        features, labels = check_features_labels(features, labels, self.n_features_in_)
        predictions = self.pipeline_.predict(features)
        return {
            "accuracy": float(accuracy_score(labels, predictions)),
            "report": classification_report(labels, predictions, output_dict=True, zero_division=0),
            "n_labels": self.n_labels_,
            "C": self.C_,
        }
