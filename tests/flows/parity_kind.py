"""A toy kind of task for tests/flows/test_task_kind.py: is the digit even or odd?

The digits model's ten class scores are read as a parity: the decoded prediction is the
top class's parity, a sample is right when it matches its label's parity. Like every kind
it is standard library and NumPy only, and defines ``KIND`` (tasks/device/kinds/__init__.py);
it is no production code, it proves the seams.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np


class Parity:
    name = "parity"
    decoding = "parity"
    metric_name = "accuracy"
    locates = False
    share_of_samples = True

    def check_output(self, x: np.ndarray, y: Any, spec: dict[str, Any]) -> None:
        y = np.asarray(y)
        if y.ndim < 1 or y.shape[0] != 1 or y.size < 2:
            raise ValueError(f"parity reads a row of at least two scores, not {tuple(y.shape)}")

    def decode(self, output: np.ndarray, spec: Any = None) -> int:
        return int(np.argmax(output)) % 2

    def per_sample(self, predictions: Sequence[Any], labels: Sequence[Any]) -> np.ndarray:
        return (np.asarray(predictions) == np.asarray(labels) % 2).astype(np.float64)

    def metric(self, per_sample: np.ndarray) -> float:
        return float(np.mean(per_sample))

    def interval(self, per_sample: np.ndarray, z: float = 1.96) -> tuple[float, float]:
        # The normal approximation: a toy's own interval, unlike classification's Wilson.
        share, count = self.metric(per_sample), len(per_sample)
        half = z * math.sqrt(share * (1 - share) / count) if count else 1.0
        return max(0.0, share - half), min(1.0, share + half)

    def scores(self, per_sample: np.ndarray) -> dict[str, Any]:
        return {"odd_share": float(np.mean(per_sample))}

    def agreement(self, predictions: Sequence[Any], reference: Sequence[Any]) -> float:
        return float(np.mean(np.asarray(predictions) == np.asarray(reference)))

    def json_label(self, label: Any) -> int:
        return int(label)

    def answer(self, output: np.ndarray, classes: Sequence[str],
               spec: Any = None, place: Any = None) -> dict[str, Any]:
        return {"parity": ("even", "odd")[self.decode(output)]}


KIND = Parity()
