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


# What each part of ``serve`` says and does, with its Prefect commands replaced by small
# Python processes (the real ones: tests/flows/test_deployment.py).

SLEEP = [sys.executable, "-c", "import time; time.sleep(120)"]


def test_the_work_pools_are_the_deployments_in_order_each_once(tmp_path: Path) -> None:
    project = _project(tmp_path, "deployments:\n"
                                 "  - {name: a, work_pool: {name: nightly}}\n"
                                 "  - {name: b, work_pool: {name: adhoc}}\n"
                                 "  - {name: c, work_pool: {name: nightly}}\n")
    assert work_pools(project) == ["nightly", "adhoc"]
    (project / "prefect.yaml").unlink()
    with pytest.raises(ServeError, match=r"prefect.yaml: cannot be read \(\[Errno 2\] "):
        work_pools(project)


def test_a_start_time_is_field_22_of_proc_stat_and_none_once_gone() -> None:
    from flows.serve import _alive

    child = subprocess.Popen(SLEEP)
    try:
        with open(f"/proc/{child.pid}/stat", encoding="utf-8") as handle:
            expected = int(handle.read().split()[21])  # "(python3)": no space in the name
        assert _start_time(child.pid) == expected
        assert _alive(child.pid, expected) and not _alive(child.pid, expected + 1)
    finally:
        child.kill()
    child.wait()  # reaped: gone
    assert _start_time(child.pid) is None


def test_a_zombie_has_no_start_time() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        import time
        for _ in range(100):  # exited, not yet reaped
            with open(f"/proc/{child.pid}/stat", encoding="utf-8") as handle:
                if handle.read().split(") ")[1].startswith("Z"):
                    break
            time.sleep(0.05)
        assert _start_time(child.pid) is None
    finally:
        child.wait()


def test_the_environment_of_each_process_points_at_the_server(monkeypatch) -> None:
    from flows.serve import _environment

    monkeypatch.setenv("KEPT", "1")
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    env = _environment("http://127.0.0.1:4300/api")
    assert {key: env[key] for key in ("PREFECT_API_URL", "PREFECT_SERVER_ANALYTICS_ENABLED",
                                      "PREFECT_WORKER_QUERY_SECONDS", "TF_CPP_MIN_LOG_LEVEL",
                                      "KEPT")} == {
        "PREFECT_API_URL": "http://127.0.0.1:4300/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_WORKER_QUERY_SECONDS": "1",
        "TF_CPP_MIN_LOG_LEVEL": "2", "KEPT": "1"}
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")  # the user's own is kept
    assert _environment("u")["TF_CPP_MIN_LOG_LEVEL"] == "0"


def test_a_log_tail_is_its_last_line_with_text_cut_to_300(tmp_path: Path) -> None:
    from flows.serve import _tail

    log = tmp_path / "server.log"
    assert _tail(log) == "no log"
    log.write_text("\n  \n")
    assert _tail(log) == "empty log"
    log.write_text("first\n  Error: port in use  \n\n   \n")
    assert _tail(log) == "Error: port in use"
    log.write_text("x" * 299 + "yz\n")
    assert _tail(log) == "x" * 299 + "y"


def test_a_record_is_read_only_when_it_names_a_pid(tmp_path: Path) -> None:
    service = Service("server", tmp_path)
    assert (service.record, service.log) == (tmp_path / "server.json", tmp_path / "server.log")
    assert service.read() is None
    for text in ("not json", "[1, 2]", '{"pid": "12"}', '{"port": 12}'):
        service.record.write_text(text)
        assert service.read() is None, text
    service.record.write_text('{"pid": 12, "api_url": "u"}')
    assert service.read() == {"pid": 12, "api_url": "u"}


def test_a_spawned_process_is_recorded_with_its_facts_and_logs_after_the_last(
        tmp_path: Path) -> None:
    service = Service("worker", tmp_path / "serve")
    service.folder.mkdir()
    service.log.write_text("earlier\n")
    # The child gets the environment given (not ours) and a session of its own (a
    # Ctrl-C in the terminal that started it does not reach it).
    argv = [sys.executable, "-c", "import os; print('started', os.environ.get('PROBE'), "
            "os.getsid(0) == os.getpid())"]
    record = _spawn(service, argv, {"PROBE": "given"}, tmp_path, pool="nightly")
    assert json.loads(service.record.read_text()) == record
    assert set(record) == {"pid", "start_time", "command", "pool"}
    assert (record["command"], record["pool"]) == (argv, "nightly")
    import time
    for _ in range(100):
        if service.log.read_text() == "earlier\nstarted given True\n":
            break
        time.sleep(0.05)
    assert service.log.read_text() == "earlier\nstarted given True\n"


@pytest.fixture
def commands(monkeypatch):
    """``_prefect(*args)`` runs the Python code set for ``args[0]`` instead; the API is
    healthy at the URLs in the set returned."""
    import flows.serve as served

    code: dict[str, str] = {}
    healthy: set[str] = set()
    monkeypatch.setattr(served, "_prefect", lambda *args: [sys.executable, "-c",
                                                           code[args[0]]])
    monkeypatch.setattr(served, "api_healthy", lambda url: url in healthy)
    return code, healthy


def test_a_server_started_is_waited_for_until_its_api_answers(tmp_path: Path, commands,
                                                              monkeypatch) -> None:
    import flows.serve as served

    code, healthy = commands
    code["server"] = "import time; time.sleep(120)"
    service = Service("server", serve_folder(tmp_path))
    checks: list[str] = []
    monkeypatch.setattr(served, "api_healthy", lambda url: checks.append(url) or len(checks) > 2)
    try:
        record, line = served._start_server(service, 4311, tmp_path)
        url = "http://127.0.0.1:4311/api"
        assert checks == [url] * 3
        assert line == f"server: started (pid {record['pid']}) at {url}, log {service.log}"
        assert service.read() == record and record["api_url"] == url
        # Served again: the running one is found, nothing started.
        monkeypatch.setattr(served, "api_healthy", lambda url: True)
        assert served._start_server(service, 9999, tmp_path) == (
            record, f"server: already running (pid {record['pid']}) at {url}")
        monkeypatch.setattr(served, "api_healthy", lambda url: False)
        with pytest.raises(ServeError) as silent:
            served._start_server(service, 4311, tmp_path)
        assert str(silent.value) == (f"server (pid {record['pid']}) does not answer at {url}: "
                                     f"`edgeflow stop`, then serve again (log: {service.log})")
    finally:
        stop(tmp_path, say=lambda line: None)


def test_a_server_that_exits_or_never_answers_is_named_with_its_log(
        tmp_path: Path, commands, monkeypatch) -> None:
    import flows.serve as served

    code, _ = commands
    service = Service("server", serve_folder(tmp_path))
    code["server"] = "print('Error: database is locked'); raise SystemExit(1)"
    with pytest.raises(ServeError) as exited:
        served._start_server(service, 4312, tmp_path)
    assert str(exited.value) == ("the Prefect server exited at start: Error: database is "
                                 f"locked (log: {service.log})")
    code["server"] = "import time; time.sleep(120)"
    monkeypatch.setattr(served, "SERVER_START_TIMEOUT", 0.6)
    try:
        with pytest.raises(ServeError) as late:
            served._start_server(service, 4312, tmp_path)
        assert str(late.value) == ("the Prefect server did not answer at "
                                   "http://127.0.0.1:4312/api within 1 s "
                                   f"(log: {service.log})")
    finally:
        stop(tmp_path, say=lambda line: None)


def test_a_worker_is_reused_for_its_server_and_replaced_for_another(
        tmp_path: Path, commands, monkeypatch: pytest.MonkeyPatch) -> None:
    import flows.serve as served

    code, _ = commands
    code["worker"] = "import time; time.sleep(120)"
    service = Service("worker", serve_folder(tmp_path))
    try:
        line = served._start_worker(service, "http://a/api", "nightly", tmp_path)
        first = service.read()
        assert first is not None and (first["api_url"], first["pool"]) == ("http://a/api",
                                                                            "nightly")
        assert line == f"worker: started (pid {first['pid']}) on pool nightly, log {service.log}"
        assert served._start_worker(service, "http://a/api", "nightly", tmp_path) == (
            f"worker: already running (pid {first['pid']}) on pool nightly")
        served._start_worker(service, "http://b/api", "nightly", tmp_path)
        second = service.read()
        assert second["pid"] != first["pid"] and second["api_url"] == "http://b/api"
        assert _start_time(first["pid"]) is None  # the earlier server's worker: stopped
        code["worker"] = "print('no pool named nightly'); raise SystemExit(1)"
        stop(tmp_path, say=lambda line: None)
        # Long enough for the stand-in's interpreter to start and exit on two busy cores.
        monkeypatch.setattr(served, "WORKER_SETTLE_SECONDS", 5.0)
        with pytest.raises(ServeError) as exited:
            served._start_worker(service, "http://b/api", "nightly", tmp_path)
        assert str(exited.value) == ("the worker exited at start: no pool named nightly "
                                     f"(log: {service.log})")
    finally:
        stop(tmp_path, say=lambda line: None)


def test_deployments_are_made_once_for_the_same_server_prefect_yaml_and_flow_code(
        tmp_path: Path, commands, monkeypatch) -> None:
    import flows.serve as served

    code, _ = commands
    project = _project(tmp_path / "project", "deployments:\n  - name: nightly\n"
                       "    entrypoint: flows/run.py:lifecycle\n    work_pool: {name: p}\n")
    (project / "flows").mkdir()
    (project / "flows" / "run.py").write_text("def lifecycle(): pass\n")
    folder = serve_folder(project)
    folder.mkdir(parents=True)
    code["--no-prompt"] = ("import os, sys; print(os.getcwd(), os.environ['PREFECT_API_URL'],"
                           " sys.argv[1:]); open('deployed', 'a').write('x')")
    monkeypatch.setattr(served, "_deployed_names", lambda url: ["lifecycle/nightly"])
    server = {"pid": 10, "start_time": 77}
    said = served._deploy(folder, "http://s/api", project, server)
    assert said == f"deployments: lifecycle/nightly (run from {project})"
    assert (project / "deployed").read_text() == "x"
    assert (folder / "deploy.log").read_text().startswith(f"{project} http://s/api")
    inputs = json.loads((folder / "deployed.json").read_text())
    assert inputs["server"] == [10, 77] and inputs["project"] == str(project)
    assert served._deploy(folder, "http://s/api", project, server) == (
        f"deployments: up to date: lifecycle/nightly (run from {project})")
    assert (project / "deployed").read_text() == "x"
    # Each input changed deploys again: the server restarted, the flow code edited.
    for changed_server, edit in (({"pid": 10, "start_time": 78}, ""),
                                 ({"pid": 11, "start_time": 77}, ""),
                                 (server, "# edited\n")):
        (project / "flows" / "run.py").write_text("def lifecycle(): pass\n" + edit)
        assert not served._deploy(folder, "u", project, changed_server).startswith(
            "deployments: up to date")
    assert (project / "deployed").read_text() == "xxxx"
    code["--no-prompt"] = "print('Error: no flow lifecycle'); raise SystemExit(1)"
    (project / "flows" / "run.py").write_text("broken\n")
    with pytest.raises(ServeError) as failed:
        served._deploy(folder, "u", project, server)
    assert str(failed.value) == ("`prefect deploy --all` failed: Error: no flow lifecycle "
                                 f"(log: {folder / 'deploy.log'})")


@pytest.mark.parametrize("started", [True, False])
def test_serve_says_each_part_in_order_and_frees_slots_only_on_a_fresh_server(
        tmp_path: Path, monkeypatch, started: bool) -> None:
    import flows.serve as served

    project = _project(tmp_path, "deployments:\n"
                                 "  - {name: a, work_pool: {name: second}}\n"
                                 "  - {name: b, work_pool: {name: first}}\n")
    calls: list[tuple] = []
    server = {"pid": 5, "start_time": 1, "api_url": "http://127.0.0.1:4400/api"}
    monkeypatch.setattr(served, "_start_server", lambda service, port, where: calls.append(
        ("server", service.name, port, where)) or (
        server, "server: started ..." if started else "server: already running ..."))
    monkeypatch.setattr(served, "_reset_device_slots", lambda url: f"slots {url}")
    monkeypatch.setattr(served, "_ensure_pool", lambda url, pool: f"pool {pool} {url}")
    monkeypatch.setattr(served, "_deploy", lambda folder, url, where, got: calls.append(
        ("deploy", folder, where, got)) or "deployments")
    monkeypatch.setattr(served, "_start_worker", lambda service, url, pool, where: (
        f"worker {service.name} {url} {pool} {where}"))
    lines: list[str] = []
    url = "http://127.0.0.1:4400/api"
    assert serve(project, 4400, say=lines.append) == url
    assert lines == (["server: started ..." if started else "server: already running ..."]
                     + ([f"slots {url}"] if started else [])
                     + [f"pool second {url}", f"pool first {url}", "deployments",
                        f"worker worker {url} second {project.resolve()}",
                        f"export PREFECT_API_URL={url}   # then `prefect deployment run ...`, "
                        "`edgeflow run` on this server; UI at http://127.0.0.1:4400"])
    assert calls == [("server", "server", 4400, project.resolve()),
                     ("deploy", serve_folder(project.resolve()), project.resolve(), server)]


@pytest.mark.parametrize("tags,said", [([], "none yet"), (["pi", "jetson"], "pi, jetson")])
def test_freeing_the_device_slots_names_each_limit_or_none_yet(monkeypatch, tags, said) -> None:
    from contextlib import nullcontext

    import flows.devices
    import flows.serve as served

    client = object()
    monkeypatch.setattr(served, "_client", lambda url: nullcontext(client))
    monkeypatch.setattr(flows.devices, "reset_device_slots",
                        lambda got: tags if got is client else None)
    assert served._reset_device_slots("http://a/api") == f"device limits: {said} (slots freed)"
