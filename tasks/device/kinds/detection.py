"""Detection: boxes with a class and a score per image; scored by mAP. Ships to boards.

One implementation of the post-processing and the scoring, shared by the harness, the
predictor and the orchestrator's checks (the same rule as pre-processing: what is
measured is what the application runs). Standard library and NumPy only
(``kinds/__init__.py``, the registry, says how kinds are found).

**The spec.** A detector's variant spec names ``"task": "detection"`` and carries a
``"detection"`` entry (every key optional, :func:`settings` checks them):

- ``format``: the output layout, a name of :data:`LAYOUTS` ("grid" when absent);
- ``classes``: how many classes the model tells apart (C), and for "grid" ``grid``: the
  cells per side (S); both are read from the output's shape where it has one, and are
  needed where the output comes flattened (the harness and the predictor flatten it);
- ``score_threshold`` (0.25), ``iou_threshold`` (0.45, NMS), ``max_detections`` (100):
  the post-processing, recorded with every result that used it;
- ``multi_label`` (false; "yolo" only): a candidate proposes a box for every class
  scoring above the threshold, not only its best, as ``yolo val`` decodes (Ultralytics'
  ``multi_label``; its ``predict`` keeps the best class, as the default here does).

**Output layouts** (:data:`LAYOUTS`, one decoder each, chosen by ``format``):

- ``"grid"``, edgeflow's own detector: an anchor-free grid head, one float tensor
  ``(1, S, S, 5 + C)`` per image. Cell ``(row i, column j)`` holds, in order: an
  objectness logit ``o``; ``tx, ty``, the box centre's offset inside the cell through a
  sigmoid (``cx = (j + sigmoid(tx)) / S``, ``cy = (i + sigmoid(ty)) / S``); ``tw, th``,
  the box's width and height as fractions of the image through a sigmoid
  (``w = sigmoid(tw)``, ``h = sigmoid(th)``); C class logits. A cell proposes one box,
  of its most likely class, scored ``sigmoid(o) * softmax(class logits)[class]``: the
  chance that an object is there times the chance that it is of that class.
- ``"yolo"``, an Ultralytics YOLO (v8 and later) export: one tensor ``(1, 4 + C, N)``,
  N candidate boxes as columns ``cx, cy, w, h`` in the model input's pixels, then C class
  scores already through their sigmoid (no objectness). A candidate proposes its best
  class, scored by that class's score; the input's size (the spec's ``input`` shape and
  layout) turns pixels into fractions of the image.

**Decoding** (:meth:`Detection.decode`): the layout's candidates, those scoring above
``score_threshold`` kept, non-maximum suppression per class (:func:`nms`), at most
``max_detections``: a prediction is a float array ``(k, 6)``, rows ``[class, score, x0,
y0, x1, y1]``, best first, corners as fractions of the model's input image in [0, 1]
(the predictor maps them to the caller's image pixels through its letterbox or resize).

**Scoring** (COCO's rules, as ``pycocotools``' ``COCOeval`` with every area and at most
``max_detections`` boxes an image). A label is one image's ground truth, an array
``(m, 5)`` of rows ``[class, x0, y0, x1, y1]`` in the same normalised corners (a row
of class -1 is none: the prepared split's padding, one label array for every image).
:meth:`Detection.per_sample` matches each image's detections to its ground truth: per
class, detections in order of score, each takes the unmatched ground truth it overlaps
most with IoU >= t (COCO's greedy matching), at each t of :data:`IOU_THRESHOLDS`
(0.50, 0.55 ... 0.95); an image's :class:`ImageResult` records its detections' classes,
scores and hits and its ground truths' classes. :func:`scores` pools the images: per
class with ground truth, the precision/recall curve of its detections ranked by score
over all images, its precision envelope, and the average precision sampled at the 101
recall points 0, 0.01 ... 1 (:data:`AP_METHODS`: "coco", the default, the reference's
definition, equal to ``COCOeval``'s to the last bits; "ultralytics", the trapezoid over
the same 101 points of the envelope interpolated linearly, as ``yolo val`` integrates, to
compare with it). mAP is the mean over the classes with ground truth (a class with
ground truth and no detection counts 0; detections of a class with no ground truth
anywhere count for no class): mAP@0.5 is the headline (:meth:`Detection.metric`);
mAP@0.5:0.95 averages the ten thresholds. ``yolo val`` differs in two more ways: it
matches by IoU rather than by score (the same result unless boxes crowd), and it
scores the boxes of its own post-processing (score 0.001, IoU 0.7, 300 boxes, a box per
class above the score): to compare with it, decode with those settings (``multi_label``
true; ``benchmarks/yolo_val.py`` does).

**Interval** (:meth:`Detection.interval`): a percentile bootstrap over images: the images
resampled with replacement :data:`RESAMPLES` times from a fixed seed (the same results
give the same interval), mAP@0.5 of each resample, the percentiles at the normal tail
``Phi(-z)`` and ``1 - Phi(-z)`` (2.5 and 97.5 at the default z; the health check's
one-sided z gives 5 and 95), widened to hold the metric itself (on few images the
resamples' spread can sit beside it). Images are the unit that is resampled because
boxes of one image are not independent (one bad frame loses all its objects).

**Agreement** (:meth:`Detection.agreement`, convert's check of a variant against its
source): the share of boxes the two agree on, ``2 * matched / (boxes + reference
boxes)``, pooled over images, a box matching a reference box of the same class at IoU >=
0.5 (each matched once, in order of score); 1.0 where neither found anything. Unlike the
variant's mAP against the reference's boxes it also counts boxes of a class the
reference never found.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

Z_95 = 1.959963984540054
# COCO's thresholds, built as pycocotools builds them (the same floats: an IoU of
# exactly 0.6 meets the third either way).
IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1)
RECALL_POINTS = np.linspace(0.0, 1.0, int(np.round((1.0 - 0.0) / 0.01)) + 1)
RESAMPLES = 1000
SEED = 0
AGREEMENT_IOU = 0.5
_SETTING_KEYS = ("format", "classes", "grid", "score_threshold", "iou_threshold",
                 "max_detections", "multi_label")
_EMPTY = np.zeros((0, 6))


# --- post-processing --------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """A detector's post-processing, from its spec (:func:`settings`), with the defaults
    a spec leaves: these. ``classes`` and ``grid`` may be None where the output's shape
    says them; ``input_size`` is the model input's (height, width) in pixels, where the
    spec says it."""

    format: str = "grid"
    classes: int | None = None
    grid: int | None = None
    input_size: tuple[int, int] | None = None
    score_threshold: float = 0.25
    iou_threshold: float = 0.45
    max_detections: int = 100
    multi_label: bool = False


def settings(spec: Mapping[str, Any] | None) -> Settings:
    """The post-processing a variant's spec asks for (its ``"detection"`` entry; what it
    leaves, :class:`Settings`' defaults); ValueError naming the key for an unknown key or
    a bad value."""
    spec = spec or {}
    entry = dict(spec.get("detection") or {})
    unknown = sorted(set(entry) - set(_SETTING_KEYS))
    if unknown:
        raise ValueError(f"detection: unknown key {', '.join(unknown)} "
                         f"(allowed: {', '.join(_SETTING_KEYS)})")
    values = {**{key: getattr(Settings, key) for key in _SETTING_KEYS}, **entry}
    if values["format"] not in LAYOUTS:
        raise ValueError(f"detection.format: unknown output layout {values['format']!r}: "
                         f"one of {', '.join(sorted(LAYOUTS))}")
    for key in ("score_threshold", "iou_threshold"):
        if not (isinstance(values[key], (int, float)) and 0.0 <= values[key] <= 1.0):
            raise ValueError(f"detection.{key} must be a number in [0, 1], not {values[key]!r}")
    for key, least in (("max_detections", 1), ("classes", 1), ("grid", 1)):
        value = values.get(key)
        if value is not None and not (isinstance(value, int) and not isinstance(value, bool)
                                      and value >= least):
            raise ValueError(f"detection.{key} must be a whole number >= {least}, not {value!r}")
    if not isinstance(values["multi_label"], bool):
        raise ValueError(f"detection.multi_label must be true or false, not {values['multi_label']!r}")
    return Settings(format=values["format"], classes=values.get("classes"),
                    grid=values.get("grid"), input_size=_input_size(spec.get("input") or {}),
                    score_threshold=float(values["score_threshold"]),
                    iou_threshold=float(values["iou_threshold"]),
                    max_detections=int(values["max_detections"]),
                    multi_label=values["multi_label"])


def _input_size(tensor: Mapping[str, Any]) -> tuple[int, int] | None:
    shape = tensor.get("shape")
    if not shape or len(shape) != 4:
        return None
    height, width = (shape[2], shape[3]) if tensor.get("layout") == "NCHW" else (shape[1], shape[2])
    return int(height), int(width)


def sigmoid(values: np.ndarray) -> np.ndarray:
    # exp of a negated magnitude never overflows, whatever a quantised logit's range.
    positive = values >= 0
    exponent = np.exp(-np.abs(values))
    return np.where(positive, 1.0 / (1.0 + exponent), exponent / (1.0 + exponent))


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)


def _corners(cx: np.ndarray, cy: np.ndarray, w: np.ndarray, h: np.ndarray) -> np.ndarray:
    return np.clip(np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1), 0.0, 1.0)


class GridLayout:
    """edgeflow's grid head, ``(1, S, S, 5 + C)`` (the module docstring)."""

    name = "grid"

    def sizes(self, shape: tuple[int, ...] | None, config: Settings) -> tuple[int, int]:
        """(S, C) from the spec, else from an output of the layout's shape."""
        grid, classes = config.grid, config.classes
        if (grid is None or classes is None) and shape is not None and len(shape) >= 3:
            grid = grid if grid is not None else int(shape[-2])
            classes = classes if classes is not None else int(shape[-1]) - 5
        if grid is None or classes is None:
            raise ValueError("a flattened grid output needs the spec's detection.grid and "
                             "detection.classes")
        return grid, classes

    def expected(self, shape: tuple[int, ...], config: Settings) -> tuple[int, ...] | None:
        """The shape one image's output must have; None where it cannot be one."""
        grid, classes = self.sizes(shape, config)
        return (1, grid, grid, 5 + classes) if grid >= 1 and classes >= 1 else None

    def candidates(self, output: np.ndarray, config: Settings
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        grid, classes = self.sizes(output.shape, config)
        cells = np.asarray(output, np.float64).reshape(grid, grid, 5 + classes)
        probabilities = softmax(cells[..., 5:])
        best = np.argmax(probabilities, axis=-1)
        scores = sigmoid(cells[..., 0]) * np.take_along_axis(probabilities, best[..., None], -1)[..., 0]
        rows, columns = np.mgrid[0:grid, 0:grid]
        offsets, extent = sigmoid(cells[..., 1:3]), sigmoid(cells[..., 3:5])
        boxes = _corners((columns + offsets[..., 0]) / grid, (rows + offsets[..., 1]) / grid,
                         extent[..., 0], extent[..., 1])
        return boxes.reshape(-1, 4), scores.reshape(-1), best.reshape(-1)


class YoloLayout:
    """An Ultralytics YOLO export, ``(1, 4 + C, N)`` (the module docstring)."""

    name = "yolo"

    def sizes(self, shape: tuple[int, ...] | None, config: Settings) -> tuple[int, int]:
        """(C, N): the classes from the spec, else from an output of the layout's shape."""
        classes = config.classes
        if classes is None and shape is not None and len(shape) >= 2:
            classes = int(shape[-2]) - 4
        if classes is None:
            raise ValueError("a flattened YOLO output needs the spec's detection.classes")
        size = int(np.prod(shape)) if shape is not None else 0
        return classes, size // (4 + classes) if classes >= 0 else 0

    def expected(self, shape: tuple[int, ...], config: Settings) -> tuple[int, ...] | None:
        """The shape one image's output must have; None where it cannot be one."""
        classes, boxes = self.sizes(shape, config)
        return (1, 4 + classes, boxes) if classes >= 1 and boxes >= 1 else None

    def candidates(self, output: np.ndarray, config: Settings
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if config.input_size is None:
            raise ValueError("a YOLO output's boxes are in input pixels: the spec's input "
                             "shape (1, H, W, 3) or NCHW must say the input's size")
        classes, _ = self.sizes(output.shape, config)
        table = np.asarray(output, np.float64).reshape(4 + classes, -1)
        height, width = config.input_size
        boxes = _corners(table[0] / width, table[1] / height, table[2] / width, table[3] / height)
        if config.multi_label:
            # Every (box, class) above the threshold, box by box, classes ascending.
            box, label = np.nonzero(table[4:].T > config.score_threshold)
            return boxes[box], table[4:][label, box], label
        best = np.argmax(table[4:], axis=0)
        scores = table[4:][best, np.arange(table.shape[1])]
        return boxes, scores, best


# Output layouts by the spec's detection.format: a new detector family is one more entry.
LAYOUTS: dict[str, Any] = {layout.name: layout for layout in (GridLayout(), YoloLayout())}


def box_iou(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """IoU of every box of ``first`` (n, 4) with every box of ``second`` (m, 4), corners
    ``[x0, y0, x1, y1]``: (n, m); 0 where the union is empty."""
    first = np.asarray(first, np.float64).reshape(-1, 4)
    second = np.asarray(second, np.float64).reshape(-1, 4)
    width = np.clip(np.minimum(first[:, None, 2], second[None, :, 2])
                    - np.maximum(first[:, None, 0], second[None, :, 0]), 0.0, None)
    height = np.clip(np.minimum(first[:, None, 3], second[None, :, 3])
                     - np.maximum(first[:, None, 1], second[None, :, 1]), 0.0, None)
    inter = width * height
    area_first = (first[:, 2] - first[:, 0]) * (first[:, 3] - first[:, 1])
    area_second = (second[:, 2] - second[:, 0]) * (second[:, 3] - second[:, 1])
    union = area_first[:, None] + area_second[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def _best_first(scores: np.ndarray) -> np.ndarray:
    """Indices by score, highest first; equal scores in index order (a stable sort)."""
    return np.argsort(-np.asarray(scores, np.float64), kind="stable")


def nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou_threshold: float,
        max_detections: int) -> np.ndarray:
    """Greedy non-maximum suppression per class: the indices of the boxes kept, best
    first, at most ``max_detections``. Within a class, the best remaining box is kept and
    every other box overlapping it with IoU above ``iou_threshold`` dropped (above, as
    torchvision's ``nms``: a box at exactly the threshold stays); boxes of different
    classes never suppress each other. Equal scores go in index order, so the result is
    the same on every machine. ``boxes`` (n, 4) are ``[x0, y0, x1, y1]``."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    scores = np.asarray(scores, np.float64).reshape(-1)
    classes = np.asarray(classes).reshape(-1)
    order = _best_first(scores)
    kept: list[int] = []
    for label in np.unique(classes):
        remaining = order[classes[order] == label]
        while remaining.size:
            best, remaining = remaining[0], remaining[1:]
            kept.append(int(best))
            remaining = remaining[box_iou(boxes[best], boxes[remaining])[0] <= iou_threshold]
    kept_array = np.asarray(kept, dtype=np.int64)
    return kept_array[_best_first_by_index(scores[kept_array], kept_array)][:max_detections]


def _best_first_by_index(scores: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """The order of (score, index) pairs: score descending, then index ascending."""
    return np.lexsort((indices, -scores))


def decode_output(output: np.ndarray, config: Settings) -> np.ndarray:
    """One image's detections (``(k, 6)`` rows ``[class, score, x0, y0, x1, y1]``, best
    first) from the model's output, as ``config`` says: the layout's candidates above the
    score threshold, NMS per class, at most ``max_detections``."""
    boxes, scores, classes = LAYOUTS[config.format].candidates(np.asarray(output), config)
    above = np.flatnonzero(scores > config.score_threshold)
    if above.size == 0:
        return _EMPTY.copy()
    kept = above[nms(boxes[above], scores[above], classes[above], config.iou_threshold,
                     config.max_detections)]
    return np.column_stack([classes[kept].astype(np.float64), scores[kept], boxes[kept]])


# --- scoring ----------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ImageResult:
    """One image's detections against its ground truth: each detection's ``classes`` and
    ``scores`` (best first), ``hits`` (k, 10): whether it matched a ground truth at each
    of :data:`IOU_THRESHOLDS`, and each ground truth's class (``truths``)."""

    classes: np.ndarray
    scores: np.ndarray
    hits: np.ndarray
    truths: np.ndarray

    def as_json(self) -> dict[str, Any]:
        """A JSON-able form (what a reference file records); :meth:`of` reads it back."""
        return {"classes": self.classes.tolist(), "scores": self.scores.tolist(),
                "hits": self.hits.astype(int).tolist(), "truths": self.truths.tolist()}

    @classmethod
    def of(cls, value: Any) -> "ImageResult":
        """``value`` itself, or the result its :meth:`as_json` form describes."""
        if isinstance(value, cls):
            return value
        return cls(np.asarray(value["classes"], np.int64), np.asarray(value["scores"], np.float64),
                   np.asarray(value["hits"], bool).reshape(-1, len(IOU_THRESHOLDS)),
                   np.asarray(value["truths"], np.int64))


def _prediction(value: Any) -> np.ndarray:
    return np.asarray(value, np.float64).reshape(-1, 6)


def _label(value: Any) -> np.ndarray:
    """One image's ground truth, ``(m, 5)``, without the rows of a negative class: a
    prepared detection split pads each image's objects to the split's most with rows of
    class -1 (``tasks/core/contracts/prepared.py``), which are no object."""
    rows = np.asarray(value, np.float64).reshape(-1, 5)
    return rows[rows[:, 0] >= 0]


def match(prediction: np.ndarray, truth: np.ndarray) -> ImageResult:
    """One image's detections (``(k, 6)``) matched to its ground truth (``(m, 5)``) as
    COCO matches: per class, detections by score (stable), each taking the unmatched
    ground truth of its class it overlaps most with IoU >= t (on equal IoU the later
    one, as ``COCOeval.evaluateImg`` does), at every t of :data:`IOU_THRESHOLDS`."""
    prediction = _prediction(prediction)
    truth = _label(truth)
    prediction = prediction[_best_first(prediction[:, 1])]
    classes = prediction[:, 0].astype(np.int64)
    truths = truth[:, 0].astype(np.int64)
    ious = box_iou(prediction[:, 2:6], truth[:, 1:5])
    ious[classes[:, None] != truths[None, :]] = -1.0  # another class's box is never matched
    hits = np.zeros((len(prediction), len(IOU_THRESHOLDS)), bool)
    for column, threshold in enumerate(IOU_THRESHOLDS):
        taken = np.zeros(len(truth), bool)
        least = min(threshold, 1 - 1e-10)  # COCOeval's bound: an IoU of 1 meets t = 1
        for row in range(len(prediction)):
            overlaps = np.where(taken, -1.0, ious[row])
            best = overlaps.max(initial=-1.0)
            if best >= least:
                chosen = np.flatnonzero(overlaps == best)[-1]
                taken[chosen] = hits[row, column] = True
    return ImageResult(classes, prediction[:, 1].copy(), hits, truths)


def _ap_coco(hits: np.ndarray, weights: np.ndarray, truths: float) -> np.ndarray:
    """COCO's AP per column of ``hits`` (detections ranked best first, each counted
    ``weights`` times): the precision envelope read at the first rank reaching each of
    the 101 recall points, 0 past the highest recall, averaged."""
    true = np.cumsum(hits * weights[:, None], axis=0)
    false = np.cumsum(~hits * weights[:, None], axis=0)
    recall = true / truths
    # Every rank holds a detection counted at least once: no zero to guard against
    # (COCOeval adds np.spacing(1), which leaves a perfect score a hair under 1).
    precision = true / (true + false)
    envelope = np.maximum.accumulate(precision[::-1], axis=0)[::-1]
    result = np.zeros(hits.shape[1])
    for column in range(hits.shape[1]):
        ranks = np.searchsorted(recall[:, column], RECALL_POINTS, side="left")
        inside = ranks < len(recall)
        result[column] = np.sum(envelope[ranks[inside], column]) / len(RECALL_POINTS)
    return result


def _ap_ultralytics(hits: np.ndarray, weights: np.ndarray, truths: float) -> np.ndarray:
    """Ultralytics' AP (``compute_ap``): the envelope of the curve from (0, 1) to (1, 0),
    interpolated linearly at the 101 recall points and integrated by trapezoids (a
    perfect detector scores 0.995 there)."""
    true = np.cumsum(hits * weights[:, None], axis=0)
    false = np.cumsum(~hits * weights[:, None], axis=0)
    result = np.zeros(hits.shape[1])
    if not len(hits):
        return result
    for column in range(hits.shape[1]):
        recall = np.concatenate(([0.0], true[:, column] / truths, [1.0]))
        precision = np.concatenate(([1.0], true[:, column] / (true[:, column] + false[:, column]),
                                    [0.0]))
        envelope = np.maximum.accumulate(precision[::-1])[::-1]
        curve = np.interp(RECALL_POINTS, recall, envelope)
        result[column] = float(np.sum((curve[1:] + curve[:-1]) / 2 * np.diff(RECALL_POINTS)))
    return result


# How a class's ranked hits become its AP, by name; "coco" is the headline's.
AP_METHODS: dict[str, Callable[[np.ndarray, np.ndarray, float], np.ndarray]] = {
    "coco": _ap_coco, "ultralytics": _ap_ultralytics}
DEFAULT_AP = "coco"


@dataclass(frozen=True)
class _Pooled:
    """Every image's detections in one ranking (COCO's: images in order, each best
    first, then a stable sort by score), and each image's ground truths per class."""

    image: np.ndarray    # (D,) the image of each ranked detection
    classes: np.ndarray  # (D,)
    hits: np.ndarray     # (D, 10)
    truths: np.ndarray   # (images, classes) ground truths per image and class

    @classmethod
    def of(cls, records: Sequence[Any]) -> "_Pooled":
        results = [ImageResult.of(record) for record in records]
        count = 1 + max([int(result.classes.max(initial=-1)) for result in results]
                        + [int(result.truths.max(initial=-1)) for result in results], default=-1)
        image = np.concatenate([np.full(len(result.classes), index, np.int64)
                                for index, result in enumerate(results)] or [np.zeros(0, np.int64)])
        classes = np.concatenate([result.classes for result in results] or [np.zeros(0, np.int64)])
        scores = np.concatenate([result.scores for result in results] or [np.zeros(0)])
        hits = np.concatenate([result.hits for result in results]
                              or [np.zeros((0, len(IOU_THRESHOLDS)), bool)])
        truths = np.zeros((len(results), count), np.int64)
        for index, result in enumerate(results):
            np.add.at(truths[index], result.truths, 1)
        order = np.argsort(-scores, kind="mergesort")
        return cls(image[order], classes[order], hits[order], truths)

    def per_class(self, weights: np.ndarray, method: str, columns: slice = slice(None)
                  ) -> dict[int, np.ndarray]:
        """Each class with ground truth -> its AP per IoU threshold of ``columns``, each
        image counted ``weights`` times (1 each: the images as they are)."""
        found = {}
        truths = weights @ self.truths
        detection_weights = weights[self.image]
        for label in np.flatnonzero(truths > 0):
            mask = (self.classes == label) & (detection_weights > 0)
            found[int(label)] = AP_METHODS[method](self.hits[mask][:, columns],
                                                   detection_weights[mask].astype(np.float64),
                                                   float(truths[label]))
        return found


@dataclass(frozen=True)
class DetectionScores:
    """mAP@0.5 (the headline), mAP@0.5:0.95, and per class with ground truth its AP at
    0.5 and over 0.5:0.95; 0.0 where no image has any ground truth."""

    map50: float
    map50_95: float
    ap50: dict[int, float] = field(default_factory=dict)
    ap50_95: dict[int, float] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"map50": self.map50, "map50_95": self.map50_95,
                "ap50": {str(label): value for label, value in self.ap50.items()},
                "ap50_95": {str(label): value for label, value in self.ap50_95.items()}}


def scores(records: Sequence[Any], method: str = DEFAULT_AP) -> DetectionScores:
    """mAP@0.5, mAP@0.5:0.95 and per-class AP of these images' results
    (:meth:`Detection.per_sample`, or their JSON form), AP as ``method`` integrates it
    (:data:`AP_METHODS`)."""
    if method not in AP_METHODS:
        raise ValueError(f"unknown AP method {method!r}: one of {', '.join(sorted(AP_METHODS))}")
    pooled = _Pooled.of(records)
    per_class = pooled.per_class(np.ones(len(pooled.truths), np.int64), method)
    if not per_class:
        return DetectionScores(0.0, 0.0)
    ap50 = {label: float(values[0]) for label, values in per_class.items()}
    ap50_95 = {label: float(np.mean(values)) for label, values in per_class.items()}
    return DetectionScores(float(np.mean(list(ap50.values()))),
                           float(np.mean(list(ap50_95.values()))), ap50, ap50_95)


def _tail(z: float) -> float:
    """Phi(-z): the normal distribution's lower tail at -z."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def bootstrap_interval(records: Sequence[Any], z: float = Z_95, resamples: int = RESAMPLES,
                       seed: int = SEED, method: str = DEFAULT_AP) -> tuple[float, float]:
    """The percentile bootstrap interval of mAP@0.5 over images (the module docstring):
    ``resamples`` resamples of the images with replacement from ``seed``; (0.0, 1.0)
    for no image."""
    pooled = _Pooled.of(records)
    images = len(pooled.truths)
    if images == 0:
        return 0.0, 1.0
    headline = scores(records, method).map50
    generator = np.random.default_rng(seed)
    found = np.empty(resamples)
    for index in range(resamples):
        weights = np.bincount(generator.integers(0, images, images), minlength=images)
        per_class = pooled.per_class(weights, method, slice(0, 1))
        found[index] = np.mean([values[0] for values in per_class.values()]) if per_class else 0.0
    tail = 100.0 * _tail(z)
    low, high = np.percentile(found, [tail, 100.0 - tail])
    return min(float(low), headline), max(float(high), headline)


def agreement(predictions: Sequence[Any], reference: Sequence[Any],
              iou_threshold: float = AGREEMENT_IOU) -> float:
    """The share of boxes two models agree on (the module docstring): ``2 * matched /
    (boxes + reference boxes)`` over all images; 1.0 where neither found a box."""
    matched = total = 0
    if len(predictions) != len(reference):
        raise ValueError(f"{len(predictions)} predictions for {len(reference)} reference ones")
    for prediction, expected in zip(predictions, reference):
        prediction, expected = _prediction(prediction), _prediction(expected)
        total += len(prediction) + len(expected)
        ranked = prediction[_best_first(prediction[:, 1])]
        ious = box_iou(ranked[:, 2:6], expected[:, 2:6])
        ious[ranked[:, 0][:, None] != expected[:, 0][None, :]] = -1.0
        taken = np.zeros(len(expected), bool)
        for row in range(len(ranked)):
            overlaps = np.where(taken, -1.0, ious[row])
            if overlaps.max(initial=-1.0) >= iou_threshold:
                taken[int(np.argmax(overlaps))] = True
                matched += 1
    return 1.0 if total == 0 else 2.0 * matched / total


# --- the kind ---------------------------------------------------------------------------


class Detection:
    name = "detection"
    decoding = "box"
    metric_name = "mAP@0.5"
    interval_name = "bootstrap interval (images resampled)"
    locates = True
    share_of_samples = False

    def check_output(self, x: np.ndarray, y: Any, spec: Mapping[str, Any]) -> None:
        """One output tensor of the layout's shape for one image in: ``(1, S, S, 5 + C)``
        for "grid", ``(1, 4 + C, N)`` for "yolo" (S, C from the spec where it says them)."""
        config = settings(spec)
        y = np.asarray(y)
        try:
            expected = LAYOUTS[config.format].expected(tuple(y.shape), config)
        except ValueError:  # a flattened output and a spec without the sizes
            expected = None
        if expected is None or tuple(y.shape) != expected:
            shape = f" {expected}" if expected else ""
            raise ValueError(f"the model answered one image {tuple(np.shape(x))} with an output of "
                             f"shape {tuple(y.shape)}, not one {config.format!r} detection "
                             f"output{shape}")

    def decode(self, output: np.ndarray, spec: Mapping[str, Any] | None = None) -> np.ndarray:
        """One image's detections, ``(k, 6)`` rows ``[class, score, x0, y0, x1, y1]``
        best first (:func:`decode_output` with the spec's :func:`settings`; a flattened
        output needs the spec's sizes)."""
        return decode_output(output, settings(spec))

    def per_sample(self, predictions: Sequence[Any], labels: Sequence[Any]) -> np.ndarray:
        """Each image's :class:`ImageResult` (an object array, one per image)."""
        if len(predictions) != len(labels):
            raise ValueError(f"{len(predictions)} predictions for {len(labels)} labels")
        results = np.empty(len(predictions), dtype=object)
        for index, (prediction, label) in enumerate(zip(predictions, labels)):
            results[index] = match(prediction, label)
        return results

    def metric(self, per_sample: np.ndarray) -> float:
        """mAP@0.5 (:func:`scores` has the others)."""
        return scores(per_sample).map50

    def interval(self, per_sample: np.ndarray, z: float = Z_95) -> tuple[float, float]:
        return bootstrap_interval(per_sample, z)

    def scores(self, per_sample: np.ndarray) -> dict[str, Any]:
        """mAP@0.5, mAP@0.5:0.95 and per-class AP at both (:func:`scores`)."""
        return scores(per_sample).as_json()

    def agreement(self, predictions: Sequence[Any], reference: Sequence[Any]) -> float:
        return agreement(predictions, reference)

    def json_label(self, label: Any) -> list[list[float]]:
        """One image's boxes, ``[[class, x0, y0, x1, y1], ...]`` (class a whole number,
        corners normalised), without the split's padding rows of class -1."""
        return [[int(row[0]), *(float(value) for value in row[1:])] for row in _label(label)]

    def answer(self, output: np.ndarray, classes: Sequence[str],
               spec: Mapping[str, Any] | None = None,
               place: Callable[[np.ndarray], np.ndarray] | None = None) -> dict[str, Any]:
        """``{"detections": [{"class", "index", "score", "box"}]}``, best first, ``box``
        ``[x0, y0, x1, y1]``: through ``place`` (the predictor's: the caller's image
        pixels), else as fractions of the model's input image (rounded to 6 places)."""
        found = self.decode(output, spec)
        boxes = ([[round(float(value), 6) for value in row[2:6]] for row in found]
                 if place is None else np.asarray(place(found[:, 2:6]), np.float64).tolist())
        return {"detections": [
            {"class": classes[int(row[0])], "index": int(row[0]), "score": round(float(row[1]), 6),
             "box": box}
            for row, box in zip(found, boxes)]}

KIND = Detection()
