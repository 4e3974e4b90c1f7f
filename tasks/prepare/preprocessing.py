"""The pre-processing of images, from the code a release ships (``preprocess.py`` of the
device code, loaded by path): ``prepare`` turns the training images into model inputs
with the very function an application's images go through on a board.

Only that one file is loaded here, not the device code as a whole: the code-closure walk
(:mod:`flows.code_deps`) then makes ``prepare`` depend on it alone, so editing the
harness or the predictor does not re-run training.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.core import by_path

if TYPE_CHECKING:  # numpy is a tenth of a second of every command's start
    import numpy as np

PREPROCESS_PATH = Path(__file__).resolve().parents[1] / "device" / "preprocess.py"


def to_model_input(image: Any, height: int, width: int, color: str,
                   fit: str = "squash") -> np.ndarray:
    """A PIL image as the model's input: float32 (height, width, channels) in [0, 1],
    squashed or letterboxed to the size (``fit``)."""
    module: Any = by_path.load(PREPROCESS_PATH)
    return module.to_model_input(image, height, width, color, fit)  # type: ignore[no-any-return]
