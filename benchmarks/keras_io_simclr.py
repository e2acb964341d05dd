"""What a user would write instead of simclr-wrap: SimCLR in the style of the keras.io example.

A plain Keras 3 `Model` with its own `train_step`, after "Semi-supervised image
classification using contrastive pretraining with SimCLR" (keras.io, András
Béres): the two views are made inside the step by Keras preprocessing layers
(flip, translation, zoom, a random colour affine map), the encoder runs on
each view, a projection head, and the cross-view NT-Xent of the two (B, B)
similarity matrices. Written here, for `benchmarks/peers_speed.py` to time
simclr-wrap against; the packages never import it.

Two choices make it the same work as simclr-wrap's step, where the example
differs: the encoder is any Keras backbone (with its layers' trainable flags
as the caller sets them) followed by global average pooling, and the loss has
the same-view negatives of SimCLR's NT-Xent (the example leaves them out), so
both compare each anchor with 2·B - 1 candidates.
"""

import keras
import tensorflow as tf
from keras import layers, ops


class RandomColorAffine(layers.Layer):
    """The keras.io example's colour jitter: a random brightness and a random 3x3 colour map per image."""

    def __init__(self, brightness=0.6, jitter=0.2, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.brightness, self.jitter = brightness, jitter
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=True):
        if not training:
            return images
        batch_size = ops.shape(images)[0]
        brightness_scales = 1 + keras.random.uniform(
            (batch_size, 1, 1, 1), minval=-self.brightness, maxval=self.brightness, seed=self.seed_generator)
        jitter_matrices = keras.random.uniform(
            (batch_size, 1, 3, 3), minval=-self.jitter, maxval=self.jitter, seed=self.seed_generator)
        color_transforms = ops.eye(3) * brightness_scales + jitter_matrices
        return ops.clip(ops.matmul(images, color_transforms), 0, 1)


def augmenter(size, min_area=0.25, brightness=0.6, jitter=0.2, seed=None):
    """The example's view pipeline on [0, 1] images: flip, translate and zoom (a random crop), colour."""
    zoom = 1 - min_area ** 0.5
    return keras.Sequential([
        keras.Input((size, size, 3)),
        layers.Rescaling(1 / 255),
        layers.RandomFlip("horizontal", seed=seed),
        layers.RandomTranslation(zoom / 2, zoom / 2, seed=seed),
        layers.RandomZoom((-zoom, 0.0), (-zoom, 0.0), seed=seed),
        RandomColorAffine(brightness, jitter, seed=seed),
    ], name="augmenter")


class ContrastiveModel(keras.Model):
    """SimCLR as a `keras.Model` subclass with its own `train_step` (TensorFlow backend).

    Args:
        encoder: a Keras backbone mapping [0, 1] images to a feature map.
        size: image height and width.
        widths: the projection head's Dense widths (ReLU between them).
        temperature: of the softmax over cosine similarities.
    """

    def __init__(self, encoder, size, widths=(2048, 128), temperature=0.2, seed=0, **kwargs):
        super().__init__(**kwargs)
        self.temperature = temperature
        self.augmenter = augmenter(size, seed=seed)
        self.encoder = keras.Sequential([encoder, layers.GlobalAveragePooling2D()], name="encoder")
        self.projection_head = keras.Sequential(
            [layers.Dense(width, activation="relu" if depth < len(widths) else None)
             for depth, width in enumerate(widths, start=1)], name="projection_head")
        self.loss_tracker = keras.metrics.Mean(name="c_loss")
        self.accuracy = keras.metrics.SparseCategoricalAccuracy(name="c_acc")

    @property
    def metrics(self):
        return [self.loss_tracker, self.accuracy]

    def contrastive_loss(self, projections_1, projections_2):
        """NT-Xent of SimCLR: each of the 2·B views against the other 2·B - 1, its other view the positive."""
        projections = ops.normalize(ops.concatenate([projections_1, projections_2], axis=0), axis=1)
        batch_size = ops.shape(projections_1)[0]
        similarities = ops.matmul(projections, ops.transpose(projections)) / self.temperature
        similarities = similarities - 1e9 * ops.eye(2 * batch_size)  # no view is its own candidate
        positives = ops.concatenate([ops.arange(batch_size) + batch_size, ops.arange(batch_size)], axis=0)
        self.accuracy.update_state(positives, similarities)
        return ops.mean(keras.losses.sparse_categorical_crossentropy(positives, similarities, from_logits=True))

    def call(self, images, training=False):
        return self.projection_head(self.encoder(images, training=training), training=training)

    def train_step(self, images):
        view_1 = self.augmenter(images, training=True)
        view_2 = self.augmenter(images, training=True)
        with tf.GradientTape() as tape:
            projections_1 = self(view_1, training=True)
            projections_2 = self(view_2, training=True)
            loss = self.contrastive_loss(projections_1, projections_2)
        weights = self.encoder.trainable_weights + self.projection_head.trainable_weights
        self.optimizer.apply_gradients(zip(tape.gradient(loss, weights), weights))
        self.loss_tracker.update_state(loss)
        return {metric.name: metric.result() for metric in self.metrics}
