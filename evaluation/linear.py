"""A linear probe: logistic regression on standardised features, its C chosen by cross-validation.

The regressions are fitted by `fit_multinomial`, a batched L-BFGS: the folds of
the cross-validation are fitted together, sharing one matrix product with the
features per step (the product is memory-bound at a handful of classes, so five
problems cost about what one does), and each C starts from the solution at the
previous, smaller C (a regularisation path, as `LogisticRegressionCV` does).
It minimises what sklearn's `LogisticRegression` (lbfgs, multinomial) does,
with its stopping rule (largest gradient entry <= tol).
"""

import logging
import numbers

import numpy as np
from sklearn.exceptions import NotFittedError
from sklearn.metrics import accuracy_score, classification_report
from sklearn.model_selection import StratifiedKFold
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


# The objective of sklearn's LogisticRegression (lbfgs): the mean multinomial log-loss plus ||W||^2 / (2 C n),
# intercepts unpenalised; stopped as sklearn stops it, when the largest gradient entry is at most _TOL.
_TOL = 1e-4
_HISTORY = 10  # L-BFGS correction pairs kept per problem
_ARMIJO = 1e-4
_MAX_HALVINGS = 40


class _Problems:
    """Multinomial logistic regressions on row subsets of one feature matrix, each standardised on its own rows.

    Problem p sees the rows where `weights[p]` is 1, standardised by `means[p]`, `scales[p]`
    (a StandardScaler fitted on those rows). The standardisation is applied to the weights,
    not the features: (x - mean) / scale . W = x . (W / scale) - mean . (W / scale), so all
    problems share one product with `features` per evaluation.
    """

    def __init__(self, features, onehot, weights, means, scales):
        # Work on features centred and scaled by their overall statistics (float32 products, no
        # cancellation); each problem's own standardisation is re-expressed in these units, so the
        # standardised features each problem sees are exactly those of its own scaler.
        centre = features.mean(axis=0)
        spread = features.std(axis=0)
        spread[spread == 0] = 1.0
        self.x = ((features - centre) / spread).astype(np.float32)
        self.onehot = onehot  # (n, K)
        self.weights = weights  # (P, n) of 0 and 1
        self.counts = weights.sum(axis=1)  # (P,)
        self.means = (means - centre) / spread  # (P, d)
        self.scales = scales / spread  # (P, d)
        self.d, self.k = features.shape[1], onehot.shape[1]

    def value_and_grad(self, params, problems, l2):
        """Objective and gradient of `problems` (indices) at `params` (len(problems), d + 1, K)."""
        d, k, m = self.d, self.k, len(problems)
        coef, intercept = params[:, :d], params[:, d]
        v = coef / self.scales[problems][:, :, None]  # (m, d, K)
        offset = intercept - np.einsum("md,mdk->mk", self.means[problems], v)  # (m, K)
        logits = (self.x @ v.transpose(1, 0, 2).reshape(d, m * k).astype(np.float32)).astype(np.float64)
        logits = logits.reshape(-1, m, k).transpose(1, 0, 2) + offset[:, None, :]  # (m, n, K)
        top = logits.max(axis=2, keepdims=True)
        exp = np.exp(logits - top)
        total = exp.sum(axis=2, keepdims=True)
        log_norm = (top + np.log(total))[:, :, 0]  # (m, n)
        weights, counts = self.weights[problems], self.counts[problems]
        loss = weights * (log_norm - np.einsum("mnk,nk->mn", logits, self.onehot))
        value = loss.sum(axis=1) / counts + 0.5 * l2 * np.einsum("mdk,mdk->m", coef, coef)
        residual = weights[:, :, None] * (exp / total - self.onehot) / counts[:, None, None]  # (m, n, K)
        raw = (self.x.T @ residual.transpose(1, 0, 2).reshape(-1, m * k).astype(np.float32)).astype(np.float64)
        raw = raw.reshape(d, m, k).transpose(1, 0, 2)  # (m, d, K)
        summed = residual.sum(axis=1)  # (m, K)
        grad = np.empty_like(params)
        grad[:, :d] = (raw - self.means[problems][:, :, None] * summed[:, None, :]) / self.scales[problems][:, :, None]
        grad[:, :d] += l2[:, None, None] * coef
        grad[:, d] = summed
        return value, grad

    def log_loss(self, params, rows, eps):
        """Mean log-loss of each problem on `rows[p]` (a boolean mask of the rows), probabilities clipped to [eps, 1 - eps]."""
        d, k, m = self.d, self.k, len(params)
        v = params[:, :d] / self.scales[:, :, None]
        offset = params[:, d] - np.einsum("md,mdk->mk", self.means, v)
        logits = (self.x @ v.transpose(1, 0, 2).reshape(d, m * k).astype(np.float32)).astype(np.float64)
        logits = logits.reshape(-1, m, k).transpose(1, 0, 2) + offset[:, None, :]
        probabilities = np.exp(logits - logits.max(axis=2, keepdims=True))
        probabilities /= probabilities.sum(axis=2, keepdims=True)
        picked = np.clip(np.einsum("mnk,nk->mn", probabilities, self.onehot), eps, 1 - eps)
        return np.array([-np.log(picked[p][rows[p]]).mean() for p in range(m)])


def _lbfgs(problems, l2, params, max_iter):
    """Minimise every problem from `params` (P, d + 1, K) by L-BFGS with a backtracking (Armijo) line search.

    Each problem has its own history, step and stopping; the evaluations are batched over
    the problems still running. Returns the solutions and the iterations each took.
    """
    n_problems, shape = len(params), params.shape[1:]
    x = params.reshape(n_problems, -1).copy()
    size = x.shape[1]
    s_hist, y_hist = np.zeros((n_problems, _HISTORY, size)), np.zeros((n_problems, _HISTORY, size))
    rho = np.zeros((n_problems, _HISTORY))  # 0 marks an empty slot: it then changes nothing below
    iterations = np.zeros(n_problems, dtype=int)
    everyone = np.arange(n_problems)
    value, grad = problems.value_and_grad(x.reshape(n_problems, *shape), everyone, l2)
    grad = grad.reshape(n_problems, -1)
    running = np.abs(grad).max(axis=1) > _TOL
    while running.any():
        live = np.flatnonzero(running)
        # Two-loop recursion over each problem's history, newest pair first.
        q = -grad[live]
        alpha = np.zeros((len(live), _HISTORY))
        newest = (iterations[live] - 1) % _HISTORY
        order = (newest[:, None] - np.arange(_HISTORY)[None, :]) % _HISTORY  # (L, H): newest to oldest
        for j in range(_HISTORY):
            slot = order[:, j]
            alpha[:, j] = rho[live, slot] * np.einsum("ls,ls->l", s_hist[live, slot], q)
            q -= alpha[:, j, None] * y_hist[live, slot]
        s_new, y_new = s_hist[live, newest], y_hist[live, newest]
        yy = np.einsum("ls,ls->l", y_new, y_new)
        has_history = rho[live, newest] > 0
        first_step = 1.0 / np.maximum(1.0, np.linalg.norm(grad[live], axis=1))
        gamma = np.where(has_history, np.einsum("ls,ls->l", s_new, y_new) / np.where(yy > 0, yy, 1), first_step)
        q *= gamma[:, None]
        for j in reversed(range(_HISTORY)):
            slot = order[:, j]
            beta = rho[live, slot] * np.einsum("ls,ls->l", y_hist[live, slot], q)
            q += (alpha[:, j] - beta)[:, None] * s_hist[live, slot]
        direction = q
        slope = np.einsum("ls,ls->l", grad[live], direction)
        uphill = slope >= 0  # numerical trouble: forget the history and go down the gradient
        if uphill.any():
            rho[live[uphill]] = 0.0
            direction[uphill] = -grad[live][uphill] * first_step[uphill, None]
            slope[uphill] = np.einsum("ls,ls->l", grad[live][uphill], direction[uphill])
        # Backtracking line search, batched over the problems still searching.
        step = np.ones(len(live))
        accepted = np.zeros(len(live), dtype=bool)
        new_value, new_grad = value[live].copy(), grad[live].copy()
        for _ in range(_MAX_HALVINGS):
            searching = np.flatnonzero(~accepted)
            if len(searching) == 0:
                break
            trial = x[live[searching]] + step[searching, None] * direction[searching]
            f, g = problems.value_and_grad(trial.reshape(len(searching), *shape), live[searching], l2[live[searching]])
            ok = f <= value[live[searching]] + _ARMIJO * step[searching] * slope[searching]
            good = searching[ok]
            accepted[good] = True
            new_value[good], new_grad[good] = f[ok], g.reshape(len(searching), -1)[ok]
            step[searching[~ok]] *= 0.5
        stuck = ~accepted
        moved = live[accepted]
        s = step[accepted, None] * direction[accepted]
        y = new_grad[accepted] - grad[moved]
        sy = np.einsum("ls,ls->l", s, y)
        slot = iterations[moved] % _HISTORY
        s_hist[moved, slot], y_hist[moved, slot] = s, y
        rho[moved, slot] = np.where(sy > 0, 1.0 / np.where(sy > 0, sy, 1), 0.0)
        x[moved] += s
        decrease = (value[moved] - new_value[accepted]) / np.maximum(
            np.maximum(np.abs(value[moved]), np.abs(new_value[accepted])), 1.0)
        value[moved], grad[moved] = new_value[accepted], new_grad[accepted]
        iterations[moved] += 1
        done = (np.abs(grad[moved]).max(axis=1) <= _TOL) | (iterations[moved] >= max_iter) | (
            decrease <= 64 * np.finfo(float).eps)
        running[moved[done]] = False
        running[live[stuck]] = False  # no decrease found along the direction: as good as it gets
    return x.reshape(n_problems, *shape), iterations


def fit_multinomial(features, labels, fit_rows, Cs, max_iter=2000, scores=None):
    """Fit multinomial logistic regressions on standardised row subsets of `features`, along a path of C.

    Args:
        features: (n, d) floats; their dtype sets the clip of the log-loss, as in sklearn.
        labels: n class indices in [0, K).
        fit_rows: (P, n) booleans: the rows each problem is fitted on (its scaler is fitted on them too).
        Cs: the inverse regularisation strengths, fitted in increasing order, each problem
            starting from its solution at the previous C.
        max_iter: L-BFGS iterations per problem and C.
        scores: (P, n) booleans, rows to compute each problem's log-loss on at every C, or None.

    Returns:
        `(scalers, params, losses)`: the P fitted `StandardScaler`s; the (len(Cs), P, d + 1, K)
        solutions, coefficients on standardised features with the intercept last; and the
        (len(Cs), P) log-losses on `scores` (None without).
    """
    fit_rows = np.asarray(fit_rows, dtype=bool)
    n_classes = int(labels.max()) + 1
    onehot = np.eye(n_classes)[labels]
    scalers = [StandardScaler().fit(features[rows]) for rows in fit_rows]
    features = np.asarray(features)
    eps = np.finfo(features.dtype if np.issubdtype(features.dtype, np.floating) else np.float64).eps
    problems = _Problems(np.asarray(features, np.float64), onehot, fit_rows.astype(np.float64),
                         np.array([s.mean_ for s in scalers]), np.array([s.scale_ for s in scalers]))
    order = np.argsort(Cs, kind="stable")
    params = np.zeros((len(fit_rows), features.shape[1] + 1, n_classes))
    solutions = np.empty((len(Cs),) + params.shape)
    losses = None if scores is None else np.empty((len(Cs), len(fit_rows)))
    for index in order:
        l2 = 1.0 / (Cs[index] * problems.counts)
        params, iterations = _lbfgs(problems, l2, params, max_iter)
        solutions[index] = params
        logger.debug("C=%g: %s L-BFGS iterations", Cs[index], iterations.tolist())
        if scores is not None:
            # As GridSearchCV's log-loss: sklearn's `log_loss` clips at the eps of the probabilities' dtype,
            # which is the features' (float32 features: 1.2e-7). The clip bounds what one outlier adds.
            losses[index] = problems.log_loss(params, np.asarray(scores, dtype=bool), eps)
    return scalers, solutions, losses


class LinearProbe:
    """Logistic regression on standardised features, with C chosen by cross-validation on its training data.

    `fit` scales the features (`StandardScaler`) and fits a multinomial
    logistic regression, the model of sklearn's `LogisticRegression` (lbfgs;
    for two classes, its binary model). Its inverse regularisation strength C
    is the candidate of `Cs` with the best mean log-loss over a stratified
    k-fold cross-validation of the labelled images given to `fit`, and nothing
    else: the test images never take part. Log-loss rather than accuracy,
    because with a few labels the accuracy of a fold takes a handful of values
    and ties across many candidates. The scaler is fitted within each fold, so
    no fold sees the statistics of the one it is scored on. The regressions are
    fitted by `fit_multinomial` (all folds at once, warm-started along C).

    With few labels the folds shrink to the size of the smallest class (at
    least 2). If a class has a single image no fold split can hold it on both
    sides, so the probe skips the search and uses C=1.0 (logged). A single
    candidate in `Cs` is used as it is, without a search.

    Args:
        Cs: an int, that many candidates log-spaced from 1e-4 to 1e4 (as
            `LogisticRegressionCV`), or a sequence of positive candidates.
        cv: the number of folds, an int >= 2 (fewer when a class is smaller).
        max_iter: L-BFGS iterations per fit.
        seed: int >= 0 for the fold split; the same seed gives the same probe.

    Attributes:
        classes_: the sorted class labels.
        C_: the chosen C.
        n_folds_: folds of the search, 0 where it was skipped.
        cv_log_loss_: the mean cross-validated log-loss of each candidate of
            `Cs` (in the order given), or None where the search was skipped.
        scaler_: the `StandardScaler` fitted on all the training images.
        coef_: (classes, dimensions) coefficients on the standardised features.
        intercept_: (classes,) intercepts.
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
        classes, codes, counts = np.unique(labels, return_inverse=True, return_counts=True)
        if len(classes) < 2:
            raise ValueError(f"Expected labels to hold at least 2 classes. Received: only class {classes[0].item()!r}")
        # Two classes: sklearn fits one coefficient vector, penalised as the two of the multinomial model at C / 2.
        scale = 0.5 if len(classes) == 2 else 1.0
        smallest = int(np.argmin(counts))
        losses = None
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
            splits = StratifiedKFold(n_folds, shuffle=True, random_state=self.seed).split(features, codes)
            held_out = np.zeros((n_folds, len(codes)), dtype=bool)
            for fold, (_, scored) in enumerate(splits):
                held_out[fold, scored] = True
            _, _, fold_losses = fit_multinomial(features, codes, ~held_out, self._grid * scale, self.max_iter,
                                                scores=held_out)
            losses = fold_losses.mean(axis=1)
            C = float(self._grid[int(np.argmin(losses))])  # the first of equal losses, as GridSearchCV
        (scaler,), params, _ = fit_multinomial(features, codes, np.ones((1, len(codes)), bool),
                                               np.array([C * scale]), self.max_iter)
        self.scaler_, self.coef_, self.intercept_ = scaler, params[0, 0, :-1].T.copy(), params[0, 0, -1].copy()
        self.classes_, self.C_, self.n_folds_, self.cv_log_loss_ = classes, C, n_folds, losses
        self.n_labels_, self.n_features_in_ = len(labels), features.shape[1]
        logger.debug("linear probe: %d labels, %d classes, C=%g (%d folds)", len(labels), len(classes), C, n_folds)
        return self

    def decision_function(self, features):
        """Return the (samples, classes) logits of `features`."""
        check_fitted(self)
        standardised = self.scaler_.transform(np.asarray(check_features(features, self.n_features_in_), np.float64))
        return standardised @ self.coef_.T + self.intercept_

    def predict_proba(self, features):
        """Return the (samples, classes) class probabilities of `features`, columns in `classes_` order."""
        logits = self.decision_function(features)
        probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
        return probabilities / probabilities.sum(axis=1, keepdims=True)

    def predict(self, features):
        """Return the predicted class label of each row of `features`."""
        check_fitted(self)
        return self.classes_[np.argmax(self.decision_function(features), axis=1)]

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
        predictions = self.predict(features)
        return {
            "accuracy": float(accuracy_score(labels, predictions)),
            "report": classification_report(labels, predictions, output_dict=True, zero_division=0),
            "n_labels": self.n_labels_,
            "C": self.C_,
        }
