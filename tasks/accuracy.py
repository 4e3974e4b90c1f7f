"""Accuracy arithmetic shared by convert (variant index) and select (requirements)."""

from __future__ import annotations


def relative_drop(accuracy: float, reference: float) -> float:
    """Accuracy lost relative to the reference (0.01 = 1% of the reference lost)."""
    return max(0.0, (reference - accuracy) / reference) if reference > 0 else 0.0


def reference_on_first(test_correct: list[int], samples: int) -> float:
    """The fp32 reference accuracy on the first ``samples`` test images (0 = all)."""
    subset = test_correct[:samples] if samples else test_correct
    return sum(subset) / len(subset) if subset else 0.0
