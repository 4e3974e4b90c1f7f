"""The device-side harness, run the way a device runs it: ``python harness.py ...`` in a
subprocess, on the tiny project's real artifacts, with a tiny protocol. Failure modes
(corrupt artifact, missing runtime, unknown runtime, missing arguments) must still give
a result file and an exit status the orchestrator can act on.

The harness is run from a copy in a folder of its own, as ``benchmark`` deploys it, and
once in place from the source tree (``tasks/device/``, which holds nothing else)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tasks.core import device_code
from tasks.device import harness
from tests.helpers import flip_last_byte, index_entries

HARNESS_SOURCE = Path(harness.__file__)
VARIANTS = ("tflite-fp32", "onnx-fp32", "openvino-fp32")
# What this machine can run: every runtime but the Edge TPU (no Coral delegate library).
RUNTIMES = {"tflite", "onnxruntime", "openvino", "tflm"}
TINY_PROTOCOL = ["--warmup-runs", "2", "--warmup-seconds", "0", "--runs", "10",
                 "--seconds", "0.01", "--accuracy-samples", "50"]
HOST_KEYS = {"arch", "cpu", "cores", "os", "python", "numpy"}


@pytest.fixture(scope="module")
def deployed_harness(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """harness.py with its kinds of task in a folder, the way ``benchmark`` places it on
    a device."""
    return device_code.place_harness(tmp_path_factory.mktemp("device"))


def run_harness(script: Path, args: list[str],
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(script), *args], capture_output=True,
                          text=True, timeout=120, env=env, check=False)


def variant_entry(tiny_project: Any, name: str) -> dict[str, Any]:
    entries = {entry["name"]: entry for entry in index_entries(tiny_project.layout.variants)}
    return entries[name]


def harness_args(tiny_project: Any, entry: dict[str, Any], tmp_path: Path,
                 artifact: Path | None = None, runtime: str | None = None) -> tuple[list[str], Path]:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(entry["spec"]), encoding="utf-8")
    out = tmp_path / "result.json"
    artifact = artifact or tiny_project.layout.variants / entry["file"]
    return ["--artifact", str(artifact), "--runtime", runtime or entry["runtime"],
            "--data", str(tiny_project.layout.prepared / "test.npz"),
            "--spec", str(spec), "--out", str(out), *TINY_PROTOCOL], out


def read_result(out: Path) -> dict[str, Any]:
    assert out.is_file(), "the harness must always write its result file"
    assert not Path(str(out) + ".tmp").exists(), "the temporary result file was left behind"
    return json.loads(out.read_text(encoding="utf-8"))


def assert_failed(completed: subprocess.CompletedProcess, out: Path) -> dict[str, Any]:
    assert completed.returncode == 1, completed.stderr
    result = read_result(out)
    assert result["status"] == "failed"
    assert isinstance(result["error"], str) and result["error"]
    assert "latency_ms" not in result and "accuracy" not in result
    assert "Traceback" in result["traceback"]
    assert HOST_KEYS <= set(result["host"])
    return result


# --------------------------------------------------------------------------- measuring


def test_tiny_project_index_lists_the_three_variants(tiny_project: Any) -> None:
    names = [entry["name"] for entry in index_entries(tiny_project.layout.variants)]
    assert sorted(names) == sorted(VARIANTS)


@pytest.mark.parametrize("name", VARIANTS)
def test_harness_measures_each_variant(tiny_project: Any, deployed_harness: Path, tmp_path: Path,
                                       name: str) -> None:
    entry = variant_entry(tiny_project, name)
    args, out = harness_args(tiny_project, entry, tmp_path)
    completed = run_harness(deployed_harness, args)
    assert completed.returncode == 0, completed.stderr
    result = read_result(out)

    assert result["status"] == "ok" and result["error"] is None
    assert result["protocol"] == harness.PROTOCOL_VERSION
    latency = result["latency_ms"]
    assert 0 < latency["min"] <= latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
    assert latency["min"] <= latency["mean"] <= latency["max"]
    assert latency["std"] >= 0
    assert result["runs"] >= 10
    assert result["warmup"]["runs"] >= 2
    assert result["timed_seconds"] > 0
    assert result["throughput_fps"] > 0
    # Sequential batch 1: throughput is runs over the summed latencies.
    assert result["throughput_fps"] == pytest.approx(result["runs"] / result["timed_seconds"])
    assert result["load_ms"] > 0 and result["first_inference_ms"] > 0

    assert result["accuracy_samples"] == 50
    assert 0.0 <= result["accuracy"] <= 1.0
    assert result["accuracy"] > 0.1, "a trained 10-class model must beat chance"
    # The harness's accuracy on 50 images is a whole number of correct predictions.
    assert (result["accuracy"] * 50) == pytest.approx(round(result["accuracy"] * 50))

    assert result["peak_rss_mb"] > 0
    assert result["peak_rss_mb"] >= result["rss_before_load_mb"] > 0
    runtime = result["runtime"]
    assert runtime["requested"] == entry["runtime"] == result["runtime_requested"]
    assert isinstance(runtime["name"], str) and runtime["name"]
    assert isinstance(runtime["version"], str) and runtime["version"]
    assert result["threads"] == 1
    assert HOST_KEYS <= set(result["host"])
    assert result["host"]["python"] == ".".join(map(str, sys.version_info[:3]))
    assert result["host"]["numpy"] == np.__version__


def test_harness_accuracy_matches_in_process_prediction(tiny_project: Any, deployed_harness: Path,
                                                        tmp_path: Path) -> None:
    """The subprocess's accuracy is the one the harness's own predict() gives in-process."""
    entry = variant_entry(tiny_project, "onnx-fp32")
    args, out = harness_args(tiny_project, entry, tmp_path)
    assert run_harness(deployed_harness, args).returncode == 0
    with np.load(tiny_project.layout.prepared / "test.npz") as data:
        x, y = data["x"][:50], data["y"][:50]
    runner = harness.load_runner("onnxruntime", str(tiny_project.layout.variants / entry["file"]))
    logits = harness.predict(runner, x, entry["spec"])
    assert logits.shape == (50, 10)
    assert read_result(out)["accuracy"] == pytest.approx(float(np.mean(logits.argmax(1) == y)))


def test_litert_is_given_the_threads_though_it_cannot_report_them(
        tiny_project: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """LiteRT cannot read its thread count back (ONNX Runtime and OpenVINO report theirs:
    tests/tasks/test_benchmark.py), so its interpreter is watched being made."""
    from ai_edge_litert import interpreter as litert

    asked: list[Any] = []

    class Watched(litert.Interpreter):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            asked.append(kwargs.get("num_threads"))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(litert, "Interpreter", Watched)
    artifact = tiny_project.layout.variants / variant_entry(tiny_project, "tflite-fp32")["file"]
    runner = harness.load_runner("tflite", str(artifact), threads=2)
    assert asked == [2]
    assert runner.threads is None, "what LiteRT cannot say is not claimed"


def test_probe_lists_the_three_runtimes(deployed_harness: Path) -> None:
    completed = run_harness(deployed_harness, ["--probe"])
    assert completed.returncode == 0, completed.stderr
    document = json.loads(completed.stdout)
    assert document["protocol"] == harness.PROTOCOL_VERSION
    assert set(document["runtimes"]) == RUNTIMES
    assert document["runtimes"]["onnxruntime"] == "onnxruntime"
    assert document["runtimes"]["tflite"] in harness.RUNTIME_MODULES["tflite"]
    assert HOST_KEYS <= set(document["host"])


# --------------------------------------------------------------------------- failures


def test_corrupt_artifact_gives_failed_result(tiny_project: Any, deployed_harness: Path,
                                              tmp_path: Path) -> None:
    corrupt = tmp_path / "model.onnx"
    corrupt.write_bytes(random.Random(0).randbytes(4096))
    entry = variant_entry(tiny_project, "onnx-fp32")
    args, out = harness_args(tiny_project, entry, tmp_path, artifact=corrupt)
    result = assert_failed(run_harness(deployed_harness, args), out)
    assert result["runtime_requested"] == "onnxruntime"


def test_missing_runtime_gives_failed_result_with_import_error(tiny_project: Any,
                                                               deployed_harness: Path,
                                                               tmp_path: Path) -> None:
    # A stand-in for a device without onnxruntime: a shadow package first on the path.
    shadow = tmp_path / "shadow" / "onnxruntime"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text(
        'raise ImportError("No module named onnxruntime (shadowed by the test)")\n',
        encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(shadow.parent)}
    entry = variant_entry(tiny_project, "onnx-fp32")
    args, out = harness_args(tiny_project, entry, tmp_path)
    result = assert_failed(run_harness(deployed_harness, args, env=env), out)
    assert result["error"].startswith("ImportError:")
    assert "shadowed by the test" in result["error"]


def test_unknown_runtime_gives_failed_result_naming_known_runtimes(tiny_project: Any,
                                                                   deployed_harness: Path,
                                                                   tmp_path: Path) -> None:
    entry = variant_entry(tiny_project, "onnx-fp32")
    args, out = harness_args(tiny_project, entry, tmp_path, runtime="tensorrt")
    result = assert_failed(run_harness(deployed_harness, args), out)
    assert result["error"].startswith("ValueError:")
    assert "'tensorrt'" in result["error"]
    for runtime in RUNTIMES:
        assert runtime in result["error"]
    assert result["runtime_requested"] == "tensorrt"


def test_missing_required_arguments_exit_with_usage_error(deployed_harness: Path,
                                                          tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    completed = run_harness(deployed_harness, ["--runtime", "onnxruntime", "--out", str(out)])
    assert completed.returncode == 2
    assert "required" in completed.stderr
    for name in ("--artifact", "--data", "--spec"):
        assert name in completed.stderr
    assert "--runtime" not in completed.stderr.split("required:")[-1]
    assert not out.exists()


# --------------------------------------------------------------------------- quantisation


INT8 = {"dtype": "int8", "quantization": {"scale": 0.05, "zero_point": -10}}


def test_quantize_dequantize_round_trip_int8() -> None:
    rng = np.random.default_rng(0)
    # Inside the representable range: [(-128 + 10) * 0.05, (127 + 10) * 0.05] = [-5.9, 6.85].
    x = rng.uniform(-5.8, 6.8, size=(4, 4, 1)).astype(np.float32)
    q = harness.quantize_input(x, INT8)
    assert q.dtype == np.int8 and q.shape == (1, 4, 4, 1)
    assert q.flags["C_CONTIGUOUS"]
    back = harness.dequantize_output(q, INT8)
    assert back.dtype == np.float32
    np.testing.assert_allclose(back[0], x, atol=0.05 / 2 + 1e-6)
    # The zero point maps 0.0 exactly.
    zero = harness.quantize_input(np.zeros((1, 1, 1), np.float32), INT8)
    assert int(zero.item()) == -10
    assert harness.dequantize_output(zero, INT8).item() == 0.0


def test_quantize_clips_at_int8_bounds() -> None:
    x = np.array([[[100.0], [-100.0], [6.85], [-5.9]]], dtype=np.float32)
    q = harness.quantize_input(x, INT8)
    assert q.reshape(-1).tolist() == [127, -128, 127, -128]
    np.testing.assert_allclose(harness.dequantize_output(q, INT8).reshape(-1),
                               [6.85, -5.9, 6.85, -5.9], rtol=1e-6)


def test_float_spec_only_adds_the_batch_dimension() -> None:
    x = np.arange(6, dtype=np.float64).reshape(2, 3, 1)
    spec = {"dtype": "float32", "quantization": None}
    batch = harness.quantize_input(x, spec)
    assert batch.dtype == np.float32 and batch.shape == (1, 2, 3, 1)
    np.testing.assert_array_equal(batch[0], x)
    np.testing.assert_array_equal(harness.dequantize_output(batch, spec), batch)


def test_load_runner_rejects_unknown_runtime_in_process() -> None:
    with pytest.raises(ValueError, match=r"unknown runtime 'tensorrt' \(known: edgetpu, "
                                         r"onnxruntime, openvino, tflite, tflm\)"):
        harness.load_runner("tensorrt", "model.plan")


# --------------------------------------------------------------------------- in place


def test_harness_runs_in_place_from_the_source_tree() -> None:
    completed = run_harness(HARNESS_SOURCE, ["--probe"])
    assert completed.returncode == 0, completed.stderr
    assert set(json.loads(completed.stdout)["runtimes"]) == RUNTIMES


def test_peak_memory_is_the_harness_own_not_its_parents(tiny_project: Any, deployed_harness: Path,
                                                        tmp_path: Path) -> None:
    """A harness started by a process holding 600 MB must not report that parent's peak."""
    entry = variant_entry(tiny_project, "tflite-fp32")
    args, out = harness_args(tiny_project, entry, tmp_path)
    parent = ("import subprocess, sys\n"
              "ballast = b\"\\x01\" * (600 * 1024 * 1024)\n"
              "sys.exit(subprocess.run([sys.executable, *sys.argv[1:]]).returncode)\n")
    completed = subprocess.run([sys.executable, "-c", parent, str(deployed_harness), *args],
                               capture_output=True, text=True, timeout=300, check=False)
    assert completed.returncode == 0, completed.stderr
    result = json.loads(out.read_text())
    assert 10 < result["peak_rss_mb"] < 500, result["peak_rss_mb"]


def test_throttling_facts_where_the_board_exposes_them(tmp_path, monkeypatch) -> None:
    from tasks.device import harness

    cpufreq = tmp_path / "cpufreq"
    cpufreq.mkdir()
    (cpufreq / "scaling_cur_freq").write_text("600000\n")
    (cpufreq / "cpuinfo_max_freq").write_text("2400000\n")
    flags = tmp_path / "get_throttled"
    # A Raspberry Pi now capped and throttled, under-voltage earlier since boot.
    flags.write_text(hex((1 << 1) | (1 << 2) | (1 << 16)) + "\n")
    monkeypatch.setattr(harness, "CPUFREQ", str(cpufreq))
    monkeypatch.setattr(harness, "PI_THROTTLE_FILE", str(flags))
    facts = harness._throttling()
    assert facts["cpu_mhz"] == 600 and facts["cpu_max_mhz"] == 2400
    assert facts["throttled"] == "frequency capped, throttled"
    assert facts["throttled_since_boot"] == "under-voltage"
    flags.write_text("0x0\n")
    assert harness._throttling()["throttled"] == "no"


def test_no_throttling_facts_where_the_board_has_none(tmp_path, monkeypatch) -> None:
    from tasks.device import harness

    monkeypatch.setattr(harness, "CPUFREQ", str(tmp_path / "absent"))
    monkeypatch.setattr(harness, "PI_THROTTLE_FILE", str(tmp_path / "absent"))
    assert "throttled" not in harness._throttling() and "cpu_mhz" not in harness._throttling()


# --------------------------------------------------------------------------- statistics


def linear_percentile(values: list[float], q: float) -> float:
    """numpy's default ("linear") percentile written out, to check the harness against:
    the value at rank (n - 1) * q / 100 of the sorted values, interpolated between the
    two values around it."""
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


# Shuffled, so nothing depends on the order the runs came in. Every statistic differs
# from every other one, so one computed as another (p90 as p50, p99 as max, the mean as
# the median) gives a wrong number: 1..10 ms and a 100 ms outlier (odd count: p50 and
# p90 fall on values, p99 between two); four runs (even count: all three in between).
@pytest.mark.parametrize(("latencies", "p50", "p90", "p99"), [
    ([7.0, 3.0, 100.0, 1.0, 9.0, 5.0, 2.0, 10.0, 4.0, 8.0, 6.0], 6.0, 10.0, 91.0),
    ([4.0, 1.0, 3.0, 2.0], 2.5, 3.7, 3.97),
])
def test_latency_summary_reports_each_statistic_of_the_timed_runs(
        latencies: list[float], p50: float, p90: float, p99: float) -> None:
    summary = harness.latency_summary(latencies)
    assert set(summary) == {"runs", "timed_seconds", "latency_ms", "latency_ci95_ms",
                            "throughput_fps"}
    latency = summary["latency_ms"]
    assert set(latency) == {"p50", "p90", "p99", "mean", "std", "min", "max"}
    for q, expected in ((50, p50), (90, p90), (99, p99)):
        assert latency[f"p{q}"] == pytest.approx(expected, rel=1e-12)
        assert latency[f"p{q}"] == pytest.approx(linear_percentile(latencies, q), rel=1e-12)
    assert latency["mean"] == pytest.approx(sum(latencies) / len(latencies), rel=1e-12)
    # The population standard deviation: the timed runs are all the runs there are.
    assert latency["std"] == pytest.approx(statistics.pstdev(latencies), rel=1e-12)
    assert (latency["min"], latency["max"]) == (min(latencies), max(latencies))
    assert summary["runs"] == len(latencies)
    assert summary["timed_seconds"] == pytest.approx(sum(latencies) / 1000, rel=1e-12)
    # Sequential batch 1: runs per second of summed latency.
    assert summary["throughput_fps"] == pytest.approx(len(latencies) * 1000 / sum(latencies),
                                                      rel=1e-12)
    # 11 runs: the median's 95% interval is X(2)..X(10) (P(B <= 1) = 12/2048 <= 0.025 <
    # P(B <= 2), P(B <= 8) < 0.975 <= P(B <= 9)); too few runs for p90's. 4 runs: none.
    assert summary["latency_ci95_ms"] == ({"p50": [2.0, 10.0], "p90": None}
                                          if len(latencies) == 11 else {"p50": None, "p90": None})
    # Plain floats and ints: the result is written with json.dump.
    assert all(type(value) is float for value in latency.values())
    assert type(summary["runs"]) is int
    assert type(summary["timed_seconds"]) is type(summary["throughput_fps"]) is float


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
    """The latencies _timed_loop reports on a scripted clock, and the inputs it fed."""
    monkeypatch.setattr(harness, "time", ScriptedClock(durations_ns))
    fed: list[str] = []
    runner = harness.Runner(fed.append, "scripted", "0")
    return harness._timed_loop(runner, ["a", "b", "c"], min_runs, min_seconds), fed


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


@pytest.mark.parametrize(("n", "q"), [(100, 0.5), (45, 0.9), (60, 0.9), (1000, 0.9), (257, 0.5)])
def test_quantile_interval_ranks_are_the_exact_binomial_ones(n: int, q: float) -> None:
    from scipy.stats import binom

    ordered = np.arange(1.0, n + 1)  # X(i) = i: the interval shows its ranks
    low, high = harness.quantile_interval(ordered, q)
    # Equal tails: the largest j with P(B <= j-1) <= 2.5%, the smallest k with
    # P(B <= k-1) >= 97.5%.
    j = max(j for j in range(1, n + 1) if binom.cdf(j - 1, n, q) <= 0.025)
    k = min(k for k in range(1, n + 1) if binom.cdf(k - 1, n, q) >= 0.975)
    assert (low, high) == (j, k)
    assert binom.cdf(k - 1, n, q) - binom.cdf(j - 1, n, q) >= 0.95
    if (n, q) == (100, 0.5):
        assert (low, high) == (40, 61)  # the textbook median interval of 100 samples


def test_quantile_interval_is_none_when_too_few_runs_for_95_percent() -> None:
    # P(B <= n-1) = 1 - 0.9^n reaches 97.5% at n = 36 (n >= ln 0.025 / ln 0.9 = 35.01).
    assert harness.quantile_interval(np.arange(1.0, 36), 0.9) is None  # 35 runs
    assert harness.quantile_interval(np.arange(1.0, 37), 0.9) is not None
    assert harness.quantile_interval(np.arange(1.0, 6), 0.5) is None
    assert harness.quantile_interval(np.array([]), 0.5) is None


def test_quantile_intervals_cover_the_true_percentile_95_percent_of_the_time() -> None:
    """On skewed data (latencies are), without assuming any distribution: each tail is
    missed at most about 2.5% of the time."""
    rng = np.random.default_rng(7)
    truth = {"p50": np.exp(0.0), "p90": np.exp(1.2815515655446004 * 0.6)}  # lognormal(0, .6)
    missed = {(name, side): 0 for name in truth for side in ("low", "high")}
    trials = 3000
    for _ in range(trials):
        intervals = harness.percentile_intervals(rng.lognormal(0.0, 0.6, size=80))
        for name, (low, high) in intervals.items():
            missed[(name, "low")] += truth[name] < low
            missed[(name, "high")] += truth[name] > high
    for (name, side), count in missed.items():
        assert count / trials <= 0.035, (name, side, count / trials)
    for name in truth:
        assert 0.93 <= 1 - (missed[(name, "low")] + missed[(name, "high")]) / trials <= 0.995


def _sized(monkeypatch: pytest.MonkeyPatch, durations_ns: list[int], **limits: Any
           ) -> tuple[list[int], dict[str, Any]]:
    monkeypatch.setattr(harness, "time", ScriptedClock(durations_ns))
    runner = harness.Runner(lambda x: x, "scripted", "0")
    return harness.sized_runs(runner, ["a"], **limits)


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
    earlier = np.asarray(latencies[:int((len(latencies) - 1) / harness.LOOK_GROWTH)]) / 1e6
    assert max(harness.relative_widths(earlier).values()) > 0.05
    assert sizing["relative_width"] == 0.05 and sizing["confidence"] == 0.95


def test_a_sized_run_stops_at_its_time_cap_or_run_cap_whatever_the_intervals(monkeypatch) -> None:
    # Widely spread latencies never reach a 0.1% interval: the time cap (0.5 s of
    # inference at 1..10 ms) stops the run.
    durations = [MS * (1 + i * 7 % 10) for i in range(400)]
    latencies, sizing = _sized(monkeypatch, durations, min_runs=10, min_seconds=0.0,
                               max_seconds=0.5, relative_width=0.001)
    assert sizing["stopped_by"] == "time cap"
    assert sum(latencies) >= 0.5e9 > sum(latencies[:-1])
    monkeypatch.setattr(harness, "MAX_RUNS", 150)
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


def test_raw_latencies_round_trip_through_their_encoding() -> None:
    import base64
    import zlib

    latencies = [1_234_567, 987, 10**12, 0]
    encoded = harness.encode_latencies(latencies)
    assert (encoded["encoding"], encoded["count"]) == ("int64-le-ns+zlib+base64", 4)
    raw = zlib.decompress(base64.b64decode(encoded["data"]))
    assert np.frombuffer(raw, dtype="<i8").tolist() == latencies


# ------------------------------------------------------------------------ conditions


def _snapshot(**changes: Any) -> dict[str, Any]:
    base = {"monotonic": 100.0, "cpu_seconds": 10.0, "machine_busy": (1000.0, 4000.0),
            "affinity": [0, 1], "governor": "performance", "cpu_mhz": 2000.0,
            "temperature_c": 50.0, "thermal_throttle_events": 3, "throttled": None,
            "load_1m": 0.5}
    return {**base, **changes}


def test_a_quiet_run_reports_its_conditions_and_no_change() -> None:
    # 10 s of wall time, 10 CPU-seconds busy on the machine, 9.9 of them this process's.
    after = _snapshot(monotonic=110.0, cpu_seconds=19.9, machine_busy=(1010.0, 4020.0),
                      cpu_mhz=2100.0, temperature_c=54.0)
    reported = harness.run_conditions(_snapshot(), after)
    assert reported["other_busy_cpus"] == 0.01
    assert reported["changes"] == []
    assert reported["before"]["cpu_mhz"] == 2000.0 and reported["after"]["cpu_mhz"] == 2100.0
    assert "monotonic" not in reported["after"]


def test_what_changed_during_a_run_is_named_with_its_figures() -> None:
    after = _snapshot(monotonic=110.0, cpu_seconds=20.0, machine_busy=(1025.0, 4020.0),
                      governor="powersave", cpu_mhz=1500.0, temperature_c=61.5,
                      thermal_throttle_events=5, throttled="throttled", affinity=[0])
    assert harness.run_conditions(_snapshot(), after)["changes"] == [
        "frequency governor changed from performance to powersave",
        "CPU clock changed from 2000 to 1500 MHz",
        "temperature rose from 50 to 61.5 C",
        "the CPU was thermally throttled 2 times",
        "the board reports throttled",
        "CPU affinity changed from [0, 1] to [0]",
        "other processes kept 1.5 CPUs busy"]


def test_conditions_are_read_from_the_boards_files(tmp_path: Path, monkeypatch) -> None:
    stat = tmp_path / "stat"
    # user nice system idle iowait irq softirq steal: busy 100+0+50+0+5+5+0 = 160 ticks.
    stat.write_text("cpu  100 0 50 700 40 5 5 0 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n")
    freq = tmp_path / "cpufreq"
    freq.mkdir()
    (freq / "scaling_cur_freq").write_text("1800000\n")
    (freq / "scaling_governor").write_text("ondemand\n")
    (tmp_path / "temp").write_text("47500\n")
    monkeypatch.setattr(harness, "PROC_STAT", str(stat))
    monkeypatch.setattr(harness, "CPUFREQ", str(freq))
    monkeypatch.setattr(harness, "THERMAL_ZONE", str(tmp_path / "temp"))
    snapshot = harness.conditions()
    hertz = os.sysconf("SC_CLK_TCK")
    assert snapshot["machine_busy"] == (160 / hertz, 900 / hertz)
    assert (snapshot["governor"], snapshot["cpu_mhz"], snapshot["temperature_c"]) == (
        "ondemand", 1800.0, 47.5)
    assert snapshot["affinity"] == sorted(os.sched_getaffinity(0))


# --------------------------------------------------------------------------- input checks


def test_verify_inputs_checks_every_file_and_names_the_one_that_changed(tmp_path: Path) -> None:
    """Every ``PATH=HEX`` is checked, not only the first: an OpenVINO IR's weights
    (``model.bin``, its second file) changed on the device must be refused too."""
    folder = tmp_path / "run=1"  # a path may hold "=": the digest follows the last one
    folder.mkdir()
    graph, weights = folder / "model.xml", folder / "model.bin"
    graph.write_bytes(b"<net/>")
    weights.write_bytes(bytes(range(256)) * 5000)  # over 1 MiB: read in blocks
    deployed = hashlib.sha256(weights.read_bytes()).hexdigest()
    expected = [f"{graph}={hashlib.sha256(b'<net/>').hexdigest()}", f"{weights}={deployed}"]
    harness.verify_inputs(expected)  # as deployed: accepted

    flip_last_byte(weights)
    found = hashlib.sha256(weights.read_bytes()).hexdigest()
    with pytest.raises(RuntimeError) as caught:
        harness.verify_inputs(expected)
    assert str(caught.value) == (f"sha256 mismatch for model.bin: the file on the device is not "
                                 f"the one deployed ({found[:16]}... != {deployed[:16]}...)")
