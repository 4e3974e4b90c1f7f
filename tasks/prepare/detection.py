"""prepare for ``data.task: detection``: images with their objects' boxes -> the split
arrays and ``meta.json`` of :mod:`tasks.core.contracts.prepared` (``y``: each split's box
arrays padded by :func:`~tasks.core.contracts.prepared.pad_boxes`).

Sources are a registry (:data:`LOADERS`, by ``data.source``):

- ``digit_scenes``: ``data.scenes`` synthetic scenes (600 when unset) of 1 to 5 digits on
  varied backgrounds with their tight boxes (:func:`tasks.prepare.scenes.detection_scenes`),
  drawn at ``image_size`` in RGB, seeded by ``data.seed``: no download;
- ``folder``: ``data.folder`` with labels in the layout ``data.labels`` names
  (:data:`LABEL_READERS`): ``yolo`` (the folder holds ``images/``, ``labels/`` and the class
  names) or ``coco`` (``data.coco_json``, its images in the folder); read by
  :mod:`tasks.prepare.detection_labels`, whose bad labels are skipped with their reasons.

Every image goes through the checks and the pre-processing of classification images
(:mod:`tasks.prepare.image_reading`: a file that is no usable image is skipped, named),
and its boxes move as its pixels do (:func:`tasks.prepare.boxes.fitted_boxes`: unchanged
when squashed, scaled and shifted into the picture when letterboxed). The split is
seeded random by image (:func:`tasks.prepare.splits.split_images`: an image holds objects
of several classes, so there is no class to stratify by). ``meta.json``'s ``counts`` are
images per split; ``per_class`` and ``per_split_class`` count objects, and a train, val or
test split with no object of a class is a warning naming the counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from tasks.config import DataParams
from tasks.core.contracts.prepared import BOX_FIELDS, SPLITS, pad_boxes
from tasks.core.errors import DataError
from tasks.core.notices import warn
from tasks.prepare import preprocessing
from tasks.prepare.boxes import fitted_boxes
from tasks.prepare.detection_labels import DetectionLabels, read_coco, read_yolo
from tasks.prepare.image_reading import ReadImage, decode, file_problem
from tasks.prepare.output import PreparedSplits, write_prepared
from tasks.prepare.splits import split_images

DEFAULT_SCENES = 600  # data.scenes unset: enough for a tiny detector to learn something
# What a split with no object of a class costs, and what to do about it.
MISSING_CLASS_FIXES = {
    "train": "the model never learns it: add images with that class",
    "val": "its AP is not measured in validation: add images with it or raise data.split.val",
    "test": "its AP is not measured: add images with it or raise data.split.test"}


@dataclass
class LoadedDetection:
    """Images as model input (float32 (N, H, W, C) in [0, 1]) and each one's objects, a
    (k, 5) box array in the model input's frame (:mod:`tasks.prepare.boxes`)."""

    x: np.ndarray
    boxes: list[np.ndarray]
    classes: list[str]
    source: str
    normalisation: str
    skipped: list[dict[str, str]] = field(default_factory=list)


def load_scenes(params: DataParams) -> LoadedDetection:
    """``data.scenes`` detection scenes of scikit-learn's digits, each rendered as an
    8-bit RGB image and then pre-processed, as a camera frame would be."""
    from PIL import Image
    from sklearn.datasets import load_digits

    from tasks.prepare.scenes import detection_scenes

    digits = load_digits()
    height, width = params.image_size
    scenes = detection_scenes(digits.images, digits.target, params.scenes or DEFAULT_SCENES,
                              (height, width), params.seed)
    geometry = preprocessing.fit_geometry(width, height, height, width, params.fit)
    x = np.stack([preprocessing.to_model_input(
        Image.fromarray(np.uint8(np.round(image * 255.0)), mode="RGB"), height, width,
        params.color, params.fit) for image in scenes.images])
    return LoadedDetection(x=x, boxes=[fitted_boxes(boxes, geometry) for boxes in scenes.boxes],
                           classes=[str(name) for name in digits.target_names],
                           source="edgeflow detection scenes of sklearn.datasets.load_digits",
                           normalisation="pixel / 255 (8-bit RGB scene) resized bilinear, "
                                         "in [0, 1]")


# Label readers by data.labels (the names params allows): each gives the labelled images.
LABEL_READERS: dict[str, Callable[[DataParams], DetectionLabels]] = {
    "yolo": lambda params: read_yolo(_folder(params)),
    "coco": lambda params: read_coco(_coco_json(params), _folder(params)),
}


def _folder(params: DataParams) -> Path:
    if params.folder is None or not params.folder.is_dir():
        raise DataError(f"data.folder: {params.folder} is not a folder")
    return params.folder


def _coco_json(params: DataParams) -> Path:
    if params.coco_json is None or not params.coco_json.is_file():
        raise DataError(f"data.coco_json: {params.coco_json} is not a file")
    return params.coco_json


def _name(path: Path, root: Path) -> str:
    """How a skipped image is named: its path in the data folder, as label readers name
    files (a COCO file_name may reach outside it)."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _read(path: Path, params: DataParams) -> ReadImage | str:
    """The image as model input, or why it cannot be used (classification's checks)."""
    reason = file_problem(path)
    if reason is not None:
        return reason
    try:
        return decode(path, params)
    except ValueError as error:
        return str(error)


def load_labelled_folder(params: DataParams) -> LoadedDetection:
    """A folder of images with label files (``data.labels``): the images that pass the
    image checks, their boxes moved into the model input; what the labels and the images
    leave out, each named with its reason (sorted by file)."""
    labels = LABEL_READERS[str(params.labels)](params)
    root = _folder(params)
    height, width = params.image_size
    skipped = list(labels.skipped)
    images: list[np.ndarray] = []
    boxes: list[np.ndarray] = []
    for labelled in labels.images:
        read = _read(labelled.path, params)
        if isinstance(read, str):
            skipped.append({"file": _name(labelled.path, root), "reason": read})
            continue
        images.append(read.x)
        boxes.append(fitted_boxes(labelled.boxes, preprocessing.fit_geometry(
            *read.size, height, width, params.fit)))
    if not images:
        raise DataError(f"data.folder: {root} has no usable labelled image "
                        f"({len(skipped)} file(s) skipped)")
    described = f"{params.labels} labels" + (f" {params.coco_json}" if params.labels == "coco"
                                            else "")
    return LoadedDetection(x=np.stack(images), boxes=boxes, classes=labels.classes,
                           source=f"folder:{root} ({described})",
                           normalisation="pixel / 255 resized bilinear, in [0, 1]",
                           skipped=sorted(skipped, key=lambda entry: entry["file"]))


# Loaders by data.source (the detection sources params allows).
LOADERS: dict[str, Callable[[DataParams], LoadedDetection]] = {
    "digit_scenes": load_scenes,
    "folder": load_labelled_folder,
}


def object_counts(boxes: list[np.ndarray], classes: list[str]) -> dict[str, int]:
    """Objects per class name in these images' box arrays (every class, zeros included)."""
    labels = np.concatenate([np.asarray(b, np.float64).reshape(-1, BOX_FIELDS)[:, 0] for b in boxes]
                            + [np.zeros(0)]).astype(np.int64)
    counts = np.bincount(labels, minlength=len(classes))
    return {name: int(counts[index]) for index, name in enumerate(classes)}


def missing_class_warnings(per_split: dict[str, dict[str, int]]) -> list[str]:
    """One line for each of train, val and test with no object of some class, naming
    every class's object count in it."""
    lines = []
    for split in ("train", "val", "test"):
        counts = per_split[split]
        missing = [name for name, count in counts.items() if count == 0]
        if missing:
            listed = ", ".join(f"{name} {count}" for name, count in counts.items())
            named = f"class{'es' if len(missing) > 1 else ''} {', '.join(map(repr, missing))}"
            lines.append(f"data: the {split} split has no object of {named} "
                         f"({split} objects: {listed}); {MISSING_CLASS_FIXES[split]}")
    return lines


def prepare_detection(params: DataParams, out_dir: Path) -> Path:
    """prepare for detection (the module's docstring); returns ``out_dir``, replaced only
    when everything succeeded."""
    loaded = LOADERS[params.source](params)
    splits = split_images(len(loaded.x), params)
    split_boxes = {name: [loaded.boxes[index] for index in splits[name]] for name in SPLITS}
    per_split = {name: object_counts(split_boxes[name], loaded.classes) for name in SPLITS}
    warnings = [warn(line) for line in missing_class_warnings(per_split)]
    return write_prepared(params, PreparedSplits(
        x={name: loaded.x[splits[name]] for name in SPLITS},
        y={name: pad_boxes(split_boxes[name]) for name in SPLITS},
        source=loaded.source, classes=loaded.classes, normalisation=loaded.normalisation,
        per_class=object_counts(loaded.boxes, loaded.classes), per_split_class=per_split,
        warnings=warnings, skipped=loaded.skipped), out_dir)
