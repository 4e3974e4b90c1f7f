"""tasks.farm.frames on hand-made images (tests/tasks/device/test_end_to_end.py reads
frames back through the harness): the frame size under each fit, for a model input
that is not square, and the encoding options that reach PIL."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tasks.config import EndToEndParams
from tasks.farm.frames import encode_frame, frame_size, write_frames

CAMERA = EndToEndParams(frame_size=(120, 160), encoding="jpeg", quality=80, frames=3)


@pytest.mark.parametrize("shape, fit, size", [
    ((16, 32, 3), "squash", (120, 160)),      # the camera's own frame, whatever the model
    ((16, 32, 3), "letterbox", (120, 240)),   # the model's 1:2, at the camera's height
    ((32, 16, 1), "letterbox", (120, 60)),
    ((30, 7, 3), "letterbox", (120, 28)),     # 120 * 7 / 30 = 28.0
    ((90, 7, 3), "letterbox", (120, 9)),      # 9.33 rounds down
    ((72, 7, 3), "letterbox", (120, 12)),     # 11.67 rounds up
    ((1000, 1, 1), "letterbox", (120, 1)),    # never narrower than a pixel
])
def test_a_frame_is_the_cameras_size_or_the_models_aspect_at_its_height(
        shape: tuple[int, ...], fit: str, size: tuple[int, int]) -> None:
    assert frame_size(shape, CAMERA, fit) == size


def _image(height: int, width: int) -> np.ndarray:
    rng = np.random.default_rng(7)
    return rng.random((height, width, 3)).astype(np.float32)


@pytest.mark.parametrize("quality", [20, 95])
def test_a_jpeg_frame_is_encoded_at_the_configured_quality(quality: int) -> None:
    params = CAMERA.model_copy(update={"quality": quality})
    frame = encode_frame(_image(16, 32), params, "letterbox")
    with Image.open(io.BytesIO(frame)) as decoded:
        assert (decoded.format, decoded.size) == ("JPEG", (240, 120))
    # The same pixels, resized and saved by PIL at that quality, byte for byte.
    reference = io.BytesIO()
    pixels = Image.fromarray((_image(16, 32) * 255).round().astype(np.uint8))
    pixels.resize((240, 120), Image.Resampling.BILINEAR).save(reference, format="JPEG",
                                                              quality=quality)
    assert frame == reference.getvalue()


def test_png_frames_are_lossless_and_written_with_their_labels_and_meta(tmp_path: Path) -> None:
    params = CAMERA.model_copy(update={"encoding": "png", "frames": 2})
    images = np.stack([_image(16, 32)] * 3)
    np.savez(tmp_path / "test.npz", x=images, y=np.array([2, 0, 1]))
    target = write_frames(tmp_path / "test.npz", tmp_path / "frames.npz", params, "letterbox")
    with np.load(target) as data:
        assert json.loads(str(data["meta"])) == {"height": 120, "width": 240,
                                                 "encoding": "png", "fit": "letterbox"}
        assert data["y"].tolist() == [2, 0]
        offsets = data["offsets"].tolist()
        assert offsets[0] == 0 and len(offsets) == 3 and offsets[-1] == len(data["data"])
        first = data["data"][offsets[0]:offsets[1]].tobytes()
        assert first == encode_frame(images[0], params, "letterbox")
        with Image.open(io.BytesIO(first)) as decoded:
            assert (decoded.format, decoded.size) == ("PNG", (240, 120))


def test_a_test_set_holding_pickled_objects_is_refused_unread(tmp_path: Path) -> None:
    """The test set is data, never code: an object array (unpickled on load) is refused,
    even when its objects are images that would encode."""
    images = np.empty(3, dtype=object)
    for index in range(3):
        images[index] = _image(16, 32)
    np.savez(tmp_path / "test.npz", x=images, y=np.array([2, 0, 1]))
    with pytest.raises(ValueError, match="allow_pickle"):
        write_frames(tmp_path / "test.npz", tmp_path / "frames.npz", CAMERA)
    assert not (tmp_path / "frames.npz").exists()
