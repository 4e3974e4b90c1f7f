"""Device transports: how the orchestrator runs commands on and moves files to a device.

Every transport offers the slice of ``fabric.Connection`` the benchmark uses:
``run(command, timeout=..., warn=True, hide=True) -> invoke Result``, ``put(local,
remote)`` and ``close()``, plus shell-free ``read_file``, ``makedirs`` and ``listdir``
(SFTP for SSH boards). The ``local`` device runs on this
machine through Invoke (Fabric's own local runner) so the code path is the one an SSH
board takes. Transports are a registry keyed by the device's ``transport`` field.
"""

from __future__ import annotations

import functools
import os
import posixpath
import shlex
import shutil
import stat
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable, Protocol

from tasks.config import MAX_RETRY_WAIT_SECONDS, LocalDevice, SshDevice, check_key_file
from tasks.core.errors import DeviceError

PART_SUFFIX = ".part"
# Every command on a device runs under a time limit enforced there (coreutils timeout,
# which signals the command's whole process group): an orchestrator that gives up on a
# hung command must not leave it running on the board. The orchestrator waits a little
# longer than the limit, so the device's own limit is what ends a hung command.
STOP_GRACE_SECONDS = 10.0
KILL_AFTER_SECONDS = 5
LOCAL_COMMAND_LIMIT_SECONDS = 3600.0
ON_DEVICE_TIMEOUT_EXITS = frozenset({124, 137})  # timeout: TERM sent / KILL needed
# What the orchestrator keeps of each stream a command prints (stdout, stderr): its last
# characters, never more than this. A board can print without end (a login script
# flooding stderr); what edgeflow reads of a command is its end (a JSON answer of at most
# MAX_RESULT_BYTES, an error's last line).
KEPT_OUTPUT_CHARS = 2 << 20


def time_limited(command: str, seconds: float) -> str:
    """``command`` (a shell command line) stopped on the device after ``seconds``."""
    return quote_command(["timeout", "-k", str(KILL_AFTER_SECONDS), f"{seconds:g}",
                          "sh", "-c", command])


class Connection(Protocol):
    def run(self, command: str, *, timeout: float | None = None, warn: bool = True,
            hide: bool = True) -> Any: ...

    def put(self, local: Path, remote: str) -> None:
        """Copy a file to the device atomically: written under a temporary name, mode
        600, then renamed into place (a reader never sees half a file)."""

    def read_file(self, remote: str, limit: int, tail: bool = False) -> bytes:
        """A regular file on the device, whole, or with ``tail`` its last ``limit`` bytes
        (a log's end). What a device sends is untrusted, so it can never make the
        orchestrator read or store more than ``limit`` bytes: a larger file is refused
        (ValueError, one line naming its size) unless ``tail``."""

    def makedirs(self, remote: str) -> None:
        """Create a folder and its parents, owner-only (mode 700), without a shell."""

    def listdir(self, remote: str) -> dict[str, float]:
        """The names in a folder with their modification times (the device's clock);
        empty when it does not exist."""

    def close(self) -> None: ...


def read_within(remote: str, mode: int, size: int, limit: int, tail: bool,
                open_file: Callable[[], Any]) -> bytes:
    """:meth:`Connection.read_file` on a file of this ``mode`` and ``size`` (its stat on
    the device), opened by ``open_file``: every transport reads the same way."""
    if not stat.S_ISREG(mode):  # a FIFO would block the read
        raise ValueError(f"{remote} on the device is not a regular file")
    if size > limit and not tail:
        raise ValueError(f"{remote} on the device is {size} bytes, more than the {limit} "
                         "allowed")
    with open_file() as handle:
        if tail:
            handle.seek(max(0, size - limit))
        # Never more than the limit, even from a file that grew since its size was read.
        return handle.read(limit)


class TailKeeping:
    """A mixin for Invoke's runners (Fabric's remote one, Invoke's local one) that keeps
    only the last :data:`KEPT_OUTPUT_CHARS` of each stream a command prints. Invoke keeps
    all of it, and joins all of it again for every chunk read (its stream watchers, which
    edgeflow does not use): 30 MB of stderr took three minutes and 88 MB more here."""

    read_proc_output: Callable[..., Any]
    write_our_output: Callable[..., Any]
    respond: Callable[..., Any]
    watchers: list[Any]

    def _handle_output(self, buffer_: list[str], hide: bool, output: Any,
                       reader: Callable[[int], Any]) -> None:
        kept = 0
        for data in self.read_proc_output(reader):
            if not hide:
                self.write_our_output(stream=output, string=data)
            buffer_.append(data)
            kept += len(data)
            # Whole chunks off the front (a chunk is read_chunk_size, 1000 bytes): never
            # a copy of what is kept.
            while kept - len(buffer_[0]) >= KEPT_OUTPUT_CHARS:
                kept -= len(buffer_.pop(0))
            if self.watchers:
                self.respond(buffer_)
        if kept > KEPT_OUTPUT_CHARS:
            buffer_[:] = ["".join(buffer_)[-KEPT_OUTPUT_CHARS:]]


@functools.cache
def _runner(base: type) -> type:
    """``base`` (an Invoke runner class) keeping only the tail of what it reads."""
    return type(f"TailKeeping{base.__name__}", (TailKeeping, base), {})


class LocalConnection:
    """This machine behind Fabric's Connection interface (Invoke runs the commands)."""

    def __init__(self) -> None:
        import invoke
        from invoke.runners import Local

        self._context = invoke.Context(config=invoke.Config(
            overrides={"runners": {"local": _runner(Local)}}))

    def run(self, command: str, *, timeout: float | None = None, warn: bool = True,
            hide: bool = True) -> Any:
        limit = timeout or LOCAL_COMMAND_LIMIT_SECONDS
        return self._context.run(time_limited(command, limit), timeout=limit + STOP_GRACE_SECONDS,
                                 warn=warn, hide=hide, in_stream=False)

    def put(self, local: Path, remote: str) -> None:
        part = remote + PART_SUFFIX
        shutil.copyfile(local, part)
        os.chmod(part, 0o600)
        os.replace(part, remote)

    def read_file(self, remote: str, limit: int, tail: bool = False) -> bytes:
        info = os.stat(remote)
        return read_within(remote, info.st_mode, info.st_size, limit, tail,
                           lambda: open(remote, "rb"))

    def makedirs(self, remote: str) -> None:
        path = Path(remote)
        for folder in reversed([path, *path.parents]):  # os.makedirs modes the leaf only
            if not folder.exists():
                folder.mkdir(mode=0o700, exist_ok=True)

    def listdir(self, remote: str) -> dict[str, float]:
        try:
            return {entry.name: entry.stat(follow_symlinks=False).st_mtime
                    for entry in os.scandir(remote)}
        except FileNotFoundError:
            return {}

    def close(self) -> None:
        pass


class HostKeyRefused(DeviceError):
    """The device's host key is unknown to the farm's known_hosts, or has changed."""


class DeviceUnreachable(DeviceError):
    """No connection to the device after every attempt (retried with backoff), or no
    SSH handshake with it."""


class BoardNotAnswering(DeviceUnreachable):
    """Every connection attempt failed for a reason that may pass (refused: the board's
    sshd not up yet; timed out: a rebooting board, a flaky link), unlike a refused key
    or a missing passphrase: worth a later try (a Prefect task retry, :mod:`flows.retries`)."""


def _is_transient(error: BaseException) -> bool:
    """Errors worth another connection attempt: the network or the device's sshd not
    answering. A refused key (host or client) is final: retrying cannot fix it."""
    import paramiko

    if isinstance(error, (paramiko.AuthenticationException, paramiko.BadHostKeyException,
                          HostKeyRefused, DeviceUnreachable)):
        return False
    return isinstance(error, (paramiko.SSHException, OSError, EOFError))


def _passphrase(device: SshDevice) -> dict[str, str]:
    """The key's passphrase, from the environment variable the device names."""
    if device.key_passphrase_env is None:
        return {}
    value = os.environ.get(device.key_passphrase_env)
    if value is None:
        raise DeviceUnreachable(f"cannot connect: environment variable "
                                f"{device.key_passphrase_env} (the passphrase of "
                                f"{device.key_file}) is not set")
    return {"passphrase": value}


class SshConnection:
    """A Fabric connection that trusts only the farm's known_hosts.

    Fabric's default client auto-adds unknown host keys (paramiko's AutoAddPolicy) and
    reads the user's own known_hosts: neither is acceptable for a device farm, so the
    client is replaced by one that loads the farm's file alone and rejects anything else.
    Authentication is by the device's key file only (no agent, no key search).

    Connecting is retried with exponential backoff (``connect_attempts``,
    ``retry_backoff_seconds``, each wait at most ``MAX_RETRY_WAIT_SECONDS``); a refused
    key is not. A key file that is missing or open to others is a ConfigError at
    construction, before any attempt. A connection that drops is
    reopened (with the same retries) by the next call, never by re-running a command:
    a command that fails is reported, not repeated.
    """

    def __init__(self, device: SshDevice, name: str = "DEVICE",
                 sleep: Callable[[float], None] = time.sleep) -> None:
        import paramiko
        from fabric import Config
        from fabric import Connection as FabricConnection
        from fabric.runners import Remote

        check_key_file(name, device)
        self.device = device
        self.name = name
        self._sleep = sleep
        # Nothing from this user's ~/.ssh/config or /etc/ssh/ssh_config: it could add keys,
        # forward the agent to every board or route through a proxy command.
        config = Config(overrides={"load_ssh_configs": False,
                                   "runners": {"remote": _runner(Remote)}})
        self._fabric = FabricConnection(
            host=device.host, user=device.user, port=device.port, config=config,
            connect_timeout=device.connect_timeout, forward_agent=False, gateway=None,
            connect_kwargs={"key_filename": str(device.key_file), "look_for_keys": False,
                            "allow_agent": False})
        client = paramiko.SSHClient()
        if device.known_hosts.is_file():
            client.load_host_keys(str(device.known_hosts))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        self._fabric.client = client

    def _connect_once(self) -> None:
        import paramiko

        device = self.device
        self._fabric.connect_kwargs.update(_passphrase(device))
        try:
            self._fabric.open()
        except paramiko.BadHostKeyException as error:
            raise HostKeyRefused(
                f"host key of {device.host}:{device.port} changed "
                f"(got {error.key.get_name()} {fingerprint(error.key)}); if the device was "
                f"re-imaged, check the new key and replace its line in {device.known_hosts}"
                ) from None
        except paramiko.SSHException as error:
            if "not found in known_hosts" not in str(error):
                raise
            raise HostKeyRefused(
                f"host key of {device.host}:{device.port} is not in {device.known_hosts}; "
                f"check its fingerprint and trust it: edgeflow farm trust {self.name}") from None

    def _opened(self) -> Any:
        if self._fabric.is_connected:
            return self._fabric
        self._fabric.close()  # after a drop: forget the dead transport and SFTP session
        delay = self.device.retry_backoff_seconds
        for attempt in range(1, self.device.connect_attempts + 1):
            try:
                self._connect_once()
                self._notice_silence()
                self._fabric.sftp().get_channel().settimeout(self.device.io_timeout)
                return self._fabric
            except Exception as error:  # noqa: BLE001 - sorted into transient or final below
                if not _is_transient(error):
                    raise
                if attempt == self.device.connect_attempts:
                    raise BoardNotAnswering(
                        f"cannot connect to {self.device.host}:{self.device.port} after "
                        f"{attempt} attempt(s): {type(error).__name__}: {error}") from None
                self._fabric.close()
                self._sleep(delay)
                delay = min(delay * 2, MAX_RETRY_WAIT_SECONDS)
        raise AssertionError("unreachable")

    def _notice_silence(self) -> None:
        """A board that drops off the network must not hold a benchmark until its time
        limit: TCP keepalive probes a silent connection after ``keepalive_seconds`` and
        the kernel gives up after three unanswered probes; unacknowledged writes give up
        as fast. SSH keepalives keep NAT and firewalls from closing a quiet session."""
        import socket

        seconds = self.device.keepalive_seconds
        transport = self._fabric.transport
        transport.set_keepalive(seconds)
        sock = transport.sock
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for option, value in (("TCP_KEEPIDLE", seconds), ("TCP_KEEPINTVL", max(1, seconds // 3)),
                              ("TCP_KEEPCNT", 3), ("TCP_USER_TIMEOUT", seconds * 2000)):
            if hasattr(socket, option):  # Linux; elsewhere the system's defaults apply
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)

    def run(self, command: str, *, timeout: float | None = None, warn: bool = True,
            hide: bool = True) -> Any:
        limit = timeout or self.device.io_timeout
        return self._opened().run(time_limited(command, limit), timeout=limit + STOP_GRACE_SECONDS,
                                  warn=warn, hide=hide, in_stream=False)

    def put(self, local: Path, remote: str) -> None:
        part = remote + PART_SUFFIX
        sftp = self._opened().sftp()
        sftp.put(str(local), part)
        sftp.chmod(part, 0o600)  # owner-only, whatever the mode here
        sftp.posix_rename(part, remote)

    def read_file(self, remote: str, limit: int, tail: bool = False) -> bytes:
        sftp = self._opened().sftp()
        info = sftp.stat(remote)
        return read_within(remote, info.st_mode or 0, info.st_size or 0, limit, tail,
                           lambda: sftp.open(remote, "rb"))

    # Folders go through SFTP, not a shell: each shell command costs a login shell's
    # start-up on the device (a fifth of a second where .bashrc does real work).
    def makedirs(self, remote: str) -> None:
        self._make_folder(self._opened().sftp(), posixpath.normpath(remote))

    def _make_folder(self, sftp: Any, folder: str) -> None:
        """``folder`` and its missing parents, from the deepest one that exists: a new
        run folder in an existing workdir is two requests, not one per path component
        (each an SFTP round trip and the orchestrator's CPU, times every board)."""
        try:
            sftp.stat(folder)
            return
        except OSError:
            pass
        parent = posixpath.dirname(folder)
        if parent not in {"", "/", folder}:
            self._make_folder(sftp, parent)
        try:
            sftp.mkdir(folder, mode=0o700)
        except OSError as refused:
            try:
                sftp.stat(folder)  # made meanwhile by a concurrent run: fine
            except OSError:
                raise refused from None  # why it could not be made, not "absent"

    def listdir(self, remote: str) -> dict[str, float]:
        try:
            return {entry.filename: float(entry.st_mtime or 0)
                    for entry in self._opened().sftp().listdir_attr(remote)}
        except FileNotFoundError:
            return {}

    def close(self) -> None:
        self._fabric.close()


def fingerprint(key: Any) -> str:
    """A host key's fingerprint as OpenSSH prints it (``SHA256:...``)."""
    import base64
    import hashlib

    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


TRANSPORTS: dict[str, Callable[[Any, str], Connection]] = {
    "local": lambda device, name: LocalConnection(),
    "ssh": SshConnection,
}


def connect(device: LocalDevice | SshDevice, name: str = "DEVICE") -> Connection:
    """A connection to the device (opened lazily, by its first command)."""
    return TRANSPORTS[device.transport](device, name)


def quote_command(argv: Sequence[str | Path]) -> str:
    """One shell command line in which no argument can inject another command."""
    return shlex.join(str(arg) for arg in argv)


def owner_only(*commands: Sequence[str | Path]) -> str:
    """Quoted commands run in sequence (stopping at the first failure) with umask 077:
    whatever they create on the device is readable by its owner only."""
    return " && ".join(["umask 077", *(quote_command(argv) for argv in commands)])
