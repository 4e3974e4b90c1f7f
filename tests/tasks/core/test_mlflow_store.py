"""Whether a tracking server answers, against real local HTTP servers."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator

import pytest

from tasks.core.errors import ConfigError
from tasks.core.mlflow_store import check_answers


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
