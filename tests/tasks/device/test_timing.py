"""tasks/device/timing.py on a scripted clock: warm-up loops and runs sized by their intervals."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tasks.device import timing
from tasks.device.latency import relative_widths
from tasks.device.runtimes import Runner


class ScriptedClock:
    """``perf_counter_ns`` for the harness, in which each inference takes the next of
    ``durations_ns``; a loop that runs past the script fails instead of never ending."""

    def __init__(self, durations_ns: list[int]) -> None:
        readings, now = [], 10**12
        for duration in durations_ns:
            readings += [now, now + duration]
            now += duration + 1000  # time passes between runs too
        self._readings = iter(readings)

    def perf_counter_ns(self) -> int:
        reading = next(self._readings, None)
        assert reading is not None, "the timed loop ran more inferences than scripted"
        return reading


MS = 1_000_000  # ns


def timed(monkeypatch: pytest.MonkeyPatch, durations_ns: list[int], min_runs: int,
          min_seconds: float) -> tuple[list[float], list[str]]:
    """The latencies timed_loop reports on a scripted clock, and the inputs it fed."""
    monkeypatch.setattr(timing, "time", ScriptedClock(durations_ns))
    fed: list[str] = []
    runner = Runner(fed.append, "scripted", "0")
    return timing.timed_loop(runner, ["a", "b", "c"], min_runs, min_seconds), fed


def test_timed_loop_stops_at_min_runs_once_min_seconds_is_reached(monkeypatch) -> None:
    durations = [2 * MS, 3 * MS, 5 * MS, 7 * MS, 1 * MS]
    latencies, fed = timed(monkeypatch, durations, min_runs=4, min_seconds=0.0)
    assert latencies == [2.0, 3.0, 5.0, 7.0]
    assert fed == ["a", "b", "c", "a"], "the inputs are fed one after another, round and round"


def test_timed_loop_stops_at_min_seconds_once_min_runs_is_reached(monkeypatch) -> None:
    # 4 + 6 ms reach the 10 ms asked for exactly: "at least", so no third run. The time
    # between runs does not count, only the inferences'.
    latencies, fed = timed(monkeypatch, [4 * MS, 6 * MS, 5 * MS], min_runs=1, min_seconds=0.01)
    assert latencies == [4.0, 6.0] and fed == ["a", "b"]
    # One nanosecond short of 10 ms: a third run.
    latencies, _ = timed(monkeypatch, [4 * MS, 6 * MS - 1, 5 * MS, 5 * MS], min_runs=1,
                         min_seconds=0.01)
    assert latencies == [4.0, 5.999999, 5.0]


def test_timed_loop_with_nothing_asked_runs_nothing(monkeypatch) -> None:
    """A warm-up of 0 runs and 0 seconds (``warmup_runs: 0``) is no warm-up."""
    assert timed(monkeypatch, [], min_runs=0, min_seconds=0.0) == ([], [])



# --------------------------------------------------------------------- statistical sizing


def _sized(monkeypatch: pytest.MonkeyPatch, durations_ns: list[int], **limits: Any
           ) -> tuple[list[int], dict[str, Any]]:
    monkeypatch.setattr(timing, "time", ScriptedClock(durations_ns))
    runner = Runner(lambda x: x, "scripted", "0")
    return timing.sized_runs(runner, ["a"], **limits)


def test_a_sized_run_stops_once_both_intervals_are_narrow_enough(monkeypatch) -> None:
    # 1.00..2.99 ms spread evenly: at 100 runs p50's interval spans ranks 40..61, about
    # 0.4 ms (20% of 2 ms); within 5% takes about 1,500 runs.
    durations = [MS + (i * 7919 % 200) * 10_000 for i in range(5000)]
    latencies, sizing = _sized(monkeypatch, durations, min_runs=100, min_seconds=0.0,
                               max_seconds=60.0, relative_width=0.05)
    assert sizing["stopped_by"] == "interval width"
    assert 1000 < len(latencies) < 3000
    assert all(width <= 0.05 for width in sizing["widths"].values())
    # At the look before the last one the intervals were still too wide.
    earlier = np.asarray(latencies[:int((len(latencies) - 1) / timing.LOOK_GROWTH)]) / 1e6
    assert max(relative_widths(earlier).values()) > 0.05
    assert sizing["relative_width"] == 0.05 and sizing["confidence"] == 0.95


def test_a_sized_run_stops_at_its_time_cap_or_run_cap_whatever_the_intervals(monkeypatch) -> None:
    # Widely spread latencies never reach a 0.1% interval: the time cap (0.5 s of
    # inference at 1..10 ms) stops the run.
    durations = [MS * (1 + i * 7 % 10) for i in range(400)]
    latencies, sizing = _sized(monkeypatch, durations, min_runs=10, min_seconds=0.0,
                               max_seconds=0.5, relative_width=0.001)
    assert sizing["stopped_by"] == "time cap"
    assert sum(latencies) >= 0.5e9 > sum(latencies[:-1])
    monkeypatch.setattr(timing, "MAX_RUNS", 150)
    latencies, sizing = _sized(monkeypatch, durations, min_runs=10, min_seconds=0.0,
                               max_seconds=60.0, relative_width=0.001)
    assert (sizing["stopped_by"], len(latencies)) == ("run cap", 150)
    # The cap wins over the minimums too: a result must fit what the protocol reads.
    latencies, sizing = _sized(monkeypatch, durations, min_runs=300, min_seconds=60.0,
                               max_seconds=60.0, relative_width=0.5)
    assert (sizing["stopped_by"], len(latencies)) == ("run cap", 150)


def test_a_sized_run_always_times_its_minimums(monkeypatch) -> None:
    # Identical latencies: zero-width intervals from the first look, yet min_runs holds.
    latencies, sizing = _sized(monkeypatch, [MS] * 300, min_runs=200, min_seconds=0.0,
                               max_seconds=60.0, relative_width=0.05)
    assert len(latencies) == 200 and sizing["stopped_by"] == "interval width"
    assert sizing["widths"] == {"p50": 0.0, "p90": 0.0}
