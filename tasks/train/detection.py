"""Training the grid detector (``model.architecture: tiny_detector``) on detection data.

Called by :func:`tasks.train.train` for prepared data of ``task: detection``. Reads
``data/prepared/`` (``y``: each image's boxes, ``(N, M, 5)`` rows ``[class, x0, y0, x1,
y1]`` normalised, padding rows of class -1: :mod:`tasks.core.contracts.prepared`). Writes
what the classification path writes, with detection's figures:

- ``models/base/model.keras``, ``saved_model/`` and ``reference.json`` (``test_correct``:
  each test image's result as the detection kind scores it, its JSON form, in order);
- ``metrics/train.json``: mAP@0.5 per split with its 95% bootstrap interval (images
  resampled), mAP@0.5:0.95, the test split's AP per class, the epochs, the loss weights
  and the post-processing the scores used (``data.detection``: the decoding convert
  writes into every variant's spec, so the reference and the variants are scored alike);
- ``metrics/train_history.json``: per epoch ``loss`` (train), ``val_loss``,
  ``val_map50`` and ``learning_rate``.

The targets and the loss: :mod:`tasks.models.detection_loss`.

**Training**: seeded (:mod:`tasks.models.seeding`), ``model.fit`` over the train split in
``train.batch_size``, ``train.learning_rate`` and ``train.lr_schedule``; after every epoch
the batch-norm statistics are re-estimated and the model is judged in inference mode on
val: the epoch with the highest val mAP@0.5 (then the lowest val loss) is kept, training
stops after ``train.early_stopping_patience`` epochs without a better one.
``train.augmentation`` is not applied: its flips and shifts move the objects, and the
boxes would have to move with them. A detector whose val mAP@0.5 interval reaches 0 did
not learn: the step fails with one line and leaves the previous model in place.
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import keras
import numpy as np

from tasks.config import DetectionDecoding, TrainParams, decoding_spec
from tasks.core import device_code
from tasks.core.contracts.prepared import PreparedMeta, image_boxes, load_split
from tasks.core.errors import TrainingError
from tasks.core.files import atomic_output_dir, write_json
from tasks.models.architectures import ModelOptions, build_model
from tasks.models.detection_loss import LossWeights, detection_loss, encode_targets, mean_loss
from tasks.models.seeding import seed_training
from tasks.train.progress import DETECTOR_FIGURES, EpochProgress
from tasks.train.schedules import LR_SCHEDULES
from tasks.train.selection import PREDICT_BATCH, BestEpochSelector


def _kind() -> ModuleType:
    """The detection kind's module (decode, match, scores, bootstrap): the one
    implementation the harness and the predictor run too, found through the registry of
    kinds they ask."""
    detector = device_code.task_kinds().get("detection")
    return sys.modules[type(detector).__module__]


def post_processing(spec: dict[str, Any] | None = None) -> dict[str, Any]:
    """The decoding the scores here used: ``spec``'s (its output layout, "grid" without
    one, and ``data.detection``'s thresholds, :func:`tasks.config.decoding_spec`), the
    detection kind's defaults where it says none."""
    used = _kind().settings(spec)
    return {key: getattr(used, key)
            for key in ("format", "score_threshold", "iou_threshold", "max_detections")}


@dataclass(frozen=True)
class DetectionScore:
    """A split's detection scores (the detection kind's, under ``data.detection``):
    mAP@0.5 with its 95% bootstrap interval over images, mAP@0.5:0.95, AP@0.5 per class
    index, and each image's result in JSON form (what ``reference.json`` records)."""

    map50: float
    map50_95: float
    interval: tuple[float, float]
    samples: int
    ap50: dict[int, float] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list, repr=False)

    def __str__(self) -> str:
        low, high = self.interval
        return f"mAP@0.5 {self.map50:.3f} [{low:.3f}, {high:.3f}] on {self.samples}"


def evaluate(outputs: np.ndarray, labels: np.ndarray, interval: bool = True,
             spec: dict[str, Any] | None = None) -> DetectionScore:
    """The detection scores of a model's raw ``outputs`` (the grid's ``(N, S, S, 5 + C)``,
    or the layout ``spec`` names: a variant spec with a ``"detection"`` entry) on images
    whose boxes are ``labels`` (a split's padded ``y``): each output decoded (NMS
    included) as ``spec`` says (``data.detection``'s thresholds through
    :func:`tasks.config.decoding_spec`; None: the kind's defaults) and matched as the
    detection kind does; the bootstrap interval only where ``interval`` (per-epoch
    judging needs the headline alone)."""
    kind = _kind()
    detector = kind.KIND
    predictions = [detector.decode(output, spec) for output in outputs]
    results = detector.per_sample(predictions, [image_boxes(row) for row in labels])
    found = kind.scores(results)
    bounds = detector.interval(results) if interval else (found.map50, found.map50)
    return DetectionScore(found.map50, found.map50_95, (float(bounds[0]), float(bounds[1])),
                          len(results), dict(found.ap50),
                          [result.as_json() for result in results])


class MapSelector(BestEpochSelector):
    """After every epoch: re-estimate batch-norm statistics on the train images, judge the
    model in inference mode on val (loss and mAP@0.5, put in the epoch's logs as
    ``val_loss``, ``val_map50``, ``learning_rate``), keep the best epoch's weights (highest
    val mAP@0.5, then lowest val loss) and stop after ``patience`` epochs without one."""

    def __init__(self, train_images: np.ndarray, val_images: np.ndarray, val_labels: np.ndarray,
                 val_targets: np.ndarray, loss: Callable[[Any, Any], Any], batch_size: int,
                 patience: int, spec: dict[str, Any] | None = None) -> None:
        super().__init__(train_images, val_images, batch_size, patience)
        self.val_labels, self.val_targets, self.loss = val_labels, val_targets, loss
        self.spec = spec

    def judge(self, outputs: np.ndarray) -> tuple[tuple[float, float], dict[str, float]]:
        map50 = evaluate(outputs, self.val_labels, interval=False, spec=self.spec).map50
        loss = mean_loss(self.loss, self.val_targets, outputs)
        return (map50, -loss), {"val_loss": loss, "val_map50": map50}


@dataclass(frozen=True)
class DetectorResult:
    """What training the detector gave: scores per split, the epoch kept, epochs run."""

    model_dir: Path
    train: DetectionScore
    val: DetectionScore
    test: DetectionScore
    best_epoch: int
    epochs_run: int

    def describe(self) -> str:
        """One line for the console: mAP@0.5 per split with 95% intervals, epochs."""
        return (f"train {self.train}, val {self.val}, test {self.test} (95% bootstrap "
                f"intervals); epoch {self.best_epoch} of {self.epochs_run} kept")


def split_metrics(scores: dict[str, DetectionScore], classes: list[str]) -> dict[str, Any]:
    """``metrics/train.json``'s figures of a detector's splits (mAP@0.5 with its interval,
    mAP@0.5:0.95, samples, each), the test split's AP@0.5 per class name; creates nothing."""
    metrics: dict[str, Any] = {}
    for split, score in scores.items():
        metrics |= {f"{split}_map50": score.map50, f"{split}_map50_low": score.interval[0],
                    f"{split}_map50_high": score.interval[1],
                    f"{split}_map50_95": score.map50_95, f"{split}_samples": score.samples}
    return metrics | {"test_ap50": {classes[label]: value
                                    for label, value in scores["test"].ap50.items()}}


def check_learned(val: DetectionScore) -> None:
    """Refuse (:class:`TrainingError`) a detector whose val mAP@0.5 interval reaches 0:
    it finds nothing reliably (an untrained one proposes no box at all)."""
    if val.interval[0] <= 0.0:
        raise TrainingError(
            f"train: the detector did not learn: validation {val} (its 95% interval reaches "
            "0); try more images, more epochs or another learning_rate; the previous model "
            "and metrics are kept")


def fit_detector(model: keras.Model, params: TrainParams,
                 splits: dict[str, tuple[np.ndarray, np.ndarray]], classes: int,
                 weights: LossWeights = LossWeights(), spec: dict[str, Any] | None = None
                 ) -> tuple[keras.callbacks.History, MapSelector]:
    """Train ``model`` (compiled here) on ``splits["train"]`` as the module docstring
    says, judging epochs on ``splits["val"]`` decoded as ``spec`` says (:func:`evaluate`);
    the best epoch's weights are restored."""
    grid = int(model.output_shape[1])
    (x_train, y_train), (x_val, y_val) = splits["train"], splits["val"]
    train_targets = encode_targets(y_train, grid, classes)
    loss = detection_loss(weights)
    steps = math.ceil(len(x_train) / params.batch_size)
    learning_rate, schedule_callbacks = LR_SCHEDULES[params.lr_schedule](params, steps)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss)
    selector = MapSelector(x_train, x_val, y_val, encode_targets(y_val, grid, classes), loss,
                           params.batch_size, params.early_stopping_patience, spec)
    # Keras' shuffle draws from the seeded global generator (seed_training): reproducible.
    history = model.fit(x_train, train_targets, batch_size=params.batch_size,
                        epochs=params.epochs, verbose=0, shuffle=True,
                        callbacks=[selector, *schedule_callbacks,
                                   EpochProgress(params.epochs, params.early_stopping_patience,
                                                 DETECTOR_FIGURES, "val mAP@0.5")])
    selector.restore()
    return history, selector


def train_detector(model_params: ModelOptions, train_params: TrainParams, prepared: Path,
                   meta: PreparedMeta, out_dir: Path, metrics_dir: Path,
                   decoding: DetectionDecoding | None = None) -> DetectorResult:
    """Train the detector, keep the best epoch, check it learned, score every split
    decoded by ``decoding`` (``data.detection``; None: the defaults), and write the model
    and its metrics (only when all of that succeeded)."""
    splits = {split: load_split(prepared, split) for split in ("train", "val", "test")}
    classes = len(meta.classes)
    seed_training(train_params.seed)
    try:
        model = build_model(model_params, tuple(meta.input_shape), classes)
    except ValueError as error:
        raise TrainingError(f"train: {error} (data.image_size)") from None
    weights, spec = LossWeights(), decoding_spec(decoding)
    history, selector = fit_detector(model, train_params, splits, classes, weights, spec)
    scores = {split: evaluate(model.predict(images, batch_size=PREDICT_BATCH, verbose=0), labels,
                              spec=spec)
              for split, (images, labels) in splits.items()}
    check_learned(scores["val"])
    epochs_run = len(history.history["loss"])
    # The same layers, uncompiled: a compiled model's file names its loss, which a step
    # loading it (optimize, convert) could not find without importing this module.
    plain = keras.Model(model.inputs, model.outputs, name=model.name)
    with atomic_output_dir(out_dir) as staging:
        plain.save(staging / "model.keras")
        plain.export(str(staging / "saved_model"), format="tf_saved_model", verbose=False)
        # The task names how select and convert score these records (not as 1/0).
        write_json(staging / "reference.json", {"task": "detection",
                                                "test_correct": scores["test"].records})
    metrics_dir.mkdir(parents=True, exist_ok=True)
    write_json(metrics_dir / "train.json", split_metrics(scores, meta.classes) | {
        "best_epoch": selector.best_epoch, "epochs_run": epochs_run,
        "parameters": int(model.count_params()), "architecture": model_params.architecture,
        "grid": int(model.output_shape[1]), "loss_weights": asdict(weights),
        "post_processing": post_processing(spec)})
    write_json(metrics_dir / "train_history.json", [
        {"epoch": epoch + 1,
         **{key: float(values[epoch]) for key, values in history.history.items()}}
        for epoch in range(epochs_run)])
    return DetectorResult(out_dir, scores["train"], scores["val"], scores["test"],
                          selector.best_epoch, epochs_run)
