"""Kinds of target: a layer between the farm (reaching devices) and the steps.

:mod:`tasks.targets.base` has the :class:`Target` protocol and the registry of kinds by
the ``transport`` of a farm.yaml entry; :mod:`tasks.targets.board` (a board that runs
the harness, local or over SSH) and :mod:`tasks.targets.mcu` (a microcontroller profile)
register the kinds farm.yaml knows. A step asks :func:`target_of` for a device's target
and never names a kind. What the farm commands do over every target is
:mod:`tasks.targets.farm_commands`' (not imported here: no step's code reaches it).
"""

from __future__ import annotations

from tasks.targets import board as board, mcu as mcu  # noqa: F401 - they register their kinds
from tasks.targets.base import (KINDS, BenchmarkJob, DeviceRun, ReleaseJob, Target, register,
                                target_of, unregister)

__all__ = ["KINDS", "BenchmarkJob", "DeviceRun", "ReleaseJob", "Target", "register",
           "target_of", "unregister"]
