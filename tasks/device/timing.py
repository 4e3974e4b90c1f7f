"""Timed runs: steps one after another, each timed with ``perf_counter_ns``, for at least
a number of runs and seconds (the warm-up), or sized by their statistics: on until the
95% intervals of p50 and p90 are narrow enough, or a time or run cap.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from .latency import CONFIDENCE, relative_widths
from .runtimes import Runner

# The most runs timed and sent back raw (int64 ns, compressed: well under the 1 MiB a
# result may be): a run stops there whatever its intervals.
MAX_RUNS = 100_000
# Intervals are looked at when the runs have grown by this factor since the last look:
# a look sorts every latency, so looking after every run would cost more than the runs.
LOOK_GROWTH = 1.25


def timed_steps(step: Callable[[int], Any], done: Callable[[list[int], int], bool]) -> list[int]:
    """``step(0)``, ``step(1)``... one after another, each timed with ``perf_counter_ns``,
    until ``done(latencies_ns, total_ns)``; latencies in ns."""
    latencies: list[int] = []
    total_ns = 0
    index = 0
    while not done(latencies, total_ns):
        start = time.perf_counter_ns()
        step(index)
        elapsed = time.perf_counter_ns() - start
        latencies.append(elapsed)
        total_ns += elapsed
        index += 1
    return latencies


def timed_runs(runner: Runner, inputs: list[np.ndarray],
               done: Callable[[list[int], int], bool]) -> list[int]:
    """Inferences one after another (the inputs round and round), each timed, until
    ``done(latencies_ns, total_ns)``; latencies in ns."""
    return timed_steps(lambda index: runner.infer(inputs[index % len(inputs)]), done)


def timed_loop(runner: Runner, inputs: list[np.ndarray], min_runs: int,
               min_seconds: float) -> list[float]:
    """Run until both ``min_runs`` and ``min_seconds`` are reached; latencies in ms."""
    latencies = timed_runs(runner, inputs, lambda runs, total_ns: len(runs) >= min_runs
                           and total_ns >= min_seconds * 1e9)
    return [elapsed / 1e6 for elapsed in latencies]


def sized_runs(runner: Runner, inputs: list[np.ndarray], min_runs: int, min_seconds: float,
               max_seconds: float, relative_width: float) -> tuple[list[int], dict[str, Any]]:
    """:func:`sized_steps` of inferences, the inputs round and round."""
    return sized_steps(lambda index: runner.infer(inputs[index % len(inputs)]), min_runs,
                       min_seconds, max_seconds, relative_width)


def sized_steps(step: Callable[[int], Any], min_runs: int, min_seconds: float,
                max_seconds: float, relative_width: float) -> tuple[list[int], dict[str, Any]]:
    """Time ``step`` at least ``min_runs`` and ``min_seconds``, then on until the 95% intervals of
    p50 and p90 are each at most ``relative_width`` of their percentile (full width),
    ``max_seconds`` of inference have passed, or :data:`MAX_RUNS` (which also caps the
    minimums: a result must stay within the protocol's size). Latencies in ns, and how the run was
    sized: the target, the widths reached, and what stopped it."""
    look_at = [0]
    stopped = ["minimums"]

    def done(runs: list[int], total_ns: int) -> bool:
        if len(runs) >= MAX_RUNS:  # before the minimums: a result must fit the protocol
            stopped[0] = "run cap"
            return True
        if len(runs) < min_runs or total_ns < min_seconds * 1e9:
            return False
        if len(runs) >= look_at[0]:
            look_at[0] = int(len(runs) * LOOK_GROWTH) + 1
            widths = relative_widths(np.asarray(runs) / 1e6)
            if all(width is not None and width <= relative_width for width in widths.values()):
                stopped[0] = "interval width"
                return True
        if total_ns >= max_seconds * 1e9:
            stopped[0] = "time cap"
            return True
        return False

    latencies = timed_steps(step, done)
    widths = relative_widths(np.asarray(latencies) / 1e6) if latencies else {}
    return latencies, {"relative_width": relative_width, "confidence": CONFIDENCE,
                       "max_seconds": max_seconds, "widths": widths, "stopped_by": stopped[0]}
