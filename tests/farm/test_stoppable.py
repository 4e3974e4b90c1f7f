"""tasks.farm.stoppable on this machine: the control files, the command line that runs a
command under the device lock, and what a stop request does in each stage (waiting for
the lock, refused before its start), seen by the exit status and the files it left."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tasks.farm.protocol import LOCK_BUSY_EXIT
from tasks.farm.stoppable import STOPPED_EXIT, control_files, locked_argv, stop
from tasks.farm.transports import LocalConnection, quote_command


def test_the_control_files_are_the_pid_the_wait_pid_and_the_request() -> None:
    assert control_files("/w/runs/r1") == ("/w/runs/r1/harness.pid", "/w/runs/r1/wait.pid",
                                           "/w/runs/r1/stop")
    assert (STOPPED_EXIT, LOCK_BUSY_EXIT) == (143, 75)


def test_a_locked_command_line_waits_its_time_then_records_its_pid_unless_stopped() -> None:
    assert locked_argv("/c", "/w/.benchmark.lock", 2.5, ["python3", "h.py", "--x"]) == [
        "sh", "-c", 'echo $$ > "$0"; exec "$@"', "/c/wait.pid",
        "flock", "-w", "2.5", "-E", "75", "/w/.benchmark.lock",
        "sh", "-c", 'test -e "$1" && exit 143; echo $$ > "$0"; shift; exec "$@"',
        "/c/harness.pid", "/c/stop", "python3", "h.py", "--x"]


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-c", quote_command(argv)], capture_output=True, text=True,
                          timeout=30)


def test_a_locked_command_runs_with_its_arguments_and_records_both_pids(tmp_path: Path) -> None:
    done = _run(locked_argv(str(tmp_path), str(tmp_path / "lock"), 5,
                            ["sh", "-c", 'echo "$$ $1"', "x", "a b"]))
    pid_file, wait_pid_file, _ = control_files(str(tmp_path))
    assert (done.returncode, done.stdout.split()[1:]) == (0, ["a", "b"])
    # sh execs into the command: the pid it recorded is the command's own.
    assert Path(pid_file).read_text().strip() == done.stdout.split()[0]
    assert Path(wait_pid_file).read_text().strip().isdigit()


def test_a_stop_requested_before_the_start_refuses_the_command(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    stop(LocalConnection(), str(tmp_path))  # nothing runs yet: the request stays
    assert Path(control_files(str(tmp_path))[2]).exists()
    done = _run(locked_argv(str(tmp_path), str(tmp_path / "lock"), 5, ["touch", str(marker)]))
    assert done.returncode == STOPPED_EXIT and not marker.exists()


@pytest.mark.parametrize("wait", [0, 0.2])
def test_a_lock_held_elsewhere_ends_the_wait_with_the_busy_exit(tmp_path: Path,
                                                                wait: float) -> None:
    lock = tmp_path / "lock"
    holder = subprocess.Popen(["flock", str(lock), "sleep", "30"])
    try:
        for _ in range(100):  # until the holder has it
            if _run(["flock", "-n", str(lock), "true"]).returncode != 0:
                break
        marker = tmp_path / "ran"
        done = _run(locked_argv(str(tmp_path), str(lock), wait, ["touch", str(marker)]))
    finally:
        holder.kill()
        holder.wait()
    assert done.returncode == LOCK_BUSY_EXIT and not marker.exists()
