"""Detection labels a user brings (YOLO folders, COCO JSON): the exact boxes read from
hand-written files, and each bad file left out with the reason that names its line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tasks.core.errors import DataError
from tasks.prepare.detection_labels import (LABEL_FORMATS, TOLERANCE, DetectionLabels, read_coco,
                                            read_yolo, yolo_classes)

CLASSES = ["cat", "dog", "bird"]


def _write(path: Path, text: str | bytes = b"") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, str):
        path.write_text(text)
    else:
        path.write_bytes(text)
    return path


def _yolo(root: Path, labels: dict[str, str | bytes | None], classes: str | None = None) -> Path:
    """A YOLO folder: an image per key (its content never read here) and, unless the
    value is None, its label file with that text."""
    _write(root / "classes.txt", "\n".join(CLASSES) + "\n" if classes is None else classes)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    for image, label in labels.items():
        _write(root / "images" / image, b"\x89PNG")
        if label is not None:
            _write((root / "labels" / image).with_suffix(".txt"), label)
    return root


def _boxes(found: DetectionLabels) -> dict[str, list[list[float]]]:
    return {image.path.name: image.boxes.tolist() for image in found.images}


def _reasons(found: DetectionLabels) -> dict[str, str]:
    reasons = {entry["file"]: entry["reason"] for entry in found.skipped}
    assert len(reasons) == len(found.skipped)  # one reason per file
    return reasons


def test_yolo_labels_are_read_as_exact_corner_boxes(tmp_path: Path) -> None:
    root = _yolo(tmp_path, {
        "a.png": "0 0.5 0.5 0.5 0.25\n2 0.25 0.75 0.25 0.5\n",
        # Nested folders map images/<path> to labels/<path>; an empty file and blank
        # lines only are images with no objects.
        "train/b.jpg": "",
        "train/c.JPEG": "\n  \n",
        # Overshooting the right edge by 1/256 (within the tolerance): clipped to it.
        "d.png": "1 0.99609375 0.5 0.015625 0.5\n",
    })
    found = read_yolo(root)
    assert found.classes == CLASSES
    assert found.skipped == []
    assert [image.path for image in found.images] == [
        root / "images/a.png", root / "images/d.png", root / "images/train/b.jpg",
        root / "images/train/c.JPEG"]
    assert _boxes(found) == {
        "a.png": [[0.0, 0.25, 0.375, 0.75, 0.625], [2.0, 0.125, 0.5, 0.375, 1.0]],
        "b.jpg": [], "c.JPEG": [],
        "d.png": [[1.0, 0.98828125, 0.25, 1.0, 0.75]]}
    assert all(image.boxes.shape[1:] == (5,) and image.boxes.dtype == np.float64
               for image in found.images)
    assert _boxes(LABEL_FORMATS["yolo"](root)) == _boxes(found)


BAD_YOLO = {
    "fields.png": ("0 0.5 0.5 0.5 0.5\n0 0.5 0.5 0.5\n",
                   "line 2: 4 fields, expected 5 (class cx cy w h)"),
    "segment.png": ("1 0.1 0.1 0.2 0.1 0.2 0.2\n",
                    "line 1: 7 fields, expected 5 (class cx cy w h)"),
    "word.png": ("0 0.5 abc 0.5 0.5\n", "line 1: 'abc' is not a number"),
    "nan.png": ("0 nan 0.5 0.5 0.5\n", "line 1: 'nan' is not a finite number"),
    "half.png": ("1.5 0.5 0.5 0.5 0.5\n", "line 1: class '1.5' is not a whole number"),
    "unknown.png": ("3 0.5 0.5 0.5 0.5\n", "line 1: class 3 is not one of the 3 classes (0..2)"),
    "negative.png": ("-1 0.5 0.5 0.5 0.5\n",
                     "line 1: class -1 is not one of the 3 classes (0..2)"),
    "outside.png": ("0 0.9 0.5 0.4 0.2\n", "line 1: the box reaches outside the image "
                                           "(x1 1.1; 0..1 allowed, give or take 0.01)"),
    "above.png": ("0 0.5 0.05 0.2 0.2\n", "line 1: the box reaches outside the image "
                                          "(y0 -0.05; 0..1 allowed, give or take 0.01)"),
    "flat.png": ("0 0.5 0.5 0.25 0\n", "line 1: the box has zero area (w 0.25, h 0)"),
    "inverted.png": ("0 0.5 0.5 -0.25 0.5\n", "line 1: the box has zero area (w -0.25, h 0.5)"),
    # The first bad line is named, not the later ones.
    "third.png": ("0 0.5 0.5 0.5 0.5\n\n2 0.5 0.5 0.5\n9 0.5 0.5 0.5 0.5\n",
                  "line 3: 4 fields, expected 5 (class cx cy w h)"),
}


def test_each_bad_yolo_label_file_is_left_out_naming_its_first_bad_line(tmp_path: Path) -> None:
    labels: dict[str, str | bytes | None] = {name: text for name, (text, _) in BAD_YOLO.items()}
    root = _yolo(tmp_path, {**labels, "good.png": "1 0.5 0.5 0.5 0.5\n", "missing.png": None,
                            "binary.png": b"\xff\xfe\x00"})
    _write(root / "images/notes.txt", "not an image")
    _write(root / "images/.DS_Store", "hidden: not named")
    _write(root / "labels/ghost.txt", "0 0.5 0.5 0.5 0.5\n")
    found = read_yolo(root)
    assert _boxes(found) == {"good.png": [[1.0, 0.25, 0.25, 0.75, 0.75]]}
    reasons = _reasons(found)
    expected = {f"labels/{Path(name).stem}.txt": reason for name, (_, reason) in BAD_YOLO.items()}
    expected.update({
        "images/missing.png": "no label file labels/missing.txt (an image with no objects "
                              "needs an empty one)",
        "images/notes.txt": "not a PNG or JPEG file",
        "labels/ghost.txt": "no image images/ghost.png, .jpg or .jpeg for this label file"})
    assert reasons.pop("labels/binary.txt").startswith("not text: ")
    assert reasons == expected
    assert [entry["file"] for entry in found.skipped] == sorted(reasons | {"labels/binary.txt": ""})


def test_the_tolerance_at_the_edge_is_one_percent_of_the_side(tmp_path: Path) -> None:
    assert TOLERANCE == 0.01
    root = _yolo(tmp_path, {"in.png": "0 0.5 0.5 1.015625 0.5\n",   # x0 -0.0078125: clipped
                            "out.png": "0 0.5 0.5 1.03125 0.5\n"})  # x0 -0.015625: refused
    found = read_yolo(root)
    assert _boxes(found) == {"in.png": [[0.0, 0.0, 0.25, 1.0, 0.75]]}
    assert _reasons(found) == {"labels/out.txt": "line 1: the box reaches outside the image "
                                                 "(x0 -0.015625; 0..1 allowed, give or take 0.01)"}


@pytest.mark.parametrize("files, classes", [
    ({"data.yaml": "names: [cat, dog, bird]\n"}, CLASSES),
    ({"data.yaml": "path: ../x\nnc: 3\nnames:\n  0: cat\n  1: dog\n  2: bird\n"}, CLASSES),
    ({"classes.txt": "cat\ndog\nbird\n\n"}, CLASSES),
    ({"labels/classes.txt": "cat\ndog\n"}, ["cat", "dog"]),
    ({"data.yaml": "names: [cat, dog]\n", "classes.txt": "cat\ndog\n"}, ["cat", "dog"]),
])
def test_yolo_class_names_come_from_data_yaml_or_classes_txt(
        tmp_path: Path, files: dict[str, str], classes: list[str]) -> None:
    for name, text in files.items():
        _write(tmp_path / name, text)
    assert yolo_classes(tmp_path) == classes


@pytest.mark.parametrize("files, message", [
    ({}, "no class names: add data.yaml with 'names: [first, second, ...]' or classes.txt"),
    ({"data.yaml": "names: [cat, dog]\n", "classes.txt": "dog\ncat\n"},
     "data.yaml and classes.txt name different classes (['cat', 'dog'] and ['dog', 'cat'])"),
    ({"data.yaml": "nc: 3\nnames: [cat, dog]\n"}, "nc is 3 but names lists 2 classes"),
    ({"data.yaml": "names: {0: cat, 2: dog}\n"}, "names: the keys must be the class indices 0..1"),
    ({"data.yaml": "nc: 2\n"}, "no 'names'"),
    ({"data.yaml": "names: [cat, cat]\n"}, "class names repeat: 'cat'"),
    ({"data.yaml": "names: [a]\nnames: [b]\n"}, "not YAML: key 'names' appears twice"),
    ({"classes.txt": "cat\n\ndog\n"}, "line 2 is empty (line n names class n-1)"),
])
def test_a_missing_or_bad_yolo_class_list_is_an_error_naming_the_file(
        tmp_path: Path, files: dict[str, str], message: str) -> None:
    for name, text in files.items():
        _write(tmp_path / name, text)
    with pytest.raises(DataError) as raised:
        yolo_classes(tmp_path)
    assert message in str(raised.value)


def test_a_yolo_folder_without_images_or_labels_is_an_error(tmp_path: Path) -> None:
    _write(tmp_path / "images/a.png")
    with pytest.raises(DataError) as raised:
        read_yolo(tmp_path)
    assert str(raised.value).startswith(f"YOLO folder {tmp_path}: no labels/ folder")


# COCO ---------------------------------------------------------------------------------

CATEGORIES = [{"id": 7, "name": "bird"}, {"id": 1, "name": "cat"}, {"id": 3, "name": "dog"}]


def _coco(folder: Path, images: list[Any], annotations: list[Any],
          categories: list[Any] = CATEGORIES, files: bool = True) -> Path:
    for entry in images:
        if files and isinstance(entry, dict) and isinstance(entry.get("file_name"), str):
            _write(folder / entry["file_name"], b"\xff\xd8")
    return _write(folder / "instances.json", json.dumps(
        {"images": images, "annotations": annotations, "categories": categories}))


def _image(id_: int, name: str, width: int = 640, height: int = 480) -> dict[str, Any]:
    return {"id": id_, "file_name": name, "width": width, "height": height}


def _box(id_: int, image_id: Any, category_id: Any, bbox: Any, **extra: Any) -> dict[str, Any]:
    return {"id": id_, "image_id": image_id, "category_id": category_id, "bbox": bbox, **extra}


def test_coco_boxes_are_normalised_corners_with_categories_in_id_order(tmp_path: Path) -> None:
    path = _coco(tmp_path, [_image(2, "b.jpg"), _image(1, "sub/a.jpg", 200, 100),
                            _image(3, "empty.jpg")], [
        _box(10, 2, 7, [64, 48, 320, 240]),
        _box(11, 1, 1, [50, 25, 100, 50], iscrowd=0, area=5000),
        _box(12, 2, 3, [0, 0, 640, 480]),
        # Past the left edge by 3 of 640 pixels (within the tolerance): clipped to it.
        _box(13, 1, 3, [-1, 0, 51, 100]),
    ])
    found = read_coco(path)
    assert found.classes == ["cat", "dog", "bird"]  # ids 1, 3, 7 -> classes 0, 1, 2
    assert found.skipped == []
    assert [image.path for image in found.images] == [
        tmp_path / "b.jpg", tmp_path / "empty.jpg", tmp_path / "sub/a.jpg"]
    assert _boxes(found) == {
        "b.jpg": [[2.0, 0.1, 0.1, 0.6, 0.6], [1.0, 0.0, 0.0, 1.0, 1.0]],
        "empty.jpg": [],
        "a.jpg": [[0.0, 0.25, 0.25, 0.75, 0.75], [1.0, 0.0, 0.0, 0.25, 1.0]]}
    assert _boxes(LABEL_FORMATS["coco"](path)) == _boxes(found)


def test_coco_images_are_looked_up_in_the_folder_given(tmp_path: Path) -> None:
    path = _coco(tmp_path / "annotations", [_image(1, "a.jpg")], [], files=False)
    _write(tmp_path / "val" / "a.jpg", b"\xff\xd8")
    assert [image.path for image in read_coco(path, tmp_path / "val").images] == [
        tmp_path / "val/a.jpg"]
    assert _reasons(read_coco(path)) == {
        "a.jpg": f"no such image file in {tmp_path / 'annotations'}"}


def test_each_bad_coco_image_is_left_out_naming_its_annotation(tmp_path: Path) -> None:
    images = [_image(1, "good.jpg"), _image(2, "category.jpg"), _image(3, "crowd.jpg"),
              _image(4, "short.jpg"), _image(5, "text.jpg"), _image(6, "flat.jpg"),
              _image(7, "outside.jpg"), _image(8, "twice.jpg"), _image(9, "twice.jpg"),
              _image(10, "first.jpg"), _image(10, "second.jpg"),
              {"id": 11, "file_name": "nosize.jpg", "width": 640},
              {"id": 12, "width": 640, "height": 480}, _image(13, "late.jpg")]
    path = _coco(tmp_path, images, [
        _box(1, 1, 1, [0, 0, 320, 240]),
        _box(2, 2, 4, [0, 0, 10, 10]),
        _box(3, 3, 1, [0, 0, 10, 10], iscrowd=1),
        _box(4, 4, 1, [0, 0, 10]),
        _box(5, 5, 1, [0, "0", 10, 10]),
        _box(6, 6, 1, [10, 10, 0, 20]),
        _box(7, 7, 1, [600, 10, 50, 20]),
        _box(8, 8, 1, [0, 0, 10, 10]),
        _box(9, 10, 1, [0, 0, 10, 10]),
        _box(14, 13, 1, [0, 0, 10, 10]), _box(15, 13, 9, [0, 0, 10, 10]),
        _box(16, 99, 1, [0, 0, 10, 10]), _box(17, None, 1, [0, 0, 10, 10]),
    ])
    found = read_coco(path)
    assert _boxes(found) == {"good.jpg": [[0.0, 0.0, 0.0, 0.5, 0.5]]}
    assert _reasons(found) == {
        "category.jpg": "annotation 2: category_id 4 is not a category (ids 1, 3, 7)",
        "crowd.jpg": "annotation 3: a crowd region (iscrowd 1), which a box list cannot mark "
                     "as ignored",
        "short.jpg": "annotation 4: bbox [0, 0, 10] is not [x, y, width, height] in pixels",
        "text.jpg": "annotation 5: bbox [0, '0', 10, 10] is not [x, y, width, height] in pixels",
        "flat.jpg": "annotation 6: bbox [10, 10, 0, 20] has zero area",
        "outside.jpg": "annotation 7: bbox [600, 10, 50, 20] reaches outside the 640x480 image "
                       "(x1 1.01562 of its side; 0..1 allowed, give or take 0.01)",
        "twice.jpg": "listed 2 times (image ids 8, 9)",
        "first.jpg": "image id 10 is also the id of second.jpg: its annotations cannot be told "
                     "apart",
        "second.jpg": "image id 10 is also the id of first.jpg: its annotations cannot be told "
                      "apart",
        "nosize.jpg": "image id 11: height None is not a positive whole number",
        "instances.json images[12]": "image id 12: no file_name",
        "late.jpg": "annotation 15: category_id 9 is not a category (ids 1, 3, 7)",
        "instances.json": "2 annotation(s) name no image of the file: 16 (image_id 99), "
                          "17 (image_id None)",
    }


@pytest.mark.parametrize("text, message", [
    ("{not json", "not a readable JSON file"),
    (json.dumps({"images": [], "annotations": []}), "not a COCO file: no 'categories' list"),
    (json.dumps({"annotations": [], "categories": CATEGORIES}), "no 'images' list"),
    (json.dumps({"images": [], "annotations": [], "categories": []}), "categories is empty"),
    (json.dumps({"images": [], "annotations": [], "categories": CATEGORIES + [
        {"id": 7, "name": "fish"}]}), "category ids repeat: 7"),
    (json.dumps({"images": [], "annotations": [], "categories": [{"id": "1", "name": "a"}]}),
     "categories[0] is not {'id': number, 'name': text}"),
])
def test_a_file_that_is_no_coco_file_is_an_error_naming_it(
        tmp_path: Path, text: str, message: str) -> None:
    path = _write(tmp_path / "instances.json", text)
    with pytest.raises(DataError) as raised:
        read_coco(path)
    assert str(raised.value).startswith(str(path)) and message in str(raised.value)


def test_a_class_list_in_labels_is_no_label_file_of_a_missing_image(tmp_path: Path) -> None:
    # LabelImg writes classes.txt beside the label files.
    root = _yolo(tmp_path / "set", {"a.png": "1 0.5 0.5 0.5 0.5\n"})
    (root / "classes.txt").rename(root / "labels/classes.txt")
    found = read_yolo(root)
    assert found.classes == CLASSES and found.skipped == []
    assert _boxes(found) == {"a.png": [[1.0, 0.25, 0.25, 0.75, 0.75]]}


def test_a_broken_link_among_the_images_is_listed_for_prepare_to_name(tmp_path: Path) -> None:
    """The reader opens no image: a link to nowhere is handed on (prepare's checks name
    it, as for the folder source), not dropped without a word."""
    root = _yolo(tmp_path, {"a.png": ""})
    (root / "images/gone.png").symlink_to(tmp_path / "nowhere.png")
    (root / "labels/gone.txt").write_text("")
    assert [image.path.name for image in read_yolo(root).images] == ["a.png", "gone.png"]


def test_data_yaml_names_keyed_by_text_are_an_error_not_a_crash(tmp_path: Path) -> None:
    _write(tmp_path / "data.yaml", "names: {0: cat, one: dog}\n")
    with pytest.raises(DataError) as raised:
        yolo_classes(tmp_path)
    assert "the keys must be the class indices 0..1, found ['0', 'one']" in str(raised.value)
