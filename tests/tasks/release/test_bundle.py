"""tasks/release/bundle.py: a release's check images and their labels, as the variant's
kind of task writes them (a classifier's class indices, a detector's boxes)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from tasks.core import device_code
from tasks.core.contracts.prepared import pad_boxes, write_split
from tasks.release.bundle import write_check_images


def test_a_detectors_check_labels_are_each_images_boxes(tmp_path: Path) -> None:
    """The first ``count`` test images as PNG at the prepared size, each labelled with
    its own boxes (``[class, x0, y0, x1, y1]``, the split's padding left out; none for
    an image without objects), JSON as the manifest holds them."""
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    boxes = [np.array([[1, 0.1, 0.2, 0.5, 0.6], [0, 0.5, 0.5, 0.75, 1.0]]),
             np.zeros((0, 5)), np.array([[2, 0.0, 0.0, 1.0, 1.0]])]
    x = np.zeros((3, 8, 12, 3), np.float32)
    x[0, 0, 0] = 1.0
    write_split(prepared, "test", x, pad_boxes(boxes))
    kind = device_code.task_kinds().get("detection")
    names, labels = write_check_images(tmp_path / "check", prepared, 2, kind)
    assert names == ["0000.png", "0001.png"]
    assert labels == [[[1, 0.1, 0.2, 0.5, 0.6], [0, 0.5, 0.5, 0.75, 1.0]], []]
    assert json.loads(json.dumps(labels)) == labels
    first = Image.open(tmp_path / "check" / "0000.png")
    assert (first.size, first.getpixel((0, 0)), first.getpixel((1, 0))) == (
        (12, 8), (255, 255, 255), (0, 0, 0))


def test_a_classifiers_check_labels_are_class_indices(tmp_path: Path) -> None:
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    write_split(prepared, "test", np.zeros((3, 4, 4, 1), np.float32),
                np.array([4, 0, 9], np.int64))
    kind = device_code.task_kinds().get("classification")
    names, labels = write_check_images(tmp_path / "check", prepared, 3, kind)
    assert (names, labels) == (["0000.png", "0001.png", "0002.png"], [4, 0, 9])
    assert all(type(label) is int for label in labels)
