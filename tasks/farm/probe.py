"""``edgeflow farm probe``: what each device in farm.yaml is and can run.

Connects to every device through its transport (SSH with the farm's known_hosts, or this
machine), runs the harness's ``--probe`` from a temporary folder in the device's
workdir, and returns per device: reachable or the reason not, host facts (arch, OS,
Python, CPU, cores, memory, temperature where exposed) and the runtimes it can import
with their versions. A failure on one device never hides the others. MCU profiles have
no shell: they are reported from farm.yaml. Every text from a device (facts, versions,
the reason it failed) is visible and capped (:mod:`tasks.farm.untrusted`).
"""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from tasks.benchmark import install_harness, probe_device, tail
from tasks.core.config import Farm, McuDevice, check_key_files
from tasks.core.errors import EdgeflowError, device_failure
from tasks.farm.transports import Connection, connect, quote_command
from tasks.farm.untrusted import ERROR_LIMIT, contained


@dataclass(frozen=True)
class DeviceProbe:
    """What one device is, or why it could not be probed: ``error`` (one line, shown) and
    ``failure``, the class of the error, whose ``exit_code`` `farm probe` exits with. A
    microcontroller profile is not probed (no shell) and is no failure."""

    device: str
    reachable: bool
    facts: dict[str, Any] = field(default_factory=dict)
    runtimes: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    failure: type[EdgeflowError] | None = None


def probe_remote(connection: Connection, device: Any, timeout: float = 60.0) -> dict[str, Any]:
    """The harness's probe (host facts, runtimes and versions), run from a temporary
    folder in the device's workdir that is removed after."""
    probe_dir = f"{device.workdir}/probe-{uuid.uuid4().hex[:12]}"
    remote_harness = install_harness(connection, probe_dir)
    try:
        return probe_device(connection, device.harness_python(), remote_harness, timeout)
    finally:
        connection.run(quote_command(["rm", "-rf", "--", probe_dir]), timeout=timeout)


def probe_runtimes(connection: Connection, device: Any, timeout: float = 60.0) -> dict[str, str]:
    """The runtimes the device's harness interpreter imports, with their versions."""
    return probe_remote(connection, device, timeout)["runtime_versions"]


def probe_one(name: str, device: Any, timeout: float = 60.0) -> DeviceProbe:
    if isinstance(device, McuDevice):
        return DeviceProbe(name, False, {"class": "mcu", "flash_kb": device.flash_kb,
                                         "ram_kb": device.ram_kb, **device.tags},
                           error="microcontroller profile: no shell to probe")
    connection = connect(device, name)
    try:
        found = probe_remote(connection, device, timeout)
        return DeviceProbe(name, True, found.get("host", {}), found.get("runtime_versions", {}))
    except Exception as error:  # noqa: BLE001 - one device's failure is its own row
        # The reason may quote the device's log: made visible and capped like its facts.
        reason = f"{type(error).__name__}: {tail(str(error))}"
        return DeviceProbe(name, False, error=contained(reason, ERROR_LIMIT),
                           failure=device_failure(error))
    finally:
        connection.close()


def probe_farm(farm: Farm) -> list[DeviceProbe]:
    """Probe every device in parallel; results in farm.yaml order. A key file that
    cannot be used is a ConfigError before any device is contacted."""
    check_key_files(farm)
    with ThreadPoolExecutor(max_workers=max(1, min(16, len(farm.devices)))) as pool:
        futures = [pool.submit(probe_one, name, device) for name, device in farm.devices.items()]
        return [future.result() for future in futures]
