"""tasks/farm/session.py without a harness: the exact argv a variant's harness gets, the
shell command around it, and the outcome of every way a run can end (each failure class
and its one-line reason), on a local device whose workdir is in tmp_path."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from invoke.exceptions import CommandTimedOut

from tasks.config import BenchmarkParams, EndToEndParams, LocalDevice
from tasks.core.contracts.variants import Variant
from tasks.farm import session as session_module
from tasks.farm.protocol import HARNESS_TIMED_OUT, LOCK_BUSY_EXIT, LOCK_NAME
from tasks.farm.session import NO_EXIT_STATUS, DeviceSession, failed
from tasks.farm.transports import DeviceUnreachable, LocalConnection

# Every option a different value from its default and from each other: a swapped or
# dropped option reads as another value.
PARAMS = BenchmarkParams(warmup_runs=3, warmup_seconds=0.25, runs=7, seconds=1.5,
                         max_seconds=9.0, interval_width=0.125, accuracy_samples=11,
                         timeout_seconds=42.0, lock_timeout_seconds=13.0)
RUN = "20261206T061944123456Z-0badcafe"


def variant(name: str = "onnx-fp32", files: tuple[str, ...] = ("a.onnx", "a.onnx.data"),
            runtime: str = "onnxruntime") -> Variant:
    return Variant(
        name=name, format="onnx", precision="fp32", source="model.keras", runtime=runtime,
        status="ok", reason=None, file=files[0],
        files=[{"path": path, "bytes": index + 1, "sha256": f"{index:064x}"}
               for index, path in enumerate(files)],
        bytes=len(files), sha256=f"{0:064x}", spec={"input": "x"}, accuracy=0.5, details={},
        check={"samples": 1, "agreement": 1.0, "max_abs_logit_diff": 0.0, "accuracy": 0.5,
               "reference_accuracy": 0.5, "passed": True, "failures": []})


def make_session(tmp_path: Path, connection: Any = None, **device: Any) -> DeviceSession:
    entry = LocalDevice(workdir=tmp_path / "board", python="/opt/py/bin/python3", threads=3,
                        **device)
    return DeviceSession(entry, PARAMS, connection or LocalConnection(), run_name=RUN)


def test_the_harness_gets_every_option_of_its_variant_device_and_params(tmp_path: Path) -> None:
    session = make_session(tmp_path, accelerators={"openvino_device": "NPU"})
    run = f"{tmp_path}/board/runs/{RUN}"
    assert (session.runs_dir, session.run_dir, session.harness, session.lock) == (
        f"{tmp_path}/board/runs", run, f"{run}/harness.py", f"{tmp_path}/board/{LOCK_NAME}")
    assert session._harness_argv(variant()) == [
        "/opt/py/bin/python3", f"{run}/harness.py",
        "--artifact", f"{run}/a.onnx",
        "--runtime", "onnxruntime",
        "--data", f"{run}/test.npz",
        "--spec", f"{run}/onnx-fp32/spec.json",
        "--out", f"{run}/onnx-fp32/result.json",
        "--threads", "3",
        "--warmup-runs", "3",
        "--warmup-seconds", "0.25",
        "--runs", "7",
        "--seconds", "1.5",
        "--max-seconds", "9.0",
        "--interval-width", "0.125",
        "--accelerators", json.dumps({"openvino_device": "NPU"}),
        "--accuracy-samples", "11",
        "--expect-sha256", f"{run}/a.onnx={0:064x}",
        "--expect-sha256", f"{run}/a.onnx.data={1:064x}"]
    session.end_to_end = True
    argv = session._harness_argv(variant())
    assert argv[argv.index("--frames") + 1] == f"{run}/frames.npz" == session.frames
    assert argv.index("--frames") == argv.index("--expect-sha256") - 2


def test_the_harness_reads_the_meter_farm_yaml_names(tmp_path: Path) -> None:
    session = make_session(tmp_path, energy={"command": "usbmeter --total", "unit": "J",
                                             "windows": 3})
    argv = session._harness_argv(variant())
    run = f"{tmp_path}/board/runs/{RUN}"
    assert argv[argv.index("--accuracy-samples") + 2:argv.index("--expect-sha256")] == [
        "--energy-meter", "command", "--energy-windows", "3", "--energy-window-seconds", "1.0",
        "--energy-command", "usbmeter --total", "--energy-unit", "J"]
    assert argv[-1] == f"{run}/a.onnx.data={1:064x}"


def test_the_harness_command_touches_its_run_then_waits_for_the_lock_under_its_time_limit(
        tmp_path: Path) -> None:
    session = make_session(tmp_path)
    command = session._harness_command(variant())
    run = f"{tmp_path}/board/runs/{RUN}"
    assert command.startswith(f"umask 077 && touch -- {run} && ")
    words = shlex.split(command)
    # flock waits lock_timeout_seconds (13) for the device lock, the harness gets
    # timeout_seconds (42); its output and log go to files in the variant's folder.
    flock = words.index("flock")
    assert words[flock:flock + 6] == ["flock", "-w", "13.0", "-E", str(LOCK_BUSY_EXIT),
                                      f"{tmp_path}/board/{LOCK_NAME}"]
    start = words.index("timeout")
    assert words[start:start + 4] == ["timeout", "-k", "5", "42.0"]
    assert words[start + 4:-4] == session._harness_argv(variant())
    assert words[-4:] == [">", f"{run}/onnx-fp32/harness.out",
                          "2>", f"{run}/onnx-fp32/harness.log"]


def test_a_run_in_progress_may_stay_quiet_for_its_lock_wait_and_time_limit() -> None:
    assert DeviceSession(LocalDevice(), PARAMS, LocalConnection()).longest_idle_seconds == (
        13.0 + 42.0 + 60)


class Finishes(LocalConnection):
    """A device whose harness command ends with ``exited`` (or raises ``error``), and
    whose files are read from ``files`` (a harness log, a result)."""

    def __init__(self, exited: int = 0, stderr: str = "", error: BaseException | None = None,
                 files: dict[str, bytes] | None = None) -> None:
        super().__init__()
        self.exited, self.stderr, self.error, self.files = exited, stderr, error, files or {}
        self.timeouts: list[float | None] = []

    def run(self, command: str, *, timeout: float | None = None, warn: bool = True,
            hide: bool = True) -> Any:
        self.timeouts.append(timeout)
        if self.error is not None:
            raise self.error
        return SimpleNamespace(exited=self.exited, ok=self.exited == 0, stderr=self.stderr,
                               stdout="")

    def read_file(self, remote: str, limit: int, tail: bool = False) -> bytes:
        if remote not in self.files:
            raise FileNotFoundError(remote)
        return self.files[remote]


def _outcome(tmp_path: Path, **finish: Any) -> dict[str, Any]:
    connection = Finishes(**finish)
    outcome = make_session(tmp_path, connection).run(variant())
    # The transport's limit only catches a lost device: past the lock wait and time limit.
    assert connection.timeouts[0] == 42.0 + 13.0 + 30
    return outcome


@pytest.mark.parametrize("exited", sorted(HARNESS_TIMED_OUT))
def test_a_harness_stopped_by_its_time_limit_timed_out(tmp_path: Path, exited: int) -> None:
    assert _outcome(tmp_path, exited=exited) == failed(
        "harness did not finish within timeout_seconds=42.0")


def test_every_way_a_harness_ends_without_a_result_is_a_failure_naming_it(
        tmp_path: Path) -> None:
    log = f"{tmp_path}/board/runs/{RUN}/onnx-fp32/harness.log"
    assert _outcome(tmp_path, exited=NO_EXIT_STATUS) == failed(
        "connection to the device lost during the benchmark (no exit status: the device or "
        "its SSH server went away)")
    assert _outcome(tmp_path, exited=LOCK_BUSY_EXIT) == failed(
        f"device busy: another benchmark held {tmp_path}/board/{LOCK_NAME} for more than "
        "lock_timeout_seconds=13.0")
    assert _outcome(tmp_path, error=CommandTimedOut(None, 85)) == failed(
        "harness did not finish within timeout_seconds=42.0")
    assert _outcome(tmp_path, error=EOFError("first\nsocket closed\n")) == failed(
        "connection to the device lost during the benchmark: EOFError: socket closed")
    no_result = f"no valid harness result ({tmp_path}/board/runs/{RUN}/onnx-fp32/result.json)"
    # Killed by a signal (128 + n), else the log's last line, stderr's, the exit status.
    assert _outcome(tmp_path, exited=137 + 2, stderr="said") == failed(
        f"{no_result}; the harness was killed by signal 11")
    assert _outcome(tmp_path, exited=129) == failed(
        f"{no_result}; the harness was killed by signal 1")
    assert _outcome(tmp_path, exited=128, stderr="x\nlast words\n") == failed(
        f"{no_result}; last words")
    assert _outcome(tmp_path, exited=128) == failed(f"{no_result}; exit code 128")
    assert _outcome(tmp_path, exited=1, stderr="stderr",
                    files={log: b"starting\nImportError: no onnxruntime\n"}) == failed(
        f"{no_result}; ImportError: no onnxruntime")


def test_a_lost_device_is_raised_not_a_failed_variant(tmp_path: Path) -> None:
    with pytest.raises(DeviceUnreachable, match="^gone$"):
        _outcome(tmp_path, error=DeviceUnreachable("gone"))


def test_a_garbage_result_fails_naming_what_is_wrong(tmp_path: Path) -> None:
    result = f"{tmp_path}/board/runs/{RUN}/onnx-fp32/result.json"
    outcome = _outcome(tmp_path, exited=0, stderr="done", files={result: b"[1, 2]"})
    assert outcome["status"] == "failed"
    assert outcome["error"].startswith("no valid harness result (")
    assert outcome["error"].endswith("); done")


def test_a_valid_result_is_the_outcome_and_an_ok_one_carries_no_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = f"{tmp_path}/board/runs/{RUN}/onnx-fp32/result.json"
    documents = iter([{"status": "ok", "error": "the device wrote this"},
                      {"status": "skipped", "error": "no bf16 here"}])
    monkeypatch.setattr(session_module, "validate_harness_result", lambda _: next(documents))
    ok = _outcome(tmp_path, files={result: b"{}"})
    assert ok == {"status": "ok", "error": None,
                  "harness": {"status": "ok", "error": "the device wrote this"}}
    assert _outcome(tmp_path, files={result: b"{}"}) == {
        "status": "skipped", "error": "no bf16 here",
        "harness": {"status": "skipped", "error": "no bf16 here"}}


def test_deploy_places_each_variants_spec_and_every_file_and_leaves_no_staged_spec(
        tmp_path: Path) -> None:
    variants_dir, staging = tmp_path / "variants", tmp_path / "staging"
    staging.mkdir()
    files = ("onnx-fp32/a.onnx", "onnx-fp32/a.onnx.data", "tflite-int8/b.tflite")
    for path in files:
        (variants_dir / path).parent.mkdir(parents=True, exist_ok=True)
        (variants_dir / path).write_text(path)
    session = make_session(tmp_path)
    session.deploy([variant(files=files[:2]), variant("tflite-int8", files[2:], "tflite")],
                   variants_dir, staging)
    run = Path(session.run_dir)
    assert sorted(str(path.relative_to(run)) for path in run.rglob("*") if path.is_file()) == [
        *files[:2], "onnx-fp32/spec.json", files[2], "tflite-int8/spec.json"]
    assert (run / files[2]).read_text() == files[2]
    assert json.loads((run / "tflite-int8/spec.json").read_text()) == {"input": "x"}
    assert list(staging.iterdir()) == []
