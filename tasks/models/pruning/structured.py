"""Structured (filter) pruning: a smaller dense network instead of a sparse one.

For each conv block of a ``small_cnn`` the ``max(1, round((1 - ratio) * filters))``
filters with the largest L1 norm (over the whole kernel slice of that filter: all taps,
all input channels of the base model) are kept. A new ``small_cnn`` with those filter
counts is built by :func:`tasks.models.architectures.build_model`, so it has the same layer
names as the base and every converter treats it the same; the kept weights are copied:

- ``conv{i}`` kernel ``[:, :, kept_{i-1}, kept_i]`` (all input channels for ``conv0``);
- ``bn{i}`` gamma, beta, moving mean and moving variance ``[kept_i]``;
- ``logits`` kernel rows ``[kept_last]`` (global average pooling sits between the last
  conv and the Dense layer, so each row belongs to one channel) and its whole bias.

Then the network is fine-tuned. Unlike magnitude pruning, the saving is real on every
runtime (fewer parameters and MACs) without sparse kernels or compression.

Only ``small_cnn`` is supported: MobileNetV2's residual adds tie the channels of several
layers together, which this recipe does not track; it raises a one-line ConfigError.
The architecture is recognised by ``model.name`` (what the builders name their models).
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from tasks.models.architectures import SmallCNNOptions, build_model
from tasks.core.errors import ConfigError, StepError
from tasks.models.pruning.base import (STRUCTURED_ARCHITECTURES, PrunedModel,
                                       StructuredPruningOptions, TrainingData, fine_tune)

SUPPORTED_ARCHITECTURES = STRUCTURED_ARCHITECTURES


def kept_filters(kernel: np.ndarray, ratio: float) -> np.ndarray:
    """Indices (ascending) of the ``max(1, round((1 - ratio) * filters))`` output filters
    of a ``(K_h, K_w, C_in, C_out)`` kernel with the largest L1 norm."""
    filters = kernel.shape[-1]
    keep = max(1, int(round((1.0 - ratio) * filters)))
    norms = np.abs(kernel).reshape(-1, filters).sum(axis=0)
    # Stable sort on -norm: equal norms keep the lower index, so the choice is
    # deterministic; the kept set is then put back in channel order.
    order = np.argsort(-norms, kind="stable")
    return np.sort(order[:keep])


def _conv_count(model: keras.Model) -> int:
    names = {layer.name for layer in model.layers}
    count = 0
    while f"conv{count}" in names:
        count += 1
    return count


def _check_supported(model: keras.Model, options_name: str | None = None) -> None:
    if model.name not in SUPPORTED_ARCHITECTURES:
        where = f"optimize.pruning[{options_name}]: " if options_name else ""
        raise ConfigError(f"{where}structured pruning supports {', '.join(SUPPORTED_ARCHITECTURES)}"
                          f" only, not {model.name!r}; use method 'magnitude' for this model")


def shrink_small_cnn(model: keras.Model, ratio: float) -> tuple[keras.Model, list[np.ndarray]]:
    """Build the reduced ``small_cnn`` and copy the kept weights into it (no training).

    Returns the new model and, per conv block, the kept filter indices of the base.
    ``model`` is not modified.
    """
    _check_supported(model)
    blocks = _conv_count(model)
    if blocks == 0:
        raise StepError(f"model {model.name!r} has no conv0 layer: not a small_cnn built by "
                        "tasks.models.architectures")
    kept = [kept_filters(np.asarray(model.get_layer(f"conv{i}").kernel.numpy()), ratio)
            for i in range(blocks)]
    options = SmallCNNOptions(filters=[len(k) for k in kept],
                              dropout=float(model.get_layer("dropout").rate))
    logits = model.get_layer("logits")
    input_shape = tuple(int(d) for d in model.input_shape[1:])
    small = build_model(options, input_shape, int(logits.units))  # type: ignore[arg-type]
    if [layer.name for layer in small.layers] != [layer.name for layer in model.layers]:
        raise StepError(f"model {model.name!r} does not have the layers of a small_cnn built "
                        "by tasks.models.architectures; structured pruning cannot map its weights")

    previous: Any = slice(None)  # conv0 keeps every input channel of the image
    for i, kept_out in enumerate(kept):
        kernel = np.asarray(model.get_layer(f"conv{i}").kernel.numpy())
        small.get_layer(f"conv{i}").set_weights([kernel[:, :, previous, :][..., kept_out]])
        # BatchNormalization weights in order: gamma, beta, moving mean, moving variance.
        small.get_layer(f"bn{i}").set_weights(
            [np.asarray(w)[kept_out] for w in model.get_layer(f"bn{i}").get_weights()])
        previous = kept_out
    kernel, bias = logits.get_weights()
    small.get_layer("logits").set_weights([kernel[previous, :], bias])
    return small, kept


def prune_structured(options: StructuredPruningOptions, model: keras.Model,
                     data: TrainingData) -> PrunedModel:
    """Remove ``options.ratio`` of each conv layer's filters (lowest L1 first), copy the
    kept weights into a new, smaller ``small_cnn`` and fine-tune it.

    Raises ConfigError (one line, naming the supported architectures) for any other
    architecture. ``model`` is not modified.
    """
    _check_supported(model, options.name)
    small, kept = shrink_small_cnn(model, options.ratio)
    history = fine_tune(small, options, data)
    blocks = len(kept)
    return PrunedModel(model=small, details={
        "ratio": options.ratio,
        "filters_before": [int(model.get_layer(f"conv{i}").filters) for i in range(blocks)],
        "filters_after": [len(k) for k in kept],
        "kept_filters": {f"conv{i}": [int(j) for j in k] for i, k in enumerate(kept)},
        "criterion": "L1 norm of each filter",
        "history": history,
    })
