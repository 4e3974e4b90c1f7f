"""The transports: reading files back from a device within a size limit, on both (this
machine, and a real sshd board over SFTP); then the SSH transport's checks that need no
SSH server: connection retries and the client key file. (tests/farm/ covers the rest of
the transport against real sshd boards.)"""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tasks.config import SshDevice
from tasks.core.errors import ConfigError
from tasks.farm.transports import (Connection, DeviceUnreachable, LocalConnection, SshConnection,
                                   read_within)
from tests.helpers import ssh_device
from tests.sshd import SshServer

LIMIT = 1000
# Every byte value, so that a read from the wrong offset cannot return the same bytes.
PATTERN = bytes(range(256)) * 8


@pytest.fixture(params=["local", "ssh"])
def connection(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Connection]:
    """Each transport, reaching this machine's files (the sshd board runs here)."""
    if request.param == "local":
        yield LocalConnection()
        return
    board = SshConnection(ssh_device(request.getfixturevalue("ssh_server"), tmp_path), "pi")
    yield board
    board.close()


def test_a_file_exactly_at_the_limit_is_read_whole(connection: Connection,
                                                   tmp_path: Path) -> None:
    path = tmp_path / "result.json"
    path.write_bytes(PATTERN[:LIMIT])
    assert connection.read_file(str(path), LIMIT) == PATTERN[:LIMIT]


def test_a_file_one_byte_over_the_limit_is_refused_in_one_line(connection: Connection,
                                                               tmp_path: Path) -> None:
    path = tmp_path / "result.json"
    path.write_bytes(PATTERN[:LIMIT + 1])
    with pytest.raises(ValueError) as refused:
        connection.read_file(str(path), LIMIT)
    assert str(refused.value) == f"{path} on the device is 1001 bytes, more than the 1000 allowed"


def test_a_tail_is_the_last_bytes_up_to_the_limit(connection: Connection, tmp_path: Path) -> None:
    log = tmp_path / "harness.log"
    log.write_bytes(PATTERN)
    assert connection.read_file(str(log), LIMIT, tail=True) == PATTERN[-LIMIT:]
    log.write_bytes(PATTERN[:10])  # shorter than the limit: all of it
    assert connection.read_file(str(log), LIMIT, tail=True) == PATTERN[:10]


def test_a_file_that_grew_since_its_size_was_read_is_read_no_further_than_the_limit(
        tmp_path: Path) -> None:
    path = tmp_path / "result.json"
    path.write_bytes(PATTERN)  # 2048 bytes now; 10 when the device's stat answered
    mode = path.stat().st_mode
    for tail in (False, True):
        assert read_within(str(path), mode, 10, LIMIT, tail,
                           lambda: path.open("rb")) == PATTERN[:LIMIT]


def test_only_a_regular_file_is_read(connection: Connection, tmp_path: Path) -> None:
    fifo = tmp_path / "result.json"
    os.mkfifo(fifo)  # opening it would wait for a writer for ever
    with pytest.raises(ValueError, match=f"^{fifo} on the device is not a regular file$"):
        connection.read_file(str(fifo), LIMIT)


def closed_port_device(tmp_path: Path, **changes: object) -> SshDevice:
    """A device on a loopback port nothing listens on, with a usable key file."""
    key = tmp_path / "id_ed25519"
    if not key.exists():
        key.write_text("not parsed before a connection is made\n")
        key.chmod(0o600)
    fields: dict[str, object] = {"transport": "ssh", "host": "127.0.0.1", "port": 1,
                                 "user": "pi", "key_file": key,
                                 "known_hosts": tmp_path / "known_hosts"}
    return SshDevice(**{**fields, **changes})


def test_a_folder_that_cannot_be_made_says_why_not_that_it_is_absent(
        connection: Connection, tmp_path: Path) -> None:
    """A read-only folder on the board (immutable: root ignores modes): making a folder in
    it is refused with mkdir's reason; it was reported as stat's "No such file"."""
    import errno
    import subprocess

    locked = tmp_path / "app" / "releases"
    locked.mkdir(parents=True)
    if subprocess.run(["chattr", "+i", str(locked)], capture_output=True).returncode != 0:
        pytest.skip("this file system has no immutable attribute")
    try:
        with pytest.raises(OSError) as caught:
            connection.makedirs(str(locked / "20260101T000000000000Z-v" / "check"))
    finally:
        subprocess.run(["chattr", "-i", str(locked)], check=True)
    assert caught.value.errno in (errno.EPERM, errno.EACCES), caught.value
    assert not (locked / "20260101T000000000000Z-v").exists()


# What the flood test's fresh interpreter runs: the peak RSS it grew by while a command's
# login flooded stderr, and what it kept of that stderr.
FLOOD_RUN = """
import json, resource, sys
from pathlib import Path
from tasks.config import SshDevice
from tasks.farm.transports import SshConnection
board = SshConnection(SshDevice.model_validate_json(sys.argv[1]), "pi")
assert board.run("true").ok
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
Path(sys.argv[2]).touch()
done = board.run("echo answer", timeout=120)
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(json.dumps({"grown_mb": grown / 1024, "stdout": done.stdout, "stderr": len(done.stderr),
                  "tail": done.stderr[-len(sys.argv[3]) - 3:]}))
"""
# The last thing a flood prints: what is kept must end with it (the tail, not the head).
END_OF_FLOOD = "<end of flood>"


def test_a_board_flooding_stderr_at_login_is_kept_to_its_tail(tmp_path: Path) -> None:
    """A login script printing 48 MB to stderr before every command: the orchestrator
    keeps the last KEPT_OUTPUT_CHARS of it and grows by far less than the flood (it kept
    all of it, and re-joined all of it per chunk read: 30 MB took 3 minutes and +88 MB)."""
    import json
    import subprocess
    import sys

    from tasks.farm.transports import KEPT_OUTPUT_CHARS
    from tests.farm.conftest import require_sshd
    from tests.sshd import start_sshd, stop_sshd

    require_sshd()
    flood = 48 << 20
    server = start_sshd(tmp_path / "sshd")
    marker = tmp_path / "flood"
    (server.root / "home" / ".bashrc").write_text(
        f"[ -e {marker} ] && head -c {flood} /dev/zero | tr '\\0' x >&2"
        f" && printf '{END_OF_FLOOD}' >&2\n")
    try:
        device = ssh_device(server, tmp_path / "board")
        ran = subprocess.run([sys.executable, "-c", FLOOD_RUN, device.model_dump_json(),
                              str(marker), END_OF_FLOOD], capture_output=True, text=True,
                             timeout=180,
                             cwd=Path(__file__).resolve().parents[2])
    finally:
        stop_sshd(server)
    assert ran.returncode == 0, ran.stderr[-2000:]
    seen = json.loads(ran.stdout)
    assert (seen["stdout"], seen["stderr"], seen["tail"]) == (
        "answer\n", KEPT_OUTPUT_CHARS, "xxx" + END_OF_FLOOD)
    assert seen["grown_mb"] < (flood >> 20) / 6, seen  # 4.3 MB here


def test_a_local_command_flooding_stderr_is_kept_to_its_tail() -> None:
    """The local board's runner keeps the tail too: 5 MB of stderr, then a marker, comes
    back as the last KEPT_OUTPUT_CHARS, ending with the marker."""
    from tasks.farm.transports import KEPT_OUTPUT_CHARS

    done = LocalConnection().run(
        f"head -c 5000000 /dev/zero | tr '\\0' x >&2 && printf '{END_OF_FLOOD}' >&2"
        " && echo answer", timeout=60)
    assert done.ok and done.stdout == "answer\n"
    assert len(done.stderr) == KEPT_OUTPUT_CHARS
    assert done.stderr.endswith("x" + END_OF_FLOOD)


# 1 s: a third of it rounds down to 0, and a probe interval is at least 1 s.
@pytest.mark.parametrize("seconds, interval", [(10, 3), (1, 1)])
def test_an_open_board_connection_notices_silence_and_bounds_transfers(
        ssh_server: SshServer, tmp_path: Path, seconds: int, interval: int) -> None:
    """A board that drops off the network must not hold a run until its time limit: SSH
    keepalives, TCP keepalive probes after ``keepalive_seconds`` (three, a third of it
    apart), unacknowledged writes given up after twice as long; and every SFTP transfer
    times out after ``io_timeout``."""
    device = ssh_device(ssh_server, tmp_path, keepalive_seconds=seconds, io_timeout=33.0)
    board = SshConnection(device, "pi")
    try:
        assert board.run("true").ok
        transport = board._fabric.transport
        assert transport.packetizer._Packetizer__keepalive_interval == seconds
        sock = transport.sock
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert {name: sock.getsockopt(socket.IPPROTO_TCP, getattr(socket, name))
                for name in ("TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT", "TCP_USER_TIMEOUT")
                } == {"TCP_KEEPIDLE": seconds, "TCP_KEEPINTVL": interval, "TCP_KEEPCNT": 3,
                      "TCP_USER_TIMEOUT": seconds * 2000}
        assert board._fabric.sftp().get_channel().gettimeout() == 33.0
    finally:
        board.close()


def test_the_wait_between_attempts_doubles_up_to_a_minute(tmp_path: Path) -> None:
    waits: list[float] = []
    device = closed_port_device(tmp_path, connect_attempts=5, retry_backoff_seconds=20.0)
    connection = SshConnection(device, "pi", sleep=waits.append)

    with pytest.raises(DeviceUnreachable, match="after 5 attempt"):
        connection.run("true")

    # Without the cap, connect_attempts: 20 and retry_backoff_seconds: 60 waited months.
    assert waits == [20.0, 40.0, 60.0, 60.0]


def test_an_unusable_key_file_fails_before_any_connection_attempt(tmp_path: Path) -> None:
    """It was retried connect_attempts times and reported as 'unreachable'."""
    waits: list[float] = []
    device = closed_port_device(tmp_path, key_file=tmp_path / "absent", connect_attempts=3)

    with pytest.raises(ConfigError) as caught:
        SshConnection(device, "pi", sleep=waits.append).run("true")

    assert str(caught.value).startswith(f"device 'pi': key_file {tmp_path / 'absent'} does not exist")
    assert waits == []


# ------------------------------------------------------------ without a board (issue 27)
# What each transport hands its runner and its SFTP session, seen by what they received.


def test_a_command_is_limited_on_the_device_with_its_kill_grace() -> None:
    from tasks.farm.transports import owner_only, quote_command, time_limited

    assert time_limited("echo 'a b' && ls", 2.5) == (
        "timeout -k 5 2.5 sh -c 'echo '\"'\"'a b'\"'\"' && ls'")
    assert time_limited("true", 3600.0) == "timeout -k 5 3600 sh -c true"
    assert quote_command(["rm", "-rf", "--", Path("a b"), "$(x)"]) == "rm -rf -- 'a b' '$(x)'"
    assert owner_only(["mkdir", "a b"], ["touch", "c"]) == "umask 077 && mkdir 'a b' && touch c"
    assert owner_only() == "umask 077"


class FakeRunner:
    """What a runner (Invoke's context, Fabric's connection) was asked to run."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, object]]] = []

    def run(self, command: str, **options: object) -> str:
        self.calls.append((command, options))
        return "result"


@pytest.mark.parametrize("timeout, limit", [(7.0, 7.0), (None, 3600.0)])
def test_a_local_command_runs_under_its_limit_with_the_orchestrators_grace(
        timeout: float | None, limit: float) -> None:
    connection = LocalConnection()
    runner = FakeRunner()
    connection._context = runner  # type: ignore[assignment]
    assert connection.run("echo hi", timeout=timeout, warn=False, hide=False) == "result"
    assert runner.calls == [(f"timeout -k 5 {limit:g} sh -c 'echo hi'",
                             {"timeout": limit + 10.0, "warn": False, "hide": False,
                              "in_stream": False})]


@pytest.mark.parametrize("timeout, limit", [(7.0, 7.0), (None, 33.0)])
def test_a_board_command_runs_under_its_limit_or_the_io_timeout(
        tmp_path: Path, timeout: float | None, limit: float) -> None:
    connection = SshConnection(closed_port_device(tmp_path, io_timeout=33.0), "pi")
    runner = FakeRunner()
    connection._opened = lambda: runner  # type: ignore[method-assign]
    assert connection.run("echo hi", timeout=timeout) == "result"
    assert runner.calls == [(f"timeout -k 5 {limit:g} sh -c 'echo hi'",
                             {"timeout": limit + 10.0, "warn": True, "hide": True,
                              "in_stream": False})]


def test_a_local_put_is_owner_only_whole_and_leaves_no_part(tmp_path: Path) -> None:
    local = tmp_path / "model.onnx"
    local.write_bytes(PATTERN)
    local.chmod(0o644)
    remote = tmp_path / "board" / "model.onnx"
    remote.parent.mkdir()
    remote.write_bytes(b"old")
    LocalConnection().put(local, str(remote))
    assert remote.read_bytes() == PATTERN
    assert remote.stat().st_mode & 0o777 == 0o600
    assert os.listdir(remote.parent) == ["model.onnx"]


def test_local_makedirs_makes_every_missing_parent_owner_only_and_leaves_the_rest(
        tmp_path: Path) -> None:
    existing = tmp_path / "work"
    existing.mkdir(mode=0o755)
    existing.chmod(0o755)
    LocalConnection().makedirs(str(existing / "runs" / "r1" / "results"))
    LocalConnection().makedirs(str(existing / "runs"))  # already there: fine
    modes = {str(path.relative_to(tmp_path)): path.stat().st_mode & 0o777
             for path in (existing, existing / "runs", existing / "runs" / "r1",
                          existing / "runs" / "r1" / "results")}
    assert modes == {"work": 0o755, "work/runs": 0o700, "work/runs/r1": 0o700,
                     "work/runs/r1/results": 0o700}


def test_local_listdir_gives_each_name_its_own_mtime_and_nothing_for_no_folder(
        tmp_path: Path) -> None:
    for name, mtime in (("a", 1000.0), ("b", 2000.5)):
        (tmp_path / name).mkdir()
        os.utime(tmp_path / name, (mtime, mtime))
    os.symlink(tmp_path / "absent", tmp_path / "dangling")  # its own time, not its target's
    os.utime(tmp_path / "dangling", (3000.0, 3000.0), follow_symlinks=False)
    assert LocalConnection().listdir(str(tmp_path)) == {"a": 1000.0, "b": 2000.5,
                                                        "dangling": 3000.0}
    assert LocalConnection().listdir(str(tmp_path / "none")) == {}


def test_the_transport_of_a_device_is_its_registry_entry(tmp_path: Path) -> None:
    from tasks.config import LocalDevice
    from tasks.farm.transports import TRANSPORTS, connect

    assert set(TRANSPORTS) == {"local", "ssh"}
    assert isinstance(connect(LocalDevice(workdir=tmp_path)), LocalConnection)
    board = connect(closed_port_device(tmp_path), "pi-7")
    assert isinstance(board, SshConnection) and board.name == "pi-7"


class FakeSftp:
    """An SFTP session over a set of folders that exist; records every call."""

    def __init__(self, folders: set[str], refuse: set[str] = frozenset(),
                 race: set[str] = frozenset()) -> None:
        self.folders, self.refuse, self.race = set(folders), refuse, race
        self.calls: list[tuple[object, ...]] = []

    def stat(self, path: str) -> object:
        self.calls.append(("stat", path))
        if path not in self.folders:
            raise FileNotFoundError(2, "No such file", path)
        return os.stat_result((stat.S_IFDIR | 0o700, 0, 0, 0, 0, 0, 0, 0, 0, 0))

    def mkdir(self, path: str, mode: int) -> None:
        self.calls.append(("mkdir", path, mode))
        if path in self.race:
            self.folders.add(path)
        if path in self.refuse | self.race:
            raise PermissionError(13, "Permission denied", path)
        self.folders.add(path)

    def put(self, local: str, remote: str) -> None:
        self.calls.append(("put", local, remote))

    def chmod(self, path: str, mode: int) -> None:
        self.calls.append(("chmod", path, mode))

    def posix_rename(self, old: str, new: str) -> None:
        self.calls.append(("posix_rename", old, new))


def sftp_board(tmp_path: Path, sftp: FakeSftp) -> SshConnection:
    board = SshConnection(closed_port_device(tmp_path), "pi")

    class Opened:
        def sftp(self) -> FakeSftp:
            return sftp

    board._opened = lambda: Opened()  # type: ignore[method-assign]
    return board



@pytest.mark.parametrize("remote, stats, made", [
    ("/srv/ef/runs/r1", ["/srv/ef/runs/r1", "/srv/ef/runs", "/srv/ef"],
     ["/srv/ef/runs", "/srv/ef/runs/r1"]),
    ("edgeflow//runs/", ["edgeflow/runs", "edgeflow"], ["edgeflow/runs"]),
    ("/srv/ef", ["/srv/ef"], []),  # there already: one request
])
def test_board_makedirs_climbs_to_the_deepest_existing_parent_and_makes_the_rest_owner_only(
        tmp_path: Path, remote: str, stats: list[str], made: list[str]) -> None:
    sftp = FakeSftp({"/", "/srv", "/srv/ef", "edgeflow"})
    sftp_board(tmp_path, sftp).makedirs(remote)
    assert [call[1] for call in sftp.calls if call[0] == "stat"] == stats
    assert [call[1:] for call in sftp.calls if call[0] == "mkdir"] == [
        (path, 0o700) for path in made]


def test_board_makedirs_accepts_a_folder_made_meanwhile_and_says_why_one_cannot_be(
        tmp_path: Path) -> None:
    sftp = FakeSftp({"/", "/w"}, race={"/w/a"})
    sftp_board(tmp_path, sftp).makedirs("/w/a/b")
    assert "/w/a/b" in sftp.folders
    refused = FakeSftp({"/", "/w"}, refuse={"/w/a"})
    with pytest.raises(PermissionError, match="Permission denied") as caught:
        sftp_board(tmp_path, refused).makedirs("/w/a/b")
    assert caught.value.filename == "/w/a"
    assert ("mkdir", "/w/a/b", 0o700) not in refused.calls


def test_a_board_put_writes_a_part_owner_only_then_renames_it(tmp_path: Path) -> None:
    sftp = FakeSftp(set())
    sftp_board(tmp_path, sftp).put(tmp_path / "m.onnx", "/w/m.onnx")
    assert sftp.calls == [("put", str(tmp_path / "m.onnx"), "/w/m.onnx.part"),
                          ("chmod", "/w/m.onnx.part", 0o600),
                          ("posix_rename", "/w/m.onnx.part", "/w/m.onnx")]


def test_a_passphrase_comes_from_the_variable_the_device_names(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.farm.transports import _passphrase

    assert _passphrase(closed_port_device(tmp_path)) == {}
    device = closed_port_device(tmp_path, key_passphrase_env="PI_KEY_PASS")
    monkeypatch.setenv("PI_KEY_PASS", "s3cret")
    assert _passphrase(device) == {"passphrase": "s3cret"}
    monkeypatch.delenv("PI_KEY_PASS")
    with pytest.raises(DeviceUnreachable) as caught:
        _passphrase(device)
    assert str(caught.value) == (f"cannot connect: environment variable PI_KEY_PASS (the "
                                 f"passphrase of {tmp_path / 'id_ed25519'}) is not set")


def test_only_network_errors_are_worth_another_attempt() -> None:
    import paramiko

    from tasks.farm.transports import HostKeyRefused, _is_transient

    transient = [paramiko.SSHException("banner"), OSError("reset"), EOFError(),
                 ConnectionRefusedError(), socket.timeout()]
    final = [paramiko.AuthenticationException("no"), paramiko.BadHostKeyException(
        "h", paramiko.RSAKey.generate(1024), paramiko.RSAKey.generate(1024)),
        HostKeyRefused("x"), DeviceUnreachable("y"), ValueError("z"), KeyError("k")]
    assert [_is_transient(error) for error in transient] == [True] * len(transient)
    assert [_is_transient(error) for error in final] == [False] * len(final)


def test_a_fingerprint_is_openssh_sha256_without_padding() -> None:
    from tasks.farm.transports import fingerprint

    class Key:
        def asbytes(self) -> bytes:
            return b"abc"

    # sha256("abc") in base64, its trailing "=" dropped (as ssh-keygen -l prints it).
    assert fingerprint(Key()) == "SHA256:ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0"


def test_an_unknown_or_changed_host_key_is_refused_saying_what_to_do(tmp_path: Path) -> None:
    import paramiko

    from tasks.farm.transports import HostKeyRefused, fingerprint

    board = SshConnection(closed_port_device(tmp_path, port=2222), "pi-3")
    known = paramiko.RSAKey.generate(1024)
    got = paramiko.RSAKey.generate(1024)
    errors: list[Exception] = [
        paramiko.BadHostKeyException("127.0.0.1", got, known),
        paramiko.SSHException("Server '[127.0.0.1]:2222' not found in known_hosts"),
        paramiko.SSHException("Error reading SSH protocol banner")]

    def fail() -> None:
        raise errors.pop(0)

    board._fabric.open = fail  # type: ignore[method-assign]
    with pytest.raises(HostKeyRefused) as changed:
        board._connect_once()
    assert str(changed.value) == (
        f"host key of 127.0.0.1:2222 changed (got ssh-rsa {fingerprint(got)}); if the device "
        f"was re-imaged, check the new key and replace its line in {tmp_path / 'known_hosts'}")
    with pytest.raises(HostKeyRefused) as unknown:
        board._connect_once()
    assert str(unknown.value) == (
        f"host key of 127.0.0.1:2222 is not in {tmp_path / 'known_hosts'}; check its "
        "fingerprint and trust it: edgeflow farm trust pi-3")
    with pytest.raises(paramiko.SSHException, match="^Error reading SSH protocol banner$"):
        board._connect_once()


def test_a_refused_key_is_not_retried(tmp_path: Path) -> None:
    import paramiko

    waits: list[float] = []
    board = SshConnection(closed_port_device(tmp_path, connect_attempts=4), "pi",
                          sleep=waits.append)
    tries: list[int] = []

    def refuse() -> None:
        tries.append(1)
        raise paramiko.AuthenticationException("Authentication failed.")

    board._connect_once = refuse  # type: ignore[method-assign]
    with pytest.raises(paramiko.AuthenticationException):
        board.run("true")
    assert (len(tries), waits) == (1, [])
