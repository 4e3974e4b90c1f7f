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
