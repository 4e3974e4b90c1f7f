"""``edgeflow farm trust DEVICE``: see a device's SSH host key and record it in the farm's
known_hosts, so later connections (which refuse unknown keys) accept it.

The key is fetched with a bare SSH handshake (no authentication, no command). Nothing
is written unless the caller confirms; a key that differs from the recorded one is
only replaced on request, because that is exactly what an impostor looks like.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tasks.config import SshDevice
from tasks.farm.transports import DeviceUnreachable, fingerprint

Standing = Literal["unknown", "trusted", "changed"]


@dataclass(frozen=True)
class HostKeyOffer:
    """The key a device presents, and how it stands against the farm's known_hosts."""

    host_pattern: str
    key: Any  # paramiko.PKey
    standing: Standing
    recorded_fingerprint: str | None = None

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.key)


def host_pattern(device: SshDevice) -> str:
    """How known_hosts names the device (OpenSSH's form: ``[host]:port`` off port 22)."""
    return device.host if device.port == 22 else f"[{device.host}]:{device.port}"


def fetch_host_key(device: SshDevice, preferred_types: list[str] | None = None) -> Any:
    """The host key the device offers in an SSH handshake, asking first for
    ``preferred_types`` (the types already recorded for it) when it has them."""
    import paramiko

    try:
        sock = socket.create_connection((device.host, device.port), timeout=device.connect_timeout)
    except OSError as error:
        raise DeviceUnreachable(f"cannot reach {device.host}:{device.port}: {error}") from None
    transport = paramiko.Transport(sock)
    options = transport.get_security_options()
    wanted = [kind for kind in preferred_types or [] if kind in options.key_types]
    options.key_types = [*wanted, *(kind for kind in options.key_types if kind not in wanted)]
    try:
        transport.start_client(timeout=device.connect_timeout)
        return transport.get_remote_server_key()
    except (paramiko.SSHException, EOFError, OSError) as error:
        raise DeviceUnreachable(f"no SSH handshake with {device.host}:{device.port}: "
                                f"{error}") from None
    finally:
        transport.close()


def _load(known_hosts: Path) -> Any:
    import paramiko

    keys = paramiko.HostKeys()
    if known_hosts.is_file():
        keys.load(str(known_hosts))
    return keys


def examine(device: SshDevice) -> HostKeyOffer:
    """The device's key against known_hosts. Any recorded key for the host that the
    offer does not match (of the same type or not) makes it ``changed``: an impostor
    offering another key type must not pass for a new device."""
    pattern = host_pattern(device)
    recorded = dict(_load(device.known_hosts).lookup(pattern) or {})
    key = fetch_host_key(device, list(recorded))
    if not recorded:
        return HostKeyOffer(pattern, key, "unknown")
    same_type = recorded.get(key.get_name())
    if same_type is not None and same_type.asbytes() == key.asbytes():
        return HostKeyOffer(pattern, key, "trusted", fingerprint(same_type))
    return HostKeyOffer(pattern, key, "changed",
                        fingerprint(same_type or next(iter(recorded.values()))))


def record(device: SshDevice, offer: HostKeyOffer) -> None:
    """Write the offered key into the device's known_hosts (replacing a changed one of
    the same type); the file is created owner-only."""
    known_hosts = device.known_hosts
    known_hosts.parent.mkdir(parents=True, exist_ok=True)
    if offer.standing == "changed":
        keys = _load(known_hosts)
        while offer.host_pattern in keys:  # every recorded key of the host goes
            del keys[offer.host_pattern]
        keys.add(offer.host_pattern, offer.key.get_name(), offer.key)
        keys.save(str(known_hosts))
    else:
        existing = known_hosts.read_text(encoding="utf-8") if known_hosts.is_file() else ""
        separator = "" if not existing or existing.endswith("\n") else "\n"
        line = f"{offer.host_pattern} {offer.key.get_name()} {offer.key.get_base64()}\n"
        known_hosts.write_text(existing + separator + line, encoding="utf-8")
    known_hosts.chmod(0o600)
