"""Step ``prepare``: images -> model-ready, split arrays.

Reads params ``data``. Writes ``data/prepared/{train,val,test,calib}.npz`` (``x``:
float32 NHWC in [0, 1], ``y``: int64 class index) and ``data/prepared/meta.json``
(classes, input shape, normalisation, source, counts per split and per class, skipped
files, warnings): the contract of :mod:`tasks.core.contracts.prepared`. A train, val or
test split with fewer than :data:`MIN_IMAGES_PER_CLASS` images of a class is a warning
naming the counts.

Sources are a registry: ``digits`` (scikit-learn's bundled 1,797 handwritten 8x8
digits, no download), ``digit_scenes`` (the same digits in colour on varied
backgrounds at any size, :mod:`tasks.prepare.scenes`: the realistic workload of
``experiments/vww96``) and ``folder`` (a class-per-subfolder tree of PNG/JPEG images of
any size, grey or colour). Unreadable or empty images, decompression bombs (more
pixels than Pillow will decode), broken or looping links, links to folders inside a
class and special files are skipped and named in ``meta.json``; fewer than two classes,
or a class with no usable image, is an error.
The split is stratified and seeded (:mod:`tasks.prepare.splits`): the same params give the
same arrays.

``data.task: detection`` (:mod:`tasks.prepare.detection`) reads scenes of several digits
(``digit_scenes``, ``data.scenes`` images) or a folder with YOLO or COCO labels
(``folder``, ``data.labels``, ``data.coco_json``); each split's ``y`` is its images' boxes,
padded (:func:`~tasks.core.contracts.prepared.pad_boxes`), and the split is by image.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from tasks.prepare import preprocessing
from tasks.prepare.detection import prepare_detection
from tasks.prepare.image_reading import decode, file_problem, link_problem
from tasks.prepare.splits import split_indices
from tasks.config import DataParams
from tasks.config.params import DETECTION_TASK
from tasks.core.contracts.prepared import SPLITS
from tasks.core.errors import DataError
from tasks.core.notices import warn
from tasks.prepare.output import PreparedSplits, write_prepared

# Below this many images of a class in the train, val or test split, what is measured on
# it is mostly noise (one image is 10% of that class's accuracy): a warning names them.
MIN_IMAGES_PER_CLASS = 10
SMALL_SPLIT_FIXES = {"train": "add images to that class",
                     "val": "add images or raise data.split.val",
                     "test": "add images or raise data.split.test"}


@dataclass
class LoadedImages:
    """Images already converted to the model's input: float32 (N, H, W, C) in [0, 1]."""

    x: np.ndarray
    y: np.ndarray
    classes: list[str]
    source: str
    normalisation: str
    skipped: list[dict[str, str]] = field(default_factory=list)


def _to_model_input(image: "object", params: DataParams) -> np.ndarray:
    """Resize a PIL image and convert it to the configured colour mode, in [0, 1]: the
    predictor's own pre-processing (:mod:`tasks.prepare.preprocessing`), so an application on a
    board turns its images into exactly what the model was trained on."""
    height, width = params.image_size
    return preprocessing.to_model_input(image, height, width, params.color, params.fit)


def load_digits(params: DataParams) -> LoadedImages:
    from PIL import Image
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    # Pixel values are 0..16; scale to 0..255 grey so both sources share one path.
    images = [Image.fromarray(np.uint8(np.round(image * 255.0 / 16.0)), mode="L")
              for image in digits.images]
    x = np.stack([_to_model_input(image, params) for image in images])
    return LoadedImages(x=x, y=digits.target.astype(np.int64),
                        classes=[str(name) for name in digits.target_names],
                        source="sklearn.datasets.load_digits",
                        normalisation="pixel / 16 (digits) resized bilinear, in [0, 1]")


def load_digit_scenes(params: DataParams) -> LoadedImages:
    """The same digits as colour scenes (:mod:`tasks.prepare.scenes`) at ``image_size``: each
    rendered as an 8-bit RGB image, then through the predictor's pre-processing, as a
    camera frame would be."""
    from PIL import Image
    from sklearn.datasets import load_digits as sklearn_digits

    from tasks.prepare.scenes import digit_scene

    digits = sklearn_digits()
    rng = np.random.default_rng(params.seed)
    size = (params.image_size[0], params.image_size[1])
    x = np.stack([_to_model_input(Image.fromarray(np.uint8(np.round(
        digit_scene(rng, digit, size) * 255.0)), mode="RGB"), params) for digit in digits.images])
    return LoadedImages(x=x, y=digits.target.astype(np.int64),
                        classes=[str(name) for name in digits.target_names],
                        source="edgeflow digit scenes of sklearn.datasets.load_digits",
                        normalisation="pixel / 255 (8-bit RGB scene) resized bilinear, in [0, 1]")


def _class_entries(class_dir: Path) -> list[Path]:
    """Everything under a class folder but real subfolders and hidden names, sorted."""
    return sorted(path for path in class_dir.rglob("*")
                  if not any(part.startswith(".") for part in path.relative_to(class_dir).parts)
                  and not (path.is_dir() and not path.is_symlink()))


def load_folder(params: DataParams) -> LoadedImages:
    root = params.folder
    if root is None or not root.is_dir():
        raise DataError(f"data.folder: {root} is not a folder of class subfolders")
    entries = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    skipped: list[dict[str, str]] = [{"file": p.name, "reason": reason} for p in entries
                                     if (reason := link_problem(p)) is not None]
    class_dirs = [p for p in entries if p.is_dir()]
    if len(class_dirs) < 2:
        raise DataError(f"data.folder: {root} has {len(class_dirs)} class subfolder(s); "
                        "at least 2 are needed (one subfolder per class)")
    images: list[np.ndarray] = []
    labels: list[int] = []
    for label, class_dir in enumerate(class_dirs):
        found = 0
        for path in _class_entries(class_dir):
            relative = path.relative_to(root).as_posix()
            reason = file_problem(path)
            if reason is None:
                try:
                    images.append(decode(path, params).x)
                except ValueError as error:
                    reason = str(error)
            if reason is not None:
                skipped.append({"file": relative, "reason": reason})
                continue
            labels.append(label)
            found += 1
        if found == 0:
            raise DataError(f"data.folder: class {class_dir.name!r} has no readable PNG/JPEG "
                            "image; every class needs at least one")
    return LoadedImages(x=np.stack(images), y=np.asarray(labels, dtype=np.int64),
                        classes=[d.name for d in class_dirs], source=f"folder:{root}",
                        normalisation="pixel / 255 resized bilinear, in [0, 1]",
                        skipped=skipped)


SOURCES: dict[str, Callable[[DataParams], LoadedImages]] = {
    "digits": load_digits,
    "digit_scenes": load_digit_scenes,
    "folder": load_folder,
}


def class_counts(labels: np.ndarray, classes: list[str]) -> dict[str, int]:
    """Images per class name (every class, zeros included)."""
    counts = np.bincount(labels, minlength=len(classes))
    return {name: int(counts[index]) for index, name in enumerate(classes)}


def small_split_warnings(per_split: dict[str, dict[str, int]]) -> list[str]:
    """One line for each of train, val and test that has a class with fewer than
    :data:`MIN_IMAGES_PER_CLASS` images, naming every class's count in it."""
    lines = []
    for split in ("train", "val", "test"):
        counts = per_split[split]
        short = [name for name, count in counts.items() if count < MIN_IMAGES_PER_CLASS]
        if short:
            listed = ", ".join(f"{name} {count}" for name, count in counts.items())
            named = f"class{'es' if len(short) > 1 else ''} {', '.join(map(repr, short))}"
            lines.append(f"data: the {split} split has fewer than {MIN_IMAGES_PER_CLASS} images "
                         f"of {named} ({split}: {listed}); "
                         f"accuracy measured on it is uncertain: {SMALL_SPLIT_FIXES[split]}")
    return lines


def prepare(params: DataParams, out_dir: Path) -> Path:
    """Run the step; returns ``out_dir`` (replaced only when everything succeeded). The
    labels' layout follows the kind of task (:data:`LABEL_LAYOUTS`)."""
    return LABEL_LAYOUTS.get(params.task, prepare_classification)(params, out_dir)


def prepare_classification(params: DataParams, out_dir: Path) -> Path:
    """prepare for kinds whose label is one class per image (the module's docstring)."""
    loaded = SOURCES[params.source](params)
    splits = split_indices(loaded.y, params)
    per_split = {name: class_counts(loaded.y[splits[name]], loaded.classes) for name in SPLITS}
    warnings = [warn(line) for line in small_split_warnings(per_split)]
    return write_prepared(params, PreparedSplits(
        x={name: loaded.x[splits[name]] for name in SPLITS},
        y={name: loaded.y[splits[name]] for name in SPLITS},
        source=loaded.source, classes=loaded.classes, normalisation=loaded.normalisation,
        per_class=class_counts(loaded.y, loaded.classes), per_split_class=per_split,
        warnings=warnings, skipped=loaded.skipped), out_dir)


# Kinds of task whose labels are not one class per image, with the preparation of theirs;
# every other kind (classification, a kind a test registers) is prepared as classification.
LABEL_LAYOUTS: dict[str, Callable[[DataParams, Path], Path]] = {
    DETECTION_TASK: prepare_detection,
}
