"""The benchmark step on this machine (the ``local`` transport, through Invoke, the code
path an SSH board takes) with the tiny project's real variants and a quick protocol.
Failure modes: runtimes the device lacks, an unusable device, a harness that hangs,
garbage from the device, a run that crashes, hostile arguments."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tasks.benchmark import DeviceRun, benchmark_device
from tasks.core import device_code
from tasks.config import BenchmarkParams, EndToEndParams, LocalDevice
from tasks.core.errors import StepError
from tasks.core.files import read_json, sha256_file
from tasks.farm.protocol import MAX_RESULT_BYTES, parse_untrusted_json, validate_harness_result
from tasks.farm.transports import LocalConnection, quote_command
from tests.helpers import (assert_device_tidy, flip_last_byte, index_entries,
                           processes_mentioning, records, scripted_python, with_field)

QUICK = BenchmarkParams(warmup_runs=2, warmup_seconds=0.0, runs=10, seconds=0.01,
                        max_seconds=0.05, accuracy_samples=50, timeout_seconds=60)
VARIANTS = ("tflite-fp32", "onnx-fp32", "openvino-fp32")


def bench(tiny_project: Any, device: LocalDevice, out_dir: Path,
          params: BenchmarkParams = QUICK, variants_dir: Path | None = None) -> DeviceRun:
    return benchmark_device("local", device, params,
                            variants_dir or tiny_project.layout.variants,
                            tiny_project.layout.prepared, out_dir)


# --------------------------------------------------------------------------- happy path


def test_end_to_end_pushes_frames_and_preprocess_and_every_variant_is_timed_so(
        tiny_project: Any, tmp_path: Path) -> None:
    params = QUICK.model_copy(update={"end_to_end": EndToEndParams(frame_size=(120, 160),
                                                                   frames=12)})
    workdir = tmp_path / "dev"
    run = bench(tiny_project, LocalDevice(workdir=workdir), tmp_path / "results", params)
    for name, record in records(run).items():
        timed = record["harness"]["end_to_end"]
        assert timed["frames"] == {"height": 120, "width": 160, "encoding": "jpeg",
                                   "fit": "squash", "count": 12, "mean_bytes": pytest.approx(
                                       timed["frames"]["mean_bytes"])}, name
        assert timed["accuracy_samples"] == 12 and timed["stages_ms"]["decode"] > 0
    # Pushed to the device's run folder, never left among the results.
    run_dir = Path(run.remote_run_dir)
    assert (run_dir / device_code.SHIPPED_PACKAGE / "preprocess.py").read_bytes() == \
        device_code.PREPROCESS_PATH.read_bytes()
    assert (run_dir / "frames.npz").is_file()
    assert sorted(path.name for path in (tmp_path / "results").iterdir()) == sorted(
        f"{v}{suffix}" for v in VARIANTS for suffix in (".json", ".latencies.npz"))


@pytest.fixture(scope="module")
def local_run(tiny_project: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[DeviceRun, Path]:
    root = tmp_path_factory.mktemp("bench")
    workdir = root / "dev"
    run = bench(tiny_project, LocalDevice(workdir=workdir), root / "results" / "local")
    return run, root


def test_one_ok_result_per_variant_with_identity(tiny_project: Any,
                                                 local_run: tuple[DeviceRun, Path]) -> None:
    run, root = local_run
    out_dir = root / "results" / "local"
    assert run.device == "local"
    assert sorted(path.name for path in out_dir.iterdir()) == sorted(
        f"{v}{suffix}" for v in VARIANTS for suffix in (".json", ".latencies.npz"))
    assert sorted(run.results) == sorted(out_dir.glob("*.json"))
    index = {entry["name"]: entry for entry in index_entries(tiny_project.layout.variants)}
    for name, record in records(run).items():
        entry = index[name]
        assert record["status"] == "ok", record["error"]
        assert record["error"] is None
        assert record["variant"] == name and record["device"] == "local"
        assert (record["format"], record["precision"], record["source"], record["runtime"]) == (
            entry["format"], entry["precision"], entry["source"], entry["runtime"])
        assert record["size_bytes"] == entry["bytes"] > 0
        # The identity is the artifact's: its hash matches the file that was benchmarked.
        assert record["sha256"] == entry["sha256"] == sha256_file(
            tiny_project.layout.variants / entry["file"])
        assert record["threads"] == 1
        assert record["device_facts"] == {**run.probe["host"], **{
            f"runtime.{name}": version for name, version in run.probe["runtime_versions"].items()}}
        harness = validate_harness_result(sent(run, name))
        assert harness["status"] == "ok"
        assert harness["runtime"]["requested"] == entry["runtime"]
        # What the variant declares, what the harness asked for, what the runtime ran.
        assert record["declared_execution_precision"] == entry["spec"]["execution_precision"] == "f32"
        assert harness["runtime"]["requested_precision"] == "f32"
        assert harness["runtime"]["execution_precision"] == "f32"
        assert harness["runs"] >= QUICK.runs
        assert harness["accuracy_samples"] == QUICK.accuracy_samples
        assert 0.1 < harness["accuracy"] <= 1.0
        latency = harness["latency_ms"]
        assert latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
        # Every timed latency is kept beside the result: the statistics come from them.
        assert record["harness"]["latencies"] == {"file": f"{name}.latencies.npz",
                                                  "count": harness["runs"]}
        with np.load(out_dir / f"{name}.latencies.npz") as kept:
            raw_ms = kept["latency_ns"] / 1e6
        assert raw_ms.size == harness["runs"]
        for q in (50, 90, 99):
            assert latency[f"p{q}"] == pytest.approx(np.percentile(raw_ms, q), rel=1e-9)
        low, high = harness["latency_ci95_ms"]["p50"]
        assert low <= latency["p50"] <= high
        assert harness["sizing"]["stopped_by"] in ("interval width", "time cap")
        assert set(harness["conditions"]) == {"before", "after", "other_busy_cpus", "changes"}


def test_probe_facts_and_cleanup(local_run: tuple[DeviceRun, Path]) -> None:
    run, root = local_run
    # Every runtime but the Edge TPU, whose delegate library is not on this machine.
    assert set(run.probe["runtimes"]) == {"tflite", "onnxruntime", "openvino", "tflm"}
    assert run.probe["host"]["cores"] == os.cpu_count()
    assert_device_tidy(root / "dev")
    # No staging folder of the atomic output is left beside the results.
    assert [path.name for path in (root / "results").iterdir()] == ["local"]


def test_the_devices_threads_and_the_protocol_options_reach_the_harness_and_runtimes(
        tiny_project: Any, tmp_path: Path) -> None:
    """threads: 2 (the default 1 is what a dropped setting would give too) is the
    harness's --threads, the threads it reports, what ONNX Runtime and OpenVINO say they
    run with, and the record's. LiteRT cannot say (tests/tasks/device checks it is given
    them); OpenVINO runs at most one thread per core."""
    # The device's interpreter writes each harness command's arguments beside its result.
    python = scripted_python(tmp_path, f'printf "%s\\n" "$@" > "$out.argv"\n'
                                       f'exec "{sys.executable}" "$@"')
    # Every protocol option off the harness's own default too (--interval-width 0.05 is
    # QUICK's and the harness's): each flag carries its parameter, and the harness's
    # sizing reports the width and cap it ran under.
    params = QUICK.model_copy(update={"interval_width": 0.2})
    run = bench(tiny_project, LocalDevice(workdir=tmp_path / "dev", threads=2, python=python),
                tmp_path / "results", params)
    reported = {"tflite-fp32": None, "onnx-fp32": 2, "openvino-fp32": min(2, os.cpu_count() or 1)}
    flags = {"--warmup-runs": "2", "--warmup-seconds": "0.0", "--runs": "10",
             "--seconds": "0.01", "--max-seconds": "0.05", "--interval-width": "0.2",
             "--accuracy-samples": "50"}
    for name, record in records(run).items():
        assert record["status"] == "ok", record["error"]
        argv = (Path(run.remote_run_dir) / name / "result.json.argv").read_text().splitlines()
        assert argv[argv.index("--threads") + 1] == "2"
        assert {flag: argv[argv.index(flag) + 1] for flag in flags} == flags, name
        sizing = record["harness"]["sizing"]
        assert (sizing["relative_width"], sizing["max_seconds"]) == (0.2, 0.05), name
        assert (record["threads"], record["harness"]["threads"]) == (2, 2)
        assert record["harness"]["runtime"]["threads"] == reported[name], name


def test_old_run_folders_are_removed_keeping_the_newest(tiny_project: Any, tmp_path: Path) -> None:
    from tasks.farm.push import RUN_NAME

    workdir = tmp_path / "dev"
    device = LocalDevice(workdir=workdir, runtimes=["onnxruntime"], keep_runs=2)
    (workdir / "runs").mkdir(parents=True, mode=0o700)
    (workdir / "runs" / "notes").mkdir(mode=0o700)  # not a run folder: left alone
    run_dirs = []
    for n in range(3):
        run_dirs.append(bench(tiny_project, device, tmp_path / f"results{n}").remote_run_dir)
        # Finished runs age; a run still in progress would have touched its folder.
        hours_ago = time.time() - 7200
        os.utime(run_dirs[-1], (hours_ago, hours_ago))
    kept = sorted(path.name for path in (workdir / "runs").iterdir() if RUN_NAME.match(path.name))
    assert kept == sorted(Path(run_dir).name for run_dir in run_dirs[1:])
    assert (workdir / "runs" / "notes").is_dir()
    # A kept run holds what ran: the harness, the inputs, the artifact, its result.
    newest = Path(run_dirs[-1])
    assert read_json(newest / "onnx-fp32" / "result.json")["status"] == "ok"
    assert {"harness.py", "test.npz", "onnx-fp32"} <= {path.name for path in newest.iterdir()}


def test_accelerator_hints_reach_the_runtime(tiny_project: Any, tmp_path: Path) -> None:
    from tasks.config import Accelerators

    hints = Accelerators(onnxruntime_providers=["CPUExecutionProvider"], openvino_device="CPU")
    device = LocalDevice(workdir=tmp_path / "dev", runtimes=["onnxruntime", "openvino"],
                         accelerators=hints)
    result = records(bench(tiny_project, device, tmp_path / "results"))
    assert result["onnx-fp32"]["harness"]["runtime"]["accelerator"] == "CPUExecutionProvider"
    assert result["openvino-fp32"]["harness"]["runtime"]["accelerator"] == "CPU"


def test_an_accelerator_the_device_lacks_fails_with_reason(tiny_project: Any, tmp_path: Path) -> None:
    from tasks.config import Accelerators

    hints = Accelerators(onnxruntime_providers=["CUDAExecutionProvider"],
                         tflite_delegate=str(tmp_path / "libnowhere.so"))
    device = LocalDevice(workdir=tmp_path / "dev", runtimes=["onnxruntime", "tflite"],
                         accelerators=hints)
    result = records(bench(tiny_project, device, tmp_path / "results"))
    assert result["onnx-fp32"]["status"] == "failed"
    assert "CUDAExecutionProvider not available" in result["onnx-fp32"]["error"]
    assert result["tflite-fp32"]["status"] == "failed"
    assert "libnowhere.so" in result["tflite-fp32"]["error"]


# --------------------------------------------------------------------------- device failures


def test_runtimes_filter_skips_other_variants(tiny_project: Any, tmp_path: Path) -> None:
    device = LocalDevice(workdir=tmp_path / "dev", runtimes=["onnxruntime"])
    run = bench(tiny_project, device, tmp_path / "results" / "local")
    result = records(run)
    assert set(result) == set(VARIANTS)
    assert result["onnx-fp32"]["status"] == "ok"
    for name, runtime in (("tflite-fp32", "tflite"), ("openvino-fp32", "openvino")):
        assert result[name]["status"] == "skipped"
        assert f"runtime {runtime!r}" in result[name]["error"]
        assert "farm.yaml" in result[name]["error"]
        assert "harness" not in result[name]
        # A skipped record still carries the variant's identity for the report.
        assert result[name]["size_bytes"] > 0 and len(result[name]["sha256"]) == 64
    assert_device_tidy(tmp_path / "dev")


def test_an_emulated_boards_results_say_so_and_a_physical_boards_do_not(
        tiny_project: Any, tmp_path: Path) -> None:
    """Issue 28: every result of a board farm.yaml says is emulated (measured or skipped)
    records ``emulated`` and how, from the farm entry; a physical board's has neither."""
    device = LocalDevice(workdir=tmp_path / "dev", runtimes=["onnxruntime"],
                         emulation="qemu-user")
    result = records(bench(tiny_project, device, tmp_path / "results" / "emulated"))
    assert result["onnx-fp32"]["status"] == "ok" and result["tflite-fp32"]["status"] == "skipped"
    assert {name: (record["emulated"], record["emulation"])
            for name, record in result.items()} == {name: (True, "qemu-user") for name in VARIANTS}
    physical = records(bench(tiny_project, LocalDevice(workdir=tmp_path / "dev2",
                                                       runtimes=["onnxruntime"]),
                             tmp_path / "results" / "physical"))
    assert not any({"emulated", "emulation"} & set(record) for record in physical.values())


def test_missing_interpreter_fails_every_variant_without_raising(tiny_project: Any,
                                                                tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "python3"
    device = LocalDevice(workdir=tmp_path / "dev", python=str(missing))
    run = bench(tiny_project, device, tmp_path / "results" / "local")
    assert run.probe == {}
    result = records(run)
    assert set(result) == set(VARIANTS)
    for record in result.values():
        assert record["status"] == "failed"
        assert record["error"] == (f"device not usable: RuntimeError: interpreter "
                                   f"{str(missing)!r} (or coreutils `timeout`) not found on "
                                   "the device")
        assert "harness" not in record
        assert record["device_facts"] == {}
    assert_device_tidy(tmp_path / "dev")


def test_harness_past_timeout_fails_with_reason(tiny_project: Any, tmp_path: Path) -> None:
    # A 30 s warm-up: the timed runs stop at the harness's run cap (100000 runs of a tiny
    # model take about 2 s), a warm-up has no such cap.
    slow = QUICK.model_copy(update={"warmup_seconds": 30.0, "timeout_seconds": 3.0})
    workdir = tmp_path / "dev"
    device = LocalDevice(workdir=workdir, runtimes=["onnxruntime"])
    run = bench(tiny_project, device, tmp_path / "results" / "local", params=slow)
    result = records(run)
    assert result["onnx-fp32"]["status"] == "failed"
    assert result["onnx-fp32"]["error"] == "harness did not finish within timeout_seconds=3.0"
    assert "harness" not in result["onnx-fp32"]
    assert {result[name]["status"] for name in ("tflite-fp32", "openvino-fp32")} == {"skipped"}
    assert_device_tidy(workdir)
    assert processes_mentioning(str(workdir)) == [], "the timed-out harness is still running"


def test_one_hanging_variant_does_not_stop_the_others(tiny_project: Any, tmp_path: Path) -> None:
    # A device whose interpreter hangs for one artifact only (a stuck driver, say).
    python = tmp_path / "device-python"
    python.write_text(
        "#!/bin/sh\n"
        f'case "$*" in *tflite-fp32*) exec "{sys.executable}" -c "import time; time.sleep(60)" "$@";; esac\n'
        f'exec "{sys.executable}" "$@"\n', encoding="utf-8")
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    workdir = tmp_path / "dev"
    params = QUICK.model_copy(update={"timeout_seconds": 3.0})
    device = LocalDevice(workdir=workdir, python=str(python), runtimes=["tflite", "onnxruntime"])
    run = bench(tiny_project, device, tmp_path / "results" / "local", params=params)
    result = records(run)
    # tflite-fp32 comes first in the index: the variant after the hang still runs.
    assert [entry["name"] for entry in index_entries(tiny_project.layout.variants)][:2] == [
        "tflite-fp32", "onnx-fp32"]
    assert result["tflite-fp32"]["status"] == "failed"
    assert "did not finish" in result["tflite-fp32"]["error"]
    assert result["onnx-fp32"]["status"] == "ok", result["onnx-fp32"]["error"]
    assert result["onnx-fp32"]["harness"]["runs"] >= QUICK.runs
    assert result["openvino-fp32"]["status"] == "skipped"
    assert_device_tidy(workdir)
    assert processes_mentioning(str(workdir)) == []


@pytest.mark.parametrize("body, reason", [
    # A device that answers with far more than a result: only the limit is ever read.
    ('head -c 50000000 /dev/zero > "$out"', "more than"),
    ('echo "not json" > "$out"', "no valid harness result"),
    ('kill -SEGV $$', "killed by signal 11"),
    ('echo \'{"status": "ok", "latency_ms": "fast"}\' > "$out"', "latency_ms"),
])
def test_a_hostile_or_crashing_device_gives_a_failed_result(tiny_project: Any, tmp_path: Path,
                                                            body: str, reason: str) -> None:
    device = LocalDevice(workdir=tmp_path / "dev", runtimes=["onnxruntime"],
                         python=scripted_python(tmp_path, body))
    result = records(bench(tiny_project, device, tmp_path / "results"))["onnx-fp32"]
    assert result["status"] == "failed" and reason in result["error"], result["error"]
    assert "harness" not in result


def test_what_a_device_prints_stays_on_the_device(tiny_project: Any, tmp_path: Path) -> None:
    """A harness that floods its output: the flood goes to files on the device, and only
    a bounded tail of the log comes back as the reason."""
    body = 'head -c 20000000 /dev/zero; yes "driver panic" | head -n 100000 >&2; exit 1'
    device = LocalDevice(workdir=tmp_path / "dev", runtimes=["onnxruntime"],
                         python=scripted_python(tmp_path, body))
    run = bench(tiny_project, device, tmp_path / "results")
    result = records(run)["onnx-fp32"]
    assert result["status"] == "failed" and result["error"].endswith("driver panic"), result["error"]
    assert len(result["error"]) < 1000
    kept = Path(run.remote_run_dir) / "onnx-fp32"
    assert (kept / "harness.out").stat().st_size == 20_000_000
    assert (kept / "harness.log").stat().st_size > 1_000_000


def corrupting(name: str) -> Callable[..., LocalConnection]:
    """``connect_to`` for a device whose copy of each file called ``name`` changes once
    pushed (a flaky link, a failing card). A variant's files are not checked on their
    way (no shell per variant): the harness checks them before loading anything."""

    class Corrupts(LocalConnection):
        def put(self, local: Path, remote: str) -> None:
            super().put(local, remote)
            if Path(remote).name == name:
                flip_last_byte(remote)

    return lambda target, device_name: Corrupts()


def test_an_artifact_corrupted_on_its_way_is_never_benchmarked(tiny_project: Any,
                                                                tmp_path: Path) -> None:
    device = LocalDevice(workdir=tmp_path / "dev", runtimes=["onnxruntime", "tflite"])
    run = benchmark_device("local", device, QUICK, tiny_project.layout.variants,
                           tiny_project.layout.prepared, tmp_path / "results",
                           connect_to=corrupting("model.onnx"))
    result = records(run)
    assert result["onnx-fp32"]["status"] == "failed"
    assert "sha256 mismatch for model.onnx" in result["onnx-fp32"]["error"]
    assert result["tflite-fp32"]["status"] == "ok"


def test_every_file_of_a_variant_is_checked_not_only_the_one_loaded(tiny_project: Any,
                                                                   tmp_path: Path) -> None:
    """An OpenVINO IR is two files: the graph it loads (model.xml) and the weights the
    runtime reads beside it (model.bin). Weights changed on their way still load, and
    would be measured; the harness refuses them, naming the file."""
    entry = next(entry for entry in index_entries(tiny_project.layout.variants)
                 if entry["name"] == "openvino-fp32")
    assert [Path(file["path"]).name for file in entry["files"]] == ["model.xml", "model.bin"]
    device = LocalDevice(workdir=tmp_path / "dev", runtimes=["openvino"])
    run = benchmark_device("local", device, QUICK, tiny_project.layout.variants,
                           tiny_project.layout.prepared, tmp_path / "results",
                           connect_to=corrupting("model.bin"))
    record = records(run)["openvino-fp32"]
    assert record["status"] == "failed"
    assert record["error"].startswith("RuntimeError: sha256 mismatch for model.bin: the file "
                                      "on the device is not the one deployed ("), record["error"]
    assert "latency_ms" not in record["harness"] and "accuracy" not in record["harness"]


def test_corrupted_test_inputs_make_the_device_unusable(tiny_project: Any, tmp_path: Path) -> None:
    class CorruptsEverything(LocalConnection):
        def put(self, local: Path, remote: str) -> None:
            super().put(local, remote)
            with open(remote, "r+b") as handle:
                handle.write(b"\0")

    device = LocalDevice(workdir=tmp_path / "dev", runtimes=["onnxruntime"])
    run = benchmark_device("local", device, QUICK, tiny_project.layout.variants,
                           tiny_project.layout.prepared, tmp_path / "results",
                           connect_to=lambda target, name: CorruptsEverything())
    error = records(run)["onnx-fp32"]["error"]
    assert error.startswith("device not usable: DeployError: push to the device failed: "
                            "sha256 mismatch on the device for"), error


def test_failing_run_keeps_earlier_results(tiny_project: Any, tmp_path: Path) -> None:
    out_dir = tmp_path / "results" / "local"
    out_dir.mkdir(parents=True)
    earlier = out_dir / "onnx-fp32.json"
    earlier.write_text('{"status": "ok", "earlier": true}\n', encoding="utf-8")
    # A variants folder whose index lists a file that is gone: pushing it raises.
    variants = tmp_path / "variants"
    shutil.copytree(tiny_project.layout.variants, variants)
    (variants / "onnx-fp32" / "model.onnx").unlink()
    workdir = tmp_path / "dev"
    with pytest.raises(StepError, match="onnx-fp32/model.onnx is missing: run the convert step"):
        bench(tiny_project, LocalDevice(workdir=workdir), out_dir, variants_dir=variants)
    assert [path.name for path in out_dir.iterdir()] == ["onnx-fp32.json"]
    assert read_json(earlier) == {"status": "ok", "earlier": True}
    assert [path.name for path in out_dir.parent.iterdir()] == ["local"], "staging left behind"
    assert not workdir.exists(), "nothing was sent to the device"


# --------------------------------------------------------------------------- untrusted data


def test_parse_untrusted_json_accepts_an_object_up_to_the_limit() -> None:
    prefix, suffix = b'{"pad": "', b'"}'
    exact = prefix + b"x" * (MAX_RESULT_BYTES - len(prefix) - len(suffix)) + suffix
    assert len(exact) == MAX_RESULT_BYTES
    assert len(parse_untrusted_json(exact)["pad"]) == MAX_RESULT_BYTES - len(prefix) - len(suffix)


def test_parse_untrusted_json_rejects_oversized() -> None:
    prefix, suffix = b'{"pad": "', b'"}'
    too_big = prefix + b"x" * (MAX_RESULT_BYTES - len(prefix) - len(suffix) + 1) + suffix
    with pytest.raises(ValueError, match=f"{MAX_RESULT_BYTES + 1} bytes, more than {MAX_RESULT_BYTES}"):
        parse_untrusted_json(too_big)


@pytest.mark.parametrize("raw", [b"[1, 2]", b'"ok"', b"null", b"42"])
def test_parse_untrusted_json_rejects_non_objects(raw: bytes) -> None:
    with pytest.raises(ValueError, match="not an object"):
        parse_untrusted_json(raw)


@pytest.mark.parametrize("raw", [b"{not json", b"\xff\xfe{}"])
def test_parse_untrusted_json_rejects_garbage(raw: bytes) -> None:
    with pytest.raises(ValueError):
        parse_untrusted_json(raw)


device_latency = device_code.load("latency")


def sent(run: DeviceRun, name: str) -> dict[str, Any]:
    """A stored result's harness document as the device sent it: its raw latencies
    encoded again from the file the benchmark step moved them to."""
    harness = json.loads(json.dumps(records(run)[name]["harness"]))
    path = run.results[0].parent / harness["latencies"]["file"]
    with np.load(path) as kept:
        harness["latencies"] = device_latency.encode_latencies(kept["latency_ns"].tolist())
    return harness


def test_validate_harness_result(local_run: tuple[DeviceRun, Path]) -> None:
    run, _ = local_run
    good = sent(run, "onnx-fp32")
    assert validate_harness_result(json.loads(json.dumps(good))) == good
    # A failed result needs no measurements.
    assert validate_harness_result({"status": "failed", "error": "boom"})["status"] == "failed"
    skipped = {"status": "skipped", "error": "CPU lacks native bf16"}
    assert validate_harness_result(skipped) == skipped

    for status in ("weird", None, "OK"):
        with pytest.raises(ValueError, match="harness result has status"):
            validate_harness_result({**good, "status": status})
    without_latency = {key: value for key, value in good.items() if key != "latency_ms"}
    with pytest.raises(ValueError, match="'latency_ms' is missing"):
        validate_harness_result(without_latency)
    partial = {**good, "latency_ms": {k: v for k, v in good["latency_ms"].items() if k != "p90"}}
    with pytest.raises(ValueError, match=r"latency_ms\.p90 is missing"):
        validate_harness_result(partial)
    with pytest.raises(ValueError, match="'accuracy' is missing or not a float"):
        validate_harness_result({**good, "accuracy": "0.9"})
    with pytest.raises(ValueError, match="'throughput_fps'"):
        validate_harness_result({**good, "throughput_fps": True})
    # A whole number is a valid float measurement.
    assert validate_harness_result({**good, "accuracy": 1})["accuracy"] == 1



def _blob(data: bytes, **changes: Any) -> dict[str, Any]:
    import base64
    import zlib

    return {"encoding": "int64-le-ns+zlib+base64",
            "data": base64.b64encode(zlib.compress(data)).decode(), **changes}


def test_the_harness_and_the_protocol_name_one_latency_encoding() -> None:
    from tasks.farm.protocol import RAW_LATENCY_ENCODING

    assert device_latency.RAW_ENCODING == RAW_LATENCY_ENCODING


@pytest.mark.parametrize("latencies, reason", [
    ("not an object", "harness result field 'latencies' is not int64-le-ns+zlib+base64 data"),
    ({"encoding": "float32", "data": ""},
     "harness result field 'latencies' is not int64-le-ns+zlib+base64 data"),
    ({"encoding": "int64-le-ns+zlib+base64", "data": "@@@"},
     "harness result field 'latencies' does not decode"),
    ("short", "harness result has 3 raw latencies for 5 runs"),
    ("bomb", "harness result has 6 raw latencies for 5 runs"),  # cut at 8 bytes more
    ("negative", "harness result has a negative raw latency"),
])
def test_validate_harness_result_refuses_raw_latencies_that_do_not_hold(
        local_run: tuple[DeviceRun, Path], latencies: Any, reason: str) -> None:
    good = {**sent(local_run[0], "onnx-fp32"), "runs": 5}
    blobs = {"short": _blob(np.arange(3, dtype="<i8").tobytes()),
             "bomb": _blob(bytes(80_000_000)),
             "negative": _blob(np.array([5, 4, -1, 2, 1], dtype="<i8").tobytes())}
    with pytest.raises(ValueError, match=re.escape(reason)):
        validate_harness_result({**good, "latencies": blobs.get(latencies, latencies)
                                 if isinstance(latencies, str) else latencies})
    five = _blob(np.array([5, 4, 3, 2, 1], dtype="<i8").tobytes())
    assert validate_harness_result({**_measured(good, [5, 4, 3, 2, 1]),
                                    "latencies": five})["runs"] == 5


def _measured(document: dict[str, Any], latencies_ns: list[int]) -> dict[str, Any]:
    """A copy of a harness result as if it had timed ``latencies_ns``: their statistics
    (as the harness computes them) and raw latencies."""
    return {**document, **device_latency.latency_summary([ns / 1e6 for ns in latencies_ns]),
            "latencies": device_latency.encode_latencies(latencies_ns)}


def test_validate_harness_result_refuses_more_runs_than_the_harness_times(
        local_run: tuple[DeviceRun, Path]) -> None:
    """A claimed run count bounds how far the raw latencies may inflate: never past the
    harness's own cap, whatever a device says."""
    good = sent(local_run[0], "onnx-fp32")
    with pytest.raises(ValueError, match=r"device returned runs 100001 outside \[1, 100000\]"):
        validate_harness_result({**good, "runs": 100_001})


@pytest.mark.parametrize("conditions", ["hot", {"changes": "clock"}, {"changes": [1]},
                                        {"changes": ["x"] * 21}, {"before": {}}])
def test_validate_harness_result_refuses_conditions_without_a_short_list_of_changes(
        local_run: tuple[DeviceRun, Path], conditions: Any) -> None:
    good = sent(local_run[0], "onnx-fp32")
    with pytest.raises(ValueError, match="'conditions' has no 'changes' list of at most 20 texts"):
        validate_harness_result({**good, "conditions": conditions})
    assert validate_harness_result({**good, "conditions": {"changes": ["clock changed"]}})


def test_validate_harness_result_refuses_intervals_of_other_percentiles(
        local_run: tuple[DeviceRun, Path]) -> None:
    good = sent(local_run[0], "onnx-fp32")
    with pytest.raises(ValueError, match=r"'latency_ci95_ms' has \['p75\)'\] "
                                         r"\(allowed: p50, p90\)"):
        validate_harness_result(with_field(good, "latency_ci95_ms.p75)", [1.0, 2.0]))


@pytest.mark.parametrize("bounds", [[2.0, 1.0], [-1.0, 1.0], [1.0], "1..2", [True, 2.0]])
def test_validate_harness_result_refuses_an_interval_that_is_not_one(
        local_run: tuple[DeviceRun, Path], bounds: Any) -> None:
    good = sent(local_run[0], "onnx-fp32")
    with pytest.raises(ValueError, match=r"latency_ci95_ms\.p90 .*not \[low, high\]"):
        validate_harness_result(with_field(good, "latency_ci95_ms.p90", bounds))
    # Null where the runs are too few for an interval (fewer than 36 for p90).
    few = _measured(good, [1_000_000 + step for step in range(10)])
    assert few["latency_ci95_ms"]["p90"] is None and validate_harness_result(few)


@pytest.mark.parametrize("field, value, reason", [
    ("accuracy", 7.5, "device returned accuracy 7.5 outside [0, 1]"),
    ("accuracy", -0.1, "device returned accuracy -0.1 outside [0, 1]"),
    ("throughput_fps", 0.0, "device returned throughput_fps 0.0 outside (0, inf)"),
    ("peak_rss_mb", -100, "device returned peak_rss_mb -100 outside [0, inf)"),
    ("load_ms", -1.0, "device returned load_ms -1.0 outside [0, inf)"),
    ("first_inference_ms", -0.5, "device returned first_inference_ms -0.5 outside [0, inf)"),
    ("runs", 0, "device returned runs 0 outside [1, 100000]"),
    ("accuracy_samples", 0, "device returned accuracy_samples 0 outside [1, inf)"),
    ("latency_ms.p50", -5.0, "device returned latency_ms.p50 -5.0 outside [0, inf)"),
    ("latency_ms.mean", -1.0, "device returned latency_ms.mean -1.0 outside [0, inf)"),
    ("latency_ms.std", -1.0, "device returned latency_ms.std -1.0 outside [0, inf)"),
    ("runs", 10.5, "harness result field 'runs' is missing or not an int"),
    ("accuracy_samples", None, "harness result field 'accuracy_samples' is missing or not an int"),
    # A JSON integer no float holds: select's float() would raise OverflowError later.
    ("latency_ms.max", 10 ** 400, f"device returned latency_ms.max {str(10 ** 400)[:20]}... "
                                  "outside [0, inf)"),
    ("peak_rss_mb", -10 ** 400, f"device returned peak_rss_mb {str(-10 ** 400)[:20]}... "
                                "outside [0, inf)"),
])
def test_validate_harness_result_refuses_numbers_out_of_range(
        local_run: tuple[DeviceRun, Path], field: str, value: Any, reason: str) -> None:
    good = sent(local_run[0], "onnx-fp32")
    with pytest.raises(ValueError) as caught:
        validate_harness_result(with_field(good, field, value))
    assert str(caught.value) == reason


def test_validate_harness_result_refuses_latencies_out_of_order(
        local_run: tuple[DeviceRun, Path]) -> None:
    good = sent(local_run[0], "onnx-fp32")
    tied = _measured(good, [1_000_000] * 10)
    assert tied["latency_ms"]["p50"] == tied["latency_ms"]["p90"]
    assert validate_harness_result(tied)  # ties are fine
    swapped = with_field(with_field(good, "latency_ms.p90", 9.0), "latency_ms.p99", 3.0)
    swapped = with_field(with_field(swapped, "latency_ms.min", 1.0), "latency_ms.max", 10.0)
    swapped = with_field(swapped, "latency_ms.p50", 2.0)
    with pytest.raises(ValueError) as caught:
        validate_harness_result(swapped)
    assert str(caught.value) == ("device returned latency_ms out of order (min 1.0, p50 2.0, "
                                 "p90 9.0, p99 3.0, max 10.0): min <= p50 <= p90 <= p99 <= max "
                                 "must hold")


# The result a board claimed in issue 9: impossible numbers that used to pass.
IMPOSSIBLE_RESULT = {
    "status": "ok", "runtime": {"name": "onnxruntime", "version": "1.32.0",
                                "requested": "onnxruntime", "execution_precision": "f32"},
    "load_ms": 1.0, "first_inference_ms": 1.0, "runs": 10, "accuracy_samples": 60,
    "latency_ms": {"p50": -5.0, "p90": -5.0, "p99": -5.0, "mean": -5.0, "std": 0.0,
                   "min": -5.0, "max": -5.0},
    "throughput_fps": 1e6, "peak_rss_mb": -100.0, "accuracy": 7.5}


def test_a_device_claiming_impossible_numbers_fails_the_result_and_the_run(
        tiny_project: Any, tmp_path: Path) -> None:
    from tasks.config import Farm, RequirementParams
    from tasks.select import summarise, verdict

    claimed = tmp_path / "claimed.json"
    claimed.write_text(json.dumps(IMPOSSIBLE_RESULT), encoding="utf-8")
    device = LocalDevice(workdir=tmp_path / "dev", runtimes=["onnxruntime"],
                         python=scripted_python(tmp_path, f'cat "{claimed}" > "$out"'))
    result = records(bench(tiny_project, device, tmp_path / "results" / "local"))["onnx-fp32"]
    assert result["status"] == "failed"
    assert result["error"] == ("no valid harness result (device returned accuracy 7.5 outside "
                               "[0, 1]); exit code 0")
    assert "harness" not in result

    summary = summarise(RequirementParams(), Farm(devices={"local": device}),
                        tmp_path / "results", tiny_project.layout.base_model / "reference.json")
    row = next(row for row in summary.results if row.variant == "onnx-fp32")
    assert (row.status, row.reasons) == ("error", [result["error"]])
    assert summary.recommendations == {"local": None}
    assert not verdict(summary).ok


# --------------------------------------------------------------------------- quoting


def test_quote_command_makes_hostile_arguments_inert(tmp_path: Path) -> None:
    marker = tmp_path / f"pwned-{uuid.uuid4().hex}"
    hostile = [f"x; touch {marker}", f"$(touch {marker})", f"`touch {marker}`",
               f"a' ; touch {marker}; echo '", "two  spaces\tand\ttabs", ""]
    connection = LocalConnection()
    for argument in hostile:
        result = connection.run(quote_command(["printf", "%s\\n", argument]))
        assert result.ok
        assert result.stdout == argument + "\n"
        assert not marker.exists(), f"{argument!r} ran a command"
    # The payload is live when not quoted: the test above would catch a regression.
    unquoted = connection.run(f"echo {hostile[0]}")
    assert unquoted.ok and marker.exists()


def test_quote_command_accepts_paths() -> None:
    assert quote_command(["ls", Path("/tmp/a b")]) == "ls '/tmp/a b'"


def test_two_benchmarks_on_one_device_never_overlap(tiny_project: Any, tmp_path: Path) -> None:
    """Two concurrent runs (two flows, two orchestrators) on one device are serialised by
    the lock on the device: their harness runs' time intervals do not intersect."""
    import threading

    device = LocalDevice(workdir=tmp_path / "dev", runtimes=["onnxruntime"])
    protocol = QUICK.model_copy(update={"seconds": 1.0})
    runs: dict[str, Any] = {}

    def benchmark(name: str) -> None:
        runs[name] = bench(tiny_project, device, tmp_path / name, params=protocol)

    threads = [threading.Thread(target=benchmark, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    first, second = (records(runs[name])["onnx-fp32"]["harness"] for name in ("a", "b"))
    assert first["finished_at"] <= second["started_at"] or second["finished_at"] <= first["started_at"]


def test_a_held_device_lock_is_a_clear_failure(tiny_project: Any, tmp_path: Path) -> None:
    from tasks.farm.protocol import LOCK_NAME

    workdir = tmp_path / "dev"
    workdir.mkdir()
    holder = subprocess.Popen(["flock", str(workdir / LOCK_NAME), "sleep", "30"])
    try:
        time.sleep(0.3)
        device = LocalDevice(workdir=workdir, runtimes=["onnxruntime"])
        run = bench(tiny_project, device, tmp_path / "results",
                    params=QUICK.model_copy(update={"lock_timeout_seconds": 1.0}))
        result = records(run)["onnx-fp32"]
    finally:
        holder.kill()
    assert result["status"] == "failed"
    assert result["error"].startswith("device busy: another benchmark held")


@pytest.mark.parametrize("probe, reason", [
    ('{"host": "x", "runtimes": {}, "runtime_versions": {}}', "'host'"),
    ('{"host": {"arch": [1]}, "runtimes": {}, "runtime_versions": {}}', "'host'"),
    ('{"host": {"bad key!": 1}, "runtimes": {}, "runtime_versions": {}}', "'host'"),
    ('{"host": {}, "runtimes": {"onnxruntime": 1}, "runtime_versions": {}}', "'runtimes'"),
    ('{"host": {"cores": 1e400}, "runtimes": {}, "runtime_versions": {}}', "non-finite"),
])
def test_a_hostile_probe_makes_the_device_unusable_not_the_step(tiny_project: Any, tmp_path: Path,
                                                                probe: str, reason: str) -> None:
    script = tmp_path / "device-python"
    script.write_text(f"#!/bin/sh\ncat <<'EOF'\n{probe}\nEOF\n", encoding="utf-8")
    script.chmod(0o700)
    device = LocalDevice(workdir=tmp_path / "dev", python=str(script))
    result = records(bench(tiny_project, device, tmp_path / "results"))
    for record in result.values():
        assert record["status"] == "failed" and reason in record["error"], record["error"]
        assert record["device_facts"] == {}


@pytest.mark.parametrize("document, reason", [
    ({"status": "failed", "error": ["not", "text"]}, "no 'error' text"),
    ({"status": "failed"}, "no 'error' text"),
    ({"status": "skipped"}, "a skipped harness result has no 'error' text"),
])
def test_validate_harness_result_refuses_a_failure_without_reason(document: dict, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        validate_harness_result(document)


def test_a_stop_while_waiting_for_the_device_lock_starts_no_harness(tiny_project: Any,
                                                                   tmp_path: Path) -> None:
    """Another benchmark holds the device: a stop request ends the wait for its lock,
    and the harness never starts."""
    import subprocess

    from tasks.core import interrupt
    from tests.helpers import processes_mentioning, stop_when

    workdir = tmp_path / "dev"
    workdir.mkdir(mode=0o700)
    holder = subprocess.Popen(["flock", str(workdir / ".benchmark.lock"), "sleep", "120"])
    try:
        raised, seconds = stop_when(
            lambda: bench(tiny_project, LocalDevice(workdir=workdir), tmp_path / "results"),
            lambda: any(line.startswith("flock -w")
                        for line in processes_mentioning(str(workdir))),
            "a wait for the device lock")
    finally:
        holder.kill()
        holder.wait()
    assert isinstance(raised, interrupt.Interrupted) and seconds < 10
    assert not list((workdir / "runs").rglob("harness.pid")), "the harness was started"
    assert not (tmp_path / "results").exists()


def test_the_harness_and_the_protocol_cap_the_timed_runs_alike() -> None:
    """The device code cannot import the protocol: one bound, written in both."""
    from tasks.farm.protocol import MAX_RUNS

    assert device_code.load("timing").MAX_RUNS == MAX_RUNS == 100_000
    assert BenchmarkParams(runs=MAX_RUNS).runs == MAX_RUNS
    with pytest.raises(ValueError):
        BenchmarkParams(runs=MAX_RUNS + 1)


# The step's own decisions, without a device: what a variant will not run, which local
# inputs fail the step, the raw latencies kept beside a result, the order and outcome of
# each variant once the device is lost.

def _variant(name: str, runtime: str = "onnxruntime", status: str = "ok",
             files: tuple[str, ...] | None = None) -> Any:
    from tasks.core.contracts.variants import Variant
    from tests.farm.test_session import variant

    produced = variant(name, files or (f"{name}/model", f"{name}/model.data"), runtime)
    if status in ("ok", "rejected"):  # produced: with its files
        return produced.model_copy(update={"status": status,
                                           "reason": None if status == "ok" else "no exporter"})
    return Variant(name=name, format="onnx", precision="fp32", source="model.keras",
                   runtime=runtime, status=status, reason="no exporter")


def test_why_a_variant_is_not_run_names_the_first_reason_that_holds() -> None:
    from tasks.benchmark import _why_not_runnable

    facts = {"runtimes": {"onnxruntime": "1.20", "tflite": "2.17"}}
    anywhere, listed = LocalDevice(), LocalDevice(runtimes=["tflite", "openvino"])
    assert _why_not_runnable(_variant("a", status="rejected"), listed, "pi", facts) == {
        "status": "rejected", "error": "rejected by convert: no exporter"}
    assert _why_not_runnable(_variant("a", status="skipped"), anywhere, "pi", facts) == {
        "status": "skipped", "error": "skipped by convert: no exporter"}
    assert _why_not_runnable(_variant("a"), listed, "pi", facts) == {
        "status": "skipped", "error": "runtime 'onnxruntime' is not in pi's runtimes in farm.yaml"}
    assert _why_not_runnable(_variant("a", "openvino"), listed, "pi", facts) == {
        "status": "skipped", "error": "runtime 'openvino' is not installed on pi"}
    assert _why_not_runnable(_variant("a", "openvino"), anywhere, "pi", {}) == {
        "status": "skipped", "error": "runtime 'openvino' is not installed on pi"}
    # farm.yaml listing no runtime at all runs none of them (absent: every one).
    assert _why_not_runnable(_variant("a"), LocalDevice(runtimes=[]), "pi", facts) == {
        "status": "skipped", "error": "runtime 'onnxruntime' is not in pi's runtimes in farm.yaml"}
    assert _why_not_runnable(_variant("a", "tflite"), listed, "pi", facts) is None
    assert _why_not_runnable(_variant("a"), anywhere, "pi", facts) is None


def test_a_missing_local_input_fails_the_step_naming_the_step_that_makes_it(
        tmp_path: Path) -> None:
    """Every file of every runnable variant is checked (not the first, not the others'),
    then the test split."""
    from tasks.benchmark import _check_local_inputs

    variants_dir, prepared = tmp_path / "variants", tmp_path / "prepared"
    variants = [_variant("a"), _variant("b", status="rejected"), _variant("c")]
    prepared.mkdir()
    for path in ("a/model", "a/model.data", "c/model", "c/model.data"):
        (variants_dir / path).parent.mkdir(parents=True, exist_ok=True)
        (variants_dir / path).write_text("x")
    with pytest.raises(StepError) as refused:
        _check_local_inputs(variants, variants_dir, prepared)
    assert str(refused.value) == f"{prepared}/test.npz is missing: run the prepare step again"
    (prepared / "test.npz").write_text("x")
    _check_local_inputs(variants, variants_dir, prepared)  # b's files are never asked for
    (variants_dir / "c" / "model.data").unlink()
    with pytest.raises(StepError) as refused:
        _check_local_inputs(variants, variants_dir, prepared)
    assert str(refused.value) == (f"{variants_dir}/c/model.data is missing: run the convert "
                                  "step again")


def test_raw_latencies_leave_an_ok_result_for_a_file_beside_it(tmp_path: Path) -> None:
    from tasks.benchmark import RAW_LATENCIES_SUFFIX, keep_raw_latencies
    from tasks.device.latency import encode_latencies

    latencies = [3_000_001, 2_500_000, 2**40 + 7]
    harness = {"status": "ok", "runs": 3, "latencies": encode_latencies(latencies)}
    kept = keep_raw_latencies({"status": "ok", "error": None, "harness": harness}, tmp_path, "v")
    assert kept == {"status": "ok", "error": None, "harness": {
        "status": "ok", "runs": 3, "latencies": {"file": f"v{RAW_LATENCIES_SUFFIX}", "count": 3}}}
    assert RAW_LATENCIES_SUFFIX == ".latencies.npz"
    with np.load(tmp_path / "v.latencies.npz") as saved:
        assert saved.files == ["latency_ns"]
        assert saved["latency_ns"].dtype == np.int64
        assert saved["latency_ns"].tolist() == latencies
    # Only an ok outcome's are moved; one without any stays as it is.
    for outcome in ({"status": "failed", "error": "x", "harness": harness},
                    {"status": "ok", "error": None},
                    {"status": "ok", "error": None, "harness": {"status": "ok", "runs": 3}}):
        assert keep_raw_latencies(outcome, tmp_path / "absent", "w") is outcome


def test_what_a_result_records_of_its_device() -> None:
    from tasks.benchmark import device_facts

    assert device_facts({"host": {"machine": "aarch64", "cpus": 4},
                         "runtime_versions": {"onnxruntime": "1.20", "tflite": "2.17"},
                         "runtimes": {"onnxruntime": "x"}}) == {
        "machine": "aarch64", "cpus": 4, "runtime.onnxruntime": "1.20", "runtime.tflite": "2.17"}
    assert device_facts({}) == {}


class Scripted:
    """A device session whose ``run`` answers from ``answers`` by variant (an outcome, or
    an exception to raise); it keeps the variants it ran."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers, self.ran = answers, []

    def run(self, variant: Any) -> dict[str, Any]:
        self.ran.append(variant.name)
        answer = self.answers[variant.name]
        if isinstance(answer, BaseException):
            raise answer
        return answer


class Counts:
    def __init__(self) -> None:
        self.advanced: list[tuple[str, str]] = []

    def advance(self, item: str, detail: str = "") -> None:
        self.advanced.append((item, detail))


def test_a_device_lost_mid_run_fails_that_variant_and_every_later_one_unrun() -> None:
    from tasks.benchmark import _Progress, _run_each
    from tasks.farm.transports import DeviceUnreachable

    names = ["a", "b", "c", "d", "e"]
    session = Scripted({"a": {"status": "ok", "error": None},
                        "c": DeviceUnreachable("reconnecting\nno route to host\n")})
    progress, counter = _Progress(), Counts()
    progress.outcomes["b"] = {"status": "skipped", "error": "decided before"}
    _run_each(session, [_variant(name) for name in names], progress, counter)
    lost = {"status": "failed", "error": "device unreachable: no route to host"}
    assert session.ran == ["a", "c"]
    assert progress.outcomes == {"a": {"status": "ok", "error": None},
                                 "b": {"status": "skipped", "error": "decided before"},
                                 "c": lost, "d": lost, "e": lost}
    assert progress.device_error == lost["error"]
    assert counter.advanced == [("a", "ok"), ("b", "skipped"), ("c", "failed"),
                                ("d", "failed"), ("e", "failed")]


def test_a_device_failed_before_the_run_fails_every_undecided_variant_with_its_reason() -> None:
    from tasks.benchmark import _device_failure, _Progress, _run_each
    from tasks.farm.transports import DeviceUnreachable

    assert _device_failure(DeviceUnreachable("a\nrefused")) == "device unreachable: refused"
    assert _device_failure(PermissionError("first\ndenied")) == (
        "device not usable: PermissionError: denied")
    session, progress = Scripted({}), _Progress(device_error="device not usable: X: y")
    progress.outcomes["a"] = {"status": "rejected", "error": "rejected by convert: z"}
    _run_each(session, [_variant("a"), _variant("b")], progress, Counts())
    assert session.ran == []
    assert progress.outcomes == {"a": {"status": "rejected", "error": "rejected by convert: z"},
                                 "b": {"status": "failed", "error": "device not usable: X: y"}}
