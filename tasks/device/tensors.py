"""How images become a runtime's input and its output becomes float scores: arranged as
the model reads them (normalisation, layout), quantised where the model takes integers,
de-quantised back; and the shape check of what is timed. The orchestrator arranges
training and reference batches with the same :func:`arrange_batch`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import kinds
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
    """Each image's float output, flattened, one batch-1 inference at a time: shape (N,
    outputs) (classification: the logits, (N, classes))."""
    rows = [dequantize_output(runner.infer(quantize_input(image, spec["input"])),
                              spec.get("output", {})).reshape(-1) for image in images]
    return np.stack(rows)


def check_shapes(x: np.ndarray, y: Any, spec: VariantSpec) -> None:
    """What is timed must be one image in, one sample's answer out: the input as the
    spec says, the output as the spec's kind of task reads it (classification: one row
    of class scores)."""
    expected = [int(size) for size in (spec.get("input") or {}).get("shape") or x.shape]
    if list(x.shape) != expected:
        raise ValueError(f"input of shape {tuple(x.shape)} fed, the spec says {tuple(expected)}")
    kinds.of_spec(spec).check_output(x, y, spec)
