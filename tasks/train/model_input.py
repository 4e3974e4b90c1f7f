"""Images as a model reads them, on this machine: the orchestrator's copy of the
harness's ``arrange_batch`` (tasks/device/tensors.py), for the steps that must not
depend on the device code (train: editing the harness must not re-train every model).
The device code keeps its own because a board gets that package alone; a test keeps
the two equal on every layout and normalisation."""

from __future__ import annotations

from typing import Any

import numpy as np


def arrange_batch(images: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
    """Images (N, H, W, C) in [0, 1], normalised by the input spec's ``normalize``
    (per-channel ``mean`` and ``std``) and in its ``layout`` (NCHW: channels first)."""
    images = np.asarray(images, dtype=np.float32)
    normalize = spec.get("normalize")
    if normalize:
        images = ((images - np.asarray(normalize["mean"], np.float32))
                  / np.asarray(normalize["std"], np.float32))
    if spec.get("layout") == "NCHW":
        images = np.transpose(images, (0, 3, 1, 2))
    return np.ascontiguousarray(images, dtype=np.float32)
