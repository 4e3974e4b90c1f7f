"""The SSH transport's checks that need no SSH server: connection retries and the
client key file. (tests/farm/ covers the transport against real sshd boards.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.core.config import SshDevice
from tasks.farm.transports import DeviceUnreachable, SshConnection
from tasks.core.errors import ConfigError


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
