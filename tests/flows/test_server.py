"""flows/server.py: the temporary Prefect server of a CLI run, started for real."""

from __future__ import annotations

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



def test_a_run_on_the_temporary_server_sends_no_heartbeats_one_on_a_lasting_server_does(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Heartbeats tell a lasting server a run is alive; the temporary one dies with the
    run. Nor is its API version checked: it is this installation's Prefect."""
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
        assert settings.flows.heartbeat_frequency == 180
        assert settings.client.server_version_check_enabled is True
