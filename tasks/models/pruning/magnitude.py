"""Unstructured magnitude pruning in plain Keras 3.

``tensorflow-model-optimization`` refuses Keras 3 models, so the same method is done
here with a callback instead of wrapper layers (the pruned model keeps the exact layers
and names of the base model, so every converter treats it like the base model):

- the model is cloned with its weights (the input model is not modified);
- every Conv2D and Dense kernel gets a mask that keeps its largest-|w| weights. The
  target sparsity follows a cubic polynomial schedule (as in TFMOT's
  ``PolynomialDecay``) from 0 at step 0 to ``options.sparsity`` at 75 % of the
  fine-tuning steps, then stays constant. Masks are recomputed every ``update_every``
  steps (and at the end of the ramp), and applied after every train batch so pruned
  weights stay zero while Adam keeps updating them;
- after fine-tuning the final masks are recomputed at the target sparsity and applied,
  so every pruned kernel holds exactly ``round(sparsity * size)`` zeros (or more, if
  training left exact zeros).

Left dense: biases, BatchNormalization, and DepthwiseConv2D kernels. Depthwise kernels
hold ~1-3 % of a MobileNet's weights but each filter sees a single channel, so zeroing
half of its 9 taps costs much accuracy for almost no size; so they are skipped and
:func:`tasks.models.stats.kernel_sparsity` of a MobileNet ends slightly below the target.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np
from keras import layers

from tasks.models.pruning.base import (MagnitudePruningOptions, PrunedModel, TrainingData,
                                       fine_tune)

# Where the schedule reaches the final sparsity, as a fraction of the fine-tuning steps:
# the remaining quarter lets the network recover at constant sparsity.
RAMP_FRACTION = 0.75


def polynomial_sparsity(step: int, final_sparsity: float, end_step: int,
                        power: int = 3) -> float:
    """Target sparsity at ``step``: ``final * (1 - (1 - step/end)^power)``, 0 at step 0,
    ``final`` from ``end_step`` on. Rises fast early, when the smallest weights are
    still cheap to remove, and slowly near the end."""
    if end_step <= 0 or step >= end_step:
        return final_sparsity
    progress = max(step, 0) / end_step
    return final_sparsity * (1.0 - (1.0 - progress) ** power)


def magnitude_mask(weights: np.ndarray, sparsity: float) -> np.ndarray:
    """A 0/1 mask of ``weights``' shape zeroing exactly ``round(sparsity * size)`` of the
    smallest-|w| entries (ties broken by position, so the count is exact)."""
    flat = np.abs(weights).ravel()
    pruned = int(round(sparsity * flat.size))
    mask = np.ones(flat.size, dtype=weights.dtype)
    if pruned > 0:
        # argpartition, not a threshold: with ties at the threshold a ">" or ">=" test
        # would zero too few or too many.
        mask[np.argpartition(flat, pruned - 1)[:pruned]] = 0
    return mask.reshape(weights.shape)


def prunable_layers(model: keras.Model) -> list[Any]:
    """Conv2D and Dense layers (DepthwiseConv2D is not a Conv2D subclass in Keras 3),
    looking inside nested models."""
    found: list[Any] = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found.extend(prunable_layers(layer))
        elif isinstance(layer, (layers.Conv2D, layers.Dense)):
            found.append(layer)
    return found


class MagnitudePruning(keras.callbacks.Callback):
    """Keeps the masks of ``pruned`` layers' kernels on the schedule during ``fit``.

    ``step`` counts train batches over all epochs (one per optimiser step, since the
    model is compiled with the default ``steps_per_execution=1``).
    """

    def __init__(self, pruned: list[Any], final_sparsity: float, end_step: int,
                 update_every: int) -> None:
        super().__init__()
        self.pruned = pruned
        self.final_sparsity = final_sparsity
        self.end_step = end_step
        self.update_every = update_every
        self.step = 0
        self.masks: list[Any] = []
        self.current_sparsity = 0.0
        self.updates: list[dict[str, float]] = []
        self.sparsity_at_train_end: float | None = None

    def update_masks(self, sparsity: float) -> None:
        # Masks live as backend tensors: applying them after every batch then stays on
        # the device instead of copying each kernel to numpy and back.
        self.masks = [keras.ops.convert_to_tensor(
            magnitude_mask(np.asarray(layer.kernel.numpy()), sparsity), dtype=layer.kernel.dtype)
            for layer in self.pruned]
        self.current_sparsity = sparsity
        self.updates.append({"step": self.step, "sparsity": round(sparsity, 6)})

    def apply_masks(self) -> None:
        for layer, mask in zip(self.pruned, self.masks):
            layer.kernel.assign(keras.ops.multiply(layer.kernel, mask))

    def measured_sparsity(self) -> float:
        zeros = sum(int(np.count_nonzero(layer.kernel.numpy() == 0)) for layer in self.pruned)
        size = sum(int(np.prod(layer.kernel.shape)) for layer in self.pruned)
        return zeros / size if size else 0.0

    def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
        # Masks are recomputed before the step, so this step's forward pass already sees
        # the new sparsity; the end of the ramp is always an update even when it does not
        # fall on a multiple of update_every.
        if self.step <= self.end_step and (self.step % self.update_every == 0
                                           or self.step == self.end_step):
            self.update_masks(polynomial_sparsity(self.step, self.final_sparsity, self.end_step))
            self.apply_masks()

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        # The optimiser just moved the pruned weights away from zero: put them back.
        self.apply_masks()
        self.step += 1

    def on_train_end(self, logs: Any = None) -> None:
        self.sparsity_at_train_end = self.measured_sparsity()


def prune_magnitude(options: MagnitudePruningOptions, model: keras.Model,
                    data: TrainingData) -> PrunedModel:
    """Clone ``model``, fine-tune it while raising the sparsity of its Conv2D/Dense
    kernels to ``options.sparsity``; returns the pruned clone and its details.

    ``model`` is not modified. The returned model has the same layers, names and
    shapes as ``model``; only weights differ.
    """
    pruned_model = keras.models.clone_model(model)
    pruned_model.set_weights(model.get_weights())
    pruned = prunable_layers(pruned_model)

    steps_per_epoch = math.ceil(len(data.x_train) / options.batch_size)
    total_steps = steps_per_epoch * options.epochs
    end_step = max(1, int(round(RAMP_FRACTION * total_steps)))
    callback = MagnitudePruning(pruned, options.sparsity, end_step, options.update_every)
    history = fine_tune(pruned_model, options, data, callbacks=[callback])

    scheduled_updates = len(callback.updates)
    # Final masks at the target itself, on the fine-tuned weights: the sparsity reached
    # does not depend on where the last scheduled update happened to fall.
    callback.update_masks(options.sparsity)
    callback.apply_masks()
    return PrunedModel(model=pruned_model, details={
        "target_sparsity": options.sparsity,
        "pruned_layers": [layer.name for layer in pruned],
        "pruned_sparsity": callback.measured_sparsity(),
        "sparsity_at_train_end": callback.sparsity_at_train_end,
        "left_dense": ["biases", "batch_normalization", "depthwise_kernels"],
        "schedule": {"kind": "polynomial", "power": 3, "total_steps": total_steps,
                     "end_step": end_step, "update_every": options.update_every,
                     "mask_updates": scheduled_updates},
        "history": history,
    })
