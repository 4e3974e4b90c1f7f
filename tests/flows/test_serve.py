"""``edgeflow stop`` signals exactly the processes ``serve`` recorded, by pid, never a
process that merely re-uses a recorded pid; ``serve``'s refusals are one line. Real
processes, no Prefect server (tests/flows/test_deployment.py runs the whole thing)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from flows.serve import (Service, ServeError, _spawn, _start_time, serve, serve_folder, stop,
                         work_pools)


def _sleeper(folder: Path, name: str) -> dict:
    return _spawn(Service(name, folder), [sys.executable, "-c", "import time; time.sleep(120)"],
                  {}, folder)


def test_stop_ends_the_recorded_processes_and_says_so_once(tmp_path: Path) -> None:
    folder = serve_folder(tmp_path)
    worker, server = _sleeper(folder, "worker"), _sleeper(folder, "server")
    lines: list[str] = []
    stop(tmp_path, say=lines.append)
    assert lines == [f"worker: stopped (pid {worker['pid']})",
                     f"server: stopped (pid {server['pid']})"]
    assert _start_time(worker["pid"]) is None and _start_time(server["pid"]) is None
    assert not (folder / "worker.json").exists() and not (folder / "server.json").exists()
    lines.clear()
    stop(tmp_path, say=lines.append)
    assert lines == ["worker: not running", "server: not running"]


def test_a_pid_reused_by_another_process_is_never_signalled(tmp_path: Path) -> None:
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        folder = serve_folder(tmp_path)
        folder.mkdir(parents=True)
        started = _start_time(other.pid)
        assert started is not None
        # The record of an earlier process that had this pid: another start time.
        (folder / "server.json").write_text(json.dumps({"pid": other.pid,
                                                         "start_time": started - 1}))
        lines: list[str] = []
        stop(tmp_path, say=lines.append)
        assert lines == ["worker: not running",
                         f"server: not running (pid {other.pid} is no longer the process "
                         "started; record removed)"]
        assert other.poll() is None, "a process serve did not start was signalled"
        assert not (folder / "server.json").exists()
    finally:
        other.kill()
        other.wait()


def _project(root: Path, prefect_yaml: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "prefect.yaml").write_text(prefect_yaml)
    return root


def test_serve_refuses_a_taken_port_in_one_line(tmp_path: Path) -> None:
    project = _project(tmp_path, "deployments:\n  - name: a\n    work_pool: {name: pool}\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ServeError) as refused:
            serve(project, port, say=lambda line: None)
    assert str(refused.value) == (f"port {port} on 127.0.0.1 is taken by another program: "
                                  "serve --port PORT picks another")
    assert not (serve_folder(project) / "server.json").exists()


@pytest.mark.parametrize("text", ["deployments: []\n", "deployments:\n  - name: a\n",
                                  "deployments:\n  - name: a\n    work_pool: {name: ''}\n"])
def test_serve_needs_a_work_pool_for_every_deployment(tmp_path: Path, text: str) -> None:
    project = _project(tmp_path, text)
    with pytest.raises(ServeError) as refused:
        serve(project, 1, say=lambda line: None)
    assert str(refused.value) == f"{project / 'prefect.yaml'}: every deployment needs work_pool.name"


def test_an_alias_bomb_in_prefect_yaml_is_refused_before_anything_starts(tmp_path: Path) -> None:
    """prefect.yaml's ``definitions:`` is where anchors belong; nine nested lists of nine
    (9^9 values once expanded, what Prefect's own reading then walks) are refused."""
    rows = ["  - &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    rows += [f"  - &l{n} [{', '.join([f'*l{n - 1}'] * 9)}]" for n in range(1, 9)]
    project = _project(tmp_path, "definitions:\n" + "\n".join(rows) + "\n"
                       "deployments:\n  - name: a\n    work_pool: {name: pool}\n    tags: *l8\n")
    with pytest.raises(ServeError) as refused:
        work_pools(project)
    assert str(refused.value) == (
        f"{project / 'prefect.yaml'}: cannot be read (aliases expand the document to more than "
        "100,000 values (line 7); write the values out or use fewer nested aliases)")
