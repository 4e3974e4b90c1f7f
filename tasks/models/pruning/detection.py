"""A pruning recipe's fine-tuning of a grid detector (``tiny_detector``), as the train step
trains one: the detection loss on the grid targets of its boxes
(:mod:`tasks.models.detection_loss`), judged after every epoch on val by the detection
kind's mAP@0.5 (the one implementation of decoding, NMS and matching the harness runs),
with the batch-norm statistics re-estimated on the train images first so that the model
is judged in inference mode as it will run. The history holds per epoch ``loss``,
``val_loss`` and ``val_map50``; no epoch is selected (the recipe's sparsity rises along
its schedule, so an earlier epoch is not the pruned model).

The model is left compiled without its loss: its saved ``.keras`` file must not name a
function a step loading it (convert) cannot find, as the train step's is uncompiled.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from tasks.core import device_code
from tasks.core.contracts.prepared import image_boxes
from tasks.models.architectures import DETECTION_FIELDS
from tasks.models.batch_norm import Reestimator
from tasks.models.detection_loss import detection_loss, encode_targets, mean_loss

PREDICT_BATCH = 256


def map50(outputs: np.ndarray, labels: np.ndarray) -> float:
    """mAP@0.5 of raw grid ``outputs`` on images whose boxes are ``labels`` (a split's
    padded ``y``), decoded and matched by the detection kind with its default decoding."""
    kind = device_code.task_kinds().get("detection")
    results = kind.per_sample([kind.decode(output) for output in outputs],
                              [image_boxes(row) for row in labels])
    return float(kind.metric(results))


class ValMap(keras.callbacks.Callback):
    """After every epoch: re-estimate batch norm on the train images, then put the val
    loss and mAP@0.5 of the model in inference mode in the epoch's logs."""

    def __init__(self, train_images: np.ndarray, val_images: np.ndarray,
                 val_labels: np.ndarray, val_targets: np.ndarray, loss: Any,
                 batch_size: int) -> None:
        super().__init__()
        self.train_images, self.val_images = train_images, val_images
        self.val_labels, self.val_targets, self.loss = val_labels, val_targets, loss
        self.batch_size = batch_size
        self.reestimate: Reestimator | None = None

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.reestimate = Reestimator(self.model, self.batch_size)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs if logs is not None else {}
        if self.reestimate is not None:
            self.reestimate(self.train_images)
        outputs = self.model.predict(self.val_images, batch_size=PREDICT_BATCH, verbose=0)
        logs.update(val_loss=mean_loss(self.loss, self.val_targets, outputs),
                    val_map50=map50(outputs, self.val_labels))


def fine_tune_detector(model: keras.Model, options: Any, x_train: np.ndarray,
                       y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                       callbacks: list[Any]) -> dict[str, list[float]]:
    """Train ``model`` in place for ``options.epochs`` (Adam at ``options.learning_rate``,
    ``options.batch_size``) with ``callbacks`` as the module docstring says; returns the
    history."""
    grid, classes = int(model.output_shape[1]), int(model.output_shape[-1]) - DETECTION_FIELDS
    loss = detection_loss()
    model.compile(optimizer=keras.optimizers.Adam(options.learning_rate), loss=loss)
    judge = ValMap(x_train, x_val, y_val, encode_targets(y_val, grid, classes), loss,
                   options.batch_size)
    history = model.fit(x_train, encode_targets(y_train, grid, classes),
                        epochs=options.epochs, batch_size=options.batch_size, shuffle=True,
                        verbose=0, callbacks=[*callbacks, judge])
    model.compile(optimizer=keras.optimizers.Adam(options.learning_rate))
    return {key: [float(value) for value in values] for key, values in history.history.items()}
