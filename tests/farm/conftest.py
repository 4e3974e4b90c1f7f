"""Real SSH devices for the farm tests (see :mod:`tests.sshd`): started and stopped, by
process id, by the fixtures that start them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.sshd import SshServer, sshd_available, start_sshd, stop_sshd


def require_sshd() -> None:
    if not sshd_available():
        pytest.skip("OpenSSH server not installed (`make test` installs it when run as root)")


@pytest.fixture(scope="module")
def ssh_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    require_sshd()
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    stop_sshd(server)


@pytest.fixture(scope="module")
def two_key_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    """A board offering an ed25519 and an ecdsa host key (what OpenSSH generates)."""
    require_sshd()
    server = start_sshd(tmp_path_factory.mktemp("sshd-two-keys"), more_host_keys=("ecdsa",))
    yield server
    stop_sshd(server)


@pytest.fixture
def doomed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    """A device of its own, for tests that kill it."""
    require_sshd()
    server = start_sshd(tmp_path_factory.mktemp("doomed-sshd"))
    yield server
    stop_sshd(server, kill_sessions=True)
