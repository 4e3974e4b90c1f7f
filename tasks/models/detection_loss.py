"""The grid detector's training targets and loss (``model.architecture: tiny_detector``):
what the train step fits it with and what a pruning recipe fine-tunes it with, one
definition for both.

**Targets** (:func:`encode_targets`): the model's output layout (the detection kind's
"grid" layout: per cell an objectness logit, the centre's offset in the cell, width,
height, C class logits) with what each field should be: each ground-truth box goes to
the cell holding its centre, objectness 1 there and 0 elsewhere, the offsets and the
width and height as the decoder reads them through its sigmoid, the class one-hot.

**Loss** (:func:`detection_loss`), per image: binary cross-entropy of objectness over
every cell, positive cells weighted :attr:`LossWeights.positive` (a 12x12 grid holds 1 to
5 objects in 144 cells); L1 between the decoded box fields (sigmoids) and their targets
on positive cells; cross-entropy of the class on positive cells. The last two are means
over the image's positive cells.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import keras
import numpy as np

from tasks.core.contracts.prepared import image_boxes
from tasks.models.architectures import DETECTION_FIELDS


@dataclass(frozen=True)
class LossWeights:
    """How the three parts of the loss add up: ``positive`` weighs the objectness loss of
    a cell holding an object against one holding none; ``box`` and ``classes`` weigh the
    box and class losses against objectness."""

    positive: float = 5.0
    box: float = 5.0
    classes: float = 1.0


def encode_targets(labels: np.ndarray, grid: int, classes: int) -> np.ndarray:
    """Each image's boxes (a detection split's ``y``, ``(N, M, 5)``, or one image's
    ``(k, 5)`` in a list) as the targets of an ``S x S`` grid with ``classes`` classes:
    float32 ``(N, S, S, 5 + C)``, per cell ``[objectness, cx offset, cy offset, w, h,
    one-hot class]``. A box goes to the cell ``(row, column) = (floor(cy * S), floor(cx *
    S))`` of its centre (the last row or column for a centre on the far edge); the
    offsets are ``cx * S - column`` and ``cy * S - row`` in [0, 1), ``w``, ``h`` the
    box's width and height as fractions of the image. Where two centres fall in one
    cell, the larger box (by area; on equal areas the later listed) is the cell's: one
    cell proposes one box."""
    targets = np.zeros((len(labels), grid, grid, DETECTION_FIELDS + classes), np.float32)
    for index, row in enumerate(labels):
        boxes = image_boxes(row)
        areas = (boxes[:, 3] - boxes[:, 1]) * (boxes[:, 4] - boxes[:, 2])
        for label, x0, y0, x1, y1 in boxes[np.argsort(areas, kind="stable")]:
            cx, cy = (x0 + x1) / 2 * grid, (y0 + y1) / 2 * grid
            column, cell_row = min(int(cx), grid - 1), min(int(cy), grid - 1)
            cell = targets[index, cell_row, column]
            cell[:] = 0.0
            cell[:DETECTION_FIELDS] = (1.0, cx - column, cy - cell_row, x1 - x0, y1 - y0)
            cell[DETECTION_FIELDS + int(label)] = 1.0
    return targets


def detection_loss(weights: LossWeights = LossWeights()) -> Callable[[Any, Any], Any]:
    """The loss of raw grid outputs ``y_pred`` against :func:`encode_targets`' ``y_true``
    (both ``(N, S, S, 5 + C)``): one value per image (the module docstring), for
    ``model.compile(loss=...)``. Backend operations only: it runs inside the graph."""
    from keras import ops

    def loss(y_true: Any, y_pred: Any) -> Any:
        y_true = ops.cast(y_true, y_pred.dtype)
        objectness, logit = y_true[..., 0], y_pred[..., 0]
        # Binary cross-entropy from logits in the stable form (no exp of a large logit).
        cross = ops.relu(logit) - logit * objectness + ops.log1p(ops.exp(-ops.abs(logit)))
        cell_weight = 1.0 + (weights.positive - 1.0) * objectness
        objectness_loss = ops.mean(cell_weight * cross, axis=(1, 2))
        positives = ops.maximum(ops.sum(objectness, axis=(1, 2)), 1.0)
        box_error = ops.sum(ops.abs(ops.sigmoid(y_pred[..., 1:DETECTION_FIELDS])
                                    - y_true[..., 1:DETECTION_FIELDS]), axis=-1)
        box_loss = ops.sum(objectness * box_error, axis=(1, 2)) / positives
        class_error = -ops.sum(y_true[..., DETECTION_FIELDS:]
                               * ops.log_softmax(y_pred[..., DETECTION_FIELDS:], axis=-1), axis=-1)
        class_loss = ops.sum(objectness * class_error, axis=(1, 2)) / positives
        return objectness_loss + weights.box * box_loss + weights.classes * class_loss

    return loss


def mean_loss(loss: Callable[[Any, Any], Any], targets: np.ndarray, outputs: np.ndarray) -> float:
    """The mean over images of ``loss`` (from :func:`detection_loss`), computed here."""
    if not len(targets):
        return 0.0
    return float(np.mean(keras.ops.convert_to_numpy(
        loss(keras.ops.convert_to_tensor(targets), keras.ops.convert_to_tensor(outputs)))))
