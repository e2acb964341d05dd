"""A k-nearest-neighbour probe: a vote among the most cosine-similar training images."""

import logging

import numpy as np

from data_generators.checks import check_choice, check_integer, check_positive
from evaluation.linear import check_features, check_features_labels, check_fitted

logger = logging.getLogger(__name__)

# Test rows per similarity block are chosen so that a block holds at most this many
# (test, train) pairs: memory stays bounded however large the test set is.
_BLOCK_PAIRS = 2**22
# The k tried by k="auto", each kept only up to the smallest class's number of labelled images.
K_CANDIDATES = (1, 2, 3, 5, 10, 20, 50, 100, 200)


def _unit_rows(features):
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.where(norms > 0, norms, 1)  # a zero vector stays zero: similarity 0 to everything


class KNNProbe:
    """k-nearest-neighbour classification by cosine similarity of the features.

    Each test image takes the k training images of highest cosine similarity
    (among equally similar ones, the earlier training image) and ranks the
    classes by their votes among them: one vote each (`weights="uniform"`,
    a majority vote), or exp(similarity / `temperature`) each
    (`weights="similarity"`, the kNN protocol of the self-supervised
    literature: Wu et al., 2018; the kNN monitors of lightly and solo-learn).
    A tie in votes goes to the class of larger summed similarity, and a tie
    in both to the earlier class in sorted order. The top class is the
    prediction. The ranking is computed with numpy on blocks of test rows,
    so the (test, train) similarity matrix is never held whole.

    With `k="auto"` the k is chosen among `K_CANDIDATES` no larger than the
    smallest class's number of labelled images, by leave-one-out accuracy on
    the labelled images themselves (ties to the smaller k): at 5 % of
    TrashNet's labels (15-20 images a class) a k of 20 would make every vote
    include other classes by construction.

    Args:
        k: neighbours that vote, an int >= 1 (fewer, all of them, when there
            are fewer training images), or "auto" (see above).
        weights: "similarity" (the default) or "uniform" (the majority
            vote of the benchmark's tables before 2026-11-26, with k=20).
        temperature: τ of the similarity weights, > 0.

    Attributes:
        features_: the L2-normalised training features (a zero row stays zero).
        labels_: the training labels.
        classes_: the sorted class labels.
        label_codes_: the index into `classes_` of each training label.
        k_: the effective k: min(k, number of training images), or the one
            "auto" chose.
        loo_accuracy_: with k="auto", the leave-one-out accuracy of each k
            tried, as a dict; else None.
        n_features_in_: the feature dimension.

    Example:
    >>> features = [[1.0, 0.1], [2.0, -0.1], [0.1, 1.0], [-0.1, 3.0]]
    >>> probe = KNNProbe(k=1).fit(features, ["east", "east", "north", "north"])
    >>> probe.predict([[5.0, 1.0], [0.0, 0.5]]).tolist()
    ['east', 'north']
    >>> probe.evaluate([[5.0, 1.0]], ["north"])
    {'top1': 0.0, 'accuracy': 0.0, 'k': 1, 'n_labels': 4}
    >>> KNNProbe().fit(features, ["east", "east", "north", "north"]).k_  # auto: at most 2 a class here
    1
    """

    def __init__(self, *, k="auto", weights="similarity", temperature=0.07):
        self.k = k if k == "auto" else check_integer("k", k, minimum=1)
        self.weights = check_choice("weights", weights, ("similarity", "uniform"))
        self.temperature = check_positive("temperature", temperature)

    def get_config(self):
        """The constructor arguments, such that `KNNProbe(**config)` rebuilds it."""
        return {"k": self.k, "weights": self.weights, "temperature": self.temperature}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{key}={value!r}' for key, value in self.get_config().items())})"

    def fit(self, features, labels):
        """Store the L2-normalised `features` and their `labels`; with k="auto", choose k.

        Returns:
            `self`.
        """
        features, labels = check_features_labels(features, labels)
        self.features_ = _unit_rows(features)
        self.labels_ = labels
        self.classes_, self.label_codes_ = np.unique(labels, return_inverse=True)
        self.n_features_in_ = features.shape[1]
        self.loo_accuracy_ = None
        if self.k == "auto":
            self.k_, self.loo_accuracy_ = self._choose_k()
            return self
        self.k_ = min(self.k, len(labels))
        if self.k_ < self.k:
            logger.info("k=%d neighbours asked for, but only %d training images: all of them vote", self.k, self.k_)
        return self

    def _choose_k(self):
        """The candidate k of best leave-one-out accuracy on the training images, and every candidate's."""
        smallest = int(np.bincount(self.label_codes_).min())
        candidates = [k for k in K_CANDIDATES if k <= min(smallest, len(self.labels_) - 1)] or [1]
        scores = {}
        rows = max(1, _BLOCK_PAIRS // len(self.features_))
        for k in candidates:
            hits = 0
            for start in range(0, len(self.features_), rows):
                similarity = self.features_[start:start + rows] @ self.features_.T
                # Each image leaves itself out: it is no neighbour of its own.
                block = np.arange(len(similarity))
                similarity[block, start + block] = -np.inf
                ranked = self._vote(similarity, min(k, len(self.labels_) - 1))
                hits += int(np.sum(ranked[:, 0] == self.label_codes_[start:start + rows]))
            scores[k] = hits / len(self.labels_)
        best = max(scores.values())
        return min(k for k, score in scores.items() if score == best), scores

    def predict(self, features):
        """Return the predicted class label of each row of `features`."""
        check_fitted(self)
        return self.classes_[self._ranked(check_features(features, self.n_features_in_))[:, 0]]

    def evaluate(self, features, labels):
        """Score the probe on held-out `(features, labels)`.

        Returns:
            A dict: `top1` and its alias `accuracy`, the share of test images
            whose class ranks first; `top5`, only when there are more than 5
            training classes, the share whose class ranks among the first 5
            (classes without a vote rank last, in sorted order); `k`, the
            effective k; `n_labels`, the number of training images.
        """
        check_fitted(self)
        features, labels = check_features_labels(features, labels, self.n_features_in_)
        ranked = self._ranked(features)
        index = {label: code for code, label in enumerate(self.classes_.tolist())}
        # A class the probe never saw gets -1, which no ranking holds: always a miss.
        truth = np.array([index.get(label, -1) for label in labels.tolist()])
        top1 = float(np.mean(ranked[:, 0] == truth))
        result = {"top1": top1, "accuracy": top1, "k": self.k_, "n_labels": len(self.labels_)}
        if len(self.classes_) > 5:
            result["top5"] = float(np.mean((ranked[:, :5] == truth[:, None]).any(axis=1)))
        return result

    def _ranked(self, features):
        """The class indices of each row of checked `features`, best first, (n_test, n_classes)."""
        unit = _unit_rows(features)
        rows = max(1, _BLOCK_PAIRS // len(self.features_))
        return np.concatenate([self._ranked_block(unit[start:start + rows]) for start in range(0, len(unit), rows)])

    def _ranked_block(self, unit):
        return self._vote(unit @ self.features_.T, self.k_)

    def _vote(self, similarity, k):
        """The class indices of each row, best first, from its (rows, n_train) similarities and k voters."""
        # A stable sort, so that among equally similar training images the earlier one is nearer.
        nearest = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
        codes = self.label_codes_[nearest]
        nearest_similarity = np.take_along_axis(similarity, nearest, axis=1)
        rows = np.arange(len(similarity))[:, None]
        votes = np.zeros((len(similarity), len(self.classes_)))
        summed = np.zeros_like(votes)
        weights = 1.0 if self.weights == "uniform" else np.exp((nearest_similarity - 1.0) / self.temperature)
        # exp((s - 1) / τ) is exp(s / τ) scaled by one constant: the same ranking, no overflow at small τ.
        np.add.at(votes, (rows, codes), weights)
        np.add.at(summed, (rows, codes), nearest_similarity)
        # lexsort orders by its last key first and is stable: a tie in votes and similarity keeps class order.
        return np.lexsort((-summed, -votes), axis=1)
