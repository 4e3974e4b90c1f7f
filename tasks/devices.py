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

from tasks.config import LocalDevice, SshDevice


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


class HostKeyRefused(Exception):
    """The device's host key is unknown to the farm's known_hosts, or has changed."""


class SshConnection:
    """A Fabric connection that trusts only the farm's known_hosts.

    Fabric's default client auto-adds unknown host keys (paramiko's AutoAddPolicy) and
    reads the user's own known_hosts: neither is acceptable for a device farm, so the
    client is replaced by one that loads the farm's file alone and rejects anything else.
    Authentication is by the device's key file only (no agent, no key search).
    """

    def __init__(self, device: SshDevice) -> None:
        import paramiko
        from fabric import Connection as FabricConnection

        self.device = device
        self._fabric = FabricConnection(
            host=device.host, user=device.user, port=device.port,
            connect_timeout=device.connect_timeout,
            connect_kwargs={"key_filename": str(device.key_file), "look_for_keys": False,
                            "allow_agent": False})
        client = paramiko.SSHClient()
        if device.known_hosts.is_file():
            client.load_host_keys(str(device.known_hosts))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        self._fabric.client = client

    def _opened(self) -> Any:
        import paramiko

        try:
            self._fabric.open()
        except paramiko.BadHostKeyException as error:
            raise HostKeyRefused(
                f"host key of {self.device.host}:{self.device.port} changed "
                f"(got {error.key.get_name()} {error.key.fingerprint}); if the device was "
                f"re-imaged, replace its line in {self.device.known_hosts}") from None
        except paramiko.SSHException as error:
            if "not found in known_hosts" not in str(error):
                raise
            raise HostKeyRefused(
                f"host key of {self.device.host}:{self.device.port} is not in "
                f"{self.device.known_hosts}; verify its fingerprint and add it "
                f"(ssh-keyscan -p {self.device.port} {self.device.host} >> "
                f"{self.device.known_hosts})") from None
        return self._fabric

    def run(self, command: str, *, timeout: float | None = None, warn: bool = True,
            hide: bool = True) -> Any:
        return self._opened().run(command, timeout=timeout, warn=warn, hide=hide, in_stream=False)

    def put(self, local: Path, remote: str) -> None:
        self._opened().put(str(local), remote)

    def get(self, remote: str, local: Path) -> None:
        self._opened().get(remote, str(local))

    def close(self) -> None:
        self._fabric.close()


TRANSPORTS: dict[str, Callable[[Any], Connection]] = {
    "local": lambda device: LocalConnection(),
    "ssh": SshConnection,
}


def connect(device: LocalDevice | SshDevice) -> Connection:
    return TRANSPORTS[device.transport](device)


def device_python(device: LocalDevice | SshDevice) -> str:
    """The interpreter that runs the harness on the device."""
    return device.python or sys.executable


def quote_command(argv: Sequence[str | Path]) -> str:
    """One shell command line in which no argument can inject another command."""
    return shlex.join(str(arg) for arg in argv)
