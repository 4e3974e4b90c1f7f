"""Which images go to which split: ``train``, ``val`` and ``test`` (sizes from
``data.split``, seeded by ``data.seed``) and ``calib`` (``data.calibration_size`` images
of train, for quantisation). The same params give the same indices on every machine.

Classification splits are stratified by class (:func:`split_indices`). A detection image
holds several objects of several classes, so there is no one class to stratify by:
detection splits are seeded random by image (:func:`split_images`), and prepare warns of
a split left with no object of a class.
"""

from __future__ import annotations

import math

import numpy as np

from tasks.config import DataParams
from tasks.core.errors import DataError


def _share(fraction: float, count: int) -> int:
    """How many of ``count`` images ``fraction`` takes: rounded up, as scikit-learn rounds
    a fractional test_size, but after dropping float noise (0.1 / 0.35 * 42 is
    12.000000000000002, which would take 13 of 42 for a test split of 12)."""
    return math.ceil(round(fraction * count, 9))


def split_indices(labels: np.ndarray, params: DataParams) -> dict[str, np.ndarray]:
    """Stratified, seeded train/val/test split; ``calib`` is a subset of train."""
    from sklearn.model_selection import train_test_split

    indices = np.arange(len(labels))
    holdout = params.split.val + params.split.test
    try:
        train, rest = train_test_split(indices, test_size=_share(holdout, len(labels)),
                                       stratify=labels, random_state=params.seed)
        val, test = train_test_split(rest, test_size=_share(params.split.test / holdout,
                                                            len(rest)),
                                     stratify=labels[rest], random_state=params.seed)
    except ValueError as error:
        counts = np.bincount(labels)
        raise DataError(f"data.split: cannot stratify {len(labels)} images over "
                        f"{len(counts)} classes (smallest class has {counts.min()} images): "
                        f"{error}") from None
    return _with_calibration(train, val, test, params)


def _with_calibration(train: np.ndarray, val: np.ndarray, test: np.ndarray,
                      params: DataParams) -> dict[str, np.ndarray]:
    """The splits, sorted, and ``calib``: a seeded draw of train."""
    rng = np.random.default_rng(params.seed)
    calib = np.sort(rng.permutation(train)[:params.calibration_size])
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test), "calib": calib}


def split_images(count: int, params: DataParams) -> dict[str, np.ndarray]:
    """Seeded random train/val/test split of ``count`` images (the same sizes as
    :func:`split_indices` gives, unstratified); ``calib`` is a subset of train."""
    from sklearn.model_selection import train_test_split

    indices = np.arange(count)
    holdout = params.split.val + params.split.test
    try:
        train, rest = train_test_split(indices, test_size=_share(holdout, count),
                                       random_state=params.seed)
        val, test = train_test_split(rest, test_size=_share(params.split.test / holdout,
                                                            len(rest)),
                                     random_state=params.seed)
    except ValueError as error:
        raise DataError(f"data.split: cannot split {count} images into train, val and test: "
                        f"{error}") from None
    return _with_calibration(train, val, test, params)
