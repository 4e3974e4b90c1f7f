"""The device-side harness, run the way a device runs it: ``python harness.py ...`` in a
subprocess, on the tiny project's real artifacts, with a tiny protocol. Failure modes
(corrupt artifact, missing runtime, unknown runtime, missing arguments) must still give
a result file and an exit status the orchestrator can act on.

The harness is run from a folder of its own, shipped as ``benchmark`` deploys it (the
package ``edgeflow_device/`` and the launcher ``harness.py`` beside it), and once in
place from the source tree (``python -m tasks.device.harness``)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tasks.core import device_code
from tasks.device import harness, runtimes, tensors
from tests.helpers import flip_last_byte, index_entries

REPO = Path(__file__).resolve().parents[3]
VARIANTS = ("tflite-fp32", "onnx-fp32", "openvino-fp32")
# What this machine can run: every runtime but the Edge TPU (no Coral delegate library).
RUNTIMES = {"tflite", "onnxruntime", "openvino", "tflm"}
TINY_PROTOCOL = ["--warmup-runs", "2", "--warmup-seconds", "0", "--runs", "10",
                 "--seconds", "0.01", "--accuracy-samples", "50"]
HOST_KEYS = {"arch", "cpu", "cores", "os", "python", "numpy"}


@pytest.fixture(scope="module")
def deployed_harness(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The harness in a folder of its own, the way ``benchmark`` places it on a device:
    the launcher ``harness.py`` beside the package ``edgeflow_device/``."""
    folder = tmp_path_factory.mktemp("device")
    device_code.ship(folder, ("harness",))
    return folder / "harness.py"


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
    runner = runtimes.load_runner("onnxruntime", str(tiny_project.layout.variants / entry["file"]))
    logits = tensors.predict(runner, x, entry["spec"])
    assert logits.shape == (50, 10)
    assert read_result(out)["accuracy"] == pytest.approx(float(np.mean(logits.argmax(1) == y)))


def test_probe_lists_the_three_runtimes(deployed_harness: Path) -> None:
    completed = run_harness(deployed_harness, ["--probe"])
    assert completed.returncode == 0, completed.stderr
    document = json.loads(completed.stdout)
    assert document["protocol"] == harness.PROTOCOL_VERSION
    assert set(document["runtimes"]) == RUNTIMES
    assert document["runtimes"]["onnxruntime"] == "onnxruntime"
    assert document["runtimes"]["tflite"] in runtimes.RUNTIME_MODULES["tflite"]
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


# --------------------------------------------------------------------------- in place


def test_harness_runs_in_place_from_the_source_tree() -> None:
    completed = subprocess.run([sys.executable, "-m", "tasks.device.harness", "--probe"],
                               capture_output=True, text=True, timeout=120, cwd=REPO,
                               check=False)
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


# --------------------------------------------------------------------------- in process
# The harness runs in a subprocess above; here its functions run in this process, so
# what each option and outcome becomes is read directly.

REQUIRED = ["--artifact", "m.onnx", "--runtime", "onnxruntime", "--data", "d.npz",
            "--spec", "s.json", "--out", "r.json"]


def test_parse_args_defaults_are_the_protocols() -> None:
    args = harness.parse_args(REQUIRED)
    assert vars(args) == {
        "probe": False, "artifact": "m.onnx", "runtime": "onnxruntime", "data": "d.npz",
        "spec": "s.json", "out": "r.json", "threads": 1, "warmup_runs": 20,
        "warmup_seconds": 0.5, "runs": 200, "seconds": 2.0, "max_seconds": 10.0,
        "interval_width": 0.05, "accuracy_samples": 0, "frames": None, "expect_sha256": [],
        "accelerators": "{}", "energy_meter": "auto", "energy_command": None,
        "energy_unit": "mJ", "energy_windows": 5, "energy_window_seconds": 1.0}


def test_parse_args_reads_every_option_as_its_type() -> None:
    args = harness.parse_args([*REQUIRED, "--threads", "4", "--warmup-runs", "3",
                               "--warmup-seconds", "0.25", "--runs", "50", "--seconds", "1.5",
                               "--max-seconds", "7.5", "--interval-width", "0.1",
                               "--accuracy-samples", "64", "--frames", "f.npz",
                               "--expect-sha256", "a=1", "--expect-sha256", "b=2",
                               "--accelerators", '{"openvino_device": "GPU"}'])
    assert (args.threads, args.warmup_runs, args.warmup_seconds, args.runs, args.seconds,
            args.max_seconds, args.interval_width, args.accuracy_samples, args.frames,
            args.expect_sha256, args.accelerators) == (
        4, 3, 0.25, 50, 1.5, 7.5, 0.1, 64, "f.npz", ["a=1", "b=2"], '{"openvino_device": "GPU"}')


HELP = {  # each option as --help shows it, and what it says of it
    "--probe": "print host facts and available runtimes as JSON, then exit",
    "--max-seconds MAX_SECONDS": "keep timing until the intervals are narrow enough, or this",
    "--interval-width INTERVAL_WIDTH": "the 95% intervals of p50 and p90, relative to each, "
                                       "at most",
    "--frames FRAMES": "an .npz of encoded frames: time them end to end too (decode, "
                       "pre-process, infer, post-process; needs Pillow)",
    "--expect-sha256 PATH=HEX": "refuse to run unless PATH has this sha256 (repeatable)",
    "--accelerators ACCELERATORS": "JSON: onnxruntime_providers (list), openvino_device, "
                                   "tflite_delegate",
}


@pytest.mark.parametrize("option", sorted(HELP))
def test_help_explains_each_documented_option(capsys, option: str) -> None:
    with pytest.raises(SystemExit) as exited:
        harness.parse_args(["--help"])
    assert exited.value.code == 0
    said = " ".join(capsys.readouterr().out.split())  # argparse wraps the lines
    # The whole text, neither more nor less: the next option or the end follows it.
    assert re.search(rf"{re.escape(option)} {re.escape(HELP[option])}(?= -|$)", said), said


@pytest.mark.parametrize("dropped", ["--artifact", "--runtime", "--data", "--spec", "--out"])
def test_each_required_argument_is_named_when_missing(capsys, dropped: str) -> None:
    at = REQUIRED.index(dropped)
    with pytest.raises(SystemExit) as exited:
        harness.parse_args(REQUIRED[:at] + REQUIRED[at + 2:])
    assert exited.value.code == 2
    assert capsys.readouterr().err.rstrip().endswith(
        f"error: the following arguments are required: {dropped}")
    assert harness.parse_args(["--probe"]).probe  # a probe needs none of them


def _main_in_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, outcome: Any,
                     extra: list[str] | None = None) -> tuple[int, dict[str, Any], list[Any]]:
    """main() with measure replaced by ``outcome`` (a result dict, or an exception)."""
    from tasks.device import measure as measure_module

    measured: list[Any] = []

    def measure(args: Any) -> dict[str, Any]:
        measured.append(args)
        if isinstance(outcome, BaseException):
            raise outcome
        return dict(outcome)

    monkeypatch.setattr(measure_module, "measure", measure)
    monkeypatch.setattr(harness, "host_facts", lambda: {"arch": "test"})
    out = tmp_path / "result.json"
    args = [*REQUIRED[:-1], str(out), *(extra or [])]
    code = harness.main(args)
    return code, read_result(out), measured


def test_main_writes_an_ok_result_with_what_was_measured(tmp_path: Path, monkeypatch) -> None:
    code, result, measured = _main_in_process(tmp_path, monkeypatch, {"accuracy": 0.75})
    assert code == 0 and len(measured) == 1 and measured[0].runtime == "onnxruntime"
    assert result["started_at"] <= result["finished_at"]
    assert {key: value for key, value in result.items()
            if key not in {"started_at", "finished_at"}} == {
        "protocol": 1, "runtime_requested": "onnxruntime", "host": {"arch": "test"},
        "accuracy": 0.75, "status": "ok", "error": None}


def test_a_precision_the_device_lacks_is_skipped_not_failed(tmp_path: Path, monkeypatch) -> None:
    code, result, _ = _main_in_process(
        tmp_path, monkeypatch, runtimes.PrecisionUnavailable("CPU lacks native bf16"))
    assert code == 0
    assert (result["status"], result["error"]) == ("skipped", "CPU lacks native bf16")
    assert "traceback" not in result and "finished_at" not in result


def test_a_failure_is_a_failed_result_with_its_type_and_traceback(tmp_path: Path,
                                                                  monkeypatch) -> None:
    code, result, _ = _main_in_process(tmp_path, monkeypatch, ValueError("bad spec "))
    assert code == 1
    assert (result["status"], result["error"]) == ("failed", "ValueError: bad spec")
    assert "Traceback" in result["traceback"] and "bad spec" in result["traceback"]
    assert result["host"] == {"arch": "test"} and "finished_at" not in result


def test_an_interrupt_is_not_a_result(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(KeyboardInterrupt):
        _main_in_process(tmp_path, monkeypatch, KeyboardInterrupt())
    assert not (tmp_path / "result.json").exists()


def test_a_changed_input_fails_before_anything_is_measured(tmp_path: Path, monkeypatch) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(b"model")
    code, result, measured = _main_in_process(
        tmp_path, monkeypatch, {"accuracy": 1.0}, ["--expect-sha256", f"{model}={'0' * 64}"])
    assert (code, result["status"], measured) == (1, "failed", [])
    assert result["error"].startswith("RuntimeError: sha256 mismatch for model.onnx")
    assert "started_at" not in result


def test_probe_in_process_prints_the_board(monkeypatch, capsys) -> None:
    numbers = {("/proc/meminfo", "MemTotal:"): 8039524.0,
               ("/proc/meminfo", "MemAvailable:"): 6512344.0,
               ("/sys/class/thermal/thermal_zone0/temp", ""): 48312.0}
    monkeypatch.setattr(harness, "first_number", lambda path, prefix="": numbers.get((path, prefix)))
    monkeypatch.setattr(harness, "host_facts", lambda: {"arch": "aarch64"})
    monkeypatch.setattr(harness, "throttling", lambda: {"cpu_mhz": 2400})
    monkeypatch.setattr(harness, "available", lambda: {"tflite": "ai_edge_litert",
                                                        "onnxruntime": "onnxruntime"})
    monkeypatch.setattr(harness, "module_version", lambda module: f"{module}-1")
    monkeypatch.setattr(harness, "find_meters", lambda: [])  # whatever this machine has
    assert harness.main(["--probe"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "protocol": 1,
        "host": {"arch": "aarch64", "memory_mb": 7851, "memory_available_mb": 6360,
                 "temperature_c": 48.312, "cpu_mhz": 2400},
        "runtimes": {"tflite": "ai_edge_litert", "onnxruntime": "onnxruntime"},
        "runtime_versions": {"tflite": "ai_edge_litert-1", "onnxruntime": "onnxruntime-1"},
        "energy_meters": []}
    numbers.clear()  # a board that exposes none of them
    assert harness.probe()["host"] == {"arch": "aarch64", "memory_mb": None,
                                       "memory_available_mb": None, "temperature_c": None,
                                       "cpu_mhz": 2400}


def test_probe_lists_the_boards_energy_meters(monkeypatch) -> None:
    from tasks.device import energy

    monkeypatch.setattr(harness, "find_meters",
                        lambda: [energy.command_meter("usbmeter", "J", period_s=0.5)])
    assert harness.probe()["energy_meters"] == [
        {"name": "command", "kind": "command", "resolution": 1000.0, "resolution_unit": "mJ",
         "update_period_s": 0.5, "period_assumed": False, "counter": True}]
