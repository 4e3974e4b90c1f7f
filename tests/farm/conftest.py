"""Real SSH devices for the farm tests: Debian's OpenSSH server on loopback ports, with
generated host and client keys, started and stopped (by process id) by the fixtures."""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


@dataclass(frozen=True)
class SshServer:
    host: str
    port: int
    user: str
    client_key: Path
    known_hosts: Path
    host_public_key: str
    pid: int


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


def start_sshd(root: Path) -> tuple[SshServer, subprocess.Popen]:
    root.mkdir(parents=True, exist_ok=True)
    _keygen(root / "host_key")
    _keygen(root / "client_key")
    (root / "authorized_keys").write_text((root / "client_key.pub").read_text())
    port = _free_port()
    config = root / "sshd_config"
    config.write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {root / 'host_key'}",
        f"PidFile {root / 'sshd.pid'}", f"AuthorizedKeysFile {root / 'authorized_keys'}",
        "PubkeyAuthentication yes", "PasswordAuthentication no",
        "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no",
        "PermitRootLogin prohibit-password", "Subsystem sftp internal-sftp", ""]))
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # privilege separation dir
    process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)],
                               stdout=subprocess.DEVNULL, stderr=open(root / "sshd.log", "w"))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if process.poll() is not None:
                raise RuntimeError(f"sshd exited: {(root / 'sshd.log').read_text()[-500:]}")
            time.sleep(0.1)
    host_public = " ".join((root / "host_key.pub").read_text().split()[:2])
    (root / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_public}\n")
    return SshServer("127.0.0.1", port, getpass.getuser(), root / "client_key",
                     root / "known_hosts", host_public, process.pid), process


@pytest.fixture(scope="module")
def ssh_server(tmp_path_factory: pytest.TempPathFactory):
    if not os.path.exists(SSHD):
        pytest.skip("OpenSSH server not installed (`make test` installs it when run as root)")
    server, process = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    os.kill(server.pid, 15)
    process.wait(timeout=10)
