"""Device transports: how the orchestrator runs commands on and moves files to a device.

Every transport offers the slice of ``fabric.Connection`` the benchmark uses:
``run(command, timeout=..., warn=True, hide=True) -> invoke Result``, ``put(local,
remote)``, ``get(remote, local)`` and ``close()``. The ``local`` device runs on this
machine through Invoke (Fabric's own local runner) so the code path is the one an SSH
board takes. Transports are a registry keyed by the device's ``transport`` field.
"""

from __future__ import annotations

import shlex
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable, Protocol

from tasks.config import LocalDevice


class Connection(Protocol):
    def run(self, command: str, *, timeout: float | None = None, warn: bool = True,
            hide: bool = True) -> Any: ...

    def put(self, local: Path, remote: str) -> None: ...

    def get(self, remote: str, local: Path) -> None: ...

    def close(self) -> None: ...


class LocalConnection:
    """This machine behind Fabric's Connection interface (Invoke runs the commands)."""

    def __init__(self) -> None:
        import invoke

        self._context = invoke.Context()

    def run(self, command: str, *, timeout: float | None = None, warn: bool = True,
            hide: bool = True) -> Any:
        return self._context.run(command, timeout=timeout, warn=warn, hide=hide, in_stream=False)

    def put(self, local: Path, remote: str) -> None:
        shutil.copyfile(local, remote)

    def get(self, remote: str, local: Path) -> None:
        shutil.copyfile(remote, local)

    def close(self) -> None:
        pass


TRANSPORTS: dict[str, Callable[[LocalDevice], Connection]] = {
    "local": lambda device: LocalConnection(),
}


def connect(device: LocalDevice) -> Connection:
    return TRANSPORTS[device.transport](device)


def device_python(device: LocalDevice) -> str:
    """The interpreter that runs the harness on the device."""
    return device.python or sys.executable


def quote_command(argv: Sequence[str | Path]) -> str:
    """One shell command line in which no argument can inject another command."""
    return shlex.join(str(arg) for arg in argv)
