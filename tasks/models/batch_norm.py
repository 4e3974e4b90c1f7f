"""Batch-norm statistics the inference-mode model can trust ("precise BN").

A BatchNormalization layer normalises with the batch's own statistics while training and
with its moving averages at inference. The moving averages follow the weights with a
lag of about 1 / (1 - momentum) steps, and a small dataset gives few steps: 200 images
in batches of 32 are 5 steps an epoch, so after the 9 epochs that early stopping allowed,
the averages still mixed statistics of weights that no longer existed. The inference-mode
model was then not the model that trained (99% training, 50% validation accuracy on a
real two-class folder).

:func:`reestimate` replaces every layer's moving mean and variance with the mean, over
the given images in batches of the training size, of the batch statistics the layer
sees in training mode: what the moving averages would converge to if the weights
stopped changing (Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021, section 3).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import keras

# Enough images for the statistics of a few hundred channels to settle (detectron2's
# PreciseBN default is 200 batches; more images cost time and change nothing visible).
MAX_IMAGES = 4096


def batch_norm_layers(model: "keras.Model") -> list[Any]:
    """The model's BatchNormalization layers, in the order they are called."""
    import keras

    return [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]


class Reestimator:
    """Re-estimates the moving statistics of every batch-norm layer of one model.

    Built once per model (it traces a graph); each call sets every layer's moving mean
    and variance to the mean, over ``images`` (at most :data:`MAX_IMAGES`, in order, in
    batches of ``batch_size``), of that layer's batch mean and batch variance in training
    mode. Weights are not changed."""

    def __init__(self, model: "keras.Model", batch_size: int) -> None:
        import keras
        import tensorflow as tf

        self.layers = batch_norm_layers(model)
        self.batch_size = batch_size
        if not self.layers:
            return
        # One pass gives every layer's input: the functional graph up to each layer, run
        # in training mode, so each sees what it saw while training (earlier layers
        # normalise by batch statistics too).
        probe = keras.Model(model.inputs, [layer.input for layer in self.layers])

        def moments(batch: Any) -> list[tuple[Any, Any]]:
            outputs = probe([batch], training=True)
            outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
            result = []
            for layer, output in zip(self.layers, outputs):
                channel_axis = layer.axis % len(output.shape)  # -1 (NHWC) or 1 (NCHW)
                axes = [axis for axis in range(len(output.shape)) if axis != channel_axis]
                result.append((keras.ops.mean(output, axis=axes), keras.ops.var(output, axis=axes)))
            return result

        # A compiled graph: eager calls cost 5x more, every epoch.
        self._moments = tf.function(moments, reduce_retracing=True)

    def __call__(self, images: np.ndarray) -> int:
        """Update the statistics from ``images``; returns the number of layers updated."""
        if not self.layers or len(images) == 0:
            return 0
        images = images[:MAX_IMAGES]
        means = [np.zeros(layer.moving_mean.shape, np.float64) for layer in self.layers]
        variances = [np.zeros(layer.moving_variance.shape, np.float64) for layer in self.layers]
        # The last partial batch is left out unless it is the only one: a batch of 3 has
        # statistics the layers never trained on.
        size = min(self.batch_size, len(images))
        stops = range(size, len(images) + 1, size)
        for stop in stops:
            for index, (mean, variance) in enumerate(self._moments(images[stop - size:stop])):
                means[index] += np.asarray(mean, np.float64)
                variances[index] += np.asarray(variance, np.float64)
        for layer, mean_sum, variance_sum in zip(self.layers, means, variances):
            layer.moving_mean.assign((mean_sum / len(stops)).astype(np.float32))
            layer.moving_variance.assign((variance_sum / len(stops)).astype(np.float32))
        return len(self.layers)


def reestimate(model: "keras.Model", images: np.ndarray, batch_size: int) -> int:
    """Set the moving statistics of every batch-norm layer of ``model`` from ``images``
    once (see :class:`Reestimator`); returns the number of layers updated."""
    return Reestimator(model, batch_size)(images)
