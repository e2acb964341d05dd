"""The distillation stage of SimCLR v2: a student learns a fine-tuned teacher's predictions on every training image.

Chen et al. (2020), "Big Self-Supervised Models are Strong Semi-Supervised
Learners", section 2: after self-supervised pretraining and fine-tuning on
the labelled images, the fine-tuned classifier (the teacher) labels every
training image, labelled or not, and a student is trained on all of them.
At 5 % of the labels this is the one stage that uses the other 95 % of the
training images with a classifier's view of them.
"""

import logging

import numpy as np
import keras

from data_generators.checks import check_number
from evaluation.finetune import FineTunedClassifier, check_same_classes

logger = logging.getLogger(__name__)


def softened(probabilities, temperature):
    """A classifier's probabilities at another softmax temperature: softmax(log p / T).

    A softmax classifier's probabilities are softmax(z) of its logits z, and
    log p = z - logsumexp(z), so softmax(log p / T) = softmax(z / T): the
    teacher's prediction softened (T > 1) or sharpened (T < 1) as in SimCLR
    v2's distillation loss, from its probabilities alone.

    Args:
        probabilities: (N, K) rows of class probabilities.
        temperature: a positive number; 1 leaves them as they are.

    Returns:
        (N, K) float32 rows summing to 1.

    Example:
    >>> [round(float(p), 3) for p in softened(np.array([[0.8, 0.2]]), 1.0)[0]]
    [0.8, 0.2]
    >>> [round(float(p), 3) for p in softened(np.array([[0.8, 0.2]]), 2.0)[0]]  # sqrt(0.8) : sqrt(0.2) = 2 : 1
    [0.667, 0.333]
    """
    # The smallest normal float32 keeps log finite where a probability underflowed to 0.
    logits = np.log(np.maximum(np.asarray(probabilities, np.float64), np.finfo(np.float32).tiny)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    weights = np.exp(logits)
    return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)


class DistilledClassifier:
    """A student trained on every training image to match a fine-tuned teacher (SimCLR v2's third step).

    The teacher is a fitted `FineTunedClassifier` (trained on the labelled
    images). The student is a new classifier of the same architecture on the
    backbone it is given (the adapted one), fine-tuned by a
    `FineTunedClassifier` with the `student` options on ALL the training
    images, minimising the cross-entropy with

        P_T(x; T)                       on an unlabelled image x,
        (P_T(x; T) + one_hot(y)) / 2    on a labelled one (label y),

    where P_T(.; T) is the teacher's prediction at `temperature` (see
    `softened`): on the labelled images SimCLR v2's weighted sum of the
    distillation loss and the label's cross-entropy, with weight 1/2 each.
    The targets sum to 1, as the gradient of Keras' softmax cross-entropy
    assumes (it is softmax - target). The student so trains exactly as the
    fine-tuned classifier does: its rounds, cached frozen prefix, early
    stopping and choice among rounds on the validation loss, the
    cross-entropy with the true validation labels.
    The student's own temperature is 1: a softmax at temperature T' is the
    softmax of the last layer's logits divided by T', a scale that layer
    learns (SimCLR v2 gives both the same).

    Only the labels of the images named `labelled` are read; the other
    training images are used through the teacher's predictions alone. The
    test data is read once, by `evaluate`.

    Args:
        temperature: the positive softmax temperature of the teacher's
            targets. The default, 1.0, was chosen on the validation split
            (see benchmarks/RESULTS.md, "The distillation stage").
        student: the student's `FineTunedClassifier`, or its options as a
            dict (default: `FineTunedClassifier()`'s).

    Attributes (set by `fit`):
        student_: the fitted student `FineTunedClassifier`.
        targets_: (N, K) float32, the target of every training image, by
            its position in the training data.
        teacher_val_accuracy_: the teacher's validation accuracy.
        val_accuracy_: the student's.

    Example:
    >>> DistilledClassifier(temperature=2.0, student={"hidden_units": 8}).get_config()["student"]["hidden_units"]
    8
    """

    def __init__(self, *, temperature=1.0, student=None):
        self.temperature = check_number("temperature", temperature, minimum=0, exclusive_minimum=True)
        if isinstance(student, FineTunedClassifier):
            student = student.get_config()
        self.student = FineTunedClassifier(**dict(student or {}))

    def get_config(self):
        """The options, JSON-serialisable; `from_config` rebuilds the estimator."""
        return {"temperature": self.temperature, "student": self.student.get_config()}

    @classmethod
    def from_config(cls, config):
        """A new, unfitted estimator with the options of `get_config`."""
        return cls(**config)

    def __repr__(self):
        return f"{type(self).__name__}(temperature={self.temperature!r}, student={self.student!r})"

    def fit(self, base_model, teacher, train_data, labelled, val_data, *, callbacks=None, prefix_activations=None):
        """Train the student on every image of `train_data` from `teacher`'s predictions and the labelled images.

        Args:
            base_model: the student's backbone (the adapted one); it is
                cloned and never changed.
            teacher: a `FineTunedClassifier` fitted on the labelled images.
            train_data: a `DataGeneratorClass` of every training image,
                labelled or not, shuffled (the student's batches, where it
                trains end to end) and not augmented (so that the teacher's
                prediction is that of the image the student sees).
            labelled: positions (in `train_data`'s dataset order) of the
                images whose labels may be read: the teacher's training
                images.
            val_data: the validation data, as `FineTunedClassifier.fit`
                takes it: the student's early stopping and choice of round.
            callbacks, prefix_activations: as in `FineTunedClassifier.fit`;
                the teacher predicts through `prefix_activations` too.

        Returns:
            self, with the fitted attributes set.

        Raises:
            TypeError: a teacher that is not a fitted `FineTunedClassifier`,
                or training data that cannot say which image a row is.
            ValueError: `labelled` positions outside the training data, or
                data of other classes than the teacher's.
        """
        labelled = self._check_fit(teacher, train_data, labelled)
        if not getattr(train_data, "shuffle", True):
            logger.warning("train_data is not shuffled: where the student trains end to end its batches follow the "
                           "data's order (often class by class); give DataGeneratorClass(..., shuffle=True)")
        positions = np.concatenate([train_data.batch_indices(index) for index in range(len(train_data))])
        targets = np.empty((train_data.n_images, len(train_data.classes)), np.float32)
        targets[positions] = softened(teacher.predict_proba(train_data, prefix_activations), self.temperature)
        one_hot = np.eye(len(train_data.classes), dtype=np.float32)[train_data.labels[labelled]]
        targets[labelled] = (targets[labelled] + one_hot) / 2
        self.targets_ = targets
        self.teacher_val_accuracy_ = teacher.val_accuracy_
        logger.info("distilling %s into a student on %d training images (%d labelled), temperature %g",
                    teacher.model_.name, len(targets), len(labelled), self.temperature)
        self.student_ = FineTunedClassifier.from_config(self.student.get_config()).fit(
            base_model, WithTargets(train_data, targets), val_data, callbacks=callbacks,
            prefix_activations=prefix_activations)
        self.val_accuracy_ = self.student_.val_accuracy_
        return self

    def evaluate(self, test_data, prefix_activations=None):
        """The student's accuracy on `test_data`, read once; as `FineTunedClassifier.evaluate`."""
        if not hasattr(self, "student_"):
            raise RuntimeError(f"This {type(self).__name__} is not fitted yet; call fit(...) before evaluate(...)")
        return self.student_.evaluate(test_data, prefix_activations=prefix_activations)

    @staticmethod
    def _check_fit(teacher, train_data, labelled):
        """`labelled` as unique int positions, once the teacher and the data are checked."""
        if not isinstance(teacher, FineTunedClassifier) or not hasattr(teacher, "model_"):
            raise TypeError("Expected teacher to be a fitted FineTunedClassifier (call its fit on the labelled "
                            f"images first). Received: teacher={teacher!r}")
        missing = [name for name in ("batch_indices", "labels", "classes", "n_images") if not hasattr(train_data, name)]
        if missing:
            raise TypeError("Expected train_data to be a DataGeneratorClass (its rows must name their images: "
                            f"{', '.join(missing)} missing). Received: train_data of type {type(train_data).__name__}")
        check_same_classes(teacher.classes_, train_data, "train_data")
        labelled = np.asarray(labelled)
        if labelled.ndim != 1 or not np.issubdtype(labelled.dtype, np.integer) or len(np.unique(labelled)) != len(
                labelled) or (len(labelled) and not 0 <= labelled.min() <= labelled.max() < train_data.n_images):
            raise ValueError("Expected labelled to be distinct positions of images of train_data, in [0, "
                             f"{train_data.n_images}). Received: labelled={labelled!r}")
        return labelled.astype(np.int64)


class WithTargets(keras.utils.PyDataset):
    """A generator's batches of images with rows of `targets`, by image position, in place of its labels.

    Everything else (its images, order, epochs, `source`, `classes`,
    `batch_indices`, `augmentation`) is the generator's, so that cached
    activations of its images serve it too.

    Args:
        data: a `DataGeneratorClass` (or a generator with `batch_indices`).
        targets: (n_images, K) rows, row i the target of image i.
    """

    def __init__(self, data, targets):
        super().__init__()
        self.data, self.targets = data, targets

    def __getattr__(self, name):
        if name in ("data", "targets"):  # not set yet: no recursion through self.data
            raise AttributeError(name)
        return getattr(self.data, name)

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        images = self.data[index][0]
        return images, self.targets[self.data.batch_indices(index)]

    def on_epoch_end(self):
        self.data.on_epoch_end()
