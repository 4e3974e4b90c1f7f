"""The harness's energy measurement: the meter its arguments name, and energy per step
(one inference, or one frame end to end) by :func:`energy.per_inference`, each window
running the step back to back for the window's length."""

from __future__ import annotations

import argparse
from typing import Any, Callable

from .energy import Meter, MeterError, choose_meter, per_inference
from .timing import timed_steps


def energy_meter(args: argparse.Namespace) -> tuple[Meter | None, str | None]:
    """(the meter ``--energy-meter`` names, None if none; why a named one is missing).
    ``auto`` on a board without a meter is no meter and no reason: the orchestrator
    estimates from the board's declared power instead."""
    try:
        return choose_meter(getattr(args, "energy_meter", "none"), None,
                            getattr(args, "energy_command", None),
                            getattr(args, "energy_unit", "mJ")), None
    except MeterError as error:
        return None, str(error)


def energy_of(meter: Meter, step: Callable[[int], Any],
              args: argparse.Namespace) -> dict[str, Any]:
    """:func:`energy.per_inference` of ``step`` run back to back for each window."""
    def run_for(seconds: float) -> int:
        return len(timed_steps(step, lambda runs, total_ns: total_ns >= seconds * 1e9))

    return per_inference(meter, run_for, args.energy_windows, args.energy_window_seconds)
