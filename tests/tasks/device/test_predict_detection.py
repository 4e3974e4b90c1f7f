"""tasks/device/predict.py for a detector's release: ``Model.predict`` answers boxes in the
caller's image pixels (through the pre-processing's inverse of its fit, after the EXIF
rotation), over HTTP too; ``--draw out.png`` draws them and refuses what it cannot draw;
the health check holds the release's mAP@0.5 to its floor by its upper bound.

The model is a runner stub that answers a hand-built grid output (S = 3, C = 2) for a
32 x 32 input: one confident cell, row 1, column 2, whose box is, in fractions of the
input, [2.5/3 - 0.25, 0.25, 1.0, 0.75] (x1 clipped), class "dog" at sigmoid(2)."""

from __future__ import annotations

import importlib
import io
import json
import math
import threading
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tasks.device import predict
from tasks.device.kinds import classification, detection

MODEL = predict.Model  # the class itself (tests below stand a maker in for it in main)
CLASSES = ["cat", "dog"]
SPEC = {"task": "detection", "input": {"shape": [1, 32, 32, 3]},
        "detection": {"grid": 3, "classes": 2}}
BOX = [2.5 / 3 - 0.25, 0.25, 1.0, 0.75]
SCORE_EXACT = 1.0 / (1.0 + math.exp(-2.0))  # class logits [-100, 0]: softmax 1.0
SCORE = round(SCORE_EXACT, 6)
BACKGROUND = (40, 40, 40)


def grid_output(found: bool = True) -> np.ndarray:
    """The model's answer: every cell empty (objectness -10) but, when ``found``, row 1,
    column 2 (objectness 2, offsets and sizes 0: sigmoid 0.5, class logits [-100, 0])."""
    output = np.full((1, 3, 3, 7), -10.0)
    output[0, :, :, 5:] = 0.0
    if found:
        output[0, 1, 2] = [2.0, 0.0, 0.0, 0.0, 0.0, -100.0, 0.0]
    return output


def detector(fit: str, outputs: list[np.ndarray] | None = None) -> predict.Model:
    """A detector's release as ``Model`` holds it, its runner a stub that answers each
    inference with the next of ``outputs`` (flattened, as a runtime may), or with
    :func:`grid_output`; the inputs it was given are in ``runner.inputs``."""
    model = MODEL.__new__(MODEL)
    model.folder = "/release"
    model.manifest = {"variant": "grid-fp32", "release_id": "r1"}
    model._preprocess = importlib.import_module("tasks.device.preprocess")
    model._tensors = importlib.import_module("tasks.device.tensors")
    model._latency = importlib.import_module("tasks.device.latency")
    model._lock = threading.Lock()
    model.kind, model.classes, model.spec = detection.KIND, CLASSES, SPEC
    model.height, model.width, model.color, model.fit = 32, 32, "rgb", fit
    inputs: list[np.ndarray] = []
    answers = iter(outputs) if outputs is not None else None

    def infer(x: np.ndarray) -> np.ndarray:
        inputs.append(x)
        return (next(answers) if answers is not None else grid_output()).reshape(-1)

    model.runner = SimpleNamespace(infer=infer, inputs=inputs)
    return model


def picture(width: int, height: int) -> Image.Image:
    return Image.new("RGB", (width, height), BACKGROUND)


def png(image: Image.Image, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=options.pop("format", "PNG"), **options)
    return buffer.getvalue()


# In a 64 x 48 image. Squash: x * 64, y * 48. Letterbox into 32 x 32: scale 0.5, the
# picture 32 x 24 at rows 4..28 (fractions 0.125..0.875), so y = (v - 0.125) / 0.75 * 48.
# x0 = (2.5/3 - 0.25) * 64 = 37.33 -> 37.3 either way.
PIXEL_BOXES = {"squash": [37.3, 12.0, 64.0, 36.0], "letterbox": [37.3, 8.0, 64.0, 40.0]}


@pytest.mark.parametrize("fit", sorted(PIXEL_BOXES))
def test_a_detector_answers_its_boxes_in_the_callers_pixels(fit: str) -> None:
    """A 64 x 48 image: the box comes back in its pixels, exactly, as the fit placed it;
    the model was given the 32 x 32 input."""
    model = detector(fit)
    answer = model.predict(picture(64, 48))
    assert set(answer) == {"detections", "latency_ms"}
    assert answer["detections"] == [{"class": "dog", "index": 1, "score": SCORE,
                                     "box": PIXEL_BOXES[fit]}]
    assert model.runner.inputs[0].shape == (1, 32, 32, 3)
    json.dumps(answer)  # what the CLI and the server print


def test_boxes_are_placed_in_the_image_upright_after_its_exif_rotation() -> None:
    """A JPEG stored 48 wide and 64 tall with EXIF orientation 6 (shown rotated: 64 x
    48): the box is in the pixels of the image as shown."""
    from PIL import ExifTags

    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    stored = png(picture(48, 64), format="JPEG", exif=exif.tobytes())
    answer = detector("letterbox").predict(stored)
    assert [found["box"] for found in answer["detections"]] == [PIXEL_BOXES["letterbox"]]


def test_nothing_found_is_an_empty_list_of_detections() -> None:
    answer = detector("squash", [grid_output(found=False)]).predict(picture(64, 48))
    assert answer["detections"] == []


def test_a_classifier_answers_as_before_through_the_same_predict() -> None:
    model = detector("squash", [np.array([[0.0, 3.0]])])
    model.kind, model.spec = classification.KIND, {"input": {}}
    answer = model.predict(picture(64, 48))
    assert {key: answer[key] for key in ("class", "index")} == {"class": "dog", "index": 1}
    assert "detections" not in answer


def test_a_detector_answers_boxes_in_the_posted_images_pixels_over_http() -> None:
    server = predict.serve(detector("letterbox"), 0, timeout=5.0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        request = urllib.request.Request(
            f"http://127.0.0.1:{server.server_address[1]}/predict",
            data=png(picture(64, 48)), method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            answer = json.loads(response.read())
    finally:
        server.shutdown()
        server.server_close()
    assert answer["detections"] == [{"class": "dog", "index": 1, "score": SCORE,
                                     "box": PIXEL_BOXES["letterbox"]}]


# --- --draw -----------------------------------------------------------------------------


@pytest.fixture
def released_detector(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """``predict.Model`` made by ``main`` is :func:`detector` (letterbox); the folders it
    was made from are listed."""
    made: list[str] = []

    def make(folder: str) -> predict.Model:
        made.append(folder)
        return detector("letterbox")

    monkeypatch.setattr(predict, "Model", make)
    return made


def test_draw_writes_the_image_with_the_box_in_its_class_colour(
        tmp_path: Path, released_detector: list[str],
        capsys: pytest.CaptureFixture[str]) -> None:
    """The PNG is the image, the same size, with the box's rectangle in the class's
    colour on its left, right and bottom edges, the inside untouched; the answer is
    printed as without --draw, and says where the drawing went."""
    from tasks.device import draw

    source, out = tmp_path / "frame.png", tmp_path / "out.png"
    source.write_bytes(png(picture(64, 48)))
    assert predict.main([str(source), "--draw", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["detections"][0]["box"] == [37.3, 8.0, 64.0, 40.0]
    assert printed["drawn"] == str(out)
    drawn = Image.open(out)
    assert (drawn.format, drawn.size, drawn.mode) == ("PNG", (64, 48), "RGB")
    dog = draw.colour(1)
    assert dog == (255, 127, 14)
    # The rectangle [37.3, 8, 64, 40] 2 px wide: column 37 (left edge), row 39 (bottom,
    # inside the line), column 63 (right edge, clipped to the image).
    for point in ((37, 30), (38, 30), (50, 39), (63, 30)):
        assert drawn.getpixel(point) == dog, point
    for point in ((50, 30), (10, 30), (50, 44)):
        assert drawn.getpixel(point) == BACKGROUND, point
    # The label "dog 0.88" on a band of the class's colour at the box's top-left corner.
    band = np.asarray(drawn)[:20, 37:64]
    assert (band == dog).all(axis=-1).sum() > 50


def test_each_class_draws_in_a_colour_of_its_own() -> None:
    from tasks.device import draw

    colours = [draw.colour(index) for index in range(10)]
    assert len(set(colours)) == 10 and draw.colour(10) == draw.colour(0)
    assert draw.label({"class": "dog", "score": 0.8765}) == "dog 0.88"


def test_draw_refuses_several_images_or_none_in_one_line(
        tmp_path: Path, released_detector: list[str],
        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.png"
    assert predict.main(["a.png", "b.png", "--draw", str(out)]) == 2
    assert capsys.readouterr().err == "predict.py: --draw draws on one image, not 2\n"
    assert predict.main(["--check", "--draw", str(out)]) == 2
    assert capsys.readouterr().err == ("predict.py: --draw draws on one image, not 0 (nor "
                                       "with --serve or --check)\n")
    assert released_detector == [] and not out.exists()  # refused before loading


def test_draw_refuses_a_classifiers_release_in_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    def classifier(folder: str) -> predict.Model:
        model = detector("squash", [np.array([[0.0, 3.0]])])
        model.kind, model.spec = classification.KIND, {"input": {}}
        return model

    monkeypatch.setattr(predict, "Model", classifier)
    source, out = tmp_path / "frame.png", tmp_path / "out.png"
    source.write_bytes(png(picture(64, 48)))
    assert predict.main([str(source), "--draw", str(out)]) == 2
    said = capsys.readouterr()
    assert said.err == ("predict.py: --draw: this release's model (classification) answers "
                        "no boxes to draw\n")
    assert said.out == "" and not out.exists()


def test_draw_names_an_image_it_cannot_read_and_writes_nothing(
        tmp_path: Path, released_detector: list[str],
        capsys: pytest.CaptureFixture[str]) -> None:
    source, out = tmp_path / "frame.png", tmp_path / "out.png"
    source.write_bytes(b"not an image")
    assert predict.main([str(source), "--draw", str(out)]) == 1
    printed = json.loads(capsys.readouterr().out)
    assert printed["image"] == str(source) and printed["error"].startswith("not an image")
    assert not out.exists()


# --- the health check -------------------------------------------------------------------


def checked_detector(tmp_path: Path, hits: int, images: int, floor: float | None) -> dict:
    """``Model.check`` of :func:`detector` on ``images`` check images, each labelled with
    one dog at the grid cell's box (the labels as a release writes them:
    ``json_label``), the model finding it on the first ``hits`` and nothing on the rest."""
    model = detector("squash", [grid_output(found=index < hits) for index in range(images)]
                     + [grid_output()] * 1000)
    folder = tmp_path / "check"
    folder.mkdir(exist_ok=True)
    names = []
    for index in range(images):
        (folder / f"{index:04d}.png").write_bytes(png(picture(32, 32)))
        names.append(f"{index:04d}.png")
    label = detection.KIND.json_label(np.array([[1.0, *BOX], [-1.0, 0, 0, 0, 0]]))
    model.folder = str(tmp_path)
    model.manifest = {"check": json.loads(json.dumps({
        "folder": "check", "images": names, "labels": [label] * images,
        "accuracy_floor": floor, "max_latency_p90_ms": None}))}
    return model.check()


# Ten of twenty dogs found, none wrong: recall 0.5, precision 1, so AP@0.5 is the 51 of
# COCO's 101 recall points 0, 0.01 ... 0.5 at precision 1: 51/101. The bootstrap's
# one-sided 95% upper bound (images resampled, seed 0) is 70/101 (recall 0.69).
MAP50, UPPER = 51 / 101, 70 / 101


def test_the_health_check_holds_the_map_to_the_floor_by_its_upper_bound(tmp_path: Path) -> None:
    between = checked_detector(tmp_path, 10, 20, 0.6)
    assert (between["accuracy"], between["accuracy_upper"]) == (MAP50, UPPER)
    assert between["passed"] and between["reasons"] == []
    assert between["images"] == 20
    assert between["predicted"][0] == [[1.0, SCORE_EXACT, *BOX]]
    assert between["predicted"][10] == []
    json.dumps(between)  # --check prints it
    assert checked_detector(tmp_path, 10, 20, UPPER)["passed"]
    above = checked_detector(tmp_path, 10, 20, 0.7)
    assert not above["passed"]
    assert above["reasons"] == ["mAP@0.5 0.505 on 20 check images (95% upper bound 0.693) "
                                "is below the floor 0.700"]
    assert checked_detector(tmp_path, 20, 20, 1.0)["passed"]  # all found: mAP 1
