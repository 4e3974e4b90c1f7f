"""How an image becomes a model's input: the pre-processing of the training images and
of every image an application gives a released model, one implementation for both.

Shipped in every release with ``predict.py`` (standard library, NumPy and Pillow);
``prepare`` imports it through ``tasks.core.device_code``. Editing it changes the
training data, so it re-runs ``prepare`` and what follows; the rest of the device code
does not.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np


class ImageError(ValueError):
    """An input that is no usable image, and why."""


FITS = ("squash", "letterbox")
"""How an image whose aspect ratio differs from the model's reaches the model's size:
``squash`` stretches it to the size (every pixel kept, shapes distorted); ``letterbox``
scales it to fit inside, keeping its aspect ratio, and pads the rest with black (shapes
kept, borders added). Training images and an application's images go through the same."""

CHANNEL_ORDERS = ("rgb", "bgr")
"""The order of an array's three colour channels: ``rgb`` (Pillow, imageio, most camera
libraries) or ``bgr`` (OpenCV's ``cv2.imread`` and ``VideoCapture``)."""


def _fit(image: Any, height: int, width: int, fit: str) -> Any:
    """``image`` at (width, height), squashed or letterboxed (:data:`FITS`)."""
    from PIL import Image

    if fit not in FITS:
        raise ValueError(f"fit is one of {', '.join(FITS)}, not {fit!r}")
    if fit == "squash":
        return image.resize((width, height), Image.Resampling.BILINEAR)
    inner, offset = _letterbox(image.width, image.height, height, width)
    canvas = Image.new(image.mode, (width, height))  # black in every mode
    canvas.paste(image.resize(inner, Image.Resampling.BILINEAR), offset)
    return canvas


def _letterbox(source_width: int, source_height: int, height: int,
               width: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """A letterboxed image's (width, height) inside the model's input, and its top-left
    corner there (x, y), in pixels."""
    scale = min(width / source_width, height / source_height)
    inner = (max(1, round(source_width * scale)), max(1, round(source_height * scale)))
    return inner, ((width - inner[0]) // 2, (height - inner[1]) // 2)


def fit_geometry(source_width: int, source_height: int, height: int, width: int,
                 fit: str) -> tuple[float, float, float, float]:
    """Where an image of ``source_width`` x ``source_height`` pixels lands in the model's
    input of ``width`` x ``height`` under ``fit`` (:data:`FITS`), as ``(scale_x, scale_y,
    offset_x, offset_y)`` in fractions of the input's width and height: the point at
    fraction (u, v) of the image lands at (offset_x + u * scale_x, offset_y + v * scale_y).
    The same arithmetic as the pixels' (:func:`to_model_input`), so a box in normalised
    corners moves with the pixels it covers; the inverse maps a model's boxes back to
    the image. ``squash`` is (1, 1, 0, 0) exactly: its boxes keep their numbers."""
    if fit not in FITS:
        raise ValueError(f"fit is one of {', '.join(FITS)}, not {fit!r}")
    if fit == "squash":
        return 1.0, 1.0, 0.0, 0.0
    inner, offset = _letterbox(source_width, source_height, height, width)
    return inner[0] / width, inner[1] / height, offset[0] / width, offset[1] / height


def to_model_input(image: Any, height: int, width: int, color: str,
                   fit: str = "squash") -> np.ndarray:
    """A PIL image as the model's input: float32 (height, width, channels) in [0, 1],
    brought to the size as ``fit`` says (:data:`FITS`)."""
    from PIL import Image, ImageOps

    image = ImageOps.exif_transpose(image)  # photos shot sideways carry an EXIF rotation
    if image.mode.startswith("I"):
        # 16/32-bit grey: convert("L") clips at 255 instead of scaling the range down.
        peak = 65535.0 if image.mode.startswith("I;16") else float(max(np.asarray(image).max(), 1))
        image = Image.fromarray(np.uint8(np.asarray(image, np.float32) / peak * 255 + 0.5), "L")
    mode = "L" if color == "grayscale" else "RGB"
    pixels = _fit(image.convert(mode), height, width, fit)
    array = np.asarray(pixels, dtype=np.float32) / 255.0
    return array[..., np.newaxis] if array.ndim == 2 else array


ARRAY_MODES = {1: "L", 3: "RGB", 4: "RGBA"}


def image_from_array(array: Any, channels: str = "rgb") -> Any:
    """A PIL image from an array: (H, W) or (H, W, 1|3|4), uint8 or float in [0, 1];
    three or four channels are in ``channels`` order (:data:`CHANNEL_ORDERS`: ``bgr`` for
    OpenCV's frames, whose alpha, if any, stays last)."""
    from PIL import Image

    if channels not in CHANNEL_ORDERS:
        raise ImageError(f"channels is one of {', '.join(CHANNEL_ORDERS)}, not {channels!r}")
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
    if channels == "bgr" and array.shape[2] >= 3:
        array = array[..., [2, 1, 0, *range(3, array.shape[2])]]
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
