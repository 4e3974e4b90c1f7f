"""How images become a runtime's input and its output becomes float scores: arranged as
the model reads them (normalisation, layout), quantised where the model takes integers,
de-quantised back; and the shape check of what is timed. The orchestrator arranges
training and reference batches with the same :func:`arrange_batch`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .runtimes import Runner
from .spec import TensorSpec, VariantSpec


def arrange_batch(images: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """Images (N, H, W, C) in [0, 1], as the model reads them: normalised by the input
    spec's ``normalize`` (per-channel ``mean`` and ``std``, the model's own training
    normalisation; none for edgeflow's models) and in its ``layout`` (NCHW: channels
    first, as PyTorch exports take them)."""
    images = np.asarray(images, dtype=np.float32)
    normalize = spec.get("normalize")
    if normalize:
        images = ((images - np.asarray(normalize["mean"], np.float32))
                  / np.asarray(normalize["std"], np.float32))
    if spec.get("layout") == "NCHW":
        images = np.transpose(images, (0, 3, 1, 2))
    return np.ascontiguousarray(images, dtype=np.float32)


def quantize_input(x: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """Turn one float image (H, W, C) in [0, 1] into the runtime's batch-1 input:
    arranged (:func:`arrange_batch`), then quantised where the model takes integers."""
    batch = arrange_batch(x[np.newaxis, ...], spec)
    quantization = spec.get("quantization")
    dtype = np.dtype(spec.get("dtype", "float32"))
    if quantization:
        scale, zero_point = float(quantization["scale"]), int(quantization["zero_point"])
        info = np.iinfo(dtype)
        batch = np.clip(np.round(batch / scale) + zero_point, info.min, info.max)
    return np.ascontiguousarray(batch.astype(dtype))


def dequantize_output(y: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """Turn a runtime output into float logits."""
    quantization = spec.get("quantization")
    y = np.asarray(y)
    if quantization:
        return (y.astype(np.float32) - int(quantization["zero_point"])) * float(quantization["scale"])
    return y.astype(np.float32)


def predict(runner: Runner, images: np.ndarray, spec: VariantSpec) -> np.ndarray:
    """Logits for each image, one batch-1 inference at a time: shape (N, classes)."""
    rows = [dequantize_output(runner.infer(quantize_input(image, spec["input"])),
                              spec.get("output", {})).reshape(-1) for image in images]
    return np.stack(rows)


def check_shapes(x: np.ndarray, y: Any, spec: VariantSpec) -> None:
    """What is timed must be one image in, one row of class scores out: the input as the
    spec says, the output (1, classes). A model that answers an empty batch (a dynamic
    batch left unset) would otherwise be timed on nothing."""
    expected = [int(size) for size in (spec.get("input") or {}).get("shape") or x.shape]
    y = np.asarray(y)
    if list(x.shape) != expected:
        raise ValueError(f"input of shape {tuple(x.shape)} fed, the spec says {tuple(expected)}")
    if y.ndim < 1 or y.shape[0] != 1 or y.size == 0:
        raise ValueError(f"the model answered one image {tuple(x.shape)} with an output of "
                         f"shape {tuple(y.shape)}, not one row of class scores")
