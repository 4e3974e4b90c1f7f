"""flows/server.py: the temporary Prefect server of a CLI run, started for real."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from flows.server import TemporaryServer


def test_a_server_that_cannot_start_is_retried_once_then_named_with_its_last_words(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    """Its database cannot be created: uvicorn's start fails (exit 3) on both tries. The
    error says why in one line; the server's traceback never reaches the terminal (a
    start that fails once and then works, two first runs migrating one new database,
    printed ~40 lines there)."""
    monkeypatch.setenv("PREFECT_API_DATABASE_CONNECTION_URL",
                       f"sqlite+aiosqlite:///{tmp_path / 'no-such-folder' / 'prefect.db'}")
    server = TemporaryServer().launch()
    first_port = server.port
    try:
        with pytest.raises(RuntimeError) as failed:
            server.wait_ready(timeout=120)
    finally:
        server.stop()
    # The exception the server died of, not uvicorn's "Application startup failed".
    assert str(failed.value) == ("the temporary Prefect server exited with code 3: "
                                 "sqlalchemy.exc.OperationalError: (sqlite3.OperationalError) "
                                 "unable to open database file")
    assert server.port != first_port, "retried on a new port"
    captured = capfd.readouterr()
    assert "Traceback" not in captured.out + captured.err



def test_a_cli_run_sends_heartbeats_only_to_a_lasting_server_that_was_configured_for_them(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Heartbeats tell a lasting server a run is alive; the temporary one dies with the
    run, and a terminal watches a CLI run unless the user asked for them. Nor is the
    temporary server's API version checked: it is this installation's Prefect."""
    from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

    from flows.server import prefect_server

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with temporary_settings(restore_defaults={PREFECT_API_URL}), prefect_server():
        settings = get_current_settings()
        assert settings.api.url is not None and settings.api.url.startswith("http://127.0.0.1:")
        assert settings.flows.heartbeat_frequency is None
        assert settings.client.server_version_check_enabled is False
    lasting = "http://127.0.0.1:4200/api"
    with temporary_settings({PREFECT_API_URL: lasting}), prefect_server():
        settings = get_current_settings()
        assert settings.api.url == lasting
        assert settings.flows.heartbeat_frequency is None
        assert settings.client.server_version_check_enabled is True
    assert get_current_settings().flows.heartbeat_frequency == 180, "Prefect's default after"
    monkeypatch.setenv("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "240")
    with temporary_settings({PREFECT_API_URL: lasting}), prefect_server():
        assert get_current_settings().flows.heartbeat_frequency == 240
    monkeypatch.setenv("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "180")  # asked for: the default
    with temporary_settings({PREFECT_API_URL: lasting}), prefect_server():
        assert get_current_settings().flows.heartbeat_frequency == 180


WAITING = """
import sys
from flows.server import RUN_MODULES, prefect_server


class Booting:
    api_url = "http://127.0.0.1:9/api"

    def wait_ready(self, timeout):
        print(sorted(name for name in RUN_MODULES if name not in sys.modules))
        raise SystemExit(0)


with prefect_server(Booting()):
    pass
"""


def test_what_a_flow_run_imports_is_imported_while_the_temporary_server_boots() -> None:
    """A no-op run waits seconds for its temporary server: the fifth of a second of
    imports a flow run starts with is done before that wait, not after it."""
    import subprocess
    import sys

    env = {name: value for name, value in os.environ.items() if name != "PREFECT_API_URL"}
    done = subprocess.run([sys.executable, "-c", WAITING], capture_output=True, text=True,
                          timeout=120, check=False, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


PARAMETERS = """
import json, sys
from pathlib import Path
from typing import Any
from flows.lifecycle import lifecycle

plain = lifecycle.serialize_parameters(
    {"params_path": "exp/params.yaml", "farm_path": "farm.yaml", "refresh": ["benchmark"]})
print(json.dumps([plain, "fastapi" in sys.modules]))
other = lifecycle.serialize_parameters({"params_path": Path("exp/params.yaml"), "refresh": None})
print(json.dumps([other, "fastapi" in sys.modules]))
"""


def test_a_runs_plain_parameters_are_stored_as_they_are_without_prefects_encoder() -> None:
    """Prefect's encoder imports fastapi (a tenth of a second of a no-op run): plain JSON
    parameters, the CLI's and a deployment's, skip it; anything else still goes through it."""
    import json
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", PARAMETERS], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    plain, other = (json.loads(line) for line in done.stdout.splitlines())
    assert plain == [{"params_path": "exp/params.yaml", "farm_path": "farm.yaml",
                      "refresh": ["benchmark"]}, False]
    assert other == [{"params_path": "exp/params.yaml", "refresh": None}, True]


# In process, with fakes for the server's process and health (no uvicorn started).

class _Process:
    """A server process that exits with ``codes`` in turn (None: still running)."""

    def __init__(self, codes: list[int | None]) -> None:
        self.codes, self.signals = codes, []

    def poll(self) -> int | None:
        return self.codes.pop(0) if self.codes else None

    def terminate(self) -> None:
        self.signals.append("terminate")

    def kill(self) -> None:
        self.signals.append("kill")

    def wait(self, timeout: float | None = None) -> int:
        import subprocess

        self.signals.append(("wait", timeout))
        if timeout is not None and "stubborn" in self.codes:
            raise subprocess.TimeoutExpired("uvicorn", timeout)
        return 0


def _quiet_server(monkeypatch: pytest.MonkeyPatch, process: _Process, output: bytes,
                  healthy: list[bool]) -> TemporaryServer:
    import tempfile

    from flows import server as module

    ports = iter([1001, 1002, 1003])
    monkeypatch.setattr(module, "_free_port", lambda: next(ports))
    server = TemporaryServer()
    spawned: list[int] = []

    def spawn() -> None:
        spawned.append(server.port)
        server.process = process
        server.output = tempfile.TemporaryFile()
        server.output.write(output)

    monkeypatch.setattr(server, "_spawn", spawn)
    monkeypatch.setattr(server, "_healthy", lambda: healthy.pop(0) if healthy else False)
    monkeypatch.setattr(module.time, "sleep", lambda seconds: None)
    server.spawned = spawned  # type: ignore[attr-defined]
    return server


@pytest.mark.parametrize(("output", "words"), [
    (b"", "it said nothing"), (b"\n  \n", "it said nothing"),
    (b"starting\n  last line  \n\n", "last line"),
    (b"Traceback\nValueError: first\n  x\nsqlite3.OperationalError: locked\nExit 3\n",
     "sqlite3.OperationalError: locked"),
    (b"KeyboardInterruptException: stopped\nnot an Error: line\n",
     "KeyboardInterruptException: stopped"),
    (b"typer.Exit: 2\nbye\n", "typer.Exit: 2"),
    (b"MyErrorous thing\nok\n", "ok")])
def test_a_stopped_servers_last_words_are_its_last_exception_else_its_last_line(
        monkeypatch: pytest.MonkeyPatch, output: bytes, words: str) -> None:
    server = _quiet_server(monkeypatch, _Process([]), output, [])
    server._spawn()
    assert server._last_words() == words


@pytest.mark.parametrize("code", [3, 1, 0])
def test_only_uvicorns_start_failure_is_tried_again_on_a_new_port_for_uvicorns_start_failure(
        monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    server = _quiet_server(monkeypatch, _Process([code, code]), b"Error: no database\n", [])
    server.launch()
    with pytest.raises(RuntimeError) as failed:
        server.wait_ready(timeout=1)  # a third try would wait for it, not exit at once
    assert str(failed.value) == f"the temporary Prefect server exited with code {code}: " \
                                "Error: no database"
    assert server.spawned == ([1001, 1002] if code == 3 else [1001])  # type: ignore
    server.stop()


def test_a_second_start_that_answers_is_ready(monkeypatch: pytest.MonkeyPatch) -> None:
    process = _Process([3, None, None])
    server = _quiet_server(monkeypatch, process, b"", [False, False, False, True])
    server.launch()
    server.wait_ready(timeout=60)
    assert (server.port, server.api_url) == (1002, "http://127.0.0.1:1002/api")
    assert server.spawned == [1001, 1002]  # type: ignore[attr-defined]
    server.stop()
    assert process.signals == ["terminate", ("wait", 5)]
    server.stop()  # stopped already: nothing more
    assert process.signals == ["terminate", ("wait", 5)]


def test_a_server_that_never_answers_is_given_up_after_the_timeout(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from flows import server as module

    clock = iter([100.0, 150.0, 160.5, 161.0])
    monkeypatch.setattr(module.time, "monotonic", lambda: next(clock))
    server = _quiet_server(monkeypatch, _Process([]), b"", [])
    server.launch()
    with pytest.raises(RuntimeError) as failed:
        server.wait_ready(timeout=60.4)
    assert str(failed.value) == ("the temporary Prefect server did not answer within 60 s "
                                 "(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS)")
    server.stop()


def test_a_server_that_ignores_terminate_is_killed(monkeypatch: pytest.MonkeyPatch) -> None:
    process = _Process(["stubborn"])  # type: ignore[list-item]
    server = _quiet_server(monkeypatch, process, b"", [])
    server.launch()
    server.stop()
    assert process.signals == ["terminate", ("wait", 5), "kill", ("wait", None)]


def test_the_temporary_api_is_the_last_started_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    from flows import server as module

    monkeypatch.setattr(module, "_started", [])
    assert module.temporary_api_url() is None
    for port in (7, 8):
        started = TemporaryServer()
        started.port = port
        module._started.append(started)
    assert module.temporary_api_url() == "http://127.0.0.1:8/api"


@pytest.mark.parametrize(("configured", "platform", "starts"), [
    ("", "linux", True), ("http://127.0.0.1:4200/api", "linux", False), ("", "darwin", False)])
def test_a_server_is_launched_only_on_linux_without_a_configured_api(
        monkeypatch: pytest.MonkeyPatch, configured: str, platform: str, starts: bool) -> None:
    from flows import server as module

    monkeypatch.setenv("PREFECT_API_URL", configured)
    monkeypatch.setattr(module.sys, "platform", platform)
    monkeypatch.setattr(module, "_started", [])
    registered: list[Any] = []
    monkeypatch.setattr(module.atexit, "register", registered.append)
    monkeypatch.setattr(TemporaryServer, "_spawn", lambda self: None)
    launched = module.launch()
    assert (launched is not None) is starts
    if starts:
        assert module._started == [launched] and registered == [launched.stop]
    else:
        assert module._started == [] and registered == []


def test_an_api_is_healthy_only_when_its_health_check_answers_200() -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from flows.server import _free_port, api_healthy

    asked: list[str] = []

    class Health(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            self.send_response(int(self.path.split("/")[1]))
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    with ThreadingHTTPServer(("127.0.0.1", 0), Health) as http:
        threading.Thread(target=http.serve_forever, args=(0.01,), daemon=True).start()
        base = f"http://127.0.0.1:{http.server_address[1]}"
        try:
            assert [api_healthy(f"{base}/{status}/api") for status in (200, 204, 404, 500)] \
                == [True, False, False, False]
        finally:
            http.shutdown()
    assert asked == [f"/{status}/api/health" for status in (200, 204, 404, 500)]
    assert api_healthy(f"http://127.0.0.1:{_free_port()}/api") is False
    assert api_healthy("not a url") is False
