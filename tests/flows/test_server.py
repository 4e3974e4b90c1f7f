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

