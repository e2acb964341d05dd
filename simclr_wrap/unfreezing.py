"""Gradual unfreezing: which layers of a backbone train in a round.

Layers are counted through nested models. A backbone built the usual way,
`inputs -> Rescaling -> MobileNetV2(include_top=False) -> more layers`, holds
MobileNetV2 as one layer of its `layers`; unfreezing counts MobileNetV2's own
layers in its place instead, recursively and in the order of each model's
`layers` (depth first). A nested model's layers are counted as a flat model's
are: a functional model's InputLayer is one of its `layers`, so it counts,
as the InputLayer of a flat `keras.applications` model does; a Sequential
model's `layers` leave its input out, so it does not. The nested model itself
is no layer of the count, but its name is accepted (it means its first
layer). So "the last N layers" and "from layer NAME" mean the same for the
nested backbone as for the same network built flat, and `flat_layers` lists
what they count.
"""

import math

import keras

from data_generators.checks import check_integer, check_positive

SHOWN_NAMES = 12  # a longer list of layer names is shortened in error messages, half from each end


def _is_nested(layer):
    """Whether `layer` is a model whose own layers are counted in its place."""
    return isinstance(layer, keras.Model) and bool(layer.layers)


def layer_paths(base_model):
    """The layers that unfreezing counts, in order, each with where it sits.

    Args:
        base_model: a Keras model.

    Returns:
        A list of `(path, layer)`: `path` is the tuple of indices, one per
        level of nesting, into `base_model.layers`, then into the nested
        model's `layers`, and so on. A layer held by two nested models is
        listed once, where it comes first.

    Example:
    >>> inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="d1")], name="inner")
    >>> inputs = keras.Input((4,), name="x")
    >>> model = keras.Model(inputs, keras.layers.Dense(2, name="d2")(inner(inputs)))
    >>> [(path, layer.name) for path, layer in layer_paths(model)]
    [((0,), 'x'), ((1, 0), 'd1'), ((2,), 'd2')]
    """
    return [(path, layer) for path, layer, _ in _walk(base_model) if not _is_nested(layer)]


def flat_layers(base_model):
    """The layers that unfreezing counts: `base_model.layers`, each nested model replaced by its layers.

    `len(flat_layers(base_model))` is the count that unfreezes every layer.

    Example:
    >>> inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="d1")], name="inner")
    >>> inputs = keras.Input((4,), name="x")
    >>> model = keras.Model(inputs, keras.layers.Dense(2, name="d2")(inner(inputs)))
    >>> [layer.name for layer in model.layers], [layer.name for layer in flat_layers(model)]
    (['x', 'inner', 'd2'], ['x', 'd1', 'd2'])
    """
    return [layer for _, layer in layer_paths(base_model)]


def _walk(base_model):
    """`(path, layer, start)` for every layer and nested model, depth first.

    `start` is the index in `flat_layers` of the layer, or of a nested
    model's first layer.
    """
    seen, entries, count = set(), [], 0

    def visit(model, path):
        nonlocal count
        for index, layer in enumerate(model.layers):
            if id(layer) in seen:
                continue
            seen.add(id(layer))
            entries.append((path + (index,), layer, count))
            if _is_nested(layer):
                visit(layer, path + (index,))
            else:
                count += 1

    visit(base_model, ())
    return entries


def _shown_names(names, nested):
    """A list of names as Python prints it, its middle left out when long."""
    included = ", nested models' layers included" if nested else ""
    if len(names) <= SHOWN_NAMES:
        return repr(names) + (f" ({len(names)} in all{included})" if nested else "")
    half = SHOWN_NAMES // 2
    return (f"[{', '.join(map(repr, names[:half]))}, ..., {', '.join(map(repr, names[-half:]))}] "
            f"({len(names)} in all{included})")


def first_unfrozen_index(base_model, num_of_unfrozen_layers):
    """Index in `flat_layers(base_model)` of the first layer that trains.

    For a backbone without nested models this is the index in
    `base_model.layers`.

    Args:
        base_model: the backbone.
        num_of_unfrozen_layers: an int N (the last N layers train, layers
            without weights included, as in the reference; 0 freezes all),
            or the name of a layer, of a nested model's layer or of a nested
            model (that layer and all after it train). A name is looked up
            first among `base_model.layers`, then inside the nested models.

    Returns:
        An int between 0 and `len(flat_layers(base_model))`.

    Raises:
        TypeError: `num_of_unfrozen_layers` is neither an int nor a string.
        ValueError: it is out of range, names no layer of `base_model`, or
            names layers of several nested models (and none of
            `base_model.layers`).

    Example:
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(2)])
    >>> first_unfrozen_index(model, 1)
    1
    """
    entries = _walk(base_model)
    leaves = [layer for _, layer, _ in entries if not _is_nested(layer)]
    nested = any(_is_nested(layer) for layer in base_model.layers)
    if isinstance(num_of_unfrozen_layers, str):
        name = num_of_unfrozen_layers
        top = [start for path, layer, start in entries if len(path) == 1 and layer.name == name]
        inner = [(path, start) for path, layer, start in entries if len(path) > 1 and layer.name == name]
        if top:
            return top[0]
        if len(inner) == 1:
            return inner[0][1]
        if inner:
            holders = [_holder(base_model, path) for path, _ in inner]
            raise ValueError(
                f"Expected num_of_unfrozen_layers to name one layer of {base_model.name!r}, but {len(inner)} "
                f"layers of its nested models {holders} are called so; give a number of layers or the nested "
                f"model's name instead. Received: num_of_unfrozen_layers={name!r}"
            )
        raise ValueError(
            f"Expected num_of_unfrozen_layers to be a number of layers or the name of a layer of "
            f"{base_model.name!r}, whose layers are {_shown_names([layer.name for layer in leaves], nested)}. "
            f"Received: num_of_unfrozen_layers={name!r}"
        )
    counted = ", those of its nested models included" if nested else ""
    count = check_integer(
        "num_of_unfrozen_layers", num_of_unfrozen_layers, minimum=0, maximum=len(leaves),
        why=f"{base_model.name!r} has {len(leaves)} layers{counted}; a layer name is also accepted",
    )
    return len(leaves) - count


def _holder(base_model, path):
    """Name of the nested model that holds the layer at `path`."""
    model = base_model
    for index in path[:-1]:
        model = model.layers[index]
    return model.name


def set_unfrozen_layers(base_model, num_of_unfrozen_layers, unfreeze_batchnorm=False):
    """Make the last layers of `base_model` trainable and freeze the others.

    Layers are counted through nested models (see the module's docstring and
    `flat_layers`). A nested model is trainable when one of its layers
    trains, so that its `trainable_weights` are those of its layers that
    train; Keras passes a model's `trainable` on to all its layers, so the
    models are set first and each layer after.

    A frozen BatchNormalization layer runs in inference mode (moving
    statistics, no updates), as Keras' transfer-learning guide advises. With
    `unfreeze_batchnorm=False` BatchNormalization layers inside the unfrozen
    range stay frozen too, so a small domain batch never overwrites the
    pretrained statistics; with True they train like the other layers (batch
    statistics, updated moving averages, trained scale and offset). Nested
    models' BatchNormalization layers follow the same rule.

    Args:
        base_model: the backbone; changed in place.
        num_of_unfrozen_layers: see `first_unfrozen_index`.
        unfreeze_batchnorm: whether unfrozen BatchNormalization layers train.

    Returns:
        The list of layers that now train, in the order of `flat_layers`.

    Example:
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(2)])
    >>> [layer.name for layer in set_unfrozen_layers(model, 1)] == [model.layers[-1].name]
    True
    """
    start = first_unfrozen_index(base_model, num_of_unfrozen_layers)
    entries = _walk(base_model)
    # Keras skips setting `trainable` to the value it has (passing nothing on to the layers), so every
    # model is set, outer before inner, and then every layer.
    base_model.trainable = True
    for _, layer, _ in entries:
        if _is_nested(layer):
            layer.trainable = True
    training = []
    for index, layer in enumerate(layer for _, layer, _ in entries if not _is_nested(layer)):
        frozen_bn = isinstance(layer, keras.layers.BatchNormalization) and not unfreeze_batchnorm
        layer.trainable = index >= start and not frozen_bn
        if layer.trainable:
            training.append(layer)
    trains = {id(layer) for layer in training}
    for _, layer, _ in entries:
        # A nested model none of whose layers trains is frozen too (which changes none of them).
        if _is_nested(layer) and not any(id(inner) in trains for inner in flat_layers(layer)):
            layer.trainable = False
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

    With `base_model=None` only what needs no backbone is checked (types,
    ranges, non-negative layer counts), as a constructor does before it has
    one.

    Args:
        base_model: the backbone.
        schedule: rounds `(num_of_unfrozen_layers, lr, epochs)`.

    Returns:
        A list of `(num_of_unfrozen_layers, float lr, int epochs)`.

    Raises:
        TypeError: naming the round and the value of the wrong type.
        ValueError: naming the round and the value out of range, or an
            empty schedule.

    Example:
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> check_schedule(model, [(1, 1e-3, 2)])
    [(1, 0.001, 2)]
    """
    if isinstance(schedule, (str, bytes)) or not hasattr(schedule, "__iter__"):
        raise TypeError("Expected schedule to be a sequence of (num_of_unfrozen_layers, lr, epochs) rounds. "
                        f"Received: schedule={schedule!r}")
    rounds = []
    for number, entry in enumerate(schedule, start=1):
        try:
            layers, lr, epochs = entry
        except (TypeError, ValueError) as error:
            # Not a sequence: TypeError; a sequence of another length: ValueError.
            raise type(error)(
                f"schedule round {number}: Expected a round (num_of_unfrozen_layers, lr, epochs). Received: {entry!r}"
            ) from None
        try:
            if base_model is not None:
                first_unfrozen_index(base_model, layers)
            elif not isinstance(layers, str):  # a name (or "all") is checked once the backbone is known
                layers = check_integer("num_of_unfrozen_layers", layers, minimum=0, why='or a layer name, or "all"')
            lr = check_positive("lr", lr)
            epochs = check_integer("epochs", epochs, minimum=0)
        except (TypeError, ValueError) as error:
            raise type(error)(f"schedule round {number}: {error}") from None
        rounds.append((layers, lr, epochs))
    if not rounds:
        raise ValueError(
            "Expected schedule to hold at least one round (num_of_unfrozen_layers, lr, epochs). Received: schedule=[]"
        )
    return rounds
