"""Pooled backbone features of every image, batched through the model."""

import keras
import numpy as np

from simclr_wrap.heads import pooling_layer


def feature_extractor(base_model, pooling="flatten"):
    """A model that maps images to pooled features of `base_model` (shared weights).

    Args:
        base_model: a built Keras backbone of one image input.
        pooling: "flatten", "avg" or "max", as in the SimCLR wrapper.

    Returns:
        A `keras.Model` from images to (N, D) features; the backbone runs in
        inference mode (BatchNormalization uses its moving statistics).

    Example:
    >>> backbone = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3)])
    >>> feature_extractor(backbone, "avg").output_shape
    (None, 4)
    """
    inputs = keras.Input(base_model.input_shape[1:], name="image")
    features = base_model(inputs, training=False)
    return keras.Model(inputs, pooling_layer(pooling)(features), name=f"{base_model.name}_features")


def extract_features(base_model, data, pooling="flatten", verbose=0):
    """Return the pooled features and label indices of every image of `data`.

    The images go through the model a batch at a time (one `predict` over
    the generator), never one call per image as in the reference.

    Args:
        base_model: the backbone.
        data: a `DataGeneratorClass` without shuffling or augmentation
            (its `labels` are in the order of its batches).
        pooling: "flatten", "avg" or "max".
        verbose: Keras' `predict` verbosity.

    Returns:
        `(features, labels)`: float32 (N, D) and int (N,) arrays.
    """
    if getattr(data, "shuffle", False) or getattr(data, "augmentation", None) is not None:
        raise ValueError(
            "Expected data without shuffle or augmentation, so that features match labels. "
            f"Received: data with shuffle={getattr(data, 'shuffle', False)}, "
            f"augmentation={getattr(data, 'augmentation', None)!r}"
        )
    features = feature_extractor(base_model, pooling).predict(data, verbose=verbose)
    return features.astype(np.float32), np.asarray(data.labels)
