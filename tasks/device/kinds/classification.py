"""Classification: one row of class scores per image; the answer is the top class.

The output check wants one row of scores for one image in; decoding is the argmax;
each sample is right (1.0) or wrong (0.0); the metric is top-1 accuracy with its Wilson
score interval; the predictor answers the class's name, index and softmax score.
Standard library and NumPy only: it runs on boards (``kinds/__init__.py``, the registry,
says how kinds are found).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

Z_95 = 1.959963984540054


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max())
    return shifted / shifted.sum()


class Classification:
    name = "classification"
    decoding = "argmax"
    metric_name = "accuracy"
    interval_name = "Wilson interval"
    locates = False
    share_of_samples = True

    def check_output(self, x: np.ndarray, y: Any, spec: dict[str, Any]) -> None:
        # A model that answers an empty batch (a dynamic batch left unset) would
        # otherwise be timed on nothing.
        y = np.asarray(y)
        if y.ndim < 1 or y.shape[0] != 1 or y.size == 0:
            raise ValueError(f"the model answered one image {tuple(x.shape)} with an output of "
                             f"shape {tuple(y.shape)}, not one row of class scores")

    def decode(self, output: np.ndarray, spec: Any = None) -> int:
        return int(np.argmax(output))

    def per_sample(self, predictions: Sequence[Any], labels: Sequence[Any]) -> np.ndarray:
        return (np.asarray(predictions) == np.asarray(labels)).astype(np.float64)

    def metric(self, per_sample: np.ndarray) -> float:
        return float(np.mean(per_sample))

    def interval(self, per_sample: np.ndarray, z: float = Z_95) -> tuple[float, float]:
        """The Wilson score interval: it stays inside [0, 1] and is honest at the
        extremes and on few samples (37 of 41 right is 0.90 [0.77, 0.96]); none says
        nothing: (0.0, 1.0)."""
        trials = len(per_sample)
        if trials == 0:
            return 0.0, 1.0
        correct = float(np.sum(per_sample))
        p = correct / trials
        # The same arithmetic as tasks/core/accuracy.py's wilson_interval (the board's
        # copy must give the orchestrator's figures exactly).
        spread = z * z / trials
        centre = (p + spread / 2) / (1 + spread)
        half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + spread)
        # At none or all right the bound is exactly 0 or 1; rounding would leave it a hair
        # off, and a perfect score must lie inside its own interval (and reach a floor of 1).
        low = 0.0 if correct == 0 else max(0.0, centre - half)
        high = 1.0 if correct == trials else min(1.0, centre + half)
        return low, high

    def scores(self, per_sample: np.ndarray) -> dict[str, Any]:
        return {}

    def agreement(self, predictions: Sequence[Any], reference: Sequence[Any]) -> float:
        return float(np.mean(np.asarray(predictions) == np.asarray(reference)))

    def json_label(self, label: Any) -> int:
        return int(label)

    def answer(self, output: np.ndarray, classes: Sequence[str],
               spec: Any = None, place: Any = None) -> dict[str, Any]:
        index = self.decode(output)
        return {"class": classes[index], "index": index,
                "score": round(float(softmax(output)[index]), 6)}


KIND = Classification()
