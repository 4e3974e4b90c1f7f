"""Choosing the epoch to keep, shared by the classifier's and the detector's training:
after every epoch, batch-norm statistics are re-estimated on the (unaugmented) train
images, the model is judged in inference mode on val by its trainer's :meth:`judge`
(figures put in the epoch's logs for the callbacks after it, with the learning rate),
the best epoch's weights are kept, and training stops after ``patience`` epochs without
a better one."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from tasks.models import batch_norm

# Images per predict call when judging (memory, not results).
PREDICT_BATCH = 256


class BestEpochSelector(keras.callbacks.Callback):
    """The shared loop; a trainer's subclass says how val outputs are judged."""

    def __init__(self, train_images: np.ndarray, val_images: np.ndarray, batch_size: int,
                 patience: int, reestimate_batch_norm: bool = True) -> None:
        super().__init__()
        self.train_images, self.val_images = train_images, val_images
        self.batch_size, self.patience = batch_size, patience
        # Off where no batch norm trains (a fine-tune of a frozen base): nothing to redo.
        self.reestimate_batch_norm = reestimate_batch_norm
        self.best: tuple[float, float] | None = None
        self.best_epoch, self.waited = 0, 0
        self.best_weights: list[np.ndarray] = []
        self.reestimate: batch_norm.Reestimator | None = None

    def judge(self, outputs: np.ndarray) -> tuple[tuple[float, float], dict[str, float]]:
        """The val outputs' key (higher is better) and the figures for the epoch's logs."""
        raise NotImplementedError

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        if self.reestimate_batch_norm:
            self.reestimate = batch_norm.Reestimator(self.model, self.batch_size)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs if logs is not None else {}
        if self.reestimate is not None:  # set when training began
            self.reestimate(self.train_images)
        key, figures = self.judge(
            self.model.predict(self.val_images, batch_size=PREDICT_BATCH, verbose=0))
        logs.update(**figures, learning_rate=float(
            keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))
        if self.best is None or key > self.best:
            self.best, self.best_epoch, self.waited = key, epoch + 1, 0
            self.best_weights = [np.copy(weight) for weight in self.model.get_weights()]
        else:
            self.waited += 1
            if self.waited >= self.patience:
                self.model.stop_training = True

    def restore(self) -> None:
        """Put the best epoch's weights (and its batch-norm statistics) back."""
        self.model.set_weights(self.best_weights)
