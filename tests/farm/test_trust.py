"""`edgeflow farm trust DEVICE` against a real OpenSSH server: the fingerprint shown is
the server's, nothing is recorded without confirmation, a recorded key makes the device
usable, and a changed key is only replaced on request."""

from __future__ import annotations

import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paramiko
import pytest
import yaml
from typer.testing import CliRunner

from flows.cli import app
from tasks.config import SshDevice, load_farm
from tasks.farm.probe import probe_one
from tasks.farm.transports import DeviceUnreachable
from tasks.farm.trust import HostKeyOffer, examine, fetch_host_key, host_pattern, record
from tests.helpers import ssh_device
from tests.sshd import SshServer, keygen


def _farm(tmp_path: Path, server: SshServer, known_hosts: Path) -> Path:
    entry = server.farm_entry(tmp_path / "remote", sys.executable)
    entry["known_hosts"] = str(known_hosts)
    farm = tmp_path / "farm.yaml"
    farm.write_text(yaml.safe_dump({"devices": {"pi": entry, "esp": {
        "transport": "mcu", "flash_kb": 4096, "ram_kb": 512}}}))
    return farm


def _openssh_fingerprint(public_key_file: Path) -> str:
    listed = subprocess.run(["ssh-keygen", "-l", "-f", str(public_key_file)],
                            capture_output=True, text=True, check=True)
    return listed.stdout.split()[1]


def _trust(farm: Path, *args: str, answer: str | None = None):
    return CliRunner().invoke(app, ["farm", "trust", "pi", "--farm", str(farm), *args],
                              input=answer)


def test_trust_shows_the_fingerprint_and_records_only_on_confirmation(ssh_server: SshServer,
                                                                      tmp_path: Path) -> None:
    known_hosts = tmp_path / "keys" / "known_hosts"
    farm = _farm(tmp_path, ssh_server, known_hosts)
    expected = _openssh_fingerprint(ssh_server.root / "host_key.pub")

    declined = _trust(farm, answer="n\n")
    assert declined.exit_code == 1 and expected in declined.output
    assert not known_hosts.exists(), "nothing is recorded without confirmation"
    assert not probe_one("pi", load_farm(farm).devices["pi"]).reachable

    accepted = _trust(farm, answer="y\n")
    assert accepted.exit_code == 0, accepted.output
    assert known_hosts.read_text() == f"[127.0.0.1]:{ssh_server.port} {ssh_server.host_public_key}\n"
    assert known_hosts.stat().st_mode & 0o077 == 0
    assert probe_one("pi", load_farm(farm).devices["pi"]).reachable

    again = _trust(farm, "--yes")
    assert again.exit_code == 0 and "nothing changed" in again.output
    assert known_hosts.read_text().count("\n") == 1


# An impostor key of the recorded type, or of another type: both are a changed key.
@pytest.mark.parametrize("kind", ["ed25519", "ecdsa"])
def test_a_changed_key_is_replaced_only_on_request(ssh_server: SshServer, tmp_path: Path,
                                                   kind: str) -> None:
    keygen(tmp_path / "impostor", kind)
    impostor = " ".join((tmp_path / "impostor.pub").read_text().split()[:2])
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{ssh_server.port} {impostor}\n")
    farm = _farm(tmp_path, ssh_server, known_hosts)

    refused = _trust(farm, "--yes")
    assert refused.exit_code == 1 and "differs from the key recorded" in refused.output
    assert "--replace" in refused.output
    assert known_hosts.read_text() == f"[127.0.0.1]:{ssh_server.port} {impostor}\n"

    replaced = _trust(farm, "--yes", "--replace")
    assert replaced.exit_code == 0, replaced.output
    assert known_hosts.read_text().split() == [f"[127.0.0.1]:{ssh_server.port}",
                                               *ssh_server.host_public_key.split()]


def test_trust_names_what_is_wrong_with_the_device(ssh_server: SshServer, tmp_path: Path) -> None:
    farm = _farm(tmp_path, ssh_server, tmp_path / "known_hosts")
    unknown = CliRunner().invoke(app, ["farm", "trust", "nas", "--farm", str(farm)])
    assert unknown.exit_code == 2 and "no device 'nas' (devices: esp, pi)" in unknown.output
    mcu = CliRunner().invoke(app, ["farm", "trust", "esp", "--farm", str(farm)])
    assert mcu.exit_code == 2 and "only ssh devices" in mcu.output


# --------------------------------------------------------------------------- recording


def _board(tmp_path: Path, known_hosts: Path, port: int = 2222) -> SshDevice:
    return SshDevice(transport="ssh", host="10.0.0.5", port=port, user="pi",
                     key_file=tmp_path / "id", known_hosts=known_hosts)


def _new_key() -> Any:
    return paramiko.ECDSAKey.generate()


def _key_line(pattern: str, key: Any) -> str:
    return f"{pattern} {key.get_name()} {key.get_base64()}\n"


@pytest.mark.parametrize("port, pattern", [(22, "10.0.0.5"), (2222, "[10.0.0.5]:2222")])
def test_known_hosts_names_a_board_as_openssh_does(tmp_path: Path, port: int,
                                                   pattern: str) -> None:
    assert host_pattern(_board(tmp_path, tmp_path / "known_hosts", port)) == pattern


def test_a_new_key_is_added_beside_the_others_in_a_new_owner_only_file(tmp_path: Path) -> None:
    known_hosts = tmp_path / "farm" / "keys" / "known_hosts"  # two folders to make
    board, first, second, third = _board(tmp_path, known_hosts), _new_key(), _new_key(), _new_key()
    record(board, HostKeyOffer("other", first, "unknown"))
    known_hosts.write_text(known_hosts.read_text().rstrip("\n"))  # a hand edit, no newline
    record(board, HostKeyOffer("[10.0.0.5]:2222", second, "unknown"))
    record(board, HostKeyOffer("third", third, "unknown"))  # after a newline: no blank line
    assert known_hosts.read_text() == (_key_line("other", first)
                                       + _key_line("[10.0.0.5]:2222", second)
                                       + _key_line("third", third))
    assert stat.S_IMODE(known_hosts.stat().st_mode) == 0o600


def test_a_changed_key_replaces_every_key_of_its_board_and_no_other(tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    # The board's recorded keys, of two types, around another host's.
    old_ecdsa, old_rsa = _new_key(), paramiko.RSAKey.generate(1024)
    other, new = _new_key(), _new_key()
    known_hosts.write_text(_key_line("[10.0.0.5]:2222", old_ecdsa) + _key_line("other", other)
                           + _key_line("[10.0.0.5]:2222", old_rsa))
    known_hosts.chmod(0o644)
    record(_board(tmp_path, known_hosts), HostKeyOffer("[10.0.0.5]:2222", new, "changed"))
    assert sorted(known_hosts.read_text().splitlines(keepends=True)) == sorted(
        [_key_line("other", other), _key_line("[10.0.0.5]:2222", new)])
    assert stat.S_IMODE(known_hosts.stat().st_mode) == 0o600


# --------------------------------------------------------------------------- examining


def test_a_recorded_key_is_trusted_and_another_is_changed_naming_both_fingerprints(
        ssh_server: SshServer, tmp_path: Path) -> None:
    served = _openssh_fingerprint(ssh_server.root / "host_key.pub")
    pattern = f"[127.0.0.1]:{ssh_server.port}"
    trusted = examine(ssh_device(ssh_server, tmp_path))
    assert (trusted.host_pattern, trusted.standing, trusted.recorded_fingerprint,
            trusted.fingerprint) == (pattern, "trusted", served, served)

    keygen(tmp_path / "impostor", "ecdsa")
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"{pattern} {(tmp_path / 'impostor.pub').read_text()}")
    changed = examine(ssh_device(ssh_server, tmp_path, known_hosts=known_hosts))
    assert (changed.host_pattern, changed.standing, changed.recorded_fingerprint,
            changed.fingerprint) == (pattern, "changed",
                                     _openssh_fingerprint(tmp_path / "impostor.pub"), served)
    unknown = examine(ssh_device(ssh_server, tmp_path, known_hosts=tmp_path / "none"))
    assert (unknown.standing, unknown.recorded_fingerprint) == ("unknown", None)


def test_the_recorded_key_type_is_asked_for_first(two_key_server: SshServer,
                                                  tmp_path: Path) -> None:
    """A known_hosts that holds the board's ecdsa key only (``ssh-keyscan -t ecdsa``, or
    an older OpenSSH) trusts the board: asked for its preference, it would show ed25519,
    and a good board would look like an impostor."""
    public = tmp_path.parent / "ecdsa.pub"
    public.write_text((two_key_server.root / "host_key_ecdsa.pub").read_text())
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{two_key_server.port} {public.read_text()}")
    offer = examine(ssh_device(two_key_server, tmp_path, known_hosts=known_hosts))
    assert offer.standing == "trusted" and offer.key.get_name() == "ecdsa-sha2-nistp256"
    assert offer.fingerprint == _openssh_fingerprint(public)
    # With nothing recorded, the board's own first choice.
    nothing_recorded = ssh_device(two_key_server, tmp_path, known_hosts=tmp_path / "none")
    assert fetch_host_key(nothing_recorded).get_name() == "ssh-ed25519"


def _within(seconds: float, call: Callable[[], object]) -> object:
    """``call()``'s result (or its exception, raised here); the test fails when it has
    not returned after ``seconds``."""
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["result"] = call()
        except BaseException as error:  # noqa: BLE001 - handed to the test
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still waiting after {seconds} s"
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome.get("result")


def _board_at(port: int, connect_timeout: float = 1.0) -> SshDevice:
    return SshDevice(transport="ssh", host="127.0.0.1", port=port, user="pi",
                     key_file=Path("id"), known_hosts=Path("known_hosts"),
                     connect_timeout=connect_timeout)


def test_a_board_that_refuses_the_connection_is_unreachable_saying_so() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with pytest.raises(DeviceUnreachable,
                       match=rf"^cannot reach 127\.0\.0\.1:{port}: .*[Cc]onnection refused"):
        fetch_host_key(_board_at(port))


def test_a_board_that_never_answers_the_connection_is_given_up_after_connect_timeout() -> None:
    """Its accept queue is full (backlog 0, one connection waiting): the next SYN is
    dropped, as by a board that hangs or a firewall; without a timeout this waits for the
    kernel's retries (about two minutes). (A kernel set to ``tcp_abort_on_overflow``
    refuses it instead: given up at once, which is fine too.)"""
    with socket.socket() as full:
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        waiting = socket.create_connection(full.getsockname())
        try:
            with pytest.raises(DeviceUnreachable, match=r"^cannot reach 127\.0\.0\.1:\d+: "
                                                        r"(timed out|.*[Cc]onnection refused)$"):
                _within(10, lambda: fetch_host_key(_board_at(full.getsockname()[1])))
        finally:
            waiting.close()


def test_a_board_that_connects_but_never_speaks_ssh_is_given_up_after_connect_timeout() -> None:
    """Connected, then silence (a hung sshd, another service): given up after
    connect_timeout (1 s), not paramiko's own banner wait (15 s)."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(5)  # the kernel accepts; nobody ever writes
        port = silent.getsockname()[1]
        with pytest.raises(DeviceUnreachable,
                           match=rf"^no SSH handshake with 127\.0\.0\.1:{port}: \S"):
            _within(10, lambda: fetch_host_key(_board_at(port)))
