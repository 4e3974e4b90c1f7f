"""tasks/device/measure.py on a clock only the runner moves: each phase of the benchmark
protocol (load, first inference, warm-up, timed runs, scoring) reported at its own known
cost, none of them taking in its neighbour's."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from tasks.device import measure as device_measure
from tasks.device import metering, timing
from tasks.device.runtimes import Runner

MS = 1_000_000  # ns
LOAD_NS = 7 * MS
# Every inference's cost, in the order the protocol makes them: the first inference
# (13 ms), three warm-up runs (2, 5, 3 ms), five timed runs (1, 4, 10, 3, 2 ms: median 3,
# mean 4, p90 7.6) and then the scored images (100 ms each). Each phase's sum differs from
# each other's and from any two neighbours', so a timer started or stopped a phase early
# or late reads a number no phase has.
FIRST_NS = 13 * MS
WARMUP_NS = (2 * MS, 5 * MS, 3 * MS)
TIMED_NS = (1 * MS, 4 * MS, 10 * MS, 3 * MS, 2 * MS)
SCORED_NS = 100 * MS


class RunnerClock:
    """``perf_counter`` and ``perf_counter_ns`` that move only when the runner loads or
    infers, each by its scripted cost."""

    def __init__(self) -> None:
        self.now = 0
        self.inferences = 0
        self.costs = (FIRST_NS, *WARMUP_NS, *TIMED_NS)

    def perf_counter_ns(self) -> int:
        return self.now

    def perf_counter(self) -> float:
        return self.now / 1e9

    def infer(self, x: np.ndarray) -> np.ndarray:
        """Logits one-hot on the first pixel's grey level (x 10)."""
        index, self.inferences = self.inferences, self.inferences + 1
        self.now += self.costs[index] if index < len(self.costs) else SCORED_NS
        logits = np.zeros((1, 10), np.float32)
        logits[0, int(round(float(x.reshape(-1)[0]) * 10))] = 1.0
        return logits


SPEC = {"input": {"dtype": "float32", "shape": [1, 4, 4, 1], "layout": "NHWC",
                  "quantization": None},
        "output": {"dtype": "float32", "quantization": None}}


def _measure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
             frames: str | None = None, **energy: Any) -> tuple[dict[str, Any], RunnerClock,
                                                 list[tuple[Any, ...]], list[Runner]]:
    """measure() on the scripted clock: the result, the clock, what load_runner was asked
    and the runners it gave. The peak RSS reads 11.5 MB before the load, 42.25 MB after."""
    clock = RunnerClock()
    rss = iter([11.5, 42.25])
    monkeypatch.setattr(device_measure, "peak_rss_mb", lambda: next(rss))
    monkeypatch.setattr(device_measure, "time", clock)
    monkeypatch.setattr(timing, "time", clock)
    loaded: list[tuple[Any, ...]] = []
    runners: list[Runner] = []

    def load_runner(runtime: str, artifact: str, threads: int, options: dict[str, Any]) -> Runner:
        loaded.append((runtime, artifact, threads))
        clock.now += LOAD_NS
        runner = Runner(clock.infer, "fake", "1", threads=3)  # not what was asked
        runners.append(runner)
        return runner

    monkeypatch.setattr(device_measure, "load_runner", load_runner)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SPEC), encoding="utf-8")
    greys = [1, 4, 8, 2, 6, 5]
    data = tmp_path / "test.npz"
    np.savez(data, x=np.stack([np.full((4, 4, 1), grey / 10, np.float32) for grey in greys]),
             y=np.array([1, 4, 0, 2, 6, 5]))  # the third image is scored wrong
    # max_seconds 0: the timed runs stop at their minimum of five.
    args = SimpleNamespace(spec=str(spec), data=str(data), accelerators="{}", runtime="fake",
                           artifact="model.fake", threads=2, warmup_runs=len(WARMUP_NS),
                           warmup_seconds=0.0, runs=len(TIMED_NS), seconds=0.0,
                           max_seconds=0.0, interval_width=0.05, accuracy_samples=4,
                           frames=frames, **energy)
    return device_measure.measure(args), clock, loaded, runners


def test_each_phase_is_reported_at_its_own_cost(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    result, clock, loaded, _ = _measure(tmp_path, monkeypatch)

    exact = {"rel": 1e-12, "abs": 0}
    assert loaded == [("fake", "model.fake", 2)]
    assert result["load_ms"] == pytest.approx(7.0, **exact)
    assert result["first_inference_ms"] == pytest.approx(13.0, **exact)
    assert result["warmup"] == pytest.approx({"runs": 3, "seconds": 0.010}, **exact)
    assert result["runs"] == 5 and result["sizing"]["stopped_by"] == "time cap"
    assert result["latency_ms"] == pytest.approx(
        {"p50": 3.0, "p90": 7.6, "p99": 9.76, "mean": 4.0, "min": 1.0, "max": 10.0,
         "std": float(np.std(TIMED_NS)) / MS}, **exact)
    assert result["timed_seconds"] == pytest.approx(0.020, **exact)
    assert result["latencies"]["count"] == 5
    # Scored on the first accuracy_samples images, after the timing: 1 + 3 + 5 + 4 runs.
    assert (result["accuracy"], result["accuracy_samples"]) == (0.75, 4)
    assert clock.inferences == 13
    assert (result["threads"], result["runtime"]["threads"]) == (2, 3)
    assert "end_to_end" not in result
    assert {key: result["runtime"][key] for key in ("name", "version", "requested")} == {
        "name": "fake", "version": "1", "requested": "fake"}
    assert (result["rss_before_load_mb"], result["peak_rss_mb"]) == (11.5, 42.25)


def test_frames_are_timed_end_to_end_on_the_loaded_runner(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """With --frames, the end-to-end timing gets the runner that was loaded, the variant's
    spec and the arguments, and its result is reported as ``end_to_end``."""
    calls: list[tuple[Any, ...]] = []

    def end_to_end_or_error(runner: Runner, spec: Any, args: Any,
                            meter: Any = None) -> dict[str, Any]:
        calls.append((runner, spec, args.frames))
        return {"p50": 1.25}

    monkeypatch.setattr(device_measure, "end_to_end_or_error", end_to_end_or_error)
    result, _, _, runners = _measure(tmp_path, monkeypatch, frames="frames.npz")
    assert calls == [(runners[0], SPEC, "frames.npz")]
    assert result["end_to_end"] == {"p50": 1.25}


def test_energy_windows_run_inferences_on_the_named_meter(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A meter named by --energy-meter: its windows run inferences back to back for the
    window's length (on the runner's clock: 100 ms each after the script), and the
    result carries what the meter gave as ``energy``."""
    asked: list[tuple[Any, ...]] = []

    def choose_meter(choice: str, root: Any, command: Any, unit: str) -> str:
        asked.append((choice, command, unit))
        return "the meter"

    def per_inference(meter: Any, run_for: Any, windows: int, window_s: float) -> dict[str, Any]:
        return {"meter": meter, "windows": windows, "window_s": window_s,
                "ran": run_for(0.25)}

    monkeypatch.setattr(metering, "choose_meter", choose_meter)
    monkeypatch.setattr(metering, "per_inference", per_inference)
    result, clock, _, _ = _measure(tmp_path, monkeypatch, energy_meter="command",
                                   energy_command="meter --read", energy_unit="J",
                                   energy_windows=4, energy_window_seconds=0.5)
    assert asked == [("command", "meter --read", "J")]
    # 0.25 s of 100 ms inferences: 3 (the third passes 0.25 s).
    assert result["energy"] == {"meter": "the meter", "windows": 4, "window_s": 0.5, "ran": 3}
    assert clock.inferences == 13 + 3


def test_a_named_meter_the_board_lacks_is_the_reason_and_no_number(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEFLOW_SYSFS_ROOT", str(tmp_path / "empty-sys"))
    result, _, _, _ = _measure(tmp_path, monkeypatch, energy_meter="rapl")
    assert result["energy"] == {"error": "no energy meter 'rapl' on this board (found: none)"}
