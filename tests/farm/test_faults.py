"""Faults on a real SSH farm: a device that dies mid-benchmark, a device that is not
there (retried with backoff), a refused key (not retried), two runs on one device, and
hostile paths. Each device is a real OpenSSH server on loopback."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tasks.benchmark import DeviceRun
from tasks.farm.transports import SshConnection
from tests.helpers import (FARM_QUICK, assert_device_tidy, bench_device, harness_cpu_seconds,
                           processes_left, processes_mentioning, records, ssh_device)
from tests.sshd import SshServer, descendants, keygen, stop_sshd


# The slow harnesses below are slow by their warm-up: timed runs stop at the harness's
# run cap (100000 runs of a tiny model take seconds), a warm-up has no cap.
MEASURING_CPU_SECONDS = 1.2


def test_a_device_killed_mid_benchmark_fails_alone(tiny_project: Any, ssh_server: SshServer,
                                                   doomed_server: SshServer,
                                                   tmp_path: Path) -> None:
    slow = FARM_QUICK.model_copy(update={"warmup_seconds": 6.0})
    doomed_workdir = tmp_path / "doomed"
    runs: dict[str, DeviceRun] = {}

    def kill_while_measuring() -> None:
        # Not when the command line appears (the login shell, flock and timeout carry the
        # same arguments before the harness starts) but once the harness itself has
        # spent more CPU than starting and loading a tiny model take (~0.5 s here): it
        # is then in its 6-second warm-up (with 3 s, one CI run on two cores shared with
        # two test workers saw tflite-fp32 end ok: the kill came during the next variant).
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if harness_cpu_seconds(str(doomed_workdir)) >= MEASURING_CPU_SECONDS:
                stop_sshd(doomed_server, kill_sessions=True)  # the board loses power
                return
            time.sleep(0.05)

    def run(name: str, server: SshServer, workdir: Path) -> None:
        target = ssh_device(server, workdir, connect_attempts=2)
        runs[name] = bench_device(tiny_project, name, target, tmp_path / "results" / name,
                                  params=slow)

    threads = [threading.Thread(target=kill_while_measuring),
               threading.Thread(target=run, args=("doomed", doomed_server, doomed_workdir)),
               threading.Thread(target=run, args=("healthy", ssh_server, tmp_path / "healthy"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    healthy, doomed = records(runs["healthy"]), records(runs["doomed"])
    assert healthy["tflite-fp32"]["status"] == healthy["onnx-fp32"]["status"] == "ok"
    # tflite-fp32 runs first: it was running when the device died.
    assert doomed["tflite-fp32"]["status"] == "failed"
    assert doomed["tflite-fp32"]["error"].startswith(
        "connection to the device lost during the benchmark"), doomed["tflite-fp32"]["error"]
    # The next variant found the device gone after 2 attempts: not run, not retried blindly.
    assert doomed["onnx-fp32"]["status"] == "failed"
    assert doomed["onnx-fp32"]["error"].startswith("device unreachable: cannot connect to "
                                                   f"127.0.0.1:{doomed_server.port} after 2 attempt(s)")
    assert doomed["openvino-fp32"]["status"] == "skipped"
    assert descendants(doomed_server.pid) == []


def test_connection_errors_are_retried_with_backoff(tiny_project: Any, ssh_server: SshServer,
                                                    tmp_path: Path) -> None:
    waits: list[float] = []
    closed = ssh_device(ssh_server, tmp_path / "dev", port=1, connect_attempts=3,
                        retry_backoff_seconds=0.5)
    run = bench_device(tiny_project, "gone", closed, tmp_path / "results",
                       connect_to=lambda target, name: SshConnection(target, name,
                                                                     sleep=waits.append))
    assert waits == [0.5, 1.0]
    failed = [record for record in records(run).values() if record["status"] != "skipped"]
    assert failed and all(record["status"] == "failed" for record in failed)
    assert all("cannot connect to 127.0.0.1:1 after 3 attempt(s)" in record["error"]
               for record in failed)


def test_a_refused_client_key_is_not_retried(tiny_project: Any, ssh_server: SshServer,
                                             tmp_path: Path) -> None:
    keygen(tmp_path / "stranger")
    waits: list[float] = []
    target = ssh_device(ssh_server, tmp_path / "dev", key_file=tmp_path / "stranger")
    run = bench_device(tiny_project, "pi", target, tmp_path / "results",
                       connect_to=lambda target, name: SshConnection(target, name,
                                                                     sleep=waits.append))
    assert waits == []
    failed = [record for record in records(run).values() if record["status"] == "failed"]
    assert failed and all("Authentication" in record["error"] for record in failed)


def test_two_runs_on_one_ssh_device_are_serialised(tiny_project: Any, ssh_server: SshServer,
                                                   tmp_path: Path) -> None:
    # keep_runs=1: neither run may remove the other's folder while it is in progress.
    shared = ssh_device(ssh_server, tmp_path / "dev", runtimes=["onnxruntime"], keep_runs=1)
    protocol = FARM_QUICK.model_copy(update={"seconds": 1.0})
    runs: dict[str, DeviceRun] = {}

    def run(name: str) -> None:
        runs[name] = bench_device(tiny_project, "pi", shared, tmp_path / name, params=protocol)

    threads = [threading.Thread(target=run, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for name in ("a", "b"):
        assert records(runs[name])["onnx-fp32"]["status"] == "ok", records(runs[name])["onnx-fp32"]
    first, second = (records(runs[name])["onnx-fp32"]["harness"] for name in ("a", "b"))
    assert first["finished_at"] <= second["started_at"] or second["finished_at"] <= first["started_at"]


def test_a_hostile_workdir_cannot_inject_commands(tiny_project: Any, ssh_server: SshServer,
                                                  tmp_path: Path) -> None:
    hostile = tmp_path / "dev $(touch PWNED1); touch PWNED2 `touch PWNED3` 'q\" & x"
    run = bench_device(tiny_project, "pi", ssh_device(ssh_server, hostile), tmp_path / "results")
    result = records(run)
    assert result["onnx-fp32"]["status"] == "ok", result["onnx-fp32"]["error"]
    assert_device_tidy(hostile)
    for folder in (Path.home(), tmp_path, Path.cwd()):
        assert not list(folder.glob("PWNED*")), f"a command ran in {folder}"


def test_an_encrypted_key_takes_its_passphrase_from_the_environment(
        tiny_project: Any, ssh_server: SshServer, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    key = tmp_path / "locked_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "s3cret", "-f", str(key)], check=True)
    with open(ssh_server.root / "authorized_keys", "a") as authorized:
        authorized.write(Path(f"{key}.pub").read_text())
    target = ssh_device(ssh_server, tmp_path / "dev", key_file=key,
                        key_passphrase_env="EF_TEST_PASS", runtimes=["onnxruntime"])

    monkeypatch.delenv("EF_TEST_PASS", raising=False)
    missing = records(bench_device(tiny_project, "pi", target, tmp_path / "without"))["onnx-fp32"]
    assert missing["status"] == "failed"
    assert "environment variable EF_TEST_PASS" in missing["error"] and "s3cret" not in missing["error"]

    monkeypatch.setenv("EF_TEST_PASS", "s3cret")
    unlocked = records(bench_device(tiny_project, "pi", target, tmp_path / "with"))["onnx-fp32"]
    assert unlocked["status"] == "ok", unlocked["error"]


def test_a_device_that_drops_off_the_network_is_given_up_not_waited_for(
        tiny_project: Any, tmp_path: Path) -> None:
    """The board's link goes down mid-benchmark (no FIN, no RST: silence). Keepalives
    notice; without them the run would sit out the whole time limit and blame the
    harness ("did not finish within timeout_seconds")."""
    from tests.farm.conftest import require_sshd
    from tests.sshd import netns_available, start_sshd, unplug

    require_sshd()
    if not netns_available():
        pytest.skip("network namespaces are not available on this machine")
    server = start_sshd(tmp_path / "sshd", isolated=True)
    workdir = tmp_path / "board"
    slow = FARM_QUICK.model_copy(update={"warmup_seconds": 20.0, "timeout_seconds": 300})

    def unplug_when_the_harness_runs() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if any("--artifact" in command for command in processes_mentioning(str(workdir))):
                unplug(server)
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=unplug_when_the_harness_runs)
    watcher.start()
    try:
        target = ssh_device(server, workdir, keepalive_seconds=1, connect_timeout=2,
                            connect_attempts=1)
        run = bench_device(tiny_project, "pi", target, tmp_path / "results", params=slow)
    finally:
        watcher.join()
        stop_sshd(server, kill_sessions=True)
    result = records(run)
    assert result["tflite-fp32"]["status"] == "failed"
    assert result["tflite-fp32"]["error"].startswith(
        "connection to the device lost during the benchmark"), result["tflite-fp32"]["error"]
    assert result["onnx-fp32"]["status"] == "failed"
    assert result["onnx-fp32"]["error"].startswith("device unreachable"), result["onnx-fp32"]["error"]


def test_a_hung_probe_is_stopped_on_the_board_not_left_running(tiny_project: Any,
                                                                ssh_server: SshServer,
                                                                tmp_path: Path) -> None:
    """A board whose interpreter hangs: the orchestrator gives up after the time limit
    and the board itself stops the command (nothing keeps running there)."""
    hang = tmp_path / "hanging-python"
    hang.write_text('#!/bin/sh\ncase "$*" in *--probe*) exec sleep 301 ;; esac\nexit 1\n')
    hang.chmod(0o700)
    target = ssh_device(ssh_server, tmp_path / "board", python=str(hang))
    started = time.monotonic()
    run = bench_device(tiny_project, "hung", target, tmp_path / "results",
                       params=FARM_QUICK.model_copy(update={"timeout_seconds": 2.0}))
    assert time.monotonic() - started < 30
    for record in records(run).values():
        assert record["status"] == "failed"
        assert record["error"] == ("device not usable: RuntimeError: probe did not finish in "
                                   "time and was stopped on the device")
    time.sleep(1)
    assert processes_mentioning("sleep 301") == []


def test_a_stop_request_stops_the_harness_on_an_ssh_board_within_seconds(
        tiny_project: Any, ssh_server: SshServer, tmp_path: Path) -> None:
    """Ctrl-C's path without the CLI: the harness running on the board is signalled over
    a second channel of the same connection, and nothing of the run is written."""
    from tasks.core import interrupt
    from tests.helpers import stop_when

    workdir = tmp_path / "board"
    target = ssh_device(ssh_server, workdir)
    slow = FARM_QUICK.model_copy(update={"warmup_seconds": 30.0})
    out = tmp_path / "results" / "pi"
    raised, seconds = stop_when(
        lambda: bench_device(tiny_project, "pi", target, out, params=slow),
        lambda: any("--artifact" in line for line in processes_mentioning(str(workdir))),
        "a harness on the board")
    assert isinstance(raised, interrupt.Interrupted) and seconds < 10
    assert processes_left(str(workdir)) == []
    assert not out.exists() and list(out.parent.iterdir()) == []


# The benchmark of `edgeflow step benchmark`, under the CLI's Ctrl-C handling, in a
# process of its own: a real SIGINT is sent to it, as a terminal sends it to edgeflow.
# (Sent to the pytest worker itself, the signal could end the worker and the test run.)
CTRL_C_CHILD = """
import json, sys
from pathlib import Path
import typer
from flows.cli.process import interruptible
from tasks.benchmark import benchmark_device
from tasks.config import BenchmarkParams, SshDevice
spec = json.loads(sys.argv[1])
try:
    interruptible(lambda: benchmark_device(
        "pi", SshDevice.model_validate(spec["device"]),
        BenchmarkParams.model_validate(spec["params"]), Path(spec["variants"]),
        Path(spec["prepared"]), Path(spec["out"])))
except typer.Exit as end:  # what Typer turns into the exit status
    sys.exit(end.exit_code)
"""


def test_ctrl_c_in_the_benchmarking_thread_stops_the_harness_on_an_ssh_board(
        tiny_project: Any, ssh_server: SshServer, tmp_path: Path) -> None:
    """`edgeflow step benchmark`: the signal lands in the thread that waits on the SSH
    command; the harness must be stopped before that thread closes the connection, and
    the command ends as interrupted (130, one line)."""
    import json
    import signal
    import subprocess
    import sys

    from flows.cli.process import INTERRUPTED_EXIT

    workdir = tmp_path / "board"
    spec = {"device": ssh_device(ssh_server, workdir).model_dump(mode="json"),
            "params": FARM_QUICK.model_copy(update={"warmup_seconds": 30.0}).model_dump(mode="json"),
            "variants": str(tiny_project.layout.variants),
            "prepared": str(tiny_project.layout.prepared),
            "out": str(tmp_path / "results" / "pi")}
    child = subprocess.Popen([sys.executable, "-c", CTRL_C_CHILD, json.dumps(spec)],
                             cwd=Path(__file__).resolve().parents[2], text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stderr, started = _signal_once_the_harness_runs(child, workdir, signal.SIGINT, 60)
    assert child.returncode == INTERRUPTED_EXIT, stderr
    assert "edgeflow: interrupted" in stderr and "Traceback" not in stderr, stderr
    assert time.monotonic() - started < 15
    assert processes_left(str(workdir)) == []


def _signal_once_the_harness_runs(child: Any, workdir: Path, signum: int,
                                  within: float) -> tuple[str, float]:
    """Send ``signum`` to ``child`` (an edgeflow process benchmarking on the board in
    ``workdir``) once the board's harness runs; its stderr, and when the signal went."""
    try:
        deadline = time.monotonic() + within
        while not any("--artifact" in line for line in processes_mentioning(str(workdir))):
            assert child.poll() is None, f"the benchmark ended first: {child.communicate()}"
            assert time.monotonic() < deadline, "the harness never started on the board"
            time.sleep(0.1)
        started = time.monotonic()
        child.send_signal(signum)
        _, stderr = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    return stderr, started


@pytest.mark.parametrize("signum", ["SIGHUP", "SIGTERM"])
def test_a_closed_terminal_stops_edgeflow_and_its_harness_on_an_ssh_board_like_sigterm(
        tiny_project: Any, ssh_server: SshServer, tmp_path: Path, signum: str) -> None:
    """The terminal that ran ``edgeflow step benchmark`` closes (SIGHUP): the command ends
    as SIGTERM ends it (130, one line), and the board's harness is stopped there, its
    device lock free for the next benchmark or release."""
    import fcntl
    import json
    import os
    import shutil
    import signal
    import subprocess
    import sys

    from flows.cli.process import INTERRUPTED_EXIT
    from tasks.farm.protocol import LOCK_NAME

    project = tmp_path / "experiment"
    root = tiny_project.layout.root
    project.mkdir()
    for name in ("params.yaml", "data", "models"):
        source = root / name
        (shutil.copytree if source.is_dir() else shutil.copyfile)(source, project / name)
    params = project / "params.yaml"
    params.write_text(params.read_text().replace("warmup_seconds: 0.0", "warmup_seconds: 30.0"))
    workdir = tmp_path / "board"
    (project / "farm.yaml").write_text(json.dumps({"devices": {"pi": ssh_server.farm_entry(
        workdir, sys.executable, runtimes=["tflite", "onnxruntime"])}}))
    # As a terminal starts it: SIGHUP at its default even where the tests run under
    # nohup, whose ignored SIGHUP edgeflow keeps (tests/flows: `nohup edgeflow run`).
    child = subprocess.Popen([str(Path(sys.executable).parent / "edgeflow"), "step", "benchmark"],
                             cwd=project, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env={**os.environ, "PATH": f"{Path(sys.executable).parent}"
                                                        f"{os.pathsep}{os.environ['PATH']}"},
                             preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL))
    stderr, started = _signal_once_the_harness_runs(child, workdir, getattr(signal, signum), 120)
    assert child.returncode == INTERRUPTED_EXIT, stderr
    assert [line for line in stderr.splitlines() if line.startswith("edgeflow: ")] == [
        "edgeflow: interrupted: what ran on devices (benchmarks, a release before its switch) "
        "was stopped there; unfinished steps wrote nothing, the next run redoes them"], stderr
    assert "Traceback" not in stderr
    assert time.monotonic() - started < 15
    assert processes_left(str(workdir)) == [], "the harness still runs on the board"
    with open(workdir / LOCK_NAME, "a") as lock:  # the device lock is free
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    assert not (project / "results" / "pi").exists()
