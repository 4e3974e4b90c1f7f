"""flows/server.py: the temporary Prefect server of a CLI run, started for real."""

from __future__ import annotations

import os
from pathlib import Path

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
