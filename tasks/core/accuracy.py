"""Accuracy arithmetic shared by train, convert, select and the report: drops relative to
the fp32 reference and 95% intervals (an accuracy measured on a few dozen images is a
range, not four digits)."""

from __future__ import annotations

import math
from typing import Any, Sequence

from tasks.core import device_code
from tasks.core.contracts.prepared import DEFAULT_TASK


def relative_drop(accuracy: float, reference: float) -> float:
    """Accuracy lost relative to the reference (0.01 = 1% of the reference lost)."""
    return max(0.0, (reference - accuracy) / reference) if reference > 0 else 0.0


def reference_on_first(test_correct: list[Any], samples: int, task: str = DEFAULT_TASK) -> float:
    """The fp32 reference's score on the first ``samples`` test images (0 = all), from its
    per-image results (``reference.json``'s ``test_correct``: 1 or 0 per image for
    classification, each image's matches for detection) as the kind of ``task`` scores
    them: accuracy, mAP@0.5..."""
    subset = test_correct[:samples] if samples else test_correct
    return float(device_code.task_kinds().get(task).metric(subset)) if subset else 0.0


def reference_interval(test_correct: list[Any], task: str = DEFAULT_TASK) -> list[float]:
    """The 95% interval of the reference's score on all its test images, its kind's own
    (Wilson for an accuracy, a bootstrap over images for mAP)."""
    if not test_correct:
        return [0.0, 1.0]
    return [float(bound) for bound in device_code.task_kinds().get(task).interval(test_correct)]


def own_interval(kind: Any, per_sample: Any) -> list[float] | None:
    """The 95% interval of ``kind``'s score of ``per_sample`` (its per-image results),
    where it is not the binomial one a reader derives from the score and the images (a
    detector's bootstrap over images: what a result records beside its mAP); None for a
    kind whose score is a share of samples (its interval is that binomial one, which
    select computes from the accuracy and the count, so records keep only those two and
    stay as they were) and for no samples."""
    if kind.share_of_samples or not len(per_sample):
        return None
    return [float(bound) for bound in kind.interval(per_sample)]


# The normal quantile for a two-sided 95% interval.
Z_95 = 1.959963984540054


def wilson_interval(correct: int, total: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval (95% by default) of an accuracy of ``correct`` out of
    ``total``. Unlike the normal approximation it stays inside [0, 1] and is honest at
    the extremes and on small splits: 37 of 41 right is 0.90 [0.77, 0.96]. ``total`` 0
    says nothing: (0.0, 1.0)."""
    if total <= 0:
        return 0.0, 1.0
    if not 0 <= correct <= total:
        raise ValueError(f"correct must be from 0 to total ({total}), got {correct}")
    share = correct / total
    spread = z * z / total
    centre = (share + spread / 2) / (1 + spread)
    half = z * math.sqrt(share * (1 - share) / total + z * z / (4 * total * total)) / (1 + spread)
    # At share 0 or 1 the bound is exactly 0 or 1; rounding would leave it a hair off,
    # and an accuracy of 1.0 must lie inside its own interval.
    low = 0.0 if correct == 0 else max(0.0, centre - half)
    high = 1.0 if correct == total else min(1.0, centre + half)
    return low, high


def accuracy_interval(accuracy: float, samples: int) -> tuple[float, float]:
    """:func:`wilson_interval` of an accuracy measured on ``samples`` images."""
    return wilson_interval(round(accuracy * samples), samples)


def format_accuracy(accuracy: float, samples: int,
                    interval: Sequence[float] | None = None) -> str:
    """``0.90 [0.77, 0.96]``: the accuracy and its 95% interval (``interval`` where the
    score's kind computed its own, a detector's bootstrap; else the Wilson interval), with
    as many decimals as the interval's width makes meaningful (two for a few dozen
    images, up to four)."""
    low, high = interval if interval is not None else accuracy_interval(accuracy, samples)
    half_width = (high - low) / 2
    decimals = 4 if half_width <= 0 else min(4, max(2, math.floor(-math.log10(half_width)) + 1))
    return f"{accuracy:.{decimals}f} [{low:.{decimals}f}, {high:.{decimals}f}]"
