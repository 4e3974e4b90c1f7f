"""What every pruning recipe shares: the options models (validated in ``params.yaml``
under ``optimize.pruning``), the data a recipe fine-tunes on, what it returns, and the
fine-tuning itself, per kind of task (a classifier's, a detector's: :data:`FINE_TUNING`). The recipe modules import this, never the registry
(:mod:`tasks.models.pruning`), so the registry can import them without a circle."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Callable, Literal

from pydantic import Field, field_validator

from tasks.core.contracts.prepared import DEFAULT_TASK
from tasks.core.errors import ConfigError
from tasks.core.strict import StrictModel, count

if TYPE_CHECKING:  # pragma: no cover
    import keras
    import numpy as np

SOURCE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


class PruningOptions(StrictModel):
    """What every recipe shares: the source name it produces and its fine-tuning."""

    name: str = Field(description="source name of the pruned model, e.g. pruned50")
    epochs: Annotated[int, count(1, 200)] = Field(default=6, description="fine-tuning epochs")
    learning_rate: float = Field(default=5e-4, gt=0.0, le=1.0)
    batch_size: Annotated[int, count(1, 4096)] = 32

    @field_validator("name")
    @classmethod
    def _source_name(cls, value: str) -> str:
        if not SOURCE_NAME.match(value) or value == "base":
            raise ValueError(f"pruning name {value!r} is not allowed (lower-case letters, "
                             "digits and '_', starting with a letter; not 'base')")
        return value


class MagnitudePruningOptions(PruningOptions):
    """Unstructured: zero the smallest-magnitude weights of every conv/dense kernel,
    raising sparsity along a polynomial schedule while fine-tuning."""

    method: Literal["magnitude"] = "magnitude"
    sparsity: float = Field(gt=0.0, lt=1.0, description="final fraction of zero weights")
    update_every: Annotated[int, count(1, 100_000)] = Field(
        default=10, description="steps between mask updates")


# Structured pruning rebuilds the network, so it must know the architecture's wiring.
STRUCTURED_ARCHITECTURES = ("small_cnn",)


class StructuredPruningOptions(PruningOptions):
    """Structured: remove the lowest-L1 filters of each conv layer, rebuild the smaller
    network, copy the kept weights and fine-tune."""

    method: Literal["structured"] = "structured"
    ratio: float = Field(gt=0.0, lt=1.0, description="fraction of channels removed per layer")


@dataclass(frozen=True)
class PrunedModel:
    """What a recipe returns: the fine-tuned, pruned Keras model and JSON-ready details
    (what was pruned, what was left dense, the schedule, the fine-tuning curves)."""

    model: Any
    details: dict[str, Any]


@dataclass(frozen=True)
class TrainingData:
    """The splits a recipe fine-tunes on (train) and validates on (val), and the kind of
    task their labels are (``y``: class indices, or a detection split's padded boxes)."""

    x_train: "np.ndarray"
    y_train: "np.ndarray"
    x_val: "np.ndarray"
    y_val: "np.ndarray"
    task: str = DEFAULT_TASK


FineTuning = Callable[["keras.Model", PruningOptions, TrainingData, "list[Any]"],
                      dict[str, list[float]]]


def fine_tune(model: "keras.Model", options: PruningOptions, data: TrainingData,
              callbacks: list[Any] | None = None) -> dict[str, list[float]]:
    """Compile ``model`` with Adam(``options.learning_rate``) and train it in place for
    ``options.epochs`` on the train split with ``callbacks`` (a recipe's masks), judged
    on val as the train step judges that kind of task (:data:`FINE_TUNING`); the batch
    norm statistics re-estimated after; returns the history (per epoch, the loss and
    the val figures: ``val_accuracy``, or a detector's ``val_loss`` and ``val_map50``)."""
    tuning = FINE_TUNING.get(data.task)
    if tuning is None:
        raise ConfigError(f"pruning fine-tunes {', '.join(FINE_TUNING)} models; the data is "
                          f"prepared for {data.task}")
    history = tuning(model, options, data, callbacks or [])
    # A few fine-tuning epochs move the weights far more than the batch-norm moving
    # averages follow (see tasks.models.batch_norm): the pruned model is used in inference mode.
    from tasks.models.batch_norm import reestimate

    reestimate(model, data.x_train, options.batch_size)
    return history


def _fine_tune_classifier(model: "keras.Model", options: PruningOptions, data: TrainingData,
                          callbacks: list[Any]) -> dict[str, list[float]]:
    """Same loss and metric as the train step (logits, sparse labels), so the curves
    compare."""
    import keras

    model.compile(optimizer=keras.optimizers.Adam(options.learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    history = model.fit(data.x_train, data.y_train, validation_data=(data.x_val, data.y_val),
                        epochs=options.epochs, batch_size=options.batch_size, shuffle=True,
                        verbose=0, callbacks=callbacks)
    return {key: [float(value) for value in values] for key, values in history.history.items()}


def _fine_tune_detector(model: "keras.Model", options: PruningOptions, data: TrainingData,
                        callbacks: list[Any]) -> dict[str, list[float]]:
    from tasks.models.pruning.detection import fine_tune_detector

    return fine_tune_detector(model, options, data.x_train, data.y_train, data.x_val,
                              data.y_val, callbacks)


# How each kind of task's model is fine-tuned and judged: the train step's loss, and
# its val figures (a detector's mAP@0.5, not an accuracy).
FINE_TUNING: dict[str, FineTuning] = {
    DEFAULT_TASK: _fine_tune_classifier,
    "detection": _fine_tune_detector,
}
