"""How an image becomes a model's input: the pre-processing of the training images and
of every image an application gives a released model, one implementation for both.

Shipped in every release beside ``predict.py`` (standard library, NumPy and Pillow);
``prepare`` loads it by path from here. Editing it changes the training data, so it
re-runs ``prepare`` and what follows; the rest of the device code does not.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np


class ImageError(ValueError):
    """An input that is no usable image, and why."""


def to_model_input(image: Any, height: int, width: int, color: str) -> np.ndarray:
    """A PIL image as the model's input: float32 (height, width, channels) in [0, 1]."""
    from PIL import Image, ImageOps

    image = ImageOps.exif_transpose(image)  # photos shot sideways carry an EXIF rotation
    if image.mode.startswith("I"):
        # 16/32-bit grey: convert("L") clips at 255 instead of scaling the range down.
        peak = 65535.0 if image.mode.startswith("I;16") else float(max(np.asarray(image).max(), 1))
        image = Image.fromarray(np.uint8(np.asarray(image, np.float32) / peak * 255 + 0.5), "L")
    mode = "L" if color == "grayscale" else "RGB"
    pixels = image.convert(mode).resize((width, height), Image.Resampling.BILINEAR)
    array = np.asarray(pixels, dtype=np.float32) / 255.0
    return array[..., np.newaxis] if array.ndim == 2 else array


ARRAY_MODES = {1: "L", 3: "RGB", 4: "RGBA"}


def image_from_array(array: Any) -> Any:
    """A PIL image from an array: (H, W) or (H, W, 1|3|4), uint8 or float in [0, 1]."""
    from PIL import Image

    array = np.asarray(array)
    if array.ndim == 2:
        array = array[..., np.newaxis]
    if array.ndim != 3 or array.shape[2] not in ARRAY_MODES or 0 in array.shape:
        raise ImageError(f"an image array is (height, width) or (height, width, 1, 3 or 4 "
                         f"channels), not {array.shape}")
    if array.dtype != np.uint8:
        if not np.issubdtype(array.dtype, np.floating) or not np.isfinite(array).all() \
                or array.min() < 0.0 or array.max() > 1.0:
            raise ImageError(f"an image array is uint8, or float in [0, 1]; not {array.dtype} "
                             "with these values")
        array = np.round(array * 255.0).astype(np.uint8)
    mode = ARRAY_MODES[array.shape[2]]
    return Image.fromarray(array[..., 0] if mode == "L" else array, mode)


def decode_image(data: bytes) -> Any:
    """A PIL image from encoded bytes (PNG, JPEG...); ImageError says why not."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageError(f"not decoded: {error}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise ImageError(f"not an image: {error}") from None
    if image.width == 0 or image.height == 0:
        raise ImageError("the image has no pixels")
    return image
