"""The fine-tuned classifier: a cloned backbone, gradual unfreezing, a test split read once."""

import keras
import numpy as np
import pytest

from data_generators import DataGeneratorClass
from evaluation.features import feature_extractor
from evaluation.finetune import classifier_model, finetune_classifier
from evaluation.frozen_prefix import HEAD_LAYERS
from simclr_wrap.backbones import get_preprocessing
from tests.conftest import TINY_SIZE

LEVELS = (40, 120, 200)  # the class of an image is its brightness


def brightness_data(n_per_class, seed, shuffle=False):
    """A generator of noisy grey images whose class is their mean brightness."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(LEVELS)), n_per_class)
    noise = rng.normal(0, 20, (len(labels), TINY_SIZE, TINY_SIZE, 3))
    images = np.clip(np.take(LEVELS, labels)[:, None, None, None] + noise, 0, 255).astype(np.uint8)
    return DataGeneratorClass(
        (images, labels), batch_size=8, classes=list(range(len(LEVELS))), width=TINY_SIZE, height=TINY_SIZE,
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


class RoundSpy(keras.callbacks.Callback):
    """Records, for each `fit`, the trainable weights and which backbone layers changed."""

    def __init__(self, events=None):
        super().__init__()
        self.events = [] if events is None else events
        self.rounds = []

    def _backbone_weights(self):
        # A cached round trains a suffix model: the unfrozen backbone layers and the head, at top level.
        names = [layer.name for layer in self.model.layers]
        layers = self.model.get_layer("tiny_backbone").layers if "tiny_backbone" in names else [
            layer for layer in self.model.layers if layer.name not in HEAD_LAYERS]
        return {layer.name: [w.numpy().copy() for w in layer.weights] for layer in layers if layer.weights}

    def on_train_begin(self, logs=None):
        self.events.append("train begin")
        self.rounds.append({
            "trainable": len(self.model.trainable_weights),
            "start": [w.copy() for w in self.model.get_weights()],
            "backbone": self._backbone_weights(),
            "head_mean": self.model.get_layer("head_batchnorm").moving_mean.numpy().copy(),
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
    evaluated = []
    evaluate = keras.Model.evaluate

    def recording_evaluate(model, x=None, *args, **kwargs):
        evaluated.append(x)
        return evaluate(model, x, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "evaluate", recording_evaluate)
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
        assert sorted(set(served)) == list(range(len(test_data)))
        assert sum(x is recorded_test for x in evaluated) == 1
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
    ([(0, 1e-3, 1), (8, 1e-3, 1)], "schedule round 2: num_of_unfrozen_layers=8 but 'tiny_backbone' has 7 layers"),
    ([(0, 1e-3, 1), ("block5", 1e-3, 1)], "schedule round 2: num_of_unfrozen_layers='block5' is not a layer"),
    ([(0, 1e-3, 1), (1, 0, 1)], "schedule round 2: lr must be a number > 0"),
    ([(0, 1e-3, -1)], "schedule round 1: epochs must be an int >= 0"),
    ([(0, 1e-3, 1), (1, 1e-3)], r"schedule round 2 is \(1, 0.001\)"),
    ([], "schedule is empty"),
])
def test_schedule_errors_name_the_round_before_any_training(tiny_backbone, splits, monkeypatch, schedule, match):
    monkeypatch.setattr(keras.Model, "fit", lambda *args, **kwargs: pytest.fail("fit ran before the check"))
    with pytest.raises(ValueError, match=match):
        finetune_classifier(tiny_backbone, *splits, schedule=schedule)


@pytest.mark.parametrize("options,match", [
    ({"n_classes": 1}, "n_classes must be an int >= 2"),
    ({"hidden_units": 0}, "hidden_units must be an int >= 1"),
    ({"regularisation": -1e-4}, "regularisation must be a number >= 0"),
    ({"seed": -1}, "seed must be an int >= 0"),
    ({"pooling": "mean"}, "pooling="),
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
    with pytest.raises(ValueError, match="patience must be an int >= 0"):
        finetune_classifier(tiny_backbone, train, val, val, patience=-1)
