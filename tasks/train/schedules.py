"""Learning-rate schedules by name (``train.lr_schedule``), shared by the classifier's and
the detector's training."""

from __future__ import annotations

from typing import Any, Callable

import keras

from tasks.config import TrainParams

# A learning-rate schedule: (params, optimiser steps per epoch) -> the optimiser's
# learning rate (a number or a Keras schedule) and the callbacks it needs.
Schedule = Callable[[TrainParams, int], tuple[Any, list[Any]]]


def _constant(params: TrainParams, steps_per_epoch: int) -> tuple[Any, list[Any]]:
    return params.learning_rate, []


def _cosine(params: TrainParams, steps_per_epoch: int) -> tuple[Any, list[Any]]:
    # Over the whole epoch budget; early stopping may end the run before the tail.
    return keras.optimizers.schedules.CosineDecay(
        params.learning_rate, decay_steps=params.epochs * steps_per_epoch, alpha=0.01), []


def _plateau(params: TrainParams, steps_per_epoch: int) -> tuple[Any, list[Any]]:
    # Halve the rate when val loss stalls for a third of the early-stopping patience, so
    # a lower rate gets a chance before training stops.
    return params.learning_rate, [keras.callbacks.ReduceLROnPlateau(
        monitor="val_loss", factor=0.5, patience=max(1, params.early_stopping_patience // 3),
        min_lr=params.learning_rate / 100, verbose=0)]


LR_SCHEDULES: dict[str, Schedule] = {"constant": _constant, "cosine": _cosine,
                                     "plateau": _plateau}
