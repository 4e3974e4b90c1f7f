"""The box array every detection source gives (the synthetic scenes of
:mod:`tasks.prepare.scenes`, the YOLO and COCO readers of
:mod:`tasks.prepare.detection_labels`): one image's objects as a float64 array of shape
(k, 5), one row per object, columns :data:`BOX_COLUMNS`: the class index, then the
corners x0, y0 (top left) and x1, y1 (bottom right) as fractions of the image's width
and height, 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1. An image with no objects has
shape (0, 5).

Corners are pixel edges, not pixel centres: a box over columns a..b (inclusive) of a
W-pixel-wide image runs from a / W to (b + 1) / W, so a box over the whole image is
0..1 and a one-pixel box has width 1 / W (COCO's [x, y, w, h] in pixels is the same
convention). float64 so that a box read from a file is the number written there, and
mAP against pycocotools (which computes in float64) is not moved by rounding.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tasks.core.contracts.prepared import BOX_COLUMNS

__all__ = ["BOX_COLUMNS", "box_array", "fitted_boxes"]


def box_array(rows: Sequence[Sequence[float]]) -> np.ndarray:
    """``rows`` of (class, x0, y0, x1, y1) as the (k, 5) float64 box array."""
    return np.asarray(rows, dtype=np.float64).reshape(-1, len(BOX_COLUMNS))


def fitted_boxes(boxes: np.ndarray, geometry: tuple[float, float, float, float]) -> np.ndarray:
    """``boxes`` (k, 5) moved as their image's pixels are when it becomes the model's
    input: ``geometry`` is ``(scale_x, scale_y, offset_x, offset_y)``
    (:func:`tasks.prepare.preprocessing.fit_geometry`); each corner u goes to
    offset + u * scale. The class column is kept."""
    scale_x, scale_y, offset_x, offset_y = geometry
    moved = np.array(boxes, dtype=np.float64).reshape(-1, len(BOX_COLUMNS))
    moved[:, [1, 3]] = offset_x + moved[:, [1, 3]] * scale_x
    moved[:, [2, 4]] = offset_y + moved[:, [2, 4]] * scale_y
    return moved
