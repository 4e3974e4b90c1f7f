"""The image files prepare reads: the same for the class-per-subfolder source and the
YOLO label reader, whatever the suffix's case."""

from __future__ import annotations

from pathlib import Path

from tasks.prepare.image_reading import _not_an_image
from tasks.prepare.detection_labels import read_yolo
from tasks.prepare.image_files import IMAGE_SUFFIXES, NOT_AN_IMAGE

NAMES = ["a.png", "b.JPG", "c.jpeg", "d.bmp", "e.gif", "f.webp", "g"]


def test_png_and_jpeg_are_images_in_any_case_for_every_source(tmp_path: Path) -> None:
    assert IMAGE_SUFFIXES == {".png", ".jpg", ".jpeg"}
    folder = {name for name in NAMES if _not_an_image(tmp_path / name) is None}
    (tmp_path / "labels").mkdir()
    (tmp_path / "classes.txt").write_text("thing\n")
    for name in NAMES:
        (tmp_path / "images").mkdir(exist_ok=True)
        (tmp_path / "images" / name).write_bytes(b"x")
        (tmp_path / "labels" / name).with_suffix(".txt").write_text("")
    found = read_yolo(tmp_path)
    assert folder == {image.path.name for image in found.images} == {"a.png", "b.JPG", "c.jpeg"}
    assert {entry["file"]: entry["reason"] for entry in found.skipped} == {
        f"images/{name}": NOT_AN_IMAGE for name in ("d.bmp", "e.gif", "f.webp", "g")}
    assert NOT_AN_IMAGE == "not a PNG or JPEG file"
