"""Registry of pruning recipes, by ``method``.

Each recipe is an options model (validated in ``params.yaml`` under
``optimize.pruning``) and a function ``(options, model, data) -> PrunedModel`` that
returns a fine-tuned, pruned Keras model (the input model is left unchanged) and a
JSON-ready dict of details. :func:`recipe` finds the function by ``method``. What the
recipes share is :mod:`tasks.models.pruning.base`, re-exported here.
TensorFlow/Keras are imported inside the recipes: validating params stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from tasks.core.errors import ConfigError
from tasks.models.pruning.base import (FINE_TUNING, SOURCE_NAME, STRUCTURED_ARCHITECTURES,
                                       MagnitudePruningOptions, PrunedModel, PruningOptions,
                                       StructuredPruningOptions, TrainingData, fine_tune)

if TYPE_CHECKING:  # pragma: no cover
    import keras

__all__ = ["FINE_TUNING", "RECIPES", "SOURCE_NAME", "STRUCTURED_ARCHITECTURES", "MagnitudePruningOptions",
           "PrunedModel", "PruningOptions", "Recipe", "StructuredPruningOptions", "TrainingData",
           "fine_tune", "recipe"]


# The recipe modules import Keras at the top: these wrappers keep `import tasks.models.pruning`
# (done by tasks.config for every params validation) free of TensorFlow.
def _magnitude(options: MagnitudePruningOptions, model: "keras.Model",
               data: TrainingData) -> PrunedModel:
    from tasks.models.pruning.magnitude import prune_magnitude

    return prune_magnitude(options, model, data)


def _structured(options: StructuredPruningOptions, model: "keras.Model",
                data: TrainingData) -> PrunedModel:
    from tasks.models.pruning.structured import prune_structured

    return prune_structured(options, model, data)


Recipe = Callable[[Any, "keras.Model", TrainingData], PrunedModel]

RECIPES: dict[str, Recipe] = {
    "magnitude": _magnitude,
    "structured": _structured,
}


def recipe(method: str) -> Recipe:
    """The recipe function registered for ``method``; a one-line error lists the others."""
    try:
        return RECIPES[method]
    except KeyError:
        raise ConfigError(f"pruning method {method!r} is unknown; valid methods: "
                          f"{', '.join(sorted(RECIPES))}") from None
