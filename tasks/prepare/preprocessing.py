"""The pre-processing of images, from the code a release ships (``preprocess`` of the
device code, :func:`tasks.core.device_code.preprocess`): ``prepare`` turns the training
images into model inputs with the very function an application's images go through on a
board.

Only that one module is used here, not the device code as a whole (the code-closure
walk of :mod:`flows.code_deps` knows it: ``NARROWED``), so ``prepare`` depends on it
alone: editing the harness or the predictor does not re-run training. Use nothing else
of device_code here (a test checks it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tasks.core import device_code

if TYPE_CHECKING:  # numpy is a tenth of a second of every command's start
    import numpy as np


def to_model_input(image: Any, height: int, width: int, color: str,
                   fit: str = "squash") -> np.ndarray:
    """A PIL image as the model's input: float32 (height, width, channels) in [0, 1],
    squashed or letterboxed to the size (``fit``)."""
    return device_code.preprocess().to_model_input(  # type: ignore[no-any-return]
        image, height, width, color, fit)


def fit_geometry(source_width: int, source_height: int, height: int, width: int,
                 fit: str) -> tuple[float, float, float, float]:
    """Where an image of that size lands in the model's input under ``fit``: ``(scale_x,
    scale_y, offset_x, offset_y)`` in fractions of the input (the device code's
    ``fit_geometry``, the arithmetic :func:`to_model_input` moves the pixels by)."""
    return device_code.preprocess().fit_geometry(  # type: ignore[no-any-return]
        source_width, source_height, height, width, fit)
