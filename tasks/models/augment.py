"""Training-image augmentation's options (``train.augmentation`` in ``params.yaml``).

The transforms they switch on are :mod:`tasks.models.augmenter`. They are kept apart on
purpose: the configuration imports these options for every step, and a step's code is
every module it imports (:mod:`flows.code_deps`), so options in the transforms' module
would make every step depend on the image code and SciPy, and re-run when it changes.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tasks.core.strict import StrictModel


class AugmentationParams(StrictModel):
    """Random changes to each training image, drawn anew every epoch (seeded); the val,
    test and calibration images are never changed. All off by default: a flip turns a
    handwritten 2 into something else, so each is chosen for the data."""

    flip: Literal["none", "horizontal", "vertical", "both"] = "none"
    shift: float = Field(default=0.0, ge=0.0, le=0.5,
                         description="largest shift, as a fraction of height and width")
    rotation_degrees: float = Field(default=0.0, ge=0.0, le=180.0)
    brightness: float = Field(default=0.0, ge=0.0, le=1.0,
                              description="largest added brightness, as a fraction of white")
    contrast: float = Field(default=0.0, ge=0.0, lt=1.0,
                            description="largest relative change of contrast")
