"""State that must survive, with real processes: a second run of a running experiment,
Ctrl-C (a real SIGINT) and SIGKILL during benchmark, the run after them, a moved
experiment folder, and first-time MLflow stores created by concurrent track steps.

The tests of this module run in order on one tiny project driven through the CLI.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import processes_mentioning
from tests.sshd import descendants
from tests.tiny import TINY_PARAMS, write_tiny_config

BIN = Path(sys.executable).parent
# Slow enough to interrupt: three variants of 3 s each.
SLOW_PARAMS = TINY_PARAMS.replace("seconds: 0.05", "seconds: 3")
BUSY_EXIT, INTERRUPTED_EXIT = 75, 130


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", **extra}
    env.pop("PREFECT_API_URL", None)
    if "MLFLOW_TRACKING_URI" not in extra:
        env.pop("MLFLOW_TRACKING_URI", None)
    return env


def _start(root: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen([str(BIN / "edgeflow"), *args], cwd=root, env=_env(**env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(process: subprocess.Popen[str], timeout: float = 400) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def _wait_for_harness(root: Path, process: subprocess.Popen[str], timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any("--artifact" in line for line in processes_mentioning(str(root / ".edgeflow"))):
            return
        assert process.poll() is None, _finish(process)
        time.sleep(0.2)
    raise AssertionError("no harness started")


def _harnesses(root: Path) -> list[str]:
    return [line for line in processes_mentioning(str(root / ".edgeflow")) if "--artifact" in line]


def _staging(root: Path) -> list[str]:
    return sorted(path.name for parent in (root / "results", root / "models")
                  if parent.is_dir() for path in parent.iterdir() if path.name.startswith("."))


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("state") / "experiment"
    write_tiny_config(root, SLOW_PARAMS)
    return root


def test_a_second_run_is_refused_and_ctrl_c_stops_the_first_within_seconds(project: Path) -> None:
    first = _start(project, "run")
    _wait_for_harness(project, first)

    started = time.monotonic()
    code, _, err = _finish(_start(project, "run"), timeout=60)
    assert code == BUSY_EXIT, err
    assert time.monotonic() - started < 30, "refused before Prefect starts"
    line, = err.strip().splitlines()
    assert line.startswith("edgeflow: error: another edgeflow run of this experiment is in "
                           f"progress (pid {first.pid} on ")
    assert "`edgeflow run`" in line and "wait for it to finish or stop it" in line

    first.send_signal(signal.SIGINT)
    interrupted = time.monotonic()
    code, _, err = _finish(first, timeout=60)
    assert code == INTERRUPTED_EXIT, err
    assert time.monotonic() - interrupted < 10, "Ctrl-C must stop within seconds"
    assert [line for line in err.splitlines() if line.startswith("edgeflow: ")] == [
        "edgeflow: interrupted: what ran on devices (benchmarks, a release before its switch) "
        "was stopped there; unfinished steps wrote nothing, the next run redoes them"]
    assert "Traceback" not in err
    assert _harnesses(project) == [], "the harness was left running on the device"
    # Nothing half-written where the next step would read it as complete.
    assert _staging(project) == []
    assert not (project / "results" / "local").exists()
    assert not (project / "reports" / "summary.json").exists()


def _command_line(pid: int) -> str:
    """A process's command line; empty once it has exited (a short-lived child listed a
    moment before, as a loaded CI machine showed)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return ""


def test_a_killed_run_leaves_no_server_and_the_next_run_repairs_everything(project: Path) -> None:
    doomed = _start(project, "run")
    _wait_for_harness(project, doomed)
    server = [pid for pid in descendants(doomed.pid) if "uvicorn" in _command_line(pid)]
    assert len(server) == 1, "the run's temporary Prefect server"
    doomed.kill()
    doomed.wait(timeout=30)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{server[0]}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(f"/proc/{server[0]}").exists(), "the Prefect server outlived its run"
    assert [name for name in _staging(project) if name.startswith(".local.")], \
        "SIGKILL leaves the benchmark's staging folder (removed by the next run)"

    code, out, err = _finish(_start(project, "run"))
    assert code == 0, out + err
    assert "executed: benchmark[local], select, track" in out
    assert _staging(project) == []
    summary = json.loads((project / "reports" / "summary.json").read_text())
    assert summary["counts"] == {"pass": 3, "fail": 0, "error": 0, "skipped": 0}


def test_a_moved_experiment_folder_reuses_its_cache(project: Path, tmp_path: Path) -> None:
    moved = tmp_path / "elsewhere" / "experiment"
    shutil.copytree(project, moved, symlinks=True)
    code, out, err = _finish(_start(moved, "run"))
    assert code == 0, out + err
    assert "outside of the base path" not in out + err and "Traceback" not in out + err
    assert "executed: nothing (every step cached)" in out
    # Its records now point into the moved folder: the original's results are not read.
    records = list((moved / ".edgeflow" / "prefect" / "keys").iterdir())
    assert records
    for record in records:
        assert json.loads(record.read_text())["storage_key"].startswith(str(moved))


def test_first_time_track_steps_at_once_leave_a_working_store(project: Path,
                                                               tmp_path: Path) -> None:
    """Two experiments sharing one new sqlite store (MLFLOW_TRACKING_URI) and a second
    track of one of them, all at once: MLflow's schema migration must not race."""
    other = tmp_path / "other"
    shutil.copytree(project, other, symlinks=True)
    store = tmp_path / "shared" / "mlflow.db"
    store.parent.mkdir()
    uri = f"sqlite:///{store}"
    processes = [_start(root, "step", "track", MLFLOW_TRACKING_URI=uri)
                 for root in (project, other, other)]
    outcomes = [_finish(process, timeout=300) for process in processes]
    codes = [code for code, _, _ in outcomes]
    # One experiment's second track is refused while its first holds the lock, or
    # waits its turn after it: never a crash.
    assert codes[0] == 0 and sorted(codes[1:]) in ([0, 0], [0, BUSY_EXIT]), outcomes
    for _, out, err in outcomes:
        assert "Traceback" not in out + err and "alembic" not in err.lower()
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("edgeflow")
    parents = client.search_runs([experiment.experiment_id],
                                 filter_string="tags.`edgeflow.kind` = 'lifecycle'")
    assert len(parents) == codes.count(0)
    assert all(run.info.status == "FINISHED" for run in parents)


def test_a_step_of_a_running_experiment_is_refused(project: Path) -> None:
    """`edgeflow step` (what `dvc repro` runs) takes the same lock as `edgeflow run`."""
    from tests.tasks.core.test_locks import _holder

    holder = _holder(project / ".edgeflow")
    try:
        code, out, err = _finish(_start(project, "step", "track"), timeout=120)
    finally:
        holder.kill()
        holder.wait()
    assert code == BUSY_EXIT, out + err
    line, = err.strip().splitlines()
    assert line.startswith("edgeflow: error: another edgeflow run of this experiment is in "
                           f"progress (pid {holder.pid} on ")
