"""Emulated 64-bit ARM boards for tests and benchmarks: real OpenSSH servers running
inside an arm64 Debian root filesystem under qemu-user (binfmt_misc), each on a
loopback port with its own emulated CPU model (Raspberry Pi 5-like ``cortex-a76``, Pi
4-like ``cortex-a72``) and a matching ARM ``/proc/cpuinfo``.

Contracts:

- :func:`rootfs` builds the root filesystem once with ``mmdebstrap`` (:class:`Recipe`:
  suite, arch, packages, the host's Debian mirror) under ``$EDGEFLOW_ARM_ROOTFS``
  (default ``/var/cache/edgeflow/arm-rootfs``), in a folder named by the sha256 of the
  recipe, and reuses it afterwards; two builders wait on one lock, a half-built folder
  is never used. Nothing else is downloaded.
- :func:`start_board` starts one board: a private mount namespace (everything it
  mounts goes away with its last process) with an overlay of the cached root (a board
  never writes the cache: every board starts from the bare filesystem), ``/proc`` with
  the board's ``cpuinfo`` bound over it, ``/dev``, ``/sys`` and a fresh ``/tmp``; then
  the arm64 ``sshd`` inside the chroot, with key logins as :mod:`tests.sshd`'s. The
  returned :class:`~tests.sshd.SshServer` is stopped with :func:`stop_board` (by pid,
  every process of the board).
- :func:`unavailable` says why boards cannot run here (not root, no qemu, no binfmt
  registration), or None; tests skip with that reason.

Why the details:

- ``QEMU_CPU`` is set for sshd and, through ``SetEnv``, for every login: qemu's default
  ``max`` CPU computes LiteRT int8 wrongly (max error 0.80 instead of 0.017) and is 10x
  slower.
- ONNX Runtime segfaults on import without an ARM-format ``/proc/cpuinfo`` (the host's
  is x86's), and a cpuinfo naming features the emulated CPU lacks makes LiteRT pick
  instructions qemu then refuses (SIGILL): the Features line is therefore read from the
  HWCAP qemu gives the CPU model (:func:`cpuinfo_text`), not written by hand.
- Emulated timings are 30-500x slower than the host's and say nothing about a real
  board.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TextIO

from tasks.core.locks import file_lock
from tasks.device.host import AT_HWCAP, AT_HWCAP2, hwcap_features
from tests.sshd import SshServer, descendants, free_port, keygen, sshd_config, wait_listening

DEFAULT_CACHE = Path("/var/cache/edgeflow/arm-rootfs")
CACHE_ENV = "EDGEFLOW_ARM_ROOTFS"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# A Pi 5 (BCM2712) is four Cortex-A76, a Pi 4 (BCM2711) four Cortex-A72. MIDR_EL1 of
# qemu's models of them (target/arm/cpu64.c), split into cpuinfo's fields below.
CPU_MIDR = {"cortex-a76": 0x414FD0B1, "cortex-a72": 0x410FD083}
# Run on the board by :func:`hwcaps` (and by the tests): the kernel's (here qemu's)
# auxiliary vector, which is what runtimes that pick kernels by CPU feature read.
HWCAP_SCRIPT = ("import ctypes; g = ctypes.CDLL(None).getauxval; g.restype = ctypes.c_ulong; "
                f"print(g({AT_HWCAP}), g({AT_HWCAP2}))")
BOARD_DIR = "/etc/edgeflow-board"  # the board's sshd files, inside its root
# file_lock is re-entrant within a process: threads of one process wait on this instead.
_building = threading.Lock()


@dataclass(frozen=True)
class Recipe:
    """What the root filesystem is built from; its sha256 names the cached folder."""

    packages: tuple[str, ...] = ("python3", "python3-venv", "python3-pip", "openssh-server",
                                 "coreutils", "util-linux")
    suite: str = "bookworm"
    arch: str = "arm64"
    variant: str = "apt"
    mirror: str = DEFAULT_MIRROR

    def key(self) -> str:
        text = json.dumps({**asdict(self), "packages": sorted(self.packages)}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()


def host_mirror(sources: Path = Path("/etc/apt")) -> str:
    """The Debian archive this machine's apt uses (its first ``.../debian`` URI, deb822
    ``.sources`` or one-line ``sources.list``), else deb.debian.org."""
    files = [sources / "sources.list", *sorted((sources / "sources.list.d").glob("*.sources")),
             *sorted((sources / "sources.list.d").glob("*.list"))]
    for path in files:
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        for uri in re.findall(r"^\s*URIs:\s*(\S+)", text, re.M) + \
                re.findall(r"^\s*deb\s+(?:\[[^]]*\]\s+)?(\S+)", text, re.M):
            if uri.rstrip("/").endswith("/debian"):
                return uri.rstrip("/")
    return DEFAULT_MIRROR


def default_recipe() -> Recipe:
    return Recipe(mirror=host_mirror())


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


def unavailable() -> str | None:
    """Why emulated boards cannot run on this machine, or None."""
    if os.geteuid() != 0:
        return "emulated ARM boards need root (chroot, mounts, mmdebstrap)"
    for tool in ("mmdebstrap", "unshare", "chroot"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (make system-deps installs it as root)"
    if not Path("/usr/bin/qemu-aarch64-static").exists():
        return "qemu-user-static not installed (make system-deps installs it as root)"
    reason = register_binfmt()
    return reason


def register_binfmt() -> str | None:
    """Make sure binfmt_misc runs aarch64 programs through qemu (mounting binfmt_misc and
    enabling Debian's registration where a container left them off); None when it
    does, else why not. The registration must be qemu-user-static's ``F`` (fix-binary)
    one: the interpreter is opened at registration, so it works inside a chroot."""
    entry = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")
    if not Path("/proc/sys/fs/binfmt_misc/register").exists():
        mounted = subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc",
                                  "/proc/sys/fs/binfmt_misc"], capture_output=True, text=True)
        if mounted.returncode != 0:
            return f"binfmt_misc cannot be mounted: {mounted.stderr.strip()}"
    if not entry.exists() and shutil.which("update-binfmts"):
        subprocess.run(["update-binfmts", "--enable", "qemu-aarch64"], capture_output=True)
    if not entry.exists():
        return "binfmt_misc has no qemu-aarch64 registration (binfmt-support, qemu-user-static)"
    text = entry.read_text()
    if not text.startswith("enabled"):
        return "binfmt_misc's qemu-aarch64 registration is disabled"
    if "F" not in re.search(r"^flags:\s*(\S*)", text, re.M).group(1):
        return "binfmt_misc's qemu-aarch64 registration lacks the F flag (chroots need it)"
    return None


def rootfs(recipe: Recipe | None = None, cache: Path | None = None,
           log: TextIO | None = None) -> Path:
    """The root filesystem of ``recipe`` (default: :func:`default_recipe`), built by
    mmdebstrap the first time (minutes) and reused after. ``log`` (default: the
    ``sys.stderr`` of the call, not of the import, which a test runner may have closed
    since) receives a line when a build starts and ends."""
    log = log or sys.stderr
    recipe = recipe or default_recipe()
    folder = (cache or cache_root()) / recipe.key()
    done = folder / "recipe.json"
    if done.is_file():
        return folder / "rootfs"
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _building, file_lock(folder.parent / f"{folder.name}.lock", wait_seconds=None):
        if done.is_file():  # another builder finished while this one waited
            return folder / "rootfs"
        building = folder.parent / f"{folder.name}.building"
        shutil.rmtree(building, ignore_errors=True)  # a build that died half-way
        building.mkdir()
        started = time.monotonic()
        print(f"building the arm64 root filesystem in {folder} (a few minutes, once)",
              file=log, flush=True)
        with open(building / "build.log", "w") as out:
            built = subprocess.run(
                ["mmdebstrap", "--mode=root", f"--arch={recipe.arch}",
                 f"--variant={recipe.variant}", f"--include={','.join(recipe.packages)}",
                 recipe.suite, str(building / "rootfs"), recipe.mirror],
                stdout=out, stderr=subprocess.STDOUT, check=False)
        if built.returncode != 0:
            tail = (building / "build.log").read_text(errors="replace")[-800:]
            raise RuntimeError(f"mmdebstrap failed ({built.returncode}): {tail}")
        seconds = time.monotonic() - started
        (building / "recipe.json").write_text(json.dumps(
            {**asdict(recipe), "build_seconds": round(seconds, 1)}, indent=1))
        building.rename(folder)
        print(f"built the arm64 root filesystem in {seconds:.0f} s", file=log, flush=True)
    return folder / "rootfs"


def board_env(cpu: str) -> list[str]:
    """The whole environment of a board's programs (none of this machine's): the CPU
    model qemu emulates, and a PATH (``env -i`` clears it, and then finds no chroot)."""
    return [f"QEMU_CPU={cpu}", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"]


def hwcaps(root: Path, cpu: str) -> tuple[int, int]:
    """AT_HWCAP and AT_HWCAP2 as qemu gives them to a program on ``cpu`` (run in the
    bare ``root``, read-only: nothing is written there)."""
    done = subprocess.run(["env", "-i", *board_env(cpu), "chroot", str(root),
                           "/usr/bin/python3", "-I", "-B", "-c", HWCAP_SCRIPT],
                          capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"python3 on an emulated {cpu} failed ({done.returncode}): "
                           f"{done.stderr.strip()[-300:]}")
    hwcap, hwcap2 = (int(part) for part in done.stdout.split())
    return hwcap, hwcap2


def feature_names(hwcap: int, hwcap2: int) -> list[str]:
    """The Features of /proc/cpuinfo for these HWCAP bits, in the kernel's order (the
    harness's own decoding: what it reports as ``cpu_features``)."""
    return hwcap_features(hwcap, hwcap2)


def cpuinfo_text(cpu: str, features: list[str], processors: int) -> str:
    """An arm64 Linux /proc/cpuinfo of ``processors`` cores of the ``cpu`` model."""
    midr = CPU_MIDR[cpu]
    core = (f"BogoMIPS\t: 108.00\nFeatures\t: {' '.join(features)}\n"
            f"CPU implementer\t: {midr >> 24:#x}\nCPU architecture: 8\n"
            f"CPU variant\t: {midr >> 20 & 0xF:#x}\nCPU part\t: {midr >> 4 & 0xFFF:#05x}\n"
            f"CPU revision\t: {midr & 0xF}\n\n")
    return "".join(f"processor\t: {n}\n{core}" for n in range(processors))


@dataclass(frozen=True)
class ArmBoard(SshServer):
    """An emulated board: an :class:`~tests.sshd.SshServer` whose ``pid`` is the arm64
    sshd's (under qemu), with the CPU model it emulates and its mount namespace (every
    process of the board is in it)."""

    cpu: str = "cortex-a76"
    mount_ns: str = ""
    python: str = "/usr/bin/python3"

    def farm_entry(self, workdir: Path | str, python: str | None = None,
                   **extra: object) -> dict[str, object]:
        """This board as a farm.yaml device; ``workdir`` is a path on the board. It says
        it is emulated (``emulation: qemu-user``): its results are marked so, and select
        recommends on it only with ``select.include_emulated``."""
        return super().farm_entry(workdir, python or self.python,
                                  **{"emulation": "qemu-user", **extra})


def _mount_script(lower: Path, board: Path) -> str:
    merged = board / "root"
    steps = [
        ["mount", "-t", "overlay", "overlay", "-o",
         f"lowerdir={lower},upperdir={board / 'upper'},workdir={board / 'work'}", str(merged)],
        ["mount", "-t", "proc", "proc", str(merged / "proc")],
        ["mount", "--bind", str(board / "cpuinfo"), str(merged / "proc/cpuinfo")],
        ["mount", "--rbind", "/dev", str(merged / "dev")],
        ["mount", "--rbind", "/sys", str(merged / "sys")],
        ["mount", "-t", "tmpfs", "tmpfs", str(merged / "tmp")],
    ]
    return " && ".join(" ".join(shlex.quote(arg) for arg in argv) for argv in steps)


def start_board(folder: Path, cpu: str, client_key: Path | None = None,
                root: Path | None = None) -> ArmBoard:
    """Start an emulated ``cpu`` board (a key of :data:`CPU_MIDR`) whose state lives in
    ``folder`` (its overlay's upper layer, keys, logs), from the root filesystem
    ``root`` (default: :func:`rootfs`'s). ``client_key``: shared between boards, else
    one is made in ``folder``."""
    if cpu not in CPU_MIDR:
        raise ValueError(f"unknown CPU model {cpu!r}: one of {', '.join(CPU_MIDR)}")
    lower = root or rootfs()
    folder = folder.resolve()
    upper, inside = folder / "upper", Path(BOARD_DIR)
    own = upper / inside.relative_to("/")
    for path in (own / "home", upper / "run/sshd", folder / "work", folder / "root"):
        path.mkdir(parents=True, exist_ok=True)
    (upper / "run/sshd").chmod(0o755)  # sshd's privilege separation folder, root-owned
    keygen(own / "host_key")
    if client_key is None:
        client_key = folder / "client_key"
        keygen(client_key)
    (own / "authorized_keys").write_text(Path(f"{client_key}.pub").read_text())
    features = feature_names(*hwcaps(lower, cpu))
    (folder / "cpuinfo").write_text(cpuinfo_text(cpu, features, os.cpu_count() or 1))
    host, port = "127.0.0.1", free_port()
    (own / "sshd_config").write_text(sshd_config(inside, port, host,
                                                 set_env=(f"QEMU_CPU={cpu}",)))
    sshd = ["env", "-i", *board_env(cpu), "chroot", str(folder / "root"),
            "/usr/sbin/sshd", "-D", "-e", "-f", f"{inside}/sshd_config"]
    # A private mount namespace: the board's mounts exist only for its processes and go
    # with the last of them. `exec` all the way down: the pid is the arm64 sshd's.
    script = f"{_mount_script(lower, folder)} && exec {' '.join(map(shlex.quote, sshd))}"
    with open(folder / "sshd.log", "w") as log:
        process = subprocess.Popen(["unshare", "--mount", "--propagation", "private",
                                    "sh", "-c", script],
                                   stdout=subprocess.DEVNULL, stderr=log)
    try:
        wait_listening(host, port, process, folder / "sshd.log", seconds=120)
    except RuntimeError:
        process.kill()  # one that never listened: its namespace and mounts go with it
        process.wait()
        raise
    host_public = " ".join((own / "host_key.pub").read_text().split()[:2])
    (folder / "known_hosts").write_text(f"[{host}]:{port} {host_public}\n")
    return ArmBoard(host, port, "root", client_key, folder / "known_hosts", host_public,
                    process.pid, folder, cpu=cpu,
                    mount_ns=os.readlink(f"/proc/{process.pid}/ns/mnt"))


def board_processes(board: ArmBoard) -> list[int]:
    """Every process in the board's mount namespace (sshd, sessions, whatever they left
    running in the background, reparented or not)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "ns/mnt") == board.mount_ns:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def stop_board(board: ArmBoard, seconds: float = 30) -> None:
    """Stop the board: its sshd by pid, and every process of its namespace, killed; its
    mounts go with the namespace's last process (waited for)."""
    deadline = time.monotonic() + seconds
    while True:
        victims = {board.pid, *descendants(board.pid), *board_processes(board)}
        victims.discard(os.getpid())
        alive = [pid for pid in victims if Path(f"/proc/{pid}").exists()]
        for pid in alive:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if not board_processes(board) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    try:  # reaped, when this process started it (killed above: no wait)
        os.waitpid(board.pid, 0)
    except ChildProcessError:
        pass
    if board_processes(board):
        raise RuntimeError(f"the board on port {board.port} still has processes "
                           f"{board_processes(board)} after {seconds:.0f} s")


@contextmanager
def running_boards(folder: Path, cpus: tuple[str, ...] = ("cortex-a76", "cortex-a72"),
                   ) -> Iterator[dict[str, ArmBoard]]:
    """One board per CPU model (by model), sharing one client key, in ``folder``;
    stopped when the block ends, however it ends. The root filesystem is built first
    (its minutes are not the boards')."""
    rootfs()
    folder.mkdir(parents=True, exist_ok=True)
    client_key = folder / "client_key"
    if not client_key.exists():
        keygen(client_key)
    started: dict[str, ArmBoard] = {}
    try:
        for cpu in cpus:
            started[cpu] = start_board(folder / cpu, cpu, client_key)
        yield started
    finally:
        for board in started.values():
            stop_board(board)


def mounted_under(folder: Path) -> list[str]:
    """Mount points of this namespace under ``folder`` (none, for a board: its mounts
    live in its own namespace)."""
    prefix = str(folder.resolve())
    return [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if line.split()[4].startswith(prefix)]


BOARD_NAMES = {"cortex-a76": "pi5-emulated", "cortex-a72": "pi4-emulated"}


def main(argv: list[str] | None = None) -> int:
    """Emulated ARM boards to try edgeflow's farm on (as root):

        .venv/bin/python -m tests.arm_boards up /tmp/arm     # writes /tmp/arm/farm.yaml
        .venv/bin/edgeflow farm probe --farm /tmp/arm/farm.yaml
        .venv/bin/python -m tests.arm_boards down /tmp/arm
    """
    import argparse

    import yaml

    parser = argparse.ArgumentParser(prog="python -m tests.arm_boards", description=main.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start boards and write DIR/farm.yaml")
    up.add_argument("folder", type=Path)
    up.add_argument("--cpu", action="append", choices=sorted(CPU_MIDR),
                    help="one board per --cpu (default: cortex-a76 and cortex-a72)")
    up.add_argument("--runtimes", default="tflite,onnxruntime,openvino",
                    help="the boards' runtimes, for `farm setup` (comma-separated)")
    down = commands.add_parser("down", help="stop the boards started in DIR")
    down.add_argument("folder", type=Path)
    args = parser.parse_args(argv)
    folder = args.folder.resolve()
    record = folder / "boards.json"
    if args.command == "down":
        if not record.is_file():
            print(f"no boards started in {folder}", file=sys.stderr)
            return 1
        for entry in json.loads(record.read_text()):
            stop_board(ArmBoard(**{**entry, **{key: Path(entry[key]) for key in
                                               ("client_key", "known_hosts", "root")}}))
        record.unlink()
        print(f"stopped the boards of {folder}")
        return 0
    reason = unavailable()
    if reason:
        print(reason, file=sys.stderr)
        return 1
    rootfs()
    folder.mkdir(parents=True, exist_ok=True)
    client_key = folder / "client_key"
    if not client_key.exists():
        keygen(client_key)
    cpus = args.cpu or ["cortex-a76", "cortex-a72"]
    started = time.monotonic()
    boards = {BOARD_NAMES[cpu]: start_board(folder / BOARD_NAMES[cpu], cpu, client_key)
              for cpu in cpus}
    seconds = time.monotonic() - started
    known_hosts = folder / "known_hosts"
    known_hosts.write_text("".join(board.known_hosts.read_text() for board in boards.values()))
    devices = {name: {**board.farm_entry("/root/edgeflow"), "known_hosts": str(known_hosts),
                      "runtimes": args.runtimes.split(","), "setup": {},
                      "tags": {"cpu": board.cpu}}
               for name, board in boards.items()}
    (folder / "farm.yaml").write_text(yaml.safe_dump({"devices": devices}, sort_keys=False))
    record.write_text(json.dumps([{**asdict(board), **{key: str(getattr(board, key)) for key in
                                                       ("client_key", "known_hosts", "root")}}
                                  for board in boards.values()]))
    print(f"{len(boards)} emulated boards in {seconds:.1f} s: "
          + ", ".join(f"{name} ({board.cpu}) on {board.host}:{board.port}"
                      for name, board in boards.items()))
    print(f"farm: {folder / 'farm.yaml'}")
    print(f"stop: python -m tests.arm_boards down {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
