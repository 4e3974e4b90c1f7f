"""Contract of ``data/prepared/``: written by prepare, read by train, optimize and convert.

- ``{train,val,test,calib}.npz``: ``x`` float32 NHWC in [0, 1], ``y`` int64 class index
  (:func:`write_split`, :func:`load_split`); for ``task: detection``, ``y`` is float64
  ``(N, M, 5)`` (a box read from a label file stays the number written there): each image's objects as rows ``[class, x0, y0, x1, y1]`` (corners
  normalised to [0, 1]), padded to the split's most objects ``M`` with rows of class -1
  (:func:`pad_boxes`, :func:`image_boxes`), so every split stays one array per key,
  readable without pickle;
- ``meta.json``: :class:`PreparedMeta` (:func:`write_meta`, :func:`read_meta`); for
  detection, ``counts`` are images per split and ``per_class`` / ``per_split_class``
  count objects (boxes), not images.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from tasks.core.contracts import Contract, damaged, read_contract, require_file, write_contract

if TYPE_CHECKING:  # numpy is imported where it is used: every command reads this module
    import numpy as np

SPLITS = ("train", "val", "test", "calib")
DEFAULT_TASK = "classification"
META_NAME = "meta.json"


class SkippedFile(Contract):
    """An input file prepare did not use, and why."""

    file: str
    reason: str


class PreparedMeta(Contract):
    """What the prepared arrays are: classes (index order), input shape, how pixels
    were normalised, the kind of task, where they came from, counts per split and class, what was skipped,
    the warnings given, and each split file's sha256."""

    source: str
    classes: list[str]
    input_shape: list[int]
    normalisation: str
    color: Literal["grayscale", "rgb"]
    fit: Literal["squash", "letterbox", "letterbox_grey"] = "squash"  # absent before it was a choice
    # The kind of task the labels are for (tasks/device/kinds/): written only when
    # it is not classification, which it was before kinds existed.
    task: str = DEFAULT_TASK
    seed: int
    counts: dict[str, int]
    per_class: dict[str, int]
    per_split_class: dict[str, dict[str, int]]
    warnings: list[str]
    skipped_count: int
    skipped: list[SkippedFile]
    sha256: dict[str, str]


def write_split(prepared: Path, name: str, x: np.ndarray, y: np.ndarray) -> Path:
    """Write one split (``x`` images, ``y`` labels); returns its path."""
    import numpy as np
    path = prepared / f"{name}.npz"
    np.savez(path, x=x, y=y)
    return path


def load_split(prepared: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    """One split written by :func:`write_split`: ``(x, y)``, as many images as labels."""
    import numpy as np
    path = require_file(prepared / f"{name}.npz", "prepare")
    try:
        with np.load(path, allow_pickle=False) as data:
            x, y = data["x"], data["y"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
        raise damaged(path, f"{type(error).__name__}: {error}", "prepare") from None
    if len(x) != len(y):
        raise damaged(path, f"{len(x)} images, {len(y)} labels", "prepare")
    return x, y


# A padding row's class in a detection split's ``y``: no object.
NO_OBJECT = -1.0
BOX_COLUMNS = ("class", "x0", "y0", "x1", "y1")
BOX_FIELDS = len(BOX_COLUMNS)


def pad_boxes(per_image: list[np.ndarray]) -> np.ndarray:
    """Each image's ``(k, 5)`` objects as one float64 ``(N, M, 5)`` array, ``M`` the most
    objects of any image (at least 1), the rest rows of class :data:`NO_OBJECT`."""
    import numpy as np

    most = max([len(boxes) for boxes in per_image] + [1])
    padded = np.zeros((len(per_image), most, BOX_FIELDS), np.float64)
    padded[..., 0] = NO_OBJECT
    for row, boxes in enumerate(per_image):
        boxes = np.asarray(boxes, np.float64).reshape(-1, BOX_FIELDS)
        padded[row, :len(boxes)] = boxes
    return padded


def image_boxes(padded_row: np.ndarray) -> np.ndarray:
    """One image's objects, ``(k, 5)``, from its row of a padded detection ``y``."""
    import numpy as np

    row = np.asarray(padded_row, np.float64).reshape(-1, BOX_FIELDS)
    return row[row[:, 0] != NO_OBJECT]


def write_meta(prepared: Path, meta: PreparedMeta) -> Path:
    return write_contract(prepared / META_NAME, meta)


def read_meta(prepared: Path) -> PreparedMeta:
    return read_contract(prepared / META_NAME, PreparedMeta, keys=("input_shape", "classes"),
                         written_by="prepare")
