"""The projection head that maps pooled backbone features to the SimCLR space."""

import numbers

import keras

from data_generators.checks import check_choice, check_number

POOLINGS = ("flatten", "avg", "max")


def pooling_layer(pooling, name="pooling"):
    """Return the Keras layer that turns a backbone's feature map into a vector.

    Args:
        pooling: "flatten" (the reference's choice), "avg" or "max" (global
            average / max over the spatial axes).
        name: name of the layer.

    Returns:
        A `keras.layers.Layer`.

    Example:
    >>> import numpy as np
    >>> pooling_layer("avg")(np.ones((2, 3, 3, 5), "float32")).shape
    TensorShape([2, 5])
    """
    layers = {
        "flatten": keras.layers.Flatten,
        "avg": keras.layers.GlobalAveragePooling2D,
        "max": keras.layers.GlobalMaxPooling2D,
    }
    return layers[check_choice("pooling", pooling, POOLINGS)](name=name)


def projection_head(features, feat_dims_ph=(2048, 128), activation="swish", regularisation=1e-6, seed=None):
    """Apply SimCLR's projection head: Dense layers with an L1 penalty.

    Every layer but the last has `activation`; the last is linear, as in the
    SimCLR paper, since `SoftmaxCosineSim` normalises its output anyway.

    Args:
        features: symbolic (N, D) tensor of pooled backbone features.
        feat_dims_ph: widths of the Dense layers, the last one the size of
            the projection.
        activation: activation of all but the last layer.
        regularisation: L1 factor on the kernels (0 for none).
        seed: seed of the initial kernels (None: random).

    Returns:
        The symbolic (N, feat_dims_ph[-1]) projections.

    Example:
    >>> inputs = keras.Input((16,))
    >>> projection_head(inputs, (32, 8)).shape
    (None, 8)
    """
    x = features
    for layer in projection_layers(feat_dims_ph, activation, regularisation, seed):
        x = layer(x)
    return x


def projection_layers(feat_dims_ph=(2048, 128), activation="swish", regularisation=1e-6, seed=None):
    """The Dense layers of `projection_head`, unbuilt, for a caller that applies them to several graphs.

    Example:
    >>> [layer.name for layer in projection_layers((32, 8))]
    ['projection_1', 'projection_2']
    """
    feat_dims_ph = _check_widths(feat_dims_ph)
    regularisation = check_number("regularisation", regularisation, minimum=0)
    regulariser = keras.regularizers.L1(regularisation) if regularisation else None
    return [
        keras.layers.Dense(
            width,
            activation=None if depth == len(feat_dims_ph) else activation,
            kernel_regularizer=regulariser,
            kernel_initializer=keras.initializers.GlorotUniform(None if seed is None else seed + depth),
            name=f"projection_{depth}",
        )
        for depth, width in enumerate(feat_dims_ph, start=1)
    ]


def _check_widths(feat_dims_ph):
    """`feat_dims_ph` as a tuple of ints, or TypeError / ValueError in the style of `data_generators.checks`."""
    expected = "Expected feat_dims_ph to be one or more integer widths >= 1"
    try:
        widths = tuple(feat_dims_ph)
    except TypeError:
        raise TypeError(f"{expected}. Received: feat_dims_ph={feat_dims_ph!r}") from None
    if any(isinstance(width, bool) or not isinstance(width, numbers.Integral) for width in widths):
        raise TypeError(f"{expected}. Received: feat_dims_ph={feat_dims_ph!r}")
    if not widths or min(widths) < 1:
        raise ValueError(f"{expected}. Received: feat_dims_ph={feat_dims_ph!r}")
    return tuple(int(width) for width in widths)
