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


# A letterbox's border colour, by fit: black, or the grey (114 of 255 in every channel)
# Ultralytics YOLO pads with, in training and in inference: a YOLO model you bring has
# only ever seen grey borders.
LETTERBOX_FILLS = {"letterbox": 0, "letterbox_grey": 114}

FITS = ("squash", *LETTERBOX_FILLS)
"""How an image whose aspect ratio differs from the model's reaches the model's size:
``squash`` stretches it to the size (every pixel kept, shapes distorted); ``letterbox``
scales it to fit inside, keeping its aspect ratio, and pads the rest with black (shapes
kept, borders added); ``letterbox_grey`` is the same with grey borders
(:data:`LETTERBOX_FILLS`), as Ultralytics YOLO pads. Training images and an application's
images go through the same."""

EXIF_ORIENTATION = 0x0112  # the EXIF tag of a photo's rotation; 1 is upright

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
    fill = LETTERBOX_FILLS[fit]
    # One grey level in every band of the mode ("L" or "RGB"); 0 is black in every mode.
    canvas = Image.new(image.mode, (width, height), (fill,) * len(image.getbands()))
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


def boxes_in_image(boxes: Any, source_width: int, source_height: int, height: int,
                   width: int, fit: str) -> np.ndarray:
    """Boxes the model found, corners ``[x0, y0, x1, y1]`` as fractions of its input of
    ``width`` x ``height``, in the pixels of the image they came from (``source_width`` x
    ``source_height``, upright: :func:`upright`): the inverse of :func:`fit_geometry`,
    clipped to the image (a box over a letterbox's border ends at the picture's edge),
    rounded to 0.1 px. ``boxes`` is one box (4,) or several (k, 4); the result has its
    shape, float64. Squash scales the fractions by the image's size; letterbox first takes
    off the border: on a 40 x 20 image letterboxed into 32 x 32 (the picture fills the
    middle half of the rows), [0, 0.25, 1, 0.75] is [0, 0, 40, 20]."""
    scale_x, scale_y, offset_x, offset_y = fit_geometry(source_width, source_height, height,
                                                        width, fit)
    corners = np.asarray(boxes, np.float64)
    shaped = corners.reshape(-1, 4)
    x = (shaped[:, 0::2] - offset_x) / scale_x * source_width
    y = (shaped[:, 1::2] - offset_y) / scale_y * source_height
    pixels = np.empty_like(shaped)
    pixels[:, 0::2] = np.clip(x, 0.0, float(source_width))
    pixels[:, 1::2] = np.clip(y, 0.0, float(source_height))
    # + 0.0 turns a -0.0 from rounding a hair below zero into 0.0 (JSON writes "-0.0").
    return np.round(pixels, 1).reshape(corners.shape) + 0.0


def upright(image: Any) -> Any:
    """A PIL image as it is meant to be seen: its EXIF rotation applied (photos shot
    sideways carry one). The pixels a model sees, and the ones its boxes are placed in."""
    from PIL import ImageOps

    # exif_transpose copies an image it leaves as it is: an upright one is returned
    # itself (the predictor asks before pre-processing, which asks again).
    if image.getexif().get(EXIF_ORIENTATION, 1) == 1:
        return image
    return ImageOps.exif_transpose(image)


def to_model_input(image: Any, height: int, width: int, color: str,
                   fit: str = "squash") -> np.ndarray:
    """A PIL image as the model's input: float32 (height, width, channels) in [0, 1],
    brought to the size as ``fit`` says (:data:`FITS`), upright first (:func:`upright`)."""
    from PIL import Image

    image = upright(image)
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
