"""The fine-tuned classifier: a cloned backbone, gradual unfreezing, a test split read once."""

import inspect
import json
import re

import keras
import numpy as np
import pytest

from data_generators import DataGeneratorClass
from evaluation.features import feature_extractor
from evaluation.finetune import FineTunedClassifier, classifier_model, finetune_classifier
from simclr_wrap.backbones import get_preprocessing
from tests.conftest import TINY_SIZE

LEVELS = (40, 120, 200)  # the class of an image is its brightness


def brightness_data(n_per_class, seed, shuffle=False, label_shift=0):
    """A generator of noisy grey images whose class is their mean brightness (plus `label_shift`, modulo 3)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(LEVELS)), n_per_class)
    noise = rng.normal(0, 20, (len(labels), TINY_SIZE, TINY_SIZE, 3))
    images = np.clip(np.take(LEVELS, labels)[:, None, None, None] + noise, 0, 255).astype(np.uint8)
    return DataGeneratorClass(
        (images, (labels + label_shift) % len(LEVELS)), batch_size=8, classes=list(range(len(LEVELS))),
        width=TINY_SIZE, height=TINY_SIZE,
        shuffle=shuffle, preprocess_input=get_preprocessing("unit"), seed=seed,
    )


@pytest.fixture
def splits():
    return brightness_data(8, seed=1, shuffle=True), brightness_data(4, seed=2), brightness_data(4, seed=3)


class Recorded(keras.utils.PyDataset):
    """A data source that logs every batch it serves to `events`."""

    def __init__(self, data, name, events):
        super().__init__()
        self.data, self.name, self.events = data, name, events

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        self.events.append((self.name, index))
        return self.data[index]


def find_layer(model, name):
    """The layer called `name` in `model` or in a model nested in it."""
    for layer in model.layers:
        if layer.name == name:
            return layer
        found = find_layer(layer, name) if isinstance(layer, keras.Model) else None
        if found is not None:
            return found
    return None


class RoundSpy(keras.callbacks.Callback):
    """Records, for each `fit`, the trainable weights and which backbone layers changed."""

    def __init__(self, events=None):
        super().__init__()
        self.events = [] if events is None else events
        self.rounds = []

    def _backbone_weights(self):
        # A cached round trains a suffix model: the unfrozen backbone layers at top level, then the head model.
        names = [layer.name for layer in self.model.layers]
        layers = self.model.get_layer("tiny_backbone").layers if "tiny_backbone" in names else [
            layer for layer in self.model.layers if not isinstance(layer, keras.Model)]
        return {layer.name: [w.numpy().copy() for w in layer.weights] for layer in layers if layer.weights}

    def on_train_begin(self, logs=None):
        self.events.append("train begin")
        self.rounds.append({
            "trainable": len(self.model.trainable_weights),
            "start": [w.copy() for w in self.model.get_weights()],
            "backbone": self._backbone_weights(),
            "head_mean": find_layer(self.model, "head_batchnorm").moving_mean.numpy().copy(),
        })

    def on_train_end(self, logs=None):
        self.events.append("train end")
        before = self.rounds[-1]["backbone"]
        after = self._backbone_weights()
        self.rounds[-1]["changed"] = [
            name for name in before if any((b != a).any() for b, a in zip(before[name], after[name]))
        ]


def test_classifier_is_a_seeded_head_on_a_clone(tiny_backbone):
    first = classifier_model(tiny_backbone, 3, hidden_units=16, seed=5)
    second = classifier_model(tiny_backbone, 3, hidden_units=16, seed=5)
    assert [layer.name for layer in first.layers] == [
        "image", "tiny_backbone", "pooling", "head_batchnorm", "hidden", "predictions"
    ]
    assert first.output_shape == (None, 3) and first.get_layer("hidden").units == 16
    backbone = first.get_layer("tiny_backbone")
    assert backbone is not tiny_backbone
    assert all((a == b).all() for a, b in zip(backbone.get_weights(), tiny_backbone.get_weights()))
    assert all((a == b).all() for a, b in zip(first.get_weights(), second.get_weights()))
    other_seed = classifier_model(tiny_backbone, 3, hidden_units=16, seed=6)
    assert (other_seed.get_layer("hidden").kernel.numpy() != first.get_layer("hidden").kernel.numpy()).any()


def test_fine_tuning_never_changes_the_callers_backbone(tiny_backbone, splits):
    before = [w.copy() for w in tiny_backbone.get_weights()]
    result = finetune_classifier(
        tiny_backbone, *splits, schedule=[("all", 1e-2, 1)], unfreeze_batchnorm=True, hidden_units=8
    )
    assert all((b == a).all() for b, a in zip(before, tiny_backbone.get_weights()))
    trained = result["model"].get_layer("tiny_backbone").get_weights()
    assert any((b != a).any() for b, a in zip(before, trained))  # the clone did train


@pytest.mark.parametrize("cache_frozen", [False, True])
def test_each_round_trains_the_layers_of_its_schedule(tiny_backbone, splits, cache_frozen):
    spy = RoundSpy()
    result = finetune_classifier(
        tiny_backbone, *splits, schedule=[(0, 1e-2, 1), (4, 1e-2, 1), ("conv1", 1e-2, 1)],
        hidden_units=8, callbacks=[spy], cache_frozen=cache_frozen,
    )
    # The head has 6 weights (BatchNormalization scale and offset, two Dense
    # kernels and biases); conv2 adds 2, conv1 2 more; bn2 stays frozen.
    assert [r["trainable"] for r in spy.rounds] == [6, 8, 10]
    assert [r["changed"] for r in spy.rounds] == [[], ["conv2"], ["conv1", "conv2"]]
    assert [r["num_of_unfrozen_layers"] for r in result["rounds"]] == [0, 4, "conv1"]
    assert result["epochs"] == 3 and result["history"]["round"] == [1, 2, 3]
    assert all(r["epochs"] == 1 and r["best_val_loss"] > 0 for r in result["rounds"])
    # The head's moving statistics start at those of the first training batch.
    first_batch = brightness_data(8, seed=1, shuffle=True)[0][0]
    features = feature_extractor(tiny_backbone).predict(first_batch, verbose=0)
    np.testing.assert_allclose(spy.rounds[0]["head_mean"], features.mean(axis=0), rtol=1e-5, atol=1e-6)


def test_a_round_that_does_not_lower_the_validation_loss_is_undone(tiny_backbone, splits):
    spy = RoundSpy()
    result = finetune_classifier(
        tiny_backbone, *splits, schedule=[(0, 1e-2, 2), (4, 10.0, 1)], hidden_units=8, callbacks=[spy],
        cache_frozen=False,  # the spy then sees the whole classifier, whose weights the test compares
    )
    first, second = result["rounds"]
    assert first["kept"] and not second["kept"]
    assert second["best_val_loss"] is None or second["best_val_loss"] > first["best_val_loss"]
    assert all((a == b).all() for a, b in zip(result["model"].get_weights(), spy.rounds[1]["start"]))


@pytest.mark.parametrize("cache_frozen", [False, True])
def test_learns_a_tiny_task_well_above_chance(tiny_backbone, cache_frozen):
    train = brightness_data(12, seed=1, shuffle=True)
    result = finetune_classifier(
        tiny_backbone, train, brightness_data(4, seed=2), brightness_data(6, seed=3),
        schedule=[(0, 1e-2, 8)], patience=8, hidden_units=8, cache_frozen=cache_frozen,
    )
    assert result["accuracy"] > 0.8 and result["val_accuracy"] > 0.8  # chance is 1/3
    assert result["epochs"] == 8 and len(result["history"]["val_loss"]) == 8


def test_the_test_split_is_read_once_after_training_and_selects_nothing(tiny_backbone, splits, monkeypatch):
    _, val, test = splits
    runs = []
    for test_data in (test, brightness_data(5, seed=9)):
        events = []
        spy = RoundSpy(events)
        recorded_test = Recorded(test_data, "test", events)
        train = brightness_data(8, seed=1, shuffle=True)  # a fresh one: a generator's epoch moves its order
        result = finetune_classifier(
            tiny_backbone, train, val, recorded_test, schedule=[(0, 1e-2, 2), (4, 1e-3, 1)],
            hidden_units=8, callbacks=[spy],
        )
        last_training = max(i for i, event in enumerate(events) if event == "train end")
        served = [event[1] for event in events[last_training:] if isinstance(event, tuple)]
        assert all(not isinstance(event, tuple) for event in events[:last_training])
        assert sorted(served) == list(range(len(test_data)))  # every test batch once, after all training
        runs.append((spy, result))
    (first_spy, first), (second_spy, second) = runs
    # Same seed: the same start; another test set: the same training and model.
    assert all((a == b).all() for a, b in zip(first_spy.rounds[0]["start"], second_spy.rounds[0]["start"]))
    assert first["history"]["val_loss"] == second["history"]["val_loss"]
    np.testing.assert_array_equal(
        np.concatenate([w.ravel() for w in first["model"].get_weights()]),
        np.concatenate([w.ravel() for w in second["model"].get_weights()]),
    )
    assert first["val_accuracy"] == second["val_accuracy"]


@pytest.mark.parametrize("schedule,match", [
    # Checked against the backbone by simclr_wrap.unfreezing.check_schedule, in fit.
    ([(0, 1e-3, 1), (8, 1e-3, 1)], "schedule round 2: .*num_of_unfrozen_layers=8"),
    ([(0, 1e-3, 1), ("block5", 1e-3, 1)], "schedule round 2: .*num_of_unfrozen_layers='block5'"),
    # Checked by FineTunedClassifier, at construction.
    ([(0, 1e-3, 1), (1, 0, 1)], "schedule round 2: Expected lr to be a number > 0. Received: lr=0"),
    ([(0, 1e-3, -1)], "schedule round 1: Expected epochs to be an integer >= 0. Received: epochs=-1"),
    ([(0, 1e-3, 1), (1, 1e-3)], r"schedule round 2: Expected a round .* Received: \(1, 0.001\)"),
    ([], "Expected schedule to hold at least one round"),
])
def test_schedule_errors_name_the_round_before_any_training(tiny_backbone, splits, monkeypatch, schedule, match):
    monkeypatch.setattr(keras.Model, "fit", lambda *args, **kwargs: pytest.fail("fit ran before the check"))
    with pytest.raises(ValueError, match=match):
        finetune_classifier(tiny_backbone, *splits, schedule=schedule)


@pytest.mark.parametrize("options,match", [
    ({"n_classes": 1}, "Expected n_classes to be an integer >= 2. Received: n_classes=1"),
    ({"hidden_units": 0}, "Expected hidden_units to be an integer >= 1"),
    ({"regularisation": -1e-4}, "Expected regularisation to be a number >= 0"),
    ({"seed": -1}, "Expected seed to be an integer >= 0"),
    ({"pooling": "mean"}, "Received: pooling='mean'"),
])
def test_classifier_rejects_bad_arguments(tiny_backbone, options, match):
    with pytest.raises(ValueError, match=match):
        classifier_model(tiny_backbone, **{"n_classes": 3, **options})


def test_rejects_a_backbone_it_cannot_clone():
    class Unclonable(keras.Model):
        def __init__(self, layer):
            super().__init__(name="unclonable")
            self.layer = layer

        def call(self, images):
            return self.layer(images)

    backbone = Unclonable(keras.layers.Conv2D(2, 3))
    backbone(np.zeros((1, TINY_SIZE, TINY_SIZE, 3), "float32"))
    with pytest.raises(ValueError, match="cannot clone backbone 'unclonable'"):
        classifier_model(backbone, 2)


def test_rejects_splits_with_other_classes_and_bad_patience(tiny_backbone, splits):
    train, val, _ = splits
    images, labels = np.zeros((4, TINY_SIZE, TINY_SIZE, 3), np.uint8), [0, 1, 0, 1]
    other = DataGeneratorClass((images, labels), batch_size=2, classes=[1, 0], width=TINY_SIZE, height=TINY_SIZE)
    with pytest.raises(ValueError, match=r"test_data has classes \[1, 0\] but train_data has \[0, 1, 2\]"):
        finetune_classifier(tiny_backbone, train, val, other)
    with pytest.raises(ValueError, match="Expected patience to be an integer >= 0. Received: patience=-1"):
        finetune_classifier(tiny_backbone, train, val, val, patience=-1)


class Counted(keras.utils.PyDataset):
    """A data source that logs the index of every batch read from it."""

    def __init__(self, data):
        super().__init__()
        self.data, self.reads = data, []
        self.classes = data.classes

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        self.reads.append(index)
        return self.data[index]


class EpochWeights(keras.callbacks.Callback):
    """The weights of the model that trains at the end of every epoch, per round."""

    def __init__(self):
        super().__init__()
        self.rounds = []

    def on_train_begin(self, logs=None):
        self.rounds.append([])

    def on_epoch_end(self, epoch, logs=None):
        self.rounds[-1].append([w.copy() for w in self.model.get_weights()])


def test_the_config_round_trips_and_holds_every_option():
    defaults = FineTunedClassifier().get_config()
    assert defaults["schedule"] == [[0, 1e-3, 30], [2, 1e-4, 5]]
    options = dict(
        schedule=((0, 1e-2, 4), ("all", 1e-4, 2), ("conv2", 1e-5, 1)), pooling="avg", hidden_units=16,
        regularisation=0, patience=1, unfreeze_batchnorm=True, cache_frozen=False, cache_bytes=1024, seed=7,
        verbose="auto",
    )
    config = FineTunedClassifier(**options).get_config()
    assert sorted(config) == sorted(inspect.signature(FineTunedClassifier).parameters)
    assert config == {**options, "schedule": [[0, 1e-2, 4], ["all", 1e-4, 2], ["conv2", 1e-5, 1]]}
    rebuilt = FineTunedClassifier.from_config(json.loads(json.dumps(config)))
    assert rebuilt.get_config() == config and rebuilt.get_config() != defaults
    assert repr(rebuilt).startswith("FineTunedClassifier(schedule=[[0, 0.01, 4], ['all', 0.0001, 2]")


def test_selected_names_the_kept_round_and_the_epoch_early_stopping_restored(tiny_backbone, splits):
    train, val, _ = splits
    epochs = EpochWeights()
    classifier = FineTunedClassifier(
        schedule=[(0, 1e-2, 3), (4, 10.0, 1)], patience=1, hidden_units=8,
        cache_frozen=False,  # the callback then sees the whole classifier, whose weights the test compares
    ).fit(tiny_backbone, train, val, callbacks=[epochs])
    first, second = classifier.rounds_
    assert first["kept"] and not second["kept"]  # round 2's rate of 10 diverges: undone
    val_losses = classifier.history_["val_loss"][:first["epochs"]]
    assert first["best_epoch"] == 1 + int(np.argmin(val_losses)) < first["epochs"]  # restored, not the last epoch
    assert classifier.selected_ == {"round": 1, "epoch": first["best_epoch"], "num_of_unfrozen_layers": 0, "lr": 1e-2}
    restored = epochs.rounds[0][first["best_epoch"] - 1]
    assert all((a == b).all() for a, b in zip(classifier.model_.get_weights(), restored))
    assert classifier.evaluate(val)["selected"] == classifier.selected_


def test_the_last_kept_round_is_selected(tiny_backbone):
    train = brightness_data(8, seed=1, shuffle=True)
    classifier = FineTunedClassifier(schedule=[(0, 1e-2, 2), (2, 1e-3, 2)], hidden_units=8).fit(
        tiny_backbone, train, brightness_data(4, seed=2))
    assert [r["kept"] for r in classifier.rounds_] == [True, True]
    assert classifier.selected_ == {"round": 2, "epoch": classifier.rounds_[1]["best_epoch"],
                                    "num_of_unfrozen_layers": 2, "lr": 1e-3}
    assert classifier.epochs_ == 4 and classifier.history_["round"] == [1, 1, 2, 2]


@pytest.mark.parametrize("options,error,message", [
    ({"patience": -1}, ValueError, "Expected patience to be an integer >= 0. Received: patience=-1"),
    ({"patience": 1.5}, TypeError, "Received: patience=1.5"),
    ({"hidden_units": 0}, ValueError, "Expected hidden_units to be an integer >= 1. Received: hidden_units=0"),
    ({"hidden_units": "8"}, TypeError, "Received: hidden_units='8'"),
    ({"regularisation": -1e-4}, ValueError, "Expected regularisation to be a number >= 0"),
    ({"regularisation": None}, TypeError, "Received: regularisation=None"),
    ({"pooling": "mean"}, ValueError, "Expected pooling to be one of ['flatten', 'avg', 'max']"),
    ({"seed": -1}, ValueError, "Expected seed to be an integer >= 0. Received: seed=-1"),
    ({"unfreeze_batchnorm": 1}, TypeError, "Expected unfreeze_batchnorm to be True or False"),
    ({"cache_frozen": "yes"}, TypeError, "Expected cache_frozen to be True or False"),
    ({"cache_bytes": -1}, ValueError, "Expected cache_bytes to be an integer >= 0. Received: cache_bytes=-1"),
    ({"verbose": 3}, ValueError, "Expected verbose to be an integer >= 0 and <= 2 (or 'auto')"),
    ({"verbose": "loud"}, TypeError, "Received: verbose='loud'"),
    ({"schedule": 3}, TypeError, "Expected schedule to be a sequence"),
    ({"schedule": []}, ValueError, "Expected schedule to hold at least one round"),
    ({"schedule": [(0, 1e-3, 1), (1, 1e-3)]}, ValueError,
     "schedule round 2: Expected a round (num_of_unfrozen_layers, lr, epochs). Received: (1, 0.001)"),
    ({"schedule": [(0, 1e-3, 1), 2]}, TypeError, "schedule round 2: Expected a round"),
    ({"schedule": [(0, 0.0, 1)]}, ValueError, "schedule round 1: Expected lr to be a number > 0. Received: lr=0.0"),
    ({"schedule": [(0, "1e-3", 1)]}, TypeError, "schedule round 1: Expected lr to be a number > 0. Received: lr='1e-3"),
    ({"schedule": [(0, 1e-3, 1.5)]}, TypeError, "schedule round 1: Expected epochs to be an integer >= 0"),
    ({"schedule": [(0, 1e-3, 1), (-1, 1e-3, 1)]}, ValueError,
     "schedule round 2: Expected num_of_unfrozen_layers to be an integer >= 0"),
    ({"schedule": [(None, 1e-3, 1)]}, TypeError, "Received: num_of_unfrozen_layers=None"),
])
def test_bad_options_fail_at_construction_naming_the_argument(options, error, message):
    with pytest.raises(error, match=re.escape(message)):
        FineTunedClassifier(**options)


def test_bad_options_fail_before_any_training(tiny_backbone, splits, monkeypatch):
    monkeypatch.setattr(keras.Model, "fit", lambda *args, **kwargs: pytest.fail("fit ran before the check"))
    with pytest.raises(TypeError, match="Expected cache_frozen to be True or False"):
        finetune_classifier(tiny_backbone, *splits, cache_frozen=1)
    with pytest.raises(TypeError, match="learning_rate"):  # not an option: named by Python
        finetune_classifier(tiny_backbone, *splits, learning_rate=1e-3)


def test_fit_never_reads_the_test_data_and_evaluate_reads_it_once(tiny_backbone):
    train, val = brightness_data(12, seed=1, shuffle=True), brightness_data(4, seed=2)
    test = brightness_data(4, seed=3, label_shift=1)  # mislabelled: a good classifier scores low
    assert "test_data" not in inspect.signature(FineTunedClassifier.fit).parameters
    counted = Counted(test)
    classifier = FineTunedClassifier(schedule=[(0, 1e-2, 8)], patience=8, hidden_units=8)
    with pytest.raises(RuntimeError, match="not fitted"):
        classifier.evaluate(counted)
    assert classifier.fit(tiny_backbone, train, val) is classifier
    assert counted.reads == []
    weights = [w.copy() for w in classifier.model_.get_weights()]
    scores = classifier.evaluate(counted)
    assert counted.reads == list(range(len(test)))  # one pass: every batch once
    # The accuracy Keras' evaluate gives, independently.
    expected = classifier.model_.evaluate(test, verbose=0, return_dict=True)["accuracy"]
    assert scores == {"accuracy": expected, "val_accuracy": classifier.val_accuracy_,
                      "selected": classifier.selected_}
    assert scores["val_accuracy"] > 0.8 > 0.5 > scores["accuracy"]
    assert all((a == b).all() for a, b in zip(weights, classifier.model_.get_weights()))  # evaluating trains nothing
    # The convenience function returns the estimator's results and the test accuracy.
    result = finetune_classifier(tiny_backbone, train, val, test, schedule=[(0, 1e-2, 1)], hidden_units=8)
    assert sorted(result) == ["accuracy", "epochs", "history", "model", "rounds", "selected", "val_accuracy"]
