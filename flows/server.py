"""The temporary Prefect server of a CLI run, bound to the life of the process.

Without ``PREFECT_API_URL``, Prefect starts a temporary API server (a uvicorn
subprocess, about 200 MB) and stops it at exit; a run killed with SIGKILL never reaches
that exit, and the server stays behind as an orphan. Here the same server is started
with the kernel's parent-death signal (Linux ``PR_SET_PDEATHSIG``): when the process
that started it dies, however it dies, the server gets SIGTERM. Where that is not
available (not Linux), or a server is configured, Prefect's own behaviour applies.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child, before exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _server_class() -> Any:
    from prefect.server.api.server import SubprocessASGIServer

    class ServerThatDiesWithUs(SubprocessASGIServer):
        """Prefect's temporary server, started with a parent-death signal."""

        def _run_uvicorn_command(self) -> subprocess.Popen[Any]:
            import prefect
            from prefect.settings import get_current_settings

            # The command and environment of SubprocessASGIServer (Prefect 3.9).
            server_env = {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
                          "PREFECT__SERVER_FINAL": "1"}
            return subprocess.Popen(
                args=[sys.executable, "-m", "uvicorn", "--app-dir",
                      str(prefect.__module_path__.parent), "--factory",
                      "prefect.server.api.server:create_app", "--host", "127.0.0.1",
                      "--port", str(self.port), "--log-level", "error", "--lifespan", "on"],
                env={**os.environ, **server_env,
                     **get_current_settings().to_environment_variables(exclude_unset=True)},
                preexec_fn=_die_with_parent)

    return ServerThatDiesWithUs


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def prefect_server() -> Iterator[None]:
    """A Prefect API for the block: the configured one, or a temporary server that
    dies with this process (stopped at its exit, or by the kernel when it is killed)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if PREFECT_API_URL.value() or not sys.platform.startswith("linux"):
        yield
        return
    server = _server_class()(port=_free_port())  # a port of its own: never Prefect's shared one
    # start() registers the server's stop at exit, after Prefect's log and event workers
    # have drained: stopped earlier, they would retry sending to it for half a minute.
    server.start()
    with temporary_settings({PREFECT_API_URL: server.api_url}):
        yield
