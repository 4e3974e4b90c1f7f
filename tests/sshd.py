"""Real SSH devices for tests and benchmarks: Debian's OpenSSH server on loopback ports
with generated host and client keys, each server its own folder. Started and stopped
by whoever starts them, by process id."""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

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
    root: Path

    def farm_entry(self, workdir: Path | str, python: str, **extra: object) -> dict[str, object]:
        """This server as a farm.yaml device (an ``SshDevice``'s fields)."""
        return {"transport": "ssh", "host": self.host, "port": self.port, "user": self.user,
                "key_file": str(self.client_key), "known_hosts": str(self.known_hosts),
                "python": python, "workdir": str(workdir), **extra}


def sshd_available() -> bool:
    return os.path.exists(SSHD)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


def start_sshd(root: Path, client_key: Path | None = None) -> SshServer:
    """Start an sshd on a free loopback port; its known_hosts line is written to
    ``root/known_hosts``. ``client_key`` shares one client key between servers."""
    root.mkdir(parents=True, exist_ok=True)
    keygen(root / "host_key")
    if client_key is None:
        client_key = root / "client_key"
        keygen(client_key)
    (root / "authorized_keys").write_text(Path(f"{client_key}.pub").read_text())
    port = _free_port()
    config = root / "sshd_config"
    config.write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {root / 'host_key'}",
        f"PidFile {root / 'sshd.pid'}", f"AuthorizedKeysFile {root / 'authorized_keys'}",
        "PubkeyAuthentication yes", "PasswordAuthentication no",
        "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no",
        "PermitRootLogin prohibit-password", "Subsystem sftp internal-sftp",
        "MaxStartups 100", "MaxSessions 100", ""]))
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # privilege separation dir
    with open(root / "sshd.log", "w") as log:
        process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)],
                                   stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if process.poll() is not None:
                raise RuntimeError(f"sshd exited: {(root / 'sshd.log').read_text()[-500:]}")
            time.sleep(0.05)
    host_public = " ".join((root / "host_key.pub").read_text().split()[:2])
    (root / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_public}\n")
    return SshServer("127.0.0.1", port, getpass.getuser(), client_key, root / "known_hosts",
                     host_public, process.pid, root)


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, grandchildren...)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def stop_sshd(server: SshServer, kill_sessions: bool = False) -> None:
    """Stop the server by its pid; with ``kill_sessions`` also every session and command
    it started (the device "dies" with whatever it was running)."""
    victims = descendants(server.pid) if kill_sessions else []
    for pid in [server.pid, *victims]:
        try:
            os.kill(pid, signal.SIGKILL if kill_sessions else signal.SIGTERM)
        except ProcessLookupError:
            pass
    try:
        os.waitpid(server.pid, 0)
    except ChildProcessError:
        pass
