"""``edgeflow farm setup``: make SSH devices ready to run the harness.

For each device with a ``setup`` section in farm.yaml: a virtualenv at
``<workdir>/venv`` holding numpy, Pillow (the release's predictor decodes images) and
the runtimes the device runs (its ``runtimes``,
else those of the experiment's formats), pinned to this project's versions
(``requirements.lock``) so the device runs what convert checked. With
``setup.wheelhouse: true`` (the default, for boards without internet) the wheels are
downloaded here for the device's platform and Python, cached in
``.edgeflow/wheelhouse/<platform>/``, and pushed over SSH (verified by sha256) into
``<workdir>/wheelhouse``, then installed offline; the outcome names the platform tags of
the wheels pip chose (``manylinux_2_28_aarch64``, ``any``...).

Idempotent: what was installed is recorded in ``<workdir>/venv/edgeflow-setup.json``;
when it matches what is wanted and the venv imports its runtimes, nothing is touched
and the outcome says so. When it differs, the venv is rebuilt from scratch so it holds
exactly what is wanted.
"""

from __future__ import annotations

import fcntl
import json
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

from tasks.core import device_code
from tasks.config import VENV_DIR, SshDevice
from tasks.core.errors import ConfigError, DeviceError, EdgeflowError, device_failure
from tasks.farm.probe import probe_runtimes
from tasks.farm.protocol import LOCK_BUSY_EXIT, LOCK_NAME, MAX_RESULT_BYTES, parse_untrusted_json
from tasks.farm.push import last_line, make_dirs, push_files, verify_command, write_sha256_list
from tasks.farm.transports import Connection, connect, owner_only, quote_command

# The pip distributions that give each harness runtime (numpy comes with every one).
RUNTIME_PACKAGES: dict[str, tuple[str, ...]] = {
    "tflite": ("ai-edge-litert",),
    "onnxruntime": ("onnxruntime",),
    "openvino": ("openvino",),
    "tflm": ("tflite-micro",),
    # The Edge TPU also needs Coral's libedgetpu from the system's package manager.
    "edgetpu": ("ai-edge-litert",),
}
STATE_FILE = "edgeflow-setup.json"
WHEELHOUSE_DIR = "wheelhouse"
LOCK_FILE = Path(__file__).resolve().parents[2] / "requirements.lock"  # the repository root
INSTALL_TIMEOUT = 1800.0
SETUP_LOCK_WAIT = 600  # seconds to wait for a benchmark on the device to finish
PYTHON_VERSION = re.compile(r"^\d{1,2}\.\d{1,3}$")
MACHINE = re.compile(r"^[A-Za-z0-9_.]{1,32}$")
# Printed by the device's base interpreter: enough to choose wheels for it.
PLATFORM_SCRIPT = (
    "import json, platform, sys; print(json.dumps({"
    "'python': '%d.%d' % sys.version_info[:2], 'implementation': sys.implementation.name, "
    "'machine': platform.machine(), 'libc': list(platform.libc_ver())}))")


class SetupError(DeviceError):
    """The device could not be set up; the message says why."""


@dataclass(frozen=True)
class SetupOutcome:
    """One device's setup: what was done, or ``error`` (one line) and ``failure``, the
    class of the error, whose ``exit_code`` the command exits with."""

    device: str
    changed: bool = False
    actions: tuple[str, ...] = ()
    runtimes: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    failure: type[EdgeflowError] | None = None


def pinned(names: list[str], lock_file: Path = LOCK_FILE) -> list[str]:
    """Each requirement pinned to the lock's version when it names a bare package."""
    pins = {}
    if lock_file.is_file():
        for line in lock_file.read_text(encoding="utf-8").splitlines():
            name, _, pin = line.strip().partition("==")
            if pin:
                pins[name.lower().replace("_", "-")] = pin
    out = []
    for requirement in names:
        key = requirement.lower().replace("_", "-")
        out.append(f"{requirement}=={pins[key]}" if key in pins else requirement)
    return sorted(set(out))


def wanted_packages(device: SshDevice, runtimes: list[str]) -> list[str]:
    # Pillow: the release's predictor decodes an application's images with it.
    packages = ["numpy", "pillow",
                *(package for runtime in runtimes for package in RUNTIME_PACKAGES[runtime])]
    return pinned(packages) + list(device.setup.extra_packages if device.setup else [])


def pip_platforms(facts: dict[str, Any]) -> list[str]:
    """The wheel platform tags a glibc Linux device accepts, newest first."""
    machine = facts["machine"]
    libc, libc_version = (facts.get("libc") or ["", ""])[:2]
    if libc != "glibc" or not libc_version:
        raise SetupError(f"libc {libc or 'unknown'} on {machine}: wheels for it cannot be chosen "
                         "here (manylinux is glibc only); set setup.wheelhouse: false so the "
                         "device's own pip chooses")
    major, minor = (int(part) for part in libc_version.split(".")[:2])
    tags = [f"manylinux_{major}_{m}_{machine}" for m in range(minor, 16, -1)]
    if (major, minor) >= (2, 17):
        tags.append(f"manylinux2014_{machine}")
    return [*tags, f"linux_{machine}"]


def wheel_platforms(wheels: list[Path]) -> list[str]:
    """The platform tags of ``wheels`` (their file names' last field, compressed tag sets
    split: ``manylinux_2_27_aarch64.manylinux_2_28_aarch64`` is two), sorted: which of
    the device's accepted platforms pip actually chose."""
    return sorted({tag for wheel in wheels if wheel.name.endswith(".whl")
                   for tag in wheel.name.removesuffix(".whl").rsplit("-", 1)[-1].split(".")})


def download_wheels(packages: list[str], facts: dict[str, Any], cache: Path) -> list[Path]:
    """Wheels for ``packages`` (and pip itself) for the device's platform and Python,
    downloaded into ``cache`` (reused between runs); returns the wheel files needed."""
    platforms = pip_platforms(facts)
    cache.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check",
            "--only-binary=:all:", "--dest", str(cache), "--python-version", facts["python"],
            "--implementation", "cp" if facts["implementation"] == "cpython" else "py",
            *(arg for tag in platforms for arg in ("--platform", tag)),
            *(["--constraint", str(LOCK_FILE)] if LOCK_FILE.is_file() else []),
            f"pip=={version('pip')}", *packages]
    # One pip at a time per cache, across threads and processes (flock on a fresh open
    # file: each holder has its own open file description).
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SetupError(f"pip could not download wheels for python {facts['python']} on "
                         f"{facts['machine']}: {last_line(done.stderr)}")
    # pip names every file the resolution needs: "Saved <path>" or "File was already
    # downloaded <path>" (the cache holds other platforms' and older wheels too).
    wheels = [Path(line.split(" ", 1)[1] if line.startswith("Saved ")
                   else line.removeprefix("File was already downloaded "))
              for line in (line.strip() for line in done.stdout.splitlines())
              if line.startswith(("Saved ", "File was already downloaded "))]
    if not wheels:
        raise SetupError(f"pip downloaded nothing for {', '.join(packages)}")
    return wheels


def _remote_state(connection: Connection, state_path: str) -> dict[str, Any] | None:
    """What the last setup recorded on the device; None when absent or damaged."""
    try:
        return parse_untrusted_json(connection.read_file(state_path, MAX_RESULT_BYTES))
    except (OSError, ValueError):
        return None


def _run(connection: Connection, command: str, what: str, timeout: float = 600.0) -> Any:
    result = connection.run(command, timeout=timeout)
    if not result.ok:
        raise SetupError(f"{what} failed (exit {result.exited}): "
                         f"{last_line(result.stderr) or last_line(result.stdout)}")
    return result


def _push_missing_wheels(connection: Connection, wheels: list[Path], wheelhouse: str) -> int:
    # Wheel file names carry name, version and tags: a name present is that wheel.
    present = set(connection.listdir(wheelhouse))  # names only
    missing = [wheel for wheel in wheels if wheel.name not in present]
    push_files(connection, [(wheel, f"{wheelhouse}/{wheel.name}") for wheel in missing])
    return len(missing)


def _imports_work(connection: Connection, python: str, runtimes: list[str]) -> bool:
    RUNTIME_MODULES = device_code.load("runtimes").RUNTIME_MODULES

    modules = ["numpy", "PIL", *(RUNTIME_MODULES[runtime][0] for runtime in runtimes)]
    check = f"import {', '.join(sorted(set(modules)))}"
    return connection.run(quote_command([python, "-c", check]), timeout=120).ok


def _checked_facts(raw: bytes) -> dict[str, Any]:
    """The device's platform facts; they name a cache folder here, so each is checked."""
    facts = parse_untrusted_json(raw)
    libc = facts.get("libc")
    if not (isinstance(facts.get("python"), str) and PYTHON_VERSION.match(facts["python"])
            and isinstance(facts.get("machine"), str) and MACHINE.match(facts["machine"])
            and facts.get("implementation") in {"cpython", "pypy"}
            and isinstance(libc, list) and len(libc) == 2
            and all(isinstance(part, str) and MACHINE.match(part or "x") for part in libc)):
        raise SetupError(f"the device reported unusable platform facts: {str(facts)[:200]}")
    return facts


def _install_command(device: SshDevice, packages: list[str], wheels: list[Path],
                     listed: str | None = None) -> str:
    """One shell command, under the device lock (never while a benchmark runs in the
    venv): check the wheels' sha256 (from the list pushed to ``listed``), rebuild the
    venv, install, make it owner-only."""
    venv = f"{device.workdir}/{VENV_DIR}"
    steps: list[str] = []
    if device.setup.wheelhouse:
        wheelhouse = f"{device.workdir}/{WHEELHOUSE_DIR}"
        pip_wheel = next(wheel.name for wheel in wheels if wheel.name.startswith("pip-"))
        assert listed is not None, "a wheelhouse install checks the wheels' sha256 list"
        steps.append(verify_command(listed))
        create = [device.python, "-m", "venv", "--without-pip", venv]
        install = [f"{venv}/bin/python", f"{wheelhouse}/{pip_wheel}/pip", "install",
                   "--no-index", "--find-links", wheelhouse]
    else:
        create = [device.python, "-m", "venv", venv]
        install = [f"{venv}/bin/python", "-m", "pip", "install"]
    steps += [quote_command(argv) for argv in (
        ["rm", "-rf", "--", venv], create,
        [*install, "--quiet", "--disable-pip-version-check", "--no-cache-dir", *packages],
        # pip gives everyone execute bits on a wheel's executables and libraries.
        ["chmod", "-R", "go=", "--", venv])]
    script = " && ".join(["umask 077", *steps])
    return owner_only(["flock", "-w", str(SETUP_LOCK_WAIT), "-E", str(LOCK_BUSY_EXIT),
                       f"{device.workdir}/{LOCK_NAME}", "sh", "-c", script])


def setup_device(name: str, device: SshDevice, runtimes: list[str], cache_root: Path) -> SetupOutcome:
    """Bring one device's virtualenv to the wanted state (see the module docstring)."""
    venv = f"{device.workdir}/{VENV_DIR}"
    python = device.harness_python()
    packages = wanted_packages(device, runtimes)
    connection = connect(device, name)
    actions: list[str] = []
    listed: str | None = None
    try:
        platform_run = _run(connection, quote_command([device.python, "-c", PLATFORM_SCRIPT]),
                            f"running {device.python} on the device")
        facts = _checked_facts(platform_run.stdout.encode())
        wanted = {"python": facts["python"], "machine": facts["machine"],
                  "libc": facts["libc"], "packages": packages,
                  "wheelhouse": device.setup.wheelhouse, "runtimes": sorted(runtimes)}
        state_path = f"{venv}/{STATE_FILE}"
        if _remote_state(connection, state_path) == wanted and _imports_work(connection, python,
                                                                              runtimes):
            return SetupOutcome(name, False, (), probe_runtimes(connection, device))
        make_dirs(connection, device.workdir)
        wheels: list[Path] = []
        if device.setup.wheelhouse:
            cache = cache_root / f"cp{facts['python'].replace('.', '')}-{facts['machine']}"
            wheels = download_wheels(packages, facts, cache)
            wheelhouse = f"{device.workdir}/{WHEELHOUSE_DIR}"
            make_dirs(connection, wheelhouse)
            pushed = _push_missing_wheels(connection, wheels, wheelhouse)
            actions.append(f"pushed {pushed} of {len(wheels)} wheels")
            actions.append(f"wheel platforms: {', '.join(wheel_platforms(wheels))}")
            listed = write_sha256_list(
                connection, [(wheel, f"{wheelhouse}/{wheel.name}") for wheel in wheels], wheelhouse)
        installed = connection.run(_install_command(device, packages, wheels, listed),
                                   timeout=INSTALL_TIMEOUT + SETUP_LOCK_WAIT)
        if installed.exited == LOCK_BUSY_EXIT:
            raise SetupError(f"device busy: a benchmark held {device.workdir}/{LOCK_NAME} for "
                             f"more than {SETUP_LOCK_WAIT} s")
        if not installed.ok:
            raise SetupError(f"building {venv} failed (exit {installed.exited}): "
                             f"{last_line(installed.stderr) or last_line(installed.stdout)}")
        actions.append(f"created {venv} with {', '.join(packages)}")
        if not _imports_work(connection, python, runtimes):
            raise SetupError(f"the new virtualenv cannot import {', '.join(runtimes)}")
        with tempfile.TemporaryDirectory() as scratch:
            state_file = Path(scratch) / STATE_FILE
            state_file.write_text(json.dumps(wanted, indent=2), encoding="utf-8")
            push_files(connection, [(state_file, state_path)])
        return SetupOutcome(name, True, tuple(actions), probe_runtimes(connection, device))
    except Exception as error:  # noqa: BLE001 - one device's failure is its own row
        return SetupOutcome(name, bool(actions), tuple(actions),
                            error=f"{type(error).__name__}: {last_line(str(error))}",
                            failure=device_failure(error))
    finally:
        connection.close()


def runtimes_for(device: SshDevice, experiment_runtimes: list[str] | None) -> list[str]:
    if device.runtimes is not None:
        return sorted(device.runtimes)
    if experiment_runtimes is None:
        raise ConfigError("a device without `runtimes` is set up for the experiment's formats: "
                          "params.yaml is needed (--params)")
    return sorted(experiment_runtimes)


def setup_devices(devices: dict[str, SshDevice], experiment_runtimes: list[str] | None,
                  cache_root: Path, max_parallel: int = 16) -> list[SetupOutcome]:
    """Set up ``devices`` (each with a ``setup`` section), at most ``max_parallel`` at
    once (farm.yaml's); results in their order. Which devices those are is the farm's
    targets' to say (:func:`tasks.targets.farm_commands.setup_farm`)."""
    plans = {name: runtimes_for(device, experiment_runtimes) for name, device in devices.items()}
    with ThreadPoolExecutor(max_workers=max(1, min(max_parallel, len(devices)))) as pool:
        futures = [pool.submit(setup_device, name, device, plans[name], cache_root)
                   for name, device in devices.items()]
        return [future.result() for future in futures]
