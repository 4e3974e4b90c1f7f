"""Training progress, epoch by epoch (:mod:`tasks.core.notices`; the CLI draws the bar),
shared by the classifier's and the detector's training: each reports its own figures."""

from __future__ import annotations

from typing import Any

import keras

from tasks.core import notices

# What each trainer reports after an epoch: (Keras log key, label), and what its early
# stop is judged by.
CLASSIFIER_FIGURES = (("loss", "loss"), ("accuracy", "acc"), ("val_accuracy", "val_acc"))
DETECTOR_FIGURES = (("loss", "loss"), ("val_loss", "val_loss"), ("val_map50", "val_mAP50"))


class EpochProgress(keras.callbacks.Callback):
    """Reports each finished epoch with ``figures`` from its logs; an early stop says
    that ``judged_by`` did not improve for ``patience`` epochs."""

    def __init__(self, total_epochs: int, patience: int,
                 figures: tuple[tuple[str, str], ...] = CLASSIFIER_FIGURES,
                 judged_by: str = "val accuracy") -> None:
        super().__init__()
        self.total_epochs, self.patience = total_epochs, patience
        self.figures, self.judged_by = figures, judged_by

    def on_train_begin(self, logs: Any = None) -> None:
        self.counter = notices.Counter("train", self.total_epochs)

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        logs = logs or {}
        self.counter.advance("", " ".join(f"{label} {logs.get(key, 0):.3f}"
                                          for key, label in self.figures))

    def on_train_end(self, logs: Any = None) -> None:
        if self.counter.done < self.total_epochs:
            # Early stopping: without this the bar would wait for epochs that never come.
            self.counter.stop(f"stopped early: no better {self.judged_by} for "
                              f"{self.patience} epochs")
