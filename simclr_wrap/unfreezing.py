"""Gradual unfreezing: which layers of a backbone train in a round."""

import math

import keras
import numpy as np


def first_unfrozen_index(base_model, num_of_unfrozen_layers):
    """Index in `base_model.layers` of the first layer that trains.

    Args:
        base_model: the backbone.
        num_of_unfrozen_layers: an int N (the last N layers train, layers
            without weights included, as in the reference; 0 freezes all) or
            a layer name (that layer and all after it train).

    Returns:
        An int between 0 and `len(base_model.layers)`.

    Example:
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(2)])
    >>> first_unfrozen_index(model, 1)
    1
    """
    layers = base_model.layers
    if isinstance(num_of_unfrozen_layers, str):
        names = [layer.name for layer in layers]
        if num_of_unfrozen_layers not in names:
            raise ValueError(
                f"num_of_unfrozen_layers={num_of_unfrozen_layers!r} is not a layer of "
                f"{base_model.name!r}; its layers are {names}"
            )
        return names.index(num_of_unfrozen_layers)
    if isinstance(num_of_unfrozen_layers, bool) or not isinstance(num_of_unfrozen_layers, int):
        raise TypeError(
            f"num_of_unfrozen_layers must be an int or a layer name, got {num_of_unfrozen_layers!r}"
        )
    if not 0 <= num_of_unfrozen_layers <= len(layers):
        raise ValueError(
            f"num_of_unfrozen_layers={num_of_unfrozen_layers} but {base_model.name!r} has "
            f"{len(layers)} layers"
        )
    return len(layers) - num_of_unfrozen_layers


def set_unfrozen_layers(base_model, num_of_unfrozen_layers, unfreeze_batchnorm=False):
    """Make the last layers of `base_model` trainable and freeze the others.

    A frozen BatchNormalization layer runs in inference mode (moving
    statistics, no updates), as Keras' transfer-learning guide advises. With
    `unfreeze_batchnorm=False` BatchNormalization layers inside the unfrozen
    range stay frozen too, so a small domain batch never overwrites the
    pretrained statistics; with True they train like the other layers (batch
    statistics, updated moving averages, trained scale and offset).

    Args:
        base_model: the backbone; changed in place.
        num_of_unfrozen_layers: see `first_unfrozen_index`.
        unfreeze_batchnorm: whether unfrozen BatchNormalization layers train.

    Returns:
        The list of layers that now train.

    Example:
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(2)])
    >>> [layer.name for layer in set_unfrozen_layers(model, 1)] == [model.layers[-1].name]
    True
    """
    start = first_unfrozen_index(base_model, num_of_unfrozen_layers)
    base_model.trainable = True
    training = []
    for index, layer in enumerate(base_model.layers):
        frozen_bn = isinstance(layer, keras.layers.BatchNormalization) and not unfreeze_batchnorm
        layer.trainable = index >= start and not frozen_bn
        if layer.trainable:
            training.append(layer)
    return training


def parameter_counts(model):
    """Return (trainable, non-trainable) parameter counts of `model`.

    Example:
    >>> parameter_counts(keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)]))
    (15, 0)
    """
    trainable = sum(math.prod(w.shape) for w in model.trainable_weights)
    frozen = sum(math.prod(w.shape) for w in model.non_trainable_weights)
    return trainable, frozen


def check_schedule(base_model, schedule):
    """Validate a gradual-unfreezing schedule against `base_model`; return its rounds as tuples.

    Args:
        base_model: the backbone.
        schedule: rounds `(num_of_unfrozen_layers, lr, epochs)`.

    Returns:
        A list of `(num_of_unfrozen_layers, float lr, int epochs)`.

    Raises:
        ValueError: naming the round and the value at fault.

    Example:
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> check_schedule(model, [(1, 1e-3, 2)])
    [(1, 0.001, 2)]
    """
    rounds = []
    for number, entry in enumerate(schedule, start=1):
        try:
            layers, lr, epochs = entry
        except (TypeError, ValueError):
            raise ValueError(
                f"schedule round {number} is {entry!r}; expected (num_of_unfrozen_layers, lr, epochs)"
            ) from None
        try:
            first_unfrozen_index(base_model, layers)
            if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
                raise ValueError(f"lr must be a number > 0, got lr={lr!r}")
            if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 0:
                raise ValueError(f"epochs must be an int >= 0, got epochs={epochs!r}")
        except (TypeError, ValueError) as error:
            raise ValueError(f"schedule round {number}: {error}") from None
        rounds.append((layers, float(lr), int(epochs)))
    if not rounds:
        raise ValueError("schedule is empty; give at least one (num_of_unfrozen_layers, lr, epochs) round")
    return rounds
