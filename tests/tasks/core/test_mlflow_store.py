"""Whether a tracking server answers, against real local HTTP servers; what of a tracking
URI may be recorded."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tasks.core.errors import ConfigError
from tasks.core.mlflow_store import (check_answers, public_uri, store_uri, tracking_uri,
                                    without_credentials)


class _Refusing(http.server.BaseHTTPRequestHandler):
    """Answers every request with the status the server was started with."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.send_response(self.server.status)  # type: ignore[attr-defined]
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture()
def answering() -> Iterator[tuple[http.server.HTTPServer, str]]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Refusing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("status", [404, 401, 500])
def test_a_server_answering_health_with_an_error_status_counts_as_there(
        answering: tuple[http.server.HTTPServer, str], status: int) -> None:
    """A proxy or an older MLflow without /health, or one asking for credentials, is a
    server that answers: not refused as unreachable."""
    server, uri = answering
    server.status = status  # type: ignore[attr-defined]
    check_answers(uri, timeout=5)
    check_answers(uri + "/", timeout=5)


def test_nothing_listening_is_refused_in_one_line_naming_the_uri() -> None:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        uri = f"http://127.0.0.1:{free.getsockname()[1]}"
    with pytest.raises(ConfigError) as refused:
        check_answers(uri, timeout=5)
    assert str(refused.value).startswith(f"MLFLOW_TRACKING_URI {uri}: no MLflow server answers")
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("uri, public", [
    ("http://team-server:5000", "http://team-server:5000"),
    ("http://alice:s3cret@team-server:5000/", "http://team-server:5000/"),
    ("https://token@mlflow.example/api?workspace=ml&access_token=abc",
     "https://mlflow.example/api?workspace=ml"),
    ("postgresql://mlflow:pw@db.lan:5432/mlflow?sslmode=require&password=pw",
     "postgresql://db.lan:5432/mlflow?sslmode=require"),
    ("databricks", "databricks"),
])
def test_a_public_uri_holds_no_credential(tmp_path: Path, uri: str, public: str) -> None:
    assert public_uri(uri, tmp_path) == public
    assert "pw" not in public_uri(uri, tmp_path) and "s3cret" not in public_uri(uri, tmp_path)


def test_a_store_inside_the_experiment_is_relative_to_it_and_one_outside_is_kept(
        tmp_path: Path) -> None:
    root = tmp_path / "exp"
    root.mkdir()
    assert public_uri(tracking_uri(root), root) == "sqlite:///mlflow/mlflow.db"
    assert public_uri(f"sqlite:///{root}/runs/other.db", root) == "sqlite:///runs/other.db"
    outside = f"sqlite:///{tmp_path}/shared.db"
    assert public_uri(outside, root) == outside


def test_a_recorded_store_is_reached_again_from_the_experiment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "exp"
    root.mkdir()
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert store_uri("sqlite:///mlflow/mlflow.db", root) == tracking_uri(root)
    assert store_uri(f"sqlite:///{tmp_path}/shared.db", root) == f"sqlite:///{tmp_path}/shared.db"
    # The server named now is reached with the credentials it is named with now.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://alice:pw@team:5000")
    assert store_uri("http://team:5000", root) == "http://alice:pw@team:5000"
    assert store_uri("http://other:5000", root) == "http://other:5000"


def test_without_credentials_keeps_a_local_store_where_it_is(tmp_path: Path) -> None:
    local = f"sqlite:///{tmp_path}/exp/mlflow/mlflow.db"
    assert without_credentials(local) == local
    assert without_credentials("http://alice:pw@team:5000?token=t&x=1") == "http://team:5000?x=1"


def test_a_server_named_with_credentials_is_checked_without_them(
        answering: tuple[http.server.HTTPServer, str]) -> None:
    server, uri = answering
    server.status = 200  # type: ignore[attr-defined]
    check_answers(uri.replace("http://", "http://alice:s3cret@"), timeout=5)
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        gone = f"http://alice:s3cret@127.0.0.1:{free.getsockname()[1]}"
    with pytest.raises(ConfigError) as refused:
        check_answers(gone, timeout=5)
    assert "s3cret" not in str(refused.value) and "alice" not in str(refused.value)
    assert str(refused.value).startswith("MLFLOW_TRACKING_URI http://127.0.0.1:")
