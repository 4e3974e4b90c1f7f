"""The camera frames an end-to-end benchmark feeds a device (``benchmark.end_to_end``):
the first test images, as the frames a camera would deliver (upscaled to the frame size,
encoded as JPEG or PNG), in the ``.npz`` layout the harness reads
(:func:`tasks.device.pipeline.load_frames`).

The test images are the model's inputs (scaled to [0, 1]), so a frame holds what the
model can see, at the camera's resolution; the harness then pays for decoding it and
pre-processing it back down, as an application does.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from tasks.core import device_code
from tasks.config import EndToEndParams

PIL_FORMATS = {"jpeg": "JPEG", "png": "PNG"}


def frame_size(image_shape: tuple[int, ...], params: EndToEndParams, fit: str) -> tuple[int, int]:
    """(height, width) of the frames made from model inputs of ``image_shape``: the
    camera's ``frame_size`` when the model's images are squashed; under ``letterbox`` the
    model input's aspect ratio at the camera's height, so that letterboxing the frame
    back gives the model input again instead of adding borders it never had."""
    if fit == "squash":
        return params.frame_size
    height = params.frame_size[0]
    return height, max(1, round(height * image_shape[1] / image_shape[0]))


def encode_frame(image: np.ndarray, params: EndToEndParams, fit: str = "squash") -> bytes:
    """One model input (H, W, C float in [0, 1]) as an encoded camera frame."""
    from PIL import Image

    pixels = device_code.preprocess().image_from_array(image)
    height, width = frame_size(image.shape, params, fit)
    frame = pixels.resize((width, height), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    options = {"quality": params.quality} if params.encoding == "jpeg" else {}
    frame.save(buffer, format=PIL_FORMATS[params.encoding], **options)
    return buffer.getvalue()


def write_frames(test_data: Path, target: Path, params: EndToEndParams,
                 fit: str = "squash") -> Path:
    """``target`` (an ``.npz``) with the first ``params.frames`` test images of
    ``test_data`` as frames, their labels and what they are; ``fit`` is how the
    prepared images were brought to the model's size (the harness does the same)."""
    with np.load(test_data, allow_pickle=False) as data:
        images, labels = data["x"][:params.frames], data["y"][:params.frames]
    encoded = [encode_frame(image, params, fit) for image in images]
    offsets = np.cumsum([0, *map(len, encoded)]).astype(np.int64)
    height, width = frame_size(images.shape[1:], params, fit)
    meta = {"height": height, "width": width, "encoding": params.encoding, "fit": fit}
    with target.open("wb") as handle:
        np.savez(handle, data=np.frombuffer(b"".join(encoded), dtype=np.uint8), offsets=offsets,
                 y=labels, meta=np.array(json.dumps(meta)))
    return target
