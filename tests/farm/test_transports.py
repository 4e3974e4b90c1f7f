"""The transports: reading files back from a device within a size limit, on both (this
machine, and a real sshd board over SFTP); then the SSH transport's checks that need no
SSH server: connection retries and the client key file. (tests/farm/ covers the rest of
the transport against real sshd boards.)"""

from __future__ import annotations

import os
import socket
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
