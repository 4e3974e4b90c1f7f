"""The temporary Prefect server of a CLI run, bound to the life of the process.

Without ``PREFECT_API_URL``, a CLI run needs a Prefect API of its own: Prefect would
start a temporary server (a uvicorn subprocess, about 200 MB) on first use and stop it
at exit. Here the same server (Prefect 3.9's command and environment for it) is started
by this module instead, for two reasons:

- it dies with the run: it is started with the kernel's parent-death signal (Linux
  ``PR_SET_PDEATHSIG``), so a run killed with SIGKILL, which never reaches its exit
  handlers, leaves no orphan server behind;
- it starts early and without loading Prefect's server code here: :func:`launch` needs
  only the standard library, so the server boots on one core while this process imports
  Prefect and the project and checks the configuration on the other (importing
  ``prefect.server`` into the CLI process just to start a subprocess cost seconds).

Where the parent-death signal is not available (not Linux), or a server is configured
(``PREFECT_API_URL``, from the environment or a Prefect profile), Prefect's own
behaviour applies.
"""

from __future__ import annotations

import atexit
import ctypes
import importlib.util
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

PR_SET_PDEATHSIG = 1
# uvicorn's exit code when its start failed: the port was taken between the probe and
# the bind, or another server was migrating the same new database (a first run beside
# another). Both pass on a second try, on a new port.
UVICORN_START_FAILED = 3
# The last line of a Python traceback: "package.module.SomeError: what happened".
EXCEPTION_LINE = re.compile(r"^[\w.]+(Error|Exception|Exit)\b.*")
# What Prefect's SubprocessASGIServer puts in the server's environment (3.9): no UI, and
# a server that knows it is temporary.
SERVER_ENV = {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
              "PREFECT__SERVER_FINAL": "1"}


def _die_with_parent() -> None:  # pragma: no cover - runs in the child, before exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def api_healthy(url: str) -> bool:
    """Whether the Prefect API at ``url`` (``http://HOST:PORT/api``) answers its health
    check. Standard library only."""
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _prefect_app_dir() -> str:
    """The folder holding the ``prefect`` package, found without importing it."""
    spec = importlib.util.find_spec("prefect")
    assert spec is not None and spec.submodule_search_locations, "prefect is not installed"
    return str(Path(list(spec.submodule_search_locations)[0]).parent)


class TemporaryServer:
    """A Prefect API server on a free loopback port of its own (never Prefect's shared
    one), stopped at this process's exit or by the kernel when the process dies."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.output: IO[bytes] | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def _spawn(self) -> None:
        # Its output goes to a file of its own, not the terminal: a start that fails and is
        # retried, or Prefect's server logging, is not the run's console (see _last_words).
        if self.output is not None:
            self.output.close()  # a failed start's, retried
        self.output = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--app-dir", _prefect_app_dir(), "--factory",
             "prefect.server.api.server:create_app", "--host", "127.0.0.1",
             "--port", str(self.port), "--log-level", "error", "--lifespan", "on"],
            env={**os.environ, **SERVER_ENV}, stdin=subprocess.DEVNULL,
            stdout=self.output, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)

    def _last_words(self) -> str:
        """Why the server stopped: the last exception it printed ("sqlite3.Operational
        Error: unable to open database file"), else its last line, else a placeholder."""
        assert self.output is not None, "launch() first"
        self.output.seek(0)
        lines = [line.strip() for line in
                 self.output.read().decode("utf-8", "replace").splitlines() if line.strip()]
        raised = [line for line in lines if EXCEPTION_LINE.match(line)]
        return (raised or lines or ["it said nothing"])[-1]

    def launch(self) -> "TemporaryServer":
        self._spawn()
        _started.append(self)
        # Registered before Prefect is used, so it runs after Prefect's own exit handlers
        # (they run last-registered first): its log and event workers drain into a live
        # server instead of retrying against a stopped one for half a minute.
        atexit.register(self.stop)
        return self

    def _healthy(self) -> bool:
        return api_healthy(self.api_url)

    def wait_ready(self, timeout: float) -> None:
        """Return once the API answers; RuntimeError when it exits or stays silent."""
        deadline, retried = time.monotonic() + timeout, False
        while not self._healthy():
            assert self.process is not None, "launch() first"
            code = self.process.poll()
            if code == UVICORN_START_FAILED and not retried:
                retried = True
                self.port = _free_port()
                self._spawn()
                continue
            if code is not None:
                raise RuntimeError(f"the temporary Prefect server exited with code {code}: "
                                   f"{self._last_words()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the temporary Prefect server did not answer within "
                                   f"{timeout:.0f} s (PREFECT_SERVER_EPHEMERAL_STARTUP_"
                                   "TIMEOUT_SECONDS)")
            time.sleep(0.05)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


_started: list[TemporaryServer] = []  # the temporary server this process runs, if any


def temporary_api_url() -> str | None:
    """The API URL of the temporary server this process started, if any."""
    return _started[-1].api_url if _started else None


def launch() -> TemporaryServer | None:
    """Start a temporary server now, without waiting for it, unless the environment
    names a server (``PREFECT_API_URL``) or this is not Linux. Standard library only."""
    if os.environ.get("PREFECT_API_URL") or not sys.platform.startswith("linux"):
        return None
    return TemporaryServer().launch()


# What a flow run imports when it starts (Prefect's engines, artifacts, concurrency
# slots, the flow graph): a tenth of a second, done while a temporary server boots
# instead of after it answers.
RUN_MODULES = ("prefect.flow_engine", "prefect.task_engine", "prefect.artifacts",
               "prefect.concurrency.sync", "prefect.utilities.visualization")


def import_run_modules() -> None:
    """Import :data:`RUN_MODULES`."""
    for name in RUN_MODULES:
        importlib.import_module(name)


def _without_unasked_heartbeats() -> dict[str, None]:
    """No flow run heartbeats from a CLI run unless a frequency was configured
    (``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` in the environment or the profile).

    A heartbeat only serves a "zombie run" automation on the server, and a CLI run is
    watched by its terminal: it ends its flow run as Failed or Cancelled itself. Prefect
    sends them every 180 s by default, and its engine waits up to a second for the
    heartbeat thread when a run ends (a fifth of a no-op run on a lasting server).
    Deployed runs keep Prefect's default: no terminal watches a worker's run."""
    from prefect.settings import get_current_settings

    asked = "heartbeat_frequency" in get_current_settings().flows.model_fields_set
    return {} if asked else {"flows.heartbeat_frequency": None}


@contextmanager
def prefect_server(started: TemporaryServer | None = None) -> Iterator[None]:
    """A Prefect API for the block: the configured one, or a temporary server that dies
    with this process (``started`` by :func:`launch`, or started now)."""
    from prefect.settings import (PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
                                  temporary_settings)

    if PREFECT_API_URL.value() or not sys.platform.startswith("linux"):
        if started is not None:
            started.stop()  # a profile names a server: the early one is not needed
        with temporary_settings(_without_unasked_heartbeats()):
            yield
        return
    server = started or TemporaryServer().launch()
    import_run_modules()  # the server's boot, not this, is what a no-op run waits for
    server.wait_ready(float(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value()))
    # No flow run heartbeats: they tell a lasting server that a run is still alive, and
    # this server dies with the run, so they would tell nobody; the engine also waits up
    # to a second for its heartbeat thread when a run ends (half a no-op's flow time).
    # No API version check either: the server is this installation's own Prefect.
    with temporary_settings({PREFECT_API_URL: server.api_url,
                             "flows.heartbeat_frequency": None,
                             "client.server_version_check_enabled": False}):
        yield
