"""Cut a backbone in front of its first unfrozen layer: the frozen prefix and the layers after it.

While a round of gradual unfreezing trains only the last layers of a
backbone, its first layers compute the same function of each image all
round. Whoever wants to compute them once (the fine-tuned classifier's
cached activations in `evaluation.frozen_prefix`, SimCLR's view bank in
`simclr_wrap.view_bank`) cuts the backbone here: a model for the prefix,
and the list of layers that, called one after the other on its output, give
the backbone's output. A cut is possible where one tensor carries all that
the layers after it read from the layers before it: in front of a residual
block (the tensor feeds both its branch and its sum), not inside one (its
skip and its branch both cross the cut). Where the layers after the cut are
a plain chain the suffix lists them; otherwise it is one model of the
backbone's own layers from that tensor on (MobileNetV2 from
`block_13_expand`, a ResNet stage), calling the same layers.
"""

import keras

from simclr_wrap.keras_compat import layer_nodes_in_graph
from simclr_wrap.unfreezing import layer_paths


def chain_start(backbone):
    """Index of the first layer from which `backbone` is a plain chain to its output.

    Layers from that index on each take exactly one tensor, the previous
    layer's output, so the model can be cut in front of any of them and the
    rest rebuilt on a new input. Residual or branching blocks end the chain.
    A nested model is one layer of the chain (its output, in the backbone's
    graph, feeds the next layer); `cut_backbone` may cut inside it.

    Args:
        backbone: a built functional or Sequential Keras model.

    Returns:
        An int in `[1, len(backbone.layers)]`; `len(backbone.layers)` when
        even the last layer cannot be cut in front of (only the output can be
        cached).

    Example:
    >>> inputs = keras.Input((4,))
    >>> hidden = keras.layers.Dense(3)(inputs)
    >>> outputs = keras.layers.Dense(2)(keras.layers.Add()([hidden, keras.layers.Dense(3)(inputs)]))
    >>> chain_start(keras.Model(inputs, outputs))  # the Add joins two branches: cut after it
    4
    """
    start = _chain_start(backbone)
    return len(backbone.layers) if start is None else start


def _one(tensors):
    """The tensor of a one-tensor list, else None."""
    tensors = list(tensors) if isinstance(tensors, (list, tuple)) else [tensors]
    return tensors[0] if len(tensors) == 1 else None


def _chain_start(model):
    """As `chain_start`, but None when the last layer does not give the model's one output."""
    layers, nodes = model.layers, layer_nodes_in_graph(model)
    try:
        if not nodes or nodes[-1] is None or len(model.outputs) != 1:
            return None
        if _one(nodes[-1].output_tensors) is not model.outputs[0]:
            return None
    except (AttributeError, ValueError):  # not a graph of layers we can read
        return None
    start = len(layers)
    for index in range(len(layers) - 1, 0, -1):
        node, previous = nodes[index], nodes[index - 1]
        if node is None or previous is None:
            break
        taken, given = _one(node.input_tensors), _one(previous.output_tensors)
        if taken is None or taken is not given:
            break
        start = index
    return start


def _crossing_tensor(model, nodes, index):
    """The one tensor that `model.layers[index:]` read from the layers before them, else None.

    None too where a layer from `index` on is called more than once in the
    graph, or the model's output does not come from those layers.
    """
    after = nodes[index:]
    if any(node is None for node in after):
        return None
    made_after = {id(tensor) for node in after for tensor in keras.tree.flatten(node.output_tensors)}
    crossing = {id(tensor): tensor for node in after for tensor in keras.tree.flatten(node.input_tensors)
                if id(tensor) not in made_after}
    if len(crossing) != 1 or id(model.outputs[0]) not in made_after:
        return None
    return next(iter(crossing.values()))


def _split(model, path):
    """Cut `model` in front of the layer at `path` (as `layer_paths` gives it): `(prefix, suffix)`, or None.

    `prefix` is a model from `model`'s input to the activations in front of
    the cut; `suffix` the list of layers that, called one after the other on
    those activations, give `model`'s output. A cut inside a nested model
    is made in it, recursively: its prefix ends the outer prefix, its
    layers after the cut start the suffix. None where more than one tensor
    crosses the cut (a branch or a residual block spans it), at any level.
    """
    layers = model.layers
    try:
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            return None
    except (AttributeError, ValueError):
        return None
    index, inner = path[0], path[1:]
    if index == len(layers):  # only what follows the model trains
        return keras.Model(model.inputs[0], model.outputs[0], name=f"{model.name}_frozen_prefix"), []
    start, nodes = _chain_start(model), layer_nodes_in_graph(model)
    if nodes is None:
        return None
    if not any(inner):  # in front of a layer of `model`, or of a nested model's first layer
        crossing = _crossing_tensor(model, nodes, index) if index > 0 else None
        if crossing is None:
            return None
        prefix = keras.Model(model.inputs[0], crossing, name=f"{model.name}_frozen_prefix")
        if start is not None and start <= index:
            return prefix, list(layers[index:])
        # Keras builds the model of the layers from `crossing` on with a new input in its place.
        return prefix, [keras.Model(crossing, model.outputs[0], name=f"{model.name}_after_cut")]
    nested = layers[index]
    if start is None or start > index + 1 or nodes[index] is None or _one(nodes[index].input_tensors) is None:
        return None
    cut = _split(nested, inner)
    if cut is None:
        return None
    nested_prefix, nested_suffix = cut
    prefix = keras.Model(model.inputs[0], nested_prefix(_one(nodes[index].input_tensors)),
                         name=f"{model.name}_frozen_prefix")
    return prefix, nested_suffix + list(layers[index + 1:])


def cut_backbone(backbone, first_unfrozen):
    """`(prefix, suffix layers)` for a round that trains `flat_layers(backbone)[first_unfrozen:]`, or None.

    None when the layers in front of the cut hold no weights (nothing to
    save) or when a residual block spans the cut.
    """
    paths = layer_paths(backbone)
    if not any(layer.weights for _, layer in paths[:first_unfrozen]):
        return None
    path = paths[first_unfrozen][0] if first_unfrozen < len(paths) else (len(backbone.layers),)
    return _split(backbone, path)
