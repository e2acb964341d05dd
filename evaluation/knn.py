"""A k-nearest-neighbour probe: a majority vote among the most cosine-similar training images."""

import logging

import numpy as np

from data_generators.checks import check_integer
from evaluation.linear import check_features, check_features_labels, check_fitted

logger = logging.getLogger(__name__)

# Test rows per similarity block are chosen so that a block holds at most this many
# (test, train) pairs: memory stays bounded however large the test set is.
_BLOCK_PAIRS = 2**22


def _unit_rows(features):
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.where(norms > 0, norms, 1)  # a zero vector stays zero: similarity 0 to everything


class KNNProbe:
    """k-nearest-neighbour classification by cosine similarity of the features.

    Each test image takes the k training images of highest cosine similarity
    (among equally similar ones, the earlier training image) and ranks the
    classes by their number of votes among them; a tie in votes goes to the
    class of larger summed similarity, and a tie in both to the earlier class
    in sorted order. The top class is the prediction. The ranking is computed
    with numpy on blocks of test rows, so the (test, train) similarity matrix
    is never held whole.

    Args:
        k: neighbours that vote, an int >= 1; fewer (all of them) when there
            are fewer training images.

    Attributes:
        features_: the L2-normalised training features (a zero row stays zero).
        labels_: the training labels.
        classes_: the sorted class labels.
        label_codes_: the index into `classes_` of each training label.
        k_: the effective k, min(k, number of training images).
        n_features_in_: the feature dimension.

    Example:
    >>> features = [[1.0, 0.1], [2.0, -0.1], [0.1, 1.0], [-0.1, 3.0]]
    >>> probe = KNNProbe(k=1).fit(features, ["east", "east", "north", "north"])
    >>> probe.predict([[5.0, 1.0], [0.0, 0.5]]).tolist()
    ['east', 'north']
    >>> probe.evaluate([[5.0, 1.0]], ["north"])
    {'top1': 0.0, 'accuracy': 0.0, 'k': 1, 'n_labels': 4}
    """

    def __init__(self, *, k=20):
        self.k = check_integer("k", k, minimum=1)

    def fit(self, features, labels):
        """Store the L2-normalised `features` and their `labels`.

        Returns:
            `self`.
        """
        features, labels = check_features_labels(features, labels)
        self.features_ = _unit_rows(features)
        self.labels_ = labels
        self.classes_, self.label_codes_ = np.unique(labels, return_inverse=True)
        self.k_ = min(self.k, len(labels))
        self.n_features_in_ = features.shape[1]
        if self.k_ < self.k:
            logger.info("k=%d neighbours asked for, but only %d training images: all of them vote", self.k, self.k_)
        return self

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
        similarity = unit @ self.features_.T
        # A stable sort, so that among equally similar training images the earlier one is nearer.
        nearest = np.argsort(-similarity, axis=1, kind="stable")[:, : self.k_]
        codes = self.label_codes_[nearest]
        rows = np.arange(len(unit))[:, None]
        votes = np.zeros((len(unit), len(self.classes_)))
        summed = np.zeros_like(votes)
        np.add.at(votes, (rows, codes), 1)
        np.add.at(summed, (rows, codes), np.take_along_axis(similarity, nearest, axis=1))
        # lexsort orders by its last key first and is stable: a tie in votes and similarity keeps class order.
        return np.lexsort((-summed, -votes), axis=1)
