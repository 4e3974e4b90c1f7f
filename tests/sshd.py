"""Real SSH devices for tests and benchmarks: Debian's OpenSSH server on loopback ports
with generated host and client keys, each server its own folder. Started and stopped
by whoever starts them, by process id."""

from __future__ import annotations

import getpass
import itertools
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
    netns: str | None = None

    def farm_entry(self, workdir: Path | str, python: str, **extra: object) -> dict[str, object]:
        """This server as a farm.yaml device (an ``SshDevice``'s fields)."""
        return {"transport": "ssh", "host": self.host, "port": self.port, "user": self.user,
                "key_file": str(self.client_key), "known_hosts": str(self.known_hosts),
                "python": python, "workdir": str(workdir), **extra}


def sshd_available() -> bool:
    return os.path.exists(SSHD)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def keygen(path: Path, kind: str = "ed25519") -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-f", str(path)], check=True)


_namespaces = itertools.count(1)


def netns_available() -> bool:
    """Whether this machine lets us make network namespaces (root with CAP_NET_ADMIN)."""
    name = f"efprobe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True, check=False)
    if made.returncode != 0:
        return False
    subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
    return True


def _make_netns() -> tuple[str, str]:
    """A network namespace joined to this one by a veth pair; returns its name and the
    address the device has inside it."""
    number = next(_namespaces)
    tag = f"{os.getpid() % 10000}x{number}"
    name, host_side, device_side = f"ef{tag}", f"efh{tag}", f"efd{tag}"
    subnet = f"10.{100 + os.getpid() % 100}.{number % 250}"
    for argv in (["ip", "netns", "add", name],
                 ["ip", "link", "add", host_side, "type", "veth", "peer", "name", device_side],
                 ["ip", "link", "set", device_side, "netns", name],
                 ["ip", "addr", "add", f"{subnet}.1/30", "dev", host_side],
                 ["ip", "link", "set", host_side, "up"],
                 ["ip", "netns", "exec", name, "ip", "addr", "add", f"{subnet}.2/30", "dev", device_side],
                 ["ip", "netns", "exec", name, "ip", "link", "set", device_side, "up"],
                 ["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"]):
        subprocess.run(argv, check=True, capture_output=True)
    return name, f"{subnet}.2"


def sshd_config(root: Path, port: int, host: str, more_host_keys: tuple[str, ...] = (),
                set_env: tuple[str, ...] = ()) -> str:
    """The sshd_config of a test device whose files (host keys, authorized_keys, pid
    file, home) are in ``root`` as the server sees it; ``set_env``: more ``NAME=value``
    for every session."""
    return "\n".join([
        f"Port {port}", f"ListenAddress {host}", f"HostKey {root / 'host_key'}",
        *(f"HostKey {root / f'host_key_{kind}'}" for kind in more_host_keys),
        f"PidFile {root / 'sshd.pid'}", f"AuthorizedKeysFile {root / 'authorized_keys'}",
        "PubkeyAuthentication yes", "PasswordAuthentication no",
        "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no",
        "PermitRootLogin prohibit-password", "Subsystem sftp internal-sftp",
        "MaxStartups 100", "MaxSessions 100",
        # The boards log in as this machine's user, but must not read its start-up files:
        # root's .bashrc here runs `pyenv init`, whose `pyenv rehash` takes a lock in the
        # host's ~/.pyenv; a shell a test kills mid-rehash leaves that lock and every
        # later login waits 60 s for it. Each board gets a HOME of its own (an empty
        # folder: bash finds no .bashrc there), and any rehash waits at most 2 s.
        f"SetEnv PYENV_REHASH_TIMEOUT=2 HOME={root / 'home'} {' '.join(set_env)}".rstrip(),
        ""])


def wait_listening(host: str, port: int, process: subprocess.Popen, log: Path,
                   seconds: float = 20) -> None:
    """Wait until ``process`` (a starting sshd) accepts connections on host:port;
    RuntimeError with its log's tail if it exits first or never does."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            if process.poll() is not None:
                raise RuntimeError(f"sshd exited: {log.read_text()[-500:]}") from None
            time.sleep(0.05)
    raise RuntimeError(f"sshd not listening on {host}:{port} after {seconds:.0f} s: "
                       f"{log.read_text()[-500:]}")


def start_sshd(root: Path, client_key: Path | None = None, isolated: bool = False,
               more_host_keys: tuple[str, ...] = ()) -> SshServer:
    """Start an sshd on a free loopback port, or with ``isolated`` on port 22 of its own
    address in its own network namespace; its known_hosts line (of its ed25519 host key)
    is written to ``root/known_hosts``. ``client_key`` shares one client key between
    servers. ``more_host_keys``: types of other host keys it offers too
    (``root/host_key_<type>``), as OpenSSH servers usually do."""
    root.mkdir(parents=True, exist_ok=True)
    keygen(root / "host_key")
    for kind in more_host_keys:
        keygen(root / f"host_key_{kind}", kind)
    if client_key is None:
        client_key = root / "client_key"
        keygen(client_key)
    (root / "authorized_keys").write_text(Path(f"{client_key}.pub").read_text())
    netns, host = _make_netns() if isolated else (None, "127.0.0.1")
    port = 22 if isolated else free_port()
    config = root / "sshd_config"
    config.write_text(sshd_config(root, port, host, more_host_keys))
    (root / "home").mkdir(exist_ok=True)
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # privilege separation dir
    with open(root / "sshd.log", "w") as log:
        inside = ["ip", "netns", "exec", netns] if netns else []  # exec: the pid is sshd's
        process = subprocess.Popen([*inside, SSHD, "-D", "-e", "-f", str(config)],
                                   stdout=subprocess.DEVNULL, stderr=log)
    wait_listening(host, port, process, root / "sshd.log")
    host_public = " ".join((root / "host_key.pub").read_text().split()[:2])
    pattern = host if port == 22 else f"[{host}]:{port}"
    (root / "known_hosts").write_text(f"{pattern} {host_public}\n")
    return SshServer(host, port, getpass.getuser(), client_key, root / "known_hosts",
                     host_public, process.pid, root, netns)


def unplug(server: SshServer) -> None:
    """Take a namespaced device off the network (its cable pulled, its Wi-Fi gone): the
    host side of its veth pair goes down; nothing on the device is stopped."""
    assert server.netns, "only a device in its own network namespace can be unplugged"
    host_side = "efh" + server.netns.removeprefix("ef")
    subprocess.run(["ip", "link", "set", host_side, "down"], check=True, capture_output=True)


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
    if server.netns:  # its veth pair goes with it
        subprocess.run(["ip", "netns", "del", server.netns], capture_output=True, check=False)


def main(argv: list[str] | None = None) -> int:
    """A loopback farm to try edgeflow's farm commands without boards:

        .venv/bin/python -m tests.sshd up 3 /tmp/farm [--isolated]
        .venv/bin/edgeflow farm probe --farm /tmp/farm/farm.yaml
        .venv/bin/edgeflow run --farm /tmp/farm/farm.yaml
        .venv/bin/python -m tests.sshd down /tmp/farm
    """
    import argparse
    import json
    import sys

    import yaml

    parser = argparse.ArgumentParser(prog="python -m tests.sshd", description=main.__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start N devices and write DIR/farm.yaml")
    up.add_argument("count", type=int)
    up.add_argument("folder", type=Path)
    up.add_argument("--isolated", action="store_true",
                    help="each device on its own address in a network namespace")
    down = commands.add_parser("down", help="stop the devices started in DIR")
    down.add_argument("folder", type=Path)
    args = parser.parse_args(argv)
    folder = args.folder.resolve()
    record = folder / "servers.json"
    if args.command == "down":
        if not record.is_file():
            print(f"no farm started in {folder}", file=sys.stderr)
            return 1
        for entry in json.loads(record.read_text()):
            stop_sshd(SshServer(**{**entry, "client_key": Path(entry["client_key"]),
                                   "known_hosts": Path(entry["known_hosts"]),
                                   "root": Path(entry["root"])}), kill_sessions=True)
        record.unlink()
        print(f"stopped the devices of {folder}")
        return 0
    if not sshd_available():
        print("OpenSSH server not installed (apt install openssh-server)", file=sys.stderr)
        return 1
    folder.mkdir(parents=True, exist_ok=True)
    client_key = folder / "client_key"
    if not client_key.exists():
        keygen(client_key)
    servers = [start_sshd(folder / f"sshd-{n}", client_key, isolated=args.isolated)
               for n in range(1, args.count + 1)]
    known_hosts = folder / "known_hosts"
    known_hosts.write_text("".join(server.known_hosts.read_text() for server in servers))
    devices = {f"board-{n}": {**server.farm_entry(folder / f"board-{n}", sys.executable),
                              "known_hosts": str(known_hosts), "tags": {"class": "low-end"}}
               for n, server in enumerate(servers, 1)}
    (folder / "farm.yaml").write_text(yaml.safe_dump({"devices": devices}, sort_keys=False))
    record.write_text(json.dumps([{**server.__dict__, "client_key": str(server.client_key),
                                   "known_hosts": str(server.known_hosts),
                                   "root": str(server.root)} for server in servers]))
    print(f"{args.count} SSH devices on {', '.join(f'{s.host}:{s.port}' for s in servers)}")
    print(f"farm: {folder / 'farm.yaml'}")
    print(f"stop: python -m tests.sshd down {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
