"""prepare for ``data.task: detection`` (tasks/prepare/detection.py): synthetic scenes
(deterministic, every box kept exactly), a YOLO folder and a COCO file written here with
bad labels and bad images among good ones (each named in meta.json and left out), boxes
moved through the letterbox to the hand-computed place, the seeded split by image, the
warnings of a class missing from a split, and the configuration's refusals."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tasks.config import DataParams, load_params
from tasks.config.params import DETECTION_SOURCES, LABEL_FORMATS
from tasks.core.contracts.prepared import SPLITS, image_boxes, load_split, pad_boxes
from tasks.core.errors import ConfigError
from tasks.prepare import prepare
from tasks.prepare import detection_labels
from tasks.prepare.detection import (LABEL_READERS, LOADERS, missing_class_warnings,
                                     object_counts)
from tasks.prepare.splits import split_images

SCENES = 40


def read_meta(out_dir: Path) -> dict[str, Any]:
    return json.loads((out_dir / "meta.json").read_text(encoding="utf-8"))


def scene_params(**changes: Any) -> DataParams:
    values: dict[str, Any] = dict(task="detection", source="digit_scenes", scenes=SCENES,
                                  image_size=(32, 32), color="rgb", calibration_size=8)
    return DataParams(**{**values, **changes})


# --------------------------------------------------------------------------- scenes


@pytest.fixture(scope="module")
def scenes_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepare(scene_params(), tmp_path_factory.mktemp("scenes") / "prepared")


def test_scenes_are_deterministic_and_the_seed_changes_them(scenes_out: Path,
                                                             tmp_path: Path) -> None:
    again = read_meta(prepare(scene_params(), tmp_path / "again"))["sha256"]
    assert again == read_meta(scenes_out)["sha256"]
    other = read_meta(prepare(scene_params(seed=7), tmp_path / "other"))["sha256"]
    assert all(other[name] != again[name] for name in SPLITS)


def test_scene_boxes_and_pixels_survive_the_round_trip_exactly(scenes_out: Path) -> None:
    from sklearn.datasets import load_digits

    from tasks.prepare.scenes import detection_scenes

    digits = load_digits()
    drawn = detection_scenes(digits.images, digits.target, SCENES, (32, 32), 42)
    splits = split_images(SCENES, scene_params())
    for name in SPLITS:
        x, y = load_split(scenes_out, name)
        assert y.dtype == np.float64 and x.dtype == np.float32
        np.testing.assert_array_equal(y, pad_boxes([drawn.boxes[i] for i in splits[name]]))
        np.testing.assert_array_equal(
            x, np.uint8(np.round(drawn.images[splits[name]] * 255.0)).astype(np.float32) / 255)


def test_scene_meta_counts_images_per_split_and_objects_per_class(scenes_out: Path) -> None:
    meta = read_meta(scenes_out)
    assert meta["task"] == "detection"
    assert meta["classes"] == [str(digit) for digit in range(10)]
    assert meta["input_shape"] == [32, 32, 3]
    assert meta["counts"] == {"train": 26, "val": 6, "test": 8, "calib": 8}
    objects = {name: [image_boxes(row) for row in load_split(scenes_out, name)[1]]
               for name in SPLITS}
    for name in SPLITS:
        labels = np.concatenate([boxes[:, 0] for boxes in objects[name]]).astype(int)
        assert meta["per_split_class"][name] == {
            str(digit): int(np.sum(labels == digit)) for digit in range(10)}
    everything = np.concatenate([boxes[:, 0] for name in ("train", "val", "test")
                                 for boxes in objects[name]]).astype(int)
    assert meta["per_class"] == {str(d): int(np.sum(everything == d)) for d in range(10)}
    assert meta["warnings"] == missing_class_warnings(meta["per_split_class"])
    assert meta["skipped_count"] == 0 and meta["skipped"] == []


def test_unset_scenes_draws_six_hundred() -> None:
    from tasks.prepare.detection import load_scenes

    assert len(load_scenes(scene_params(scenes=None, image_size=(8, 8))).x) == 600


# --------------------------------------------------------------------------- the split


def test_the_split_is_by_image_seeded_and_sized_like_classification() -> None:
    params = scene_params(calibration_size=10)
    splits = split_images(50, params)
    assert {name: len(indices) for name, indices in splits.items()} == {
        "train": 32, "val": 7, "test": 11, "calib": 10}
    together = np.concatenate([splits["train"], splits["val"], splits["test"]])
    assert sorted(together.tolist()) == list(range(50))
    assert set(splits["calib"].tolist()) <= set(splits["train"].tolist())
    again = split_images(50, params)
    assert all(np.array_equal(again[name], splits[name]) for name in SPLITS)
    other = split_images(50, scene_params(calibration_size=10, seed=7))
    assert all(not np.array_equal(other[name], splits[name]) for name in SPLITS)


def test_too_few_images_to_split_is_a_data_error() -> None:
    from tasks.core.errors import DataError

    with pytest.raises(DataError, match=r"^data.split: cannot split 2 images into train, "
                                        r"val and test: "):
        split_images(2, scene_params())


# --------------------------------------------------------------------------- warnings


def test_a_split_with_no_object_of_a_class_is_a_warning_naming_the_counts() -> None:
    per_split = {"train": {"cat": 3, "dog": 0}, "val": {"cat": 0, "dog": 0},
                 "test": {"cat": 1, "dog": 2}, "calib": {"cat": 0, "dog": 0}}
    assert missing_class_warnings(per_split) == [
        "data: the train split has no object of class 'dog' (train objects: cat 3, dog 0); "
        "the model never learns it: add images with that class",
        "data: the val split has no object of classes 'cat', 'dog' (val objects: cat 0, "
        "dog 0); its AP is not measured in validation: add images with it or raise "
        "data.split.val"]
    assert object_counts([np.array([[1.0, 0, 0, 1, 1], [1.0, 0, 0, 1, 1]]),
                          np.zeros((0, 5))], ["cat", "dog", "bird"]) == {
        "cat": 0, "dog": 2, "bird": 0}


# --------------------------------------------------------------------------- folders

WIDE = (40, 20)  # every test image: 40 wide, 20 high
# Its object: columns 10..29, rows 10..19, as YOLO (cx cy w h) and COCO (x y w h) give it.
YOLO_BOX = "0.5 0.75 0.5 0.5"
COCO_BOX = [10, 10, 20, 10]
CORNERS = [0.25, 0.5, 0.75, 1.0]
# Letterboxed into 32x32 the picture is 32x16 with 8 black rows above: y -> 0.25 + y / 2.
LETTERBOXED = [0.25, 0.5, 0.75, 0.75]


def wide_image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.full((WIDE[1], WIDE[0], 3), 60, np.uint8)
    pixels[10:20, 10:30] = 255
    Image.fromarray(pixels, "RGB").save(path)
    return path


def yolo_folder(root: Path) -> Path:
    """Six good images (three of each class), one with no objects, and bad ones."""
    (root / "labels").mkdir(parents=True)
    (root / "classes.txt").write_text("zero\none\n", encoding="utf-8")
    labels = {**{name: f"0 {YOLO_BOX}\n" for name in "abc"},
              **{name: f"1 {YOLO_BOX}\n" for name in "def"},
              "m": "",                                          # no objects
              "g": f"0 {YOLO_BOX}\n5 0.5 0.5 0.1 0.1\n",        # unknown class
              "h": "0 0.9 0.5 0.5 0.5\n",                       # past the right edge
              "i": "0 0.5 0.5\n",                               # malformed
              "k": f"0 {YOLO_BOX}\n", "l": f"0 {YOLO_BOX}\n"}   # bad images
    for name, text in labels.items():
        (root / "labels" / f"{name}.txt").write_text(text, encoding="utf-8")
    for name in "abcdefghijm":                                  # j: no label file
        wide_image(root / "images" / f"{name}.png")
    (root / "images" / "k.png").write_bytes(b"not a png at all")
    (root / "images" / "l.png").write_bytes(b"")
    return root


def yolo_params(root: Path, **changes: Any) -> DataParams:
    return DataParams(**{**dict(task="detection", source="folder", folder=root, labels="yolo",
                                image_size=(32, 32), color="rgb", calibration_size=2),
                         **changes})


@pytest.fixture(scope="module")
def yolo_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = yolo_folder(tmp_path_factory.mktemp("yolo") / "data")
    return prepare(yolo_params(root, fit="letterbox"), root.parent / "prepared")


def test_yolo_bad_labels_and_bad_images_are_named_and_left_out(yolo_out: Path) -> None:
    meta = read_meta(yolo_out)
    skipped = {entry["file"]: entry["reason"] for entry in meta["skipped"]}
    assert list(skipped) == ["images/j.png", "images/k.png", "images/l.png",
                             "labels/g.txt", "labels/h.txt", "labels/i.txt"]  # sorted
    assert skipped["labels/g.txt"] == "line 2: class 5 is not one of the 2 classes (0..1)"
    assert skipped["labels/h.txt"] == ("line 1: the box reaches outside the image (x1 1.15; "
                                       "0..1 allowed, give or take 0.01)")
    assert skipped["labels/i.txt"] == "line 1: 3 fields, expected 5 (class cx cy w h)"
    assert skipped["images/j.png"] == ("no label file labels/j.txt (an image with no objects "
                                       "needs an empty one)")
    assert skipped["images/k.png"].startswith("unreadable: cannot identify image file")
    assert skipped["images/l.png"] == "empty file"
    assert meta["skipped_count"] == 6
    assert meta["classes"] == ["zero", "one"]
    assert sum(meta["counts"][name] for name in ("train", "val", "test")) == 7
    assert meta["per_class"] == {"zero": 3, "one": 3}


def test_letterbox_moves_each_box_to_the_hand_computed_place_with_its_pixels(
        yolo_out: Path) -> None:
    empty = 0
    for name in ("train", "val", "test"):
        x, y = load_split(yolo_out, name)
        for image, row in zip(x, y):
            boxes = image_boxes(row)
            if len(boxes) == 0:
                empty += 1
                continue
            assert boxes[:, 1:].tolist() == [LETTERBOXED]
            # The white object is where the box says: 8..23 across, 16..23 down.
            np.testing.assert_array_equal(image[:8], 0.0)  # the letterbox's black band
            np.testing.assert_array_equal(image[17:23, 9:23], 1.0)
            assert image[16:24, 8:24].mean() > 0.9 and image[8:16].max() < 0.3
    assert empty == 1  # the image with an empty label file: kept, no objects


def test_squash_keeps_the_label_file_numbers_exactly(tmp_path: Path) -> None:
    root = yolo_folder(tmp_path / "data")
    out = prepare(yolo_params(root), tmp_path / "prepared")
    rows = [image_boxes(row) for name in ("train", "val", "test")
            for row in load_split(out, name)[1]]
    assert sorted(boxes[0].tolist() for boxes in rows if len(boxes)) == \
        [[0.0, *CORNERS]] * 3 + [[1.0, *CORNERS]] * 3


def test_a_photo_shot_sideways_has_its_boxes_on_the_upright_image(tmp_path: Path) -> None:
    """Stored 20 wide and 40 high with an EXIF rotation of 90 degrees: upright it is the
    40x20 image its labels are drawn on, and is letterboxed as such."""
    root = tmp_path / "data"
    (root / "labels").mkdir(parents=True)
    (root / "classes.txt").write_text("zero\n", encoding="utf-8")
    (root / "images").mkdir()
    for name in "abcdef":
        upright = Image.open(wide_image(tmp_path / "upright.png"))
        exif = Image.Exif()
        exif[0x0112] = 6  # Orientation: turn 90 degrees clockwise to show
        upright.rotate(90, expand=True).save(root / "images" / f"{name}.jpg", quality=95,
                                             exif=exif)
        (root / "labels" / f"{name}.txt").write_text(f"0 {YOLO_BOX}\n", encoding="utf-8")
    out = prepare(yolo_params(root, fit="letterbox"), tmp_path / "prepared")
    rows = [image_boxes(row) for name in ("train", "val", "test")
            for row in load_split(out, name)[1]]
    assert [boxes[:, 1:].tolist() for boxes in rows] == [[LETTERBOXED]] * 6


def coco_folder(tmp_path: Path) -> tuple[Path, Path]:
    """Six good images, an unknown category, a crowd, a missing and an unreadable image;
    the JSON file outside the images' folder."""
    folder = tmp_path / "photos"
    names = ["p", "q", "r", "s", "t", "u", "v", "w", "x", "y"]
    for name in names:
        if name != "w":
            wide_image(folder / f"{name}.png")
    (folder / "y.png").write_bytes(b"\x89PNG broken")
    categories = {"p": 3, "q": 3, "r": 3, "s": 7, "t": 7, "u": 7, "v": 9, "w": 3, "x": 3,
                  "y": 3}
    document = {
        "images": [{"id": index + 1, "file_name": f"{name}.png", "width": WIDE[0],
                    "height": WIDE[1]} for index, name in enumerate(names)],
        "annotations": [{"id": 100 + index, "image_id": index + 1,
                         "category_id": categories[name], "bbox": COCO_BOX,
                         "iscrowd": int(name == "x")} for index, name in enumerate(names)],
        "categories": [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}]}
    annotations = tmp_path / "annotations" / "instances.json"
    annotations.parent.mkdir()
    annotations.write_text(json.dumps(document), encoding="utf-8")
    return folder, annotations


def test_coco_boxes_and_skipped_files(tmp_path: Path) -> None:
    folder, annotations = coco_folder(tmp_path)
    out = prepare(DataParams(task="detection", source="folder", folder=folder, labels="coco",
                             coco_json=annotations, image_size=(32, 32), calibration_size=2),
                  tmp_path / "prepared")
    meta = read_meta(out)
    assert meta["classes"] == ["cat", "dog"]  # category ids in order: 3, 7
    assert meta["per_class"] == {"cat": 3, "dog": 3}
    assert meta["source"] == f"folder:{folder} (coco labels {annotations})"
    skipped = {entry["file"]: entry["reason"] for entry in meta["skipped"]}
    assert list(skipped) == ["v.png", "w.png", "x.png", "y.png"]  # sorted, image reasons too
    assert skipped["v.png"] == "annotation 106: category_id 9 is not a category (ids 3, 7)"
    assert skipped["w.png"] == f"no such image file in {folder}"
    assert skipped["x.png"].startswith("annotation 108: a crowd region")
    assert skipped["y.png"].startswith("unreadable: ")
    rows = [image_boxes(row) for name in ("train", "val", "test")
            for row in load_split(out, name)[1]]
    assert sorted(boxes.tolist() for boxes in rows) == \
        [[[0.0, *CORNERS]]] * 3 + [[[1.0, *CORNERS]]] * 3


def test_a_folder_with_no_usable_image_is_a_data_error(tmp_path: Path) -> None:
    from tasks.core.errors import DataError

    root = tmp_path / "data"
    (root / "labels").mkdir(parents=True)
    (root / "classes.txt").write_text("zero\n", encoding="utf-8")
    (root / "labels" / "a.txt").write_text(f"0 {YOLO_BOX}\n", encoding="utf-8")
    (root / "images").mkdir()
    (root / "images" / "a.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"has no usable labelled image \(1 file\(s\) skipped\)"):
        prepare(yolo_params(root), tmp_path / "prepared")
    assert not (tmp_path / "prepared").exists()


# --------------------------------------------------------------------------- registries


def test_the_registries_serve_what_the_configuration_allows() -> None:
    assert tuple(LOADERS) == DETECTION_SOURCES
    assert tuple(LABEL_READERS) == LABEL_FORMATS == tuple(detection_labels.LABEL_FORMATS)


# --------------------------------------------------------------------------- configuration

BAD_DATA = [
    pytest.param("data: {task: detection}\n",
                 "data.source 'digits' has no boxes: data.task 'detection' reads digit_scenes "
                 "or folder", id="detection-from-digits"),
    pytest.param("data: {source: folder, folder: images, labels: yolo}\n",
                 "data.labels is only used when data.task is 'detection' and data.source is "
                 "'folder'", id="labels-without-detection"),
    pytest.param("data: {task: detection, source: digit_scenes, labels: yolo}\n",
                 "data.labels is only used when data.task is 'detection' and data.source is "
                 "'folder'", id="labels-with-scenes"),
    pytest.param("data: {task: detection, source: folder, folder: images}\n",
                 "data.labels is required when data.task is 'detection' and data.source is "
                 "'folder' (allowed: yolo, coco)", id="detection-folder-without-labels"),
    pytest.param("data: {task: detection, source: folder, folder: images, labels: yolo, "
                 "coco_json: a.json}\n",
                 "data.coco_json is only used when data.labels is 'coco'", id="json-with-yolo"),
    pytest.param("data: {task: detection, source: folder, folder: images, labels: coco}\n",
                 "data.coco_json is required when data.labels is 'coco' (the COCO JSON file; "
                 "data.folder holds its images)", id="coco-without-json"),
    pytest.param("data: {source: digit_scenes, scenes: 100}\n",
                 "data.scenes is only used when data.task is 'detection' and data.source is "
                 "'digit_scenes'", id="scenes-without-detection"),
    pytest.param("data: {task: detection, source: folder, folder: images, labels: voc}\n",
                 "data.labels: 'voc' is not allowed (allowed: 'yolo' or 'coco')",
                 id="unknown-label-layout"),
]


@pytest.mark.parametrize("text, message", BAD_DATA)
def test_bad_detection_data_params_are_one_line_naming_what_is_allowed(
        tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_params(path)
    prefix = "" if message.startswith("data.labels:") else "data: "
    assert str(caught.value) == f"{path}: {prefix}{message}"


def test_the_coco_file_is_resolved_beside_params_yaml(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("data: {task: detection, source: folder, folder: photos, labels: coco, "
                    "coco_json: labels/instances.json}\n", encoding="utf-8")
    data = load_params(path).data
    assert (data.folder, data.coco_json) == (tmp_path / "photos",
                                             tmp_path / "labels" / "instances.json")
