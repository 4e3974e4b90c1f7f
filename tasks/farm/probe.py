"""``edgeflow farm probe``: what each device in farm.yaml is and can run.

Connects to every device through its transport (SSH with the farm's known_hosts, or this
machine), runs the harness's ``--probe`` from a temporary folder in the device's
workdir, and returns per device: reachable or the reason not, host facts (arch, OS,
Python, CPU, cores, memory, temperature where exposed), the runtimes it can import
with their versions, and the energy meters it has (RAPL, hwmon, the Pi 5 PMIC). A failure on one device never hides the others (the farm's rows are
:func:`tasks.targets.farm_commands.probe_farm`'s, each kind's its own). Every text from a
device (facts, versions, the reason it failed) is visible and capped
(:mod:`tasks.farm.untrusted`).

The probe itself (:func:`probe_command`, :func:`read_probe`) is also what a benchmark
session runs in the same shell command that checks its pushed files.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from tasks.core import device_code
from tasks.core.errors import EdgeflowError, device_failure
from tasks.farm.logs import log_tail, to_files
from tasks.farm.protocol import MAX_RESULT_BYTES, parse_untrusted_json, validate_probe
from tasks.farm.push import last_line, make_dirs, push_files
from tasks.farm.transports import ON_DEVICE_TIMEOUT_EXITS, Connection, connect, quote_command
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
    # The energy meters the harness found on it (``rapl (every 0.001 s)``...).
    meters: tuple[str, ...] = ()


def _beside(remote_harness: str, name: str) -> str:
    return f"{remote_harness.rsplit('/', 1)[0]}/{name}"


def install_harness(connection: Connection, directory: str) -> str:
    """Create an owner-only folder on the device and push the harness into it (its
    package and the launcher, :func:`~tasks.core.device_code.shipped`), verified; returns
    the launcher's path there."""
    files = device_code.shipped(directory, ("harness",))
    make_dirs(connection, *sorted({remote.rsplit("/", 1)[0] for _, remote in files}))
    push_files(connection, files)
    return f"{directory}/harness.py"


def probe_command(python: str, remote_harness: str) -> str:
    """The harness's ``--probe``, its answer and log written beside it on the device."""
    return to_files([python, remote_harness, "--probe"], _beside(remote_harness, "probe.json"),
                    _beside(remote_harness, "probe.log"))


def read_probe(connection: Connection, result: Any, python: str,
               remote_harness: str) -> dict[str, Any]:
    """The probe the command of :func:`probe_command` wrote, checked
    (:func:`~tasks.farm.protocol.validate_probe`); RuntimeError says why there is none."""
    if result.exited == 127:
        raise RuntimeError(f"interpreter {python!r} (or coreutils `timeout`) not found on the "
                           "device")
    if result.exited in ON_DEVICE_TIMEOUT_EXITS:
        raise RuntimeError("probe did not finish in time and was stopped on the device")
    if not result.ok:
        reason = (log_tail(connection, _beside(remote_harness, "probe.log"))
                  or last_line(result.stderr))
        raise RuntimeError(f"probe failed (exit {result.exited}): {reason}")
    raw = connection.read_file(_beside(remote_harness, "probe.json"), MAX_RESULT_BYTES)
    return validate_probe(parse_untrusted_json(raw))


def probe_device(connection: Connection, python: str, remote_harness: str,
                 timeout: float) -> dict[str, Any]:
    """Host facts and importable runtimes of the device (the harness's ``--probe``)."""
    result = connection.run(probe_command(python, remote_harness), timeout=timeout)
    return read_probe(connection, result, python, remote_harness)


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


def meter_names(meters: Any) -> tuple[str, ...]:
    """The probe's energy meters as a row shows them: name and update period (a device's
    words: contained)."""
    if not isinstance(meters, list):
        return ()
    return tuple(contained(f"{meter.get('name')} (every {meter.get('update_period_s')} s"
                           f"{', assumed' if meter.get('period_assumed') else ''})", ERROR_LIMIT)
                 for meter in meters if isinstance(meter, dict))


def probe_one(name: str, device: Any, timeout: float = 60.0) -> DeviceProbe:
    """The row of a device with a shell: its probe, or why it could not be probed."""
    connection = connect(device, name)
    try:
        found = probe_remote(connection, device, timeout)
        return DeviceProbe(name, True, found.get("host", {}), found.get("runtime_versions", {}),
                           meters=meter_names(found.get("energy_meters")))
    except Exception as error:  # noqa: BLE001 - one device's failure is its own row
        # The reason may quote the device's log: made visible and capped like its facts.
        reason = f"{type(error).__name__}: {last_line(str(error))}"
        return DeviceProbe(name, False, error=contained(reason, ERROR_LIMIT),
                           failure=device_failure(error))
    finally:
        connection.close()
