"""Detection labels a user brings: a YOLO folder or a COCO JSON file, read into one
form: per image its path and its box array (:mod:`tasks.prepare.boxes`: class, x0, y0,
x1, y1 normalised), the class names in index order, and the files left out with one
reason each (``{"file", "reason"}``, as prepare names skipped images in ``meta.json``).
Nothing here opens an image: whether an image decodes is prepare's check, as for every
source.

**YOLO** (:func:`read_yolo`; Ultralytics' layout): ``root/images/**/<stem>.<png|jpg|jpeg>``
and ``root/labels/**/<stem>.txt`` (the same relative path), one object per line,
``class cx cy w h`` with the centre and size as fractions of the image. The class names
come from ``root/data.yaml`` (its ``names``: a list, or a mapping 0..n-1 -> name, as
Ultralytics writes it; ``nc``, if given, must agree; other keys are not read) or from a
``classes.txt`` (one name a line, line 1 = class 0, as LabelImg writes it) in ``root``
or in ``root/labels``. At least one is needed, since an unknown class cannot be told
without it; where several are present they must agree. An empty label file (or blank
lines only) is an image with no objects; a missing label file leaves the image out,
since a forgotten file and an empty scene cannot be told apart. Ultralytics instead
takes a missing file as an empty scene: a folder with one gives `yolo val` an image
that edgeflow leaves out, named in ``meta.json``.

**COCO** (:func:`read_coco`): ``images`` (``id``, ``file_name``, ``width``,
``height``), ``annotations`` (``image_id``, ``category_id``, ``bbox`` [x, y, w, h] in
pixels) and ``categories`` (``id``, ``name``); the images' files under a folder given
(the JSON file's own folder by default). Category ids map to class indices 0..n-1 in
the order of their ids (COCO's own ids skip numbers). An image with no annotation has
no objects. Crowd regions (``iscrowd: 1``) leave their image out: COCOeval ignores
matches against them, which a box array cannot say.

The rules both share, per box: its corners may lie outside the image by at most
:data:`TOLERANCE` of the image's side (label tools round at the edge), and are then
clipped to it; a box with no width or height left is a zero-area box. Ultralytics
checks only that cx, cy, w and h lie in [0, 1] (a corner may overshoot by half the box)
and clips in training; here a box past the edge by more than 1% is a label error, named.
Ultralytics also drops repeated lines of a file; they are kept here. A file with one bad
box is left out whole, named with its first bad line or annotation: the image kept
without that box would count a correct detection of its object as a false one. A source
that cannot be read at all (no ``images/``, no class list, a JSON file that is no COCO
file) is a :class:`~tasks.core.errors.DataError`.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from tasks.config.safe_yaml import parse_yaml
from tasks.core.errors import DataError
from tasks.prepare.boxes import box_array
from tasks.prepare.image_files import IMAGE_SUFFIXES, NOT_AN_IMAGE

TOLERANCE = 0.01  # a corner may overshoot the image by this fraction of its side
YOLO_FIELDS = ("class", "cx", "cy", "w", "h")
CLASS_FILES = ("data.yaml", "classes.txt", "labels/classes.txt")  # relative to a YOLO root


@dataclass(frozen=True)
class LabelledImage:
    """One image's file and its objects, a (k, 5) box array (:mod:`tasks.prepare.boxes`)."""

    path: Path
    boxes: np.ndarray


@dataclass(frozen=True)
class DetectionLabels:
    """What a label reader found: the usable images (sorted by path), the class names
    (index order) and the files left out, each ``{"file": ..., "reason": ...}``
    (sorted by file)."""

    images: list[LabelledImage]
    classes: list[str]
    skipped: list[dict[str, str]]


class _BadLabel(ValueError):
    """One file's labels cannot be used; the message is the reason."""


def _corners(x0: float, y0: float, x1: float, y1: float,
             outside: Callable[[str, float], str], zero: str) -> tuple[float, ...]:
    """Normalised corners checked against :data:`TOLERANCE` and clipped to the image;
    :class:`_BadLabel` with ``outside(name, value)`` or ``zero`` otherwise."""
    for name, value in (("x0", x0), ("y0", y0), ("x1", x1), ("y1", y1)):
        if not -TOLERANCE <= value <= 1 + TOLERANCE:
            raise _BadLabel(outside(name, value))
    clipped = tuple(min(max(value, 0.0), 1.0) for value in (x0, y0, x1, y1))
    if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
        raise _BadLabel(zero)
    return clipped


def _visible(folder: Path) -> list[Path]:
    """Everything under ``folder`` but folders and hidden names, sorted. Broken links
    and special files are listed, not dropped: prepare's checks of an image name them
    (a label file that is no regular file is a missing one)."""
    return sorted(path for path in folder.rglob("*") if not path.is_dir()
                  and not any(part.startswith(".") for part in path.relative_to(folder).parts))


def _name_list(names: Iterable[Any], where: str) -> list[str]:
    classes = []
    for index, name in enumerate(names):
        if not isinstance(name, (str, int)) or isinstance(name, bool) or str(name).strip() == "":
            raise DataError(f"{where}: class {index} has no name ({name!r})")
        classes.append(str(name).strip())
    repeated = sorted(name for name, count in Counter(classes).items() if count > 1)
    if repeated:
        raise DataError(f"{where}: class names repeat: {', '.join(map(repr, repeated))}")
    if not classes:
        raise DataError(f"{where}: no class names")
    return classes


def _data_yaml_classes(path: Path) -> list[str]:
    where = str(path)
    try:
        document = parse_yaml(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{where}: not readable: {error}") from None
    except yaml.YAMLError as error:  # repeated keys and alias bombs included
        raise DataError(f"{where}: not YAML: {error}") from None
    if not isinstance(document, dict) or "names" not in document:
        raise DataError(f"{where}: no 'names' (the class names: a list, or 0: name, 1: name...)")
    names = document["names"]
    if isinstance(names, dict):
        if set(names) != set(range(len(names))):  # keys may be of any type
            raise DataError(f"{where}: names: the keys must be the class indices "
                            f"0..{len(names) - 1}, found {sorted(map(str, names))}")
        names = [names[index] for index in range(len(names))]
    elif not isinstance(names, list):
        raise DataError(f"{where}: names: a list or a mapping of class index to name, "
                        f"not {type(names).__name__}")
    classes = _name_list(names, f"{where}: names")
    if "nc" in document and document["nc"] != len(classes):
        raise DataError(f"{where}: nc is {document['nc']!r} but names lists {len(classes)} classes")
    return classes


def _classes_txt(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: not readable: {error}") from None
    while lines and not lines[-1].strip():
        lines.pop()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            raise DataError(f"{path}: line {number} is empty (line n names class n-1)")
    return _name_list(lines, str(path))


CLASS_READERS: dict[str, Callable[[Path], list[str]]] = {
    "data.yaml": _data_yaml_classes, "classes.txt": _classes_txt}


def yolo_classes(root: Path) -> list[str]:
    """The class names of a YOLO folder (see the module's docstring for where from)."""
    found = {name: CLASS_READERS[Path(name).name](root / name)
             for name in CLASS_FILES if (root / name).is_file()}
    if not found:
        raise DataError(f"YOLO folder {root}: no class names: add data.yaml with "
                        "'names: [first, second, ...]' or classes.txt (one name a line, "
                        "line 1 = class 0)")
    (first, classes), *others = found.items()
    for name, other in others:
        if other != classes:
            raise DataError(f"YOLO folder {root}: {first} and {name} name different classes "
                            f"({classes} and {other}): keep one")
    return classes


def _number(field: str, line: int) -> float:
    try:
        value = float(field)
    except ValueError:
        raise _BadLabel(f"line {line}: {field!r} is not a number") from None
    if not math.isfinite(value):
        raise _BadLabel(f"line {line}: {field!r} is not a finite number")
    return value


def _yolo_row(text: str, line: int, classes: int) -> tuple[float, ...]:
    fields = text.split()
    if len(fields) != len(YOLO_FIELDS):
        raise _BadLabel(f"line {line}: {len(fields)} fields, expected {len(YOLO_FIELDS)} "
                        f"({' '.join(YOLO_FIELDS)})")
    label, cx, cy, w, h = (_number(field, line) for field in fields)
    if label != int(label):
        raise _BadLabel(f"line {line}: class {fields[0]!r} is not a whole number")
    if not 0 <= label < classes:
        raise _BadLabel(f"line {line}: class {fields[0]} is not one of the {classes} classes "
                        f"(0..{classes - 1})")
    corners = _corners(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2,
                       lambda name, value: (f"line {line}: the box reaches outside the image "
                                            f"({name} {value:g}; 0..1 allowed, give or take "
                                            f"{TOLERANCE:g})"),
                       f"line {line}: the box has zero area (w {fields[3]}, h {fields[4]})")
    return (float(int(label)), *corners)


def _read_yolo_label(path: Path, classes: int) -> np.ndarray:
    """One YOLO label file as a box array; :class:`_BadLabel` naming the first bad line."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise _BadLabel(f"not text: {error}") from None
    except OSError as error:
        raise _BadLabel(f"unreadable: {error}") from None
    return box_array([_yolo_row(line, number, classes)
                      for number, line in enumerate(text.splitlines(), start=1) if line.strip()])


def read_yolo(root: Path) -> DetectionLabels:
    """The images and labels of a YOLO folder ``root`` (the module's docstring)."""
    images_dir, labels_dir = root / "images", root / "labels"
    for folder in (images_dir, labels_dir):
        if not folder.is_dir():
            raise DataError(f"YOLO folder {root}: no {folder.name}/ folder (images/ holds the "
                            "images, labels/ a .txt file of the same name for each)")
    classes = yolo_classes(root)
    images: list[LabelledImage] = []
    skipped: list[dict[str, str]] = []
    used_labels: set[Path] = {root / name for name in CLASS_FILES}  # labels/classes.txt
    for image in _visible(images_dir):
        relative = image.relative_to(root).as_posix()
        label = (labels_dir / image.relative_to(images_dir)).with_suffix(".txt")
        used_labels.add(label)  # named once, with its image, when that is no image
        if image.suffix.lower() not in IMAGE_SUFFIXES:
            skipped.append({"file": relative, "reason": NOT_AN_IMAGE})
            continue
        label_name = label.relative_to(root).as_posix()
        if not label.is_file():
            skipped.append({"file": relative, "reason": f"no label file {label_name} (an image "
                                                       "with no objects needs an empty one)"})
            continue
        try:
            images.append(LabelledImage(image, _read_yolo_label(label, len(classes))))
        except _BadLabel as error:
            skipped.append({"file": label_name, "reason": str(error)})
    for label in _visible(labels_dir):
        if label not in used_labels:
            name = label.relative_to(root).as_posix()
            stem = label.relative_to(labels_dir).with_suffix("").as_posix()
            skipped.append({"file": name, "reason": f"no image images/{stem}.png, .jpg or .jpeg "
                                                    "for this label file"})
    return DetectionLabels(images=images, classes=classes,
                           skipped=sorted(skipped, key=lambda entry: entry["file"]))


# COCO ---------------------------------------------------------------------------------


def _coco_list(document: Any, key: str, where: Path) -> list[Any]:
    if not isinstance(document, dict) or not isinstance(document.get(key), list):
        raise DataError(f"{where}: not a COCO file: no '{key}' list (a COCO file holds "
                        "images, annotations and categories)")
    return document[key]


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def coco_categories(categories: list[Any], where: Path) -> tuple[list[str], dict[int, int]]:
    """Class names in category id order, and category id -> class index."""
    if not categories:
        raise DataError(f"{where}: categories is empty")
    for index, category in enumerate(categories):
        if not isinstance(category, dict) or not _whole(category.get("id")) \
                or not isinstance(category.get("name"), str):
            raise DataError(f"{where}: categories[{index}] is not {{'id': number, "
                            f"'name': text}}: {category!r}")
    ids = [category["id"] for category in categories]
    repeated = sorted(id_ for id_, count in Counter(ids).items() if count > 1)
    if repeated:
        raise DataError(f"{where}: category ids repeat: {', '.join(map(str, repeated))}")
    ordered = sorted(categories, key=lambda category: category["id"])
    classes = _name_list([category["name"] for category in ordered], f"{where}: categories")
    return classes, {category["id"]: index for index, category in enumerate(ordered)}


def _coco_image_problem(entry: Any) -> str | None:
    if not isinstance(entry, dict):
        return f"not an image entry: {entry!r}"
    if not _whole(entry.get("id")):
        return f"no whole-number id ({entry.get('id')!r})"
    if not isinstance(entry.get("file_name"), str) or not entry["file_name"]:
        return f"image id {entry['id']}: no file_name"
    for key in ("width", "height"):
        if not _whole(entry.get(key)) or entry[key] <= 0:
            return (f"image id {entry['id']}: {key} {entry.get(key)!r} is not a positive "
                    "whole number")
    return None


def _coco_box(annotation: Any, image: dict[str, Any], category_index: dict[int, int],
              position: int) -> tuple[float, ...]:
    """One annotation as a box row; :class:`_BadLabel` naming it otherwise."""
    name = f"annotation {annotation.get('id', f'#{position}')}"
    category = annotation.get("category_id")
    if not _whole(category) or category not in category_index:
        raise _BadLabel(f"{name}: category_id {category!r} is not a category "
                        f"(ids {', '.join(map(str, sorted(category_index)))})")
    if annotation.get("iscrowd", 0) not in (0, False):
        raise _BadLabel(f"{name}: a crowd region (iscrowd {annotation['iscrowd']!r}), "
                        "which a box list cannot mark as ignored")
    bbox = annotation.get("bbox")
    if not (isinstance(bbox, list) and len(bbox) == 4
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                    for v in bbox)):
        raise _BadLabel(f"{name}: bbox {bbox!r} is not [x, y, width, height] in pixels")
    x, y, w, h = (float(v) for v in bbox)
    width, height = image["width"], image["height"]
    corners = _corners(x / width, y / height, (x + w) / width, (y + h) / height,
                       lambda corner, value: (f"{name}: bbox {bbox} reaches outside the "
                                              f"{width}x{height} image ({corner} {value:g} of "
                                              f"its side; 0..1 allowed, give or take "
                                              f"{TOLERANCE:g})"),
                       f"{name}: bbox {bbox} has zero area")
    return (float(category_index[category]), *corners)


def read_coco(annotations: Path, images_dir: Path | None = None) -> DetectionLabels:
    """The images and boxes of a COCO JSON file (the module's docstring); image files
    are looked up under ``images_dir`` (the JSON file's folder when None)."""
    folder = annotations.parent if images_dir is None else images_dir
    try:
        document = json.loads(annotations.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise DataError(f"{annotations}: not a readable JSON file: {error}") from None
    entries = _coco_list(document, "images", annotations)
    annotation_list = _coco_list(document, "annotations", annotations)
    classes, category_index = coco_categories(_coco_list(document, "categories", annotations),
                                              annotations)
    skipped: list[dict[str, str]] = []
    valid: list[dict[str, Any]] = []
    for position, entry in enumerate(entries):
        problem = _coco_image_problem(entry)
        if problem is None:
            valid.append(entry)
        else:
            file = entry.get("file_name") if isinstance(entry, dict) else None
            skipped.append({"file": file if isinstance(file, str) and file
                            else f"{annotations.name} images[{position}]", "reason": problem})
    by_id: dict[int, list[dict[str, Any]]] = defaultdict(list)
    by_name: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for entry in valid:
        by_id[entry["id"]].append(entry)
        by_name[entry["file_name"]].append(entry)
    objects: dict[int, list[tuple[int, Any]]] = defaultdict(list)
    orphans: list[str] = []
    for position, annotation in enumerate(annotation_list):
        image_id = annotation.get("image_id") if isinstance(annotation, dict) else None
        if _whole(image_id) and image_id in by_id:
            objects[image_id].append((position, annotation))
        else:
            number = annotation.get("id", f"#{position}") if isinstance(annotation, dict) \
                else f"#{position}"
            orphans.append(f"{number} (image_id {image_id!r})")
    if orphans:  # the JSON file is used, but these annotations in it are not
        listed = ", ".join(orphans[:5]) + (f" and {len(orphans) - 5} more"
                                           if len(orphans) > 5 else "")
        skipped.append({"file": annotations.name, "reason": f"{len(orphans)} annotation(s) "
                                                            f"name no image of the file: {listed}"})
    images: list[LabelledImage] = []
    for entry in valid:
        name, image_id = entry["file_name"], entry["id"]
        if len(by_name[name]) > 1:
            if entry is not by_name[name][0]:
                continue  # one reason for the file, however often it is listed
            ids = ", ".join(str(other["id"]) for other in by_name[name])
            skipped.append({"file": name, "reason": f"listed {len(by_name[name])} times "
                                                    f"(image ids {ids})"})
            continue
        if len(by_id[image_id]) > 1:
            others = ", ".join(other["file_name"] for other in by_id[image_id]
                               if other is not entry)
            skipped.append({"file": name, "reason": f"image id {image_id} is also the id of "
                                                    f"{others}: its annotations cannot be told "
                                                    "apart"})
            continue
        path = folder / name
        if not path.is_file():
            skipped.append({"file": name, "reason": f"no such image file in {folder}"})
            continue
        try:
            boxes = box_array([_coco_box(annotation, entry, category_index, position)
                               for position, annotation in objects[image_id]])
        except _BadLabel as error:
            skipped.append({"file": name, "reason": str(error)})
            continue
        images.append(LabelledImage(path, boxes))
    return DetectionLabels(images=sorted(images, key=lambda image: image.path), classes=classes,
                           skipped=sorted(skipped, key=lambda entry: entry["file"]))


# Readers by format name, each taking the one path a user gives: a YOLO folder, or a
# COCO JSON file with its images beside it.
LABEL_FORMATS: dict[str, Callable[[Path], DetectionLabels]] = {
    "yolo": read_yolo,
    "coco": read_coco,
}
