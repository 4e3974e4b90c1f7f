"""Prefect task retries for a board that does not answer (flows/retries.py), against a real
OpenSSH board on loopback: its sshd is down when the benchmark task first runs (connection
refused) and comes up once that attempt has failed -> Prefect retries the task after its
backoff and the device's variants are measured. A board that refuses the key (a user
error) is not retried: one attempt, its variants fail with the reason."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from prefect import flow

from tests.sshd import SSHD, SshServer, keygen, sshd_available, start_sshd, stop_sshd, wait_listening

pytestmark = pytest.mark.skipif(not sshd_available(), reason="OpenSSH server not installed")


@flow(name="benchmark-one-board")
def _benchmark_board(params_path: str, farm_path: str) -> tuple[str, str, str]:
    """The lifecycle's own benchmark task for device ``board``, with its retry options:
    (its task run id, final state name, message)."""
    from flows.lifecycle import _step
    from flows.steps import Context

    ctx = Context.load(Path(params_path), Path(farm_path))
    step_task, _ = _step(ctx, "benchmark", [], "board")
    state = step_task(ctx, "benchmark", "board", return_state=True)
    return str(state.state_details.task_run_id), state.name, state.message or ""


def _experiment(tiny_project: Any, root: Path, server: SshServer, key: Path) -> Path:
    """A copy of the tiny project (its variants built) with one SSH board: 2 task retries,
    a first wait of 2 s, one connection attempt per task attempt."""
    experiment = root / "experiment"
    shutil.copytree(tiny_project.layout.root, experiment)
    (experiment / "farm.yaml").write_text(f"""\
devices:
  board:
    transport: ssh
    host: {server.host}
    port: {server.port}
    user: {server.user}
    key_file: {key}
    known_hosts: {server.known_hosts}
    python: {sys.executable}
    workdir: {root / 'remote'}
    runtimes: [tflite]
    connect_timeout: 2
    connect_attempts: 1
    task_retries: 2
    task_retry_delay_seconds: 2
""")
    return experiment


def _attempts(task_run_id: str) -> tuple[int, list[str]]:
    """The task run's attempt count and the names of its states, in order."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        task_run = client.read_task_run(task_run_id)
        history = client.read_task_run_states(task_run.id)
    return task_run.run_count, [entry.name for entry in sorted(history, key=lambda s: s.timestamp)]


def _records(experiment: Path) -> dict[str, dict[str, Any]]:
    import json
    folder = experiment / "results" / "board"
    return {path.stem: json.loads(path.read_text()) for path in folder.glob("*.json")}


def test_a_board_whose_sshd_starts_late_is_measured_after_a_retry(
        tiny_project: Any, tmp_path: Path) -> None:
    server = start_sshd(tmp_path / "sshd")
    stop_sshd(server)  # down when the task first runs: connection refused
    experiment = _experiment(tiny_project, tmp_path, server, server.client_key)
    results = experiment / "results" / "board"
    started: list[subprocess.Popen] = []

    def boot_after_first_failure() -> None:
        # The failed attempt writes its `device unreachable` results, then asks to retry:
        # the board comes up during the backoff.
        deadline = time.monotonic() + 120
        while not results.is_dir() and time.monotonic() < deadline:
            time.sleep(0.05)
        with open(server.root / "sshd.log", "a") as log:
            started.append(subprocess.Popen([SSHD, "-D", "-e", "-f", str(server.root / "sshd_config")],
                                            stdout=subprocess.DEVNULL, stderr=log))
        wait_listening(server.host, server.port, started[0], server.root / "sshd.log")

    booting = threading.Thread(target=boot_after_first_failure, daemon=True)
    booting.start()
    try:
        task_run, final, message = _benchmark_board(str(experiment / "params.yaml"),
                                                    str(experiment / "farm.yaml"))
        booting.join(timeout=5)
        assert final == "Completed", message
        run_count, history = _attempts(task_run)
        print("task states:", history)
        assert run_count == 2
        assert history.count("AwaitingRetry") == 1 and history[-1] == "Completed"
        records = _records(experiment)
        assert records["tflite-fp32"]["status"] == "ok", records["tflite-fp32"].get("error")
        assert {record["status"] for name, record in records.items()
                if not name.startswith("tflite")} == {"skipped"}
    finally:
        for process in started:
            stop_sshd(SshServer(server.host, server.port, server.user, server.client_key,
                                server.known_hosts, server.host_public_key, process.pid,
                                server.root))


def test_a_refused_key_is_not_retried(tiny_project: Any, tmp_path: Path) -> None:
    server = start_sshd(tmp_path / "sshd")
    try:
        keygen(tmp_path / "stranger")  # not in the board's authorized_keys
        experiment = _experiment(tiny_project, tmp_path, server, tmp_path / "stranger")
        task_run, final, _ = _benchmark_board(str(experiment / "params.yaml"),
                                              str(experiment / "farm.yaml"))
        run_count, history = _attempts(task_run)
        assert final == "Completed" and run_count == 1 and "AwaitingRetry" not in history
        records = _records(experiment)
        assert records["tflite-fp32"]["status"] == "failed"
        assert "AuthenticationException" in records["tflite-fp32"]["error"]
    finally:
        stop_sshd(server)


def test_a_step_error_fails_the_task_after_one_attempt(tiny_project: Any, tmp_path: Path) -> None:
    """An error of the experiment's own (its variants index gone) is final: Prefect's
    retry_condition_fn says no, though the device has retries left."""
    server = start_sshd(tmp_path / "sshd")
    try:
        experiment = _experiment(tiny_project, tmp_path, server, server.client_key)
        (experiment / "models" / "variants" / "index.json").unlink()
        task_run, final, message = _benchmark_board(str(experiment / "params.yaml"),
                                                    str(experiment / "farm.yaml"))
        run_count, history = _attempts(task_run)
        assert final == "Failed" and "StepError" in message and "index.json" in message
        assert run_count == 1 and "AwaitingRetry" not in history and history[-1] == "Failed"
    finally:
        stop_sshd(server)


def dead_board_experiment(tiny_project: Any, tmp_path: Path) -> tuple[Path, Path]:
    """An experiment whose one board's sshd is down for good, with one quick retry: its
    folder and its farm.yaml."""
    server = start_sshd(tmp_path / "sshd")
    stop_sshd(server)
    experiment = _experiment(tiny_project, tmp_path, server, server.client_key)
    farm = experiment / "farm.yaml"
    farm.write_text(farm.read_text().replace("task_retries: 2", "task_retries: 1")
                    .replace("task_retry_delay_seconds: 2", "task_retry_delay_seconds: 0.5"))
    return experiment, farm


def test_a_board_that_never_answers_keeps_its_unreachable_results_after_the_last_retry(
        tiny_project: Any, tmp_path: Path) -> None:
    """The last attempt does not raise: the device's variants fail with the reason and the
    task completes, so the run goes on with the other devices (as without retries)."""
    experiment, farm = dead_board_experiment(tiny_project, tmp_path)
    task_run, final, message = _benchmark_board(str(experiment / "params.yaml"), str(farm))
    run_count, history = _attempts(task_run)
    assert final == "Completed", message
    assert run_count == 2 and history.count("AwaitingRetry") == 1
    record = _records(experiment)["tflite-fp32"]
    assert record["status"] == "failed"
    assert record["error"].startswith("device unreachable: cannot connect to 127.0.0.1:")
