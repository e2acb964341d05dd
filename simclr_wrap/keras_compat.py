"""Workarounds that lean on private Keras behaviour, kept in one place.

Each one is self-contained, names the Keras version it was written against
and says why no public way exists, so that it can be checked (and dropped)
when Keras changes.
"""

# --- Logits travelling with SoftmaxCosineSim's probabilities (Keras 3.15) ---
#
# `SoftmaxCosineSim` must output probabilities (its (B, 4·B) output is the
# model's output, and what `predict`, the metrics and user code see), but
# NT-Xent must be computed from the logits: at low temperatures the positive
# of a badly wrong anchor has a probability far below the smallest float32
# (e^-248 at temperature 0.01), so the log of the probability is floored and
# its gradient is zero. Keras' public API has no way for a layer to hand a
# loss anything but `y_pred`, and `y_pred` must stay the probabilities.
# Keras solves the same problem for its own softmax and crossentropy by
# setting an attribute on the softmax output tensor (`_keras_logits`, in
# keras/src/activations/activations.py and backend/tensorflow/nn.py) and
# reading it back in the loss. That relies on Keras passing the very tensor
# object the last layer returned, inside `Model.fit`/`evaluate` (graph mode,
# XLA, tf.distribute replicas), to `Loss.__call__` and the metrics, which it
# does in Keras 3.15 on TensorFlow. We use our own attribute name, so that
# Keras' crossentropies do not mistake these logits for theirs. Wherever the
# attribute is lost (NumPy arrays, `predict` output, a tensor type that takes
# no attributes, a backend or Keras version that copies the tensor), the
# loss falls back to the log of the probabilities: exact unless they
# underflow.

_LOGITS_ATTRIBUTE = "_simclr_wrap_logits"


def attach_logits(probabilities, logits):
    """Set `logits` on the tensor `probabilities` (if it takes attributes); return `probabilities`."""
    try:
        setattr(probabilities, _LOGITS_ATTRIBUTE, logits)
    except AttributeError:  # e.g. a C-type array
        pass
    return probabilities


def attached_logits(probabilities):
    """The logits `attach_logits` set on `probabilities`, or None."""
    return getattr(probabilities, _LOGITS_ATTRIBUTE, None)


# --- The node of each layer in a functional model's own graph (Keras 3.15) ---
#
# `evaluation.frozen_prefix` cuts a backbone in front of a layer and rebuilds
# the rest on cached activations, so it must know which tensor each layer
# takes and gives in that backbone's graph. The public `layer.input` /
# `layer.output` give a layer's first call, which for a nested functional
# model is its own inner graph, not its call in the outer model; Keras 3.15
# has no public accessor for "this layer's node in that model". The graph's
# node keys (`Function._nodes`, `make_node_key`) and a layer's
# `_inbound_nodes` say it. Anything unexpected returns None, and the caller
# then trains end to end (correct, only slower).


def layer_nodes_in_graph(model):
    """The node of each of `model.layers` in the model's own graph (None for a layer called there twice).

    None when `model` is no graph of layers (a subclassed model), or Keras
    keeps its graph otherwise.
    """
    import keras

    try:
        from keras.src.ops.function import make_node_key

        graph = model._functional if isinstance(model, keras.Sequential) else model
        keys = graph._nodes
        nodes = []
        for layer in model.layers:
            own = [node for index, node in enumerate(layer._inbound_nodes) if make_node_key(layer, index) in keys]
            nodes.append(own[0] if len(own) == 1 else None)
        return nodes
    except (AttributeError, ImportError, TypeError):
        return None


# --- Every layer inside a layer, nested ones included (Keras 3.15) ---
#
# `simclr_wrap.precision` sets the dtype policy of each layer of a backbone
# for a mixed-precision round. A layer converts its inputs to its own
# compute dtype, so every layer must be reached: the layers of nested models
# and the sublayers of custom layers (a residual block holding its Conv2D),
# which `Model.layers` does not list. Keras 3.15's public API has no
# recursive listing; `Layer._flatten_layers` is what Keras uses itself (for
# `Model.summary`, saving, quantization). Without it, nested models are
# walked through their public `layers` (custom layers' sublayers are then
# missed, and compute in their own policy, which is still correct).


def sublayers(layer):
    """`layer` and every layer inside it, each once, nested models' and custom layers' included.

    Example:
    >>> import keras
    >>> inner = keras.Sequential([keras.Input((4,), name="x1"), keras.layers.Dense(3, name="d1")], name="inner")
    >>> model = keras.Sequential([keras.Input((4,), name="x"), inner, keras.layers.Dense(2, name="d2")], name="outer")
    >>> [each.name for each in sublayers(model)]
    ['outer', 'x', 'inner', 'd1', 'x1', 'd2']
    """
    flatten = getattr(layer, "_flatten_layers", None)
    if flatten is not None:
        try:
            return list(flatten(include_self=True, recursive=True))
        except TypeError:  # another signature
            pass
    found = {}

    def visit(current):
        if id(current) not in found:
            found[id(current)] = current
            for inner in getattr(current, "layers", []):
                visit(inner)

    visit(layer)
    return list(found.values())
