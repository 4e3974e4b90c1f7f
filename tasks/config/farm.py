"""The farm schema: ``farm.yaml``'s devices, one pydantic model per kind of device (the
:data:`Device` union, tagged by ``transport``), and the SSH key checks a command that
connects runs before its first connection."""

from __future__ import annotations

import os
import posixpath
import re
import shlex
import stat
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args

from pydantic import Field, field_validator, model_validator

from tasks.core.bounds import MAX_MCU_KB, MAX_RETRY_WAIT_SECONDS, PositiveSeconds
from tasks.config.cores import CORES, CoreProfile, core_profile
from tasks.config.params import RequirementParams, Requirements
from tasks.config.power import Battery, EnergyMeter, PowerField
from tasks.core.errors import ConfigError
from tasks.core.strict import StrictModel, count, number
from tasks.models.formats import FORMATS

DEVICE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

# How a board that runs the harness may be emulated (its farm.yaml ``emulation``; absent:
# a physical board): user-mode QEMU (binfmt, tests/arm_boards.py) or a whole emulated
# system. Its timings say nothing about the real hardware, so its results are marked
# ``emulated`` and kept out of recommendations and regression gates unless opted in.
Emulation = Literal["qemu-user", "qemu-system"]
EMULATIONS: tuple[str, ...] = get_args(Emulation)


class Accelerators(StrictModel):
    """Hints passed to the harness so a runtime uses the board's accelerator."""

    onnxruntime_providers: list[str] | None = Field(
        default=None, min_length=1,
        description="ONNX Runtime execution providers in order, e.g. [TensorrtExecutionProvider, "
                    "CUDAExecutionProvider, CPUExecutionProvider]; null = CPU")
    openvino_device: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9_.:,()-]{1,64}$",
        description="OpenVINO device name: CPU, GPU, NPU, AUTO:NPU,CPU...; null = CPU")
    tflite_delegate: str | None = Field(
        default=None, min_length=1,
        description="path or name of a TFLite external delegate library on the device")

    @field_validator("onnxruntime_providers")
    @classmethod
    def _provider_names(cls, value: list[str] | None) -> list[str] | None:
        for name in value or []:
            if not re.fullmatch(r"[A-Za-z0-9]+ExecutionProvider", name):
                raise ValueError(f"{name!r} is not an ONNX Runtime execution provider name "
                                 "(like CUDAExecutionProvider)")
        return value


class RunsHarness(StrictModel):
    """What every device that runs the harness shares: its threads, the runtimes it may
    use, its tags, accelerator hints, requirement overrides, and how many past runs it
    keeps in its working directory."""

    threads: Annotated[int, count(1, 256)] = 1
    runtimes: list[str] | None = Field(
        default=None, description="runtimes the device can run; null = all it can import")
    tags: dict[str, str] = Field(default_factory=dict)
    accelerators: Accelerators = Accelerators()
    requirements: Requirements | None = None
    keep_runs: Annotated[int, count(1, 1000)] = Field(
        default=5, description="per-run folders kept on the device (older are removed)")
    on_release: str | None = Field(
        default=None, min_length=1, max_length=4096,
        description="shell command run on the device after a release becomes current "
                    "(e.g. systemctl --user restart app); its folder is $1. If it fails, "
                    "the previous release is restored")
    on_release_timeout_seconds: PositiveSeconds = 120.0
    emulation: Emulation | None = Field(
        default=None, description="how the board is emulated (qemu-user, qemu-system); "
                                  "absent: a physical board. Its results are marked emulated")
    energy: EnergyMeter | None = Field(
        default=None, description="the meter the harness reads (absent: the first it finds)")
    power: PowerField = None
    battery: Battery | None = None

    @field_validator("runtimes")
    @classmethod
    def _known_runtimes(cls, value: list[str] | None) -> list[str] | None:
        known = sorted({fmt.runtime for fmt in FORMATS.values()})
        for runtime in value or []:
            if runtime not in known:
                raise ValueError(f"unknown runtime {runtime!r} (allowed: {', '.join(known)})")
        return value


class LocalDevice(RunsHarness):
    """This machine, reached through the same run/put/get interface as an SSH board."""

    transport: Literal["local"] = "local"
    workdir: Path = Path(".edgeflow/devices/local")
    python: str | None = Field(default=None, description="interpreter; null = edgeflow's own")

    def harness_python(self) -> str:
        """The interpreter that runs the harness."""
        return self.python or sys.executable


VENV_DIR = "venv"


class DeviceSetup(StrictModel):
    """How ``edgeflow farm setup`` prepares a device: a virtualenv at ``<workdir>/venv``
    with numpy and the runtimes the device runs (its ``runtimes``, else those of the
    experiment's formats), pinned to this project's versions."""

    wheelhouse: bool = Field(
        default=True, description="true: wheels are downloaded here for the device's platform "
                                  "and pushed (devices without internet); false: the device's "
                                  "pip downloads them")
    extra_packages: list[str] = Field(default_factory=list,
                                      description="more pip requirements, e.g. pillow==11.0.0")

    @field_validator("extra_packages")
    @classmethod
    def _requirement_specs(cls, value: list[str]) -> list[str]:
        for spec in value:
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9,._-]+\])?"
                                r"((==|>=|<=|~=|!=|<|>)[A-Za-z0-9.*+!-]+)?", spec):
                raise ValueError(f"{spec!r} is not a pip requirement like name or name==1.2.3")
        return value


class SshDevice(RunsHarness):
    """A board reached over SSH (Fabric): key authentication only, its host key checked
    against the farm's known_hosts (an unknown or changed key is refused)."""

    transport: Literal["ssh"]
    host: str = Field(min_length=1)
    port: Annotated[int, count(1, 65535)] = 22
    user: str = Field(min_length=1)
    key_file: Path = Field(description="private key; relative to farm.yaml")
    known_hosts: Path = Field(description="known_hosts file; relative to farm.yaml")
    key_passphrase_env: str | None = Field(
        default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="name of the environment variable holding the key's passphrase "
                    "(never the passphrase itself: no secrets in farm.yaml)")
    python: str = Field(default="python3", min_length=1,
                        description="interpreter on the device (with `setup`: the one that "
                                    "creates the virtualenv)")
    workdir: str = Field(default="edgeflow", min_length=1,
                         description="on the device; relative to its home (~/x is x)")
    connect_timeout: PositiveSeconds = 10.0
    keepalive_seconds: Annotated[int, count(1, 3600, unit="seconds")] = Field(
        default=15,
        description="a silent connection is probed after this long; a board that stops "
                    "answering is given up after about twice as long again")
    io_timeout: PositiveSeconds = Field(
        default=120.0, description="limit for a file transfer or a short command "
                                   "(benchmarks have benchmark.timeout_seconds)")
    connect_attempts: Annotated[int, count(1, 20)] = Field(
        default=3, description="tries to connect before the device is unreachable")
    retry_backoff_seconds: Annotated[float, number(0, MAX_RETRY_WAIT_SECONDS,
                                                   unit="seconds")] = Field(
        default=1.0, description="first wait between tries; doubles each time, up to "
                                 f"{MAX_RETRY_WAIT_SECONDS:g} s")
    # Connection attempts ride out a blip of seconds; a board rebooting or a lab link down
    # for minutes is Prefect's to retry: the whole benchmark task, later (flows/retries.py).
    task_retries: Annotated[int, count(0, 10)] = Field(
        default=0, description="benchmark task retries (Prefect) when the board did not "
                               "answer (connection refused or timed out), never on a refused "
                               "key or a failed benchmark")
    task_retry_delay_seconds: Annotated[float, number(0, 3600, unit="seconds")] = Field(
        default=30.0, description="wait before the first task retry; doubles each retry")
    setup: DeviceSetup | None = Field(
        default=None, description="`edgeflow farm setup` manages a virtualenv in the workdir "
                                  "and benchmarks run in it")

    @field_validator("workdir")
    @classmethod
    def _home_relative(cls, value: str) -> str:
        """``~`` and ``~/x`` as a shell reads them (the login user's home): nothing on the
        board expands them (commands quote the workdir, SFTP takes it as written, which
        made a folder named ``~``), and a relative workdir already is in the home."""
        if value == "~" or value.startswith("~/"):
            return value[2:].strip("/") or "."
        if value.startswith("~"):
            raise ValueError(f"{value!r}: only ~ or ~/... (the home of `user`) is understood; "
                             "write the folder relative to that home, or from /")
        return value

    def harness_python(self) -> str:
        """The interpreter that runs the harness: the managed virtualenv's, if any."""
        return f"{self.workdir}/{VENV_DIR}/bin/python" if self.setup is not None else self.python


# The fastest clock a microcontroller profile may declare (MHz): above any MCU's.
MAX_CLOCK_MHZ = 2000
MAX_CPI = 10.0


class McuDevice(StrictModel):
    """A microcontroller board (ESP32-S3, Arduino Nano 33 BLE...): no shell to run the
    harness. Without ``target`` its ``tflm`` variants are checked to fit flash and RAM
    with margins, their accuracy that of the real TFLite Micro interpreter run on the
    host. With ``target`` (a core edgeflow emulates: :data:`tasks.config.cores.CORES`)
    each variant is built into a firmware for that core and run in its emulator: accuracy,
    arena and firmware size are the target's, and latency an estimate from the counted
    instructions at ``clock_mhz`` and the core's (or the device's ``cpi``) cycles per
    instruction."""

    transport: Literal["mcu"]
    flash_kb: Annotated[int, count(1, MAX_MCU_KB)] = Field(
        description="flash available to the model and firmware")
    ram_kb: Annotated[int, count(1, MAX_MCU_KB)] = Field(
        description="RAM available to the tensor arena and firmware")
    flash_margin: float = Field(default=0.25, ge=0.0, lt=1.0,
                                description="fraction of flash kept for the firmware")
    ram_margin: float = Field(default=0.25, ge=0.0, lt=1.0,
                              description="fraction of RAM kept for the firmware")
    tags: dict[str, str] = Field(default_factory=dict)
    requirements: Requirements | None = None
    target: str | None = Field(
        default=None, description=f"the core, when edgeflow emulates it "
                                  f"({', '.join(CORES)}); absent: fit check only")
    clock_mhz: float | None = Field(
        default=None, gt=0, le=MAX_CLOCK_MHZ,
        description="the core's clock in MHz (required with target): latency estimates")
    cpi: float | None = Field(
        default=None, gt=0, le=MAX_CPI,
        description="cycles per instruction on this board (with target); absent: the "
                    "core's declared figure")
    power: PowerField = None
    battery: Battery | None = None

    @field_validator("target")
    @classmethod
    def _known_core(cls, value: str | None) -> str | None:
        if value is not None:
            core_profile(value)  # a ValueError naming the known cores
        return value

    @model_validator(mode="after")
    def _clock_with_target(self) -> McuDevice:
        if self.target is not None and self.clock_mhz is None:
            raise ValueError(f"target {self.target} needs clock_mhz (the core's clock in "
                             "MHz, e.g. 64 for an nRF52840)")
        if self.target is None:
            given = [name for name in ("clock_mhz", "cpi") if getattr(self, name) is not None]
            if given:
                raise ValueError(f"{' and '.join(given)} only apply with target (a core "
                                 f"edgeflow emulates: {', '.join(CORES)})")
        return self

    @property
    def core(self) -> CoreProfile | None:
        """The emulated core's profile, None without ``target``."""
        return core_profile(self.target) if self.target is not None else None

    @property
    def cycles_per_instruction(self) -> float | None:
        """The device's ``cpi``, else its core's declared figure; None without target."""
        core = self.core
        return None if core is None else (self.cpi if self.cpi is not None else core.cpi)


# The kinds of farm.yaml entry, by their ``transport`` tag: an open registry, so that a
# kind of target registered later (tasks.targets.register) is a farm.yaml entry too.
DEVICE_KINDS: dict[str, type[StrictModel]] = {"local": LocalDevice, "ssh": SshDevice,
                                              "mcu": McuDevice}


def _device_union() -> Any:
    return Annotated[Union[tuple(DEVICE_KINDS.values())],  # noqa: UP007 - built at run time
                     Field(discriminator="transport")]


Device = _device_union()


# The most boards worked on at once that farm.yaml may ask for, and the default's rule:
# a board at work costs the orchestrator a thread that mostly waits on the board and an
# SSH connection (its socket, paramiko's transport thread, SFTP and command channels,
# the files pushed: FDS_PER_BOARD open files at most), so the default follows the
# process's open-file limit and CPUs, capped where a lab's farm ends.
MAX_PARALLEL = 1024
DEFAULT_PARALLEL_CAP = 256
BOARDS_PER_CPU = 64
FDS_PER_BOARD = 16


def _open_file_limit() -> int:
    import resource
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


@dataclass(frozen=True)
class Parallelism:
    """How many boards are worked on at once (``boards``) and where that number came
    from (``rule``: farm.yaml's ``max_parallel``, or the default's rule with this
    machine's figures), printed by the runs that fan out."""

    boards: int
    rule: str

    def line(self) -> str:
        return f"at most {self.boards} boards at once ({self.rule})"


def default_parallelism(cpus: int | None = None, open_files: int | None = None) -> Parallelism:
    """The default of ``max_parallel``: min(DEFAULT_PARALLEL_CAP, BOARDS_PER_CPU x CPUs,
    open-file limit / FDS_PER_BOARD), at least 1; ``cpus`` and ``open_files`` default to
    this process's (``os.cpu_count()``, RLIMIT_NOFILE's soft limit)."""
    cpus = cpus if cpus is not None else (os.cpu_count() or 1)
    open_files = open_files if open_files is not None else _open_file_limit()
    boards = max(1, min(DEFAULT_PARALLEL_CAP, BOARDS_PER_CPU * cpus, open_files // FDS_PER_BOARD))
    return Parallelism(boards, f"max_parallel default: min({DEFAULT_PARALLEL_CAP}, "
                               f"{BOARDS_PER_CPU} x {cpus} CPUs, {open_files} open files / "
                               f"{FDS_PER_BOARD})")


POOL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class Pools(StrictModel):
    """Where steps run in a team (farm.yaml ``pools``): the Prefect work pool whose worker
    trains (the GPU server's) and, per device, the pool of the gateway that reaches it.
    A step with no pool here runs where the lifecycle runs, as without ``pools``. Each
    pool has a deployment ``edgeflow-step/<pool>`` (prefect-pools.yaml)."""

    train: str | None = Field(default=None, description="the trainer's work pool")
    devices: dict[str, str] = Field(default_factory=dict,
                                    description="device -> its gateway's work pool")

    @model_validator(mode="after")
    def _pool_names(self) -> "Pools":
        for pool in [self.train, *self.devices.values()]:
            if pool is not None and not POOL_NAME.match(pool):
                raise ValueError(f"work pool name {pool!r} is not allowed (letters, digits, "
                                 "'_', '.', '-'; starting with a letter or digit)")
        return self


class Farm(StrictModel):
    devices: dict[str, Device] = Field(min_length=1)
    # Which machine does a step changes no result: never part of a cache key.
    pools: Pools | None = Field(default=None, description="work pools per kind of machine")
    max_parallel: Annotated[int, count(1, MAX_PARALLEL)] | None = Field(
        default=None, description="boards benchmarked, released, probed or set up at once; "
                                  "absent: sized for this machine (default_parallelism)")

    @property
    def parallelism(self) -> Parallelism:
        """How many boards at once, and why (farm.yaml's value or the default's rule)."""
        if self.max_parallel is not None:
            return Parallelism(self.max_parallel, f"farm.yaml max_parallel: {self.max_parallel}")
        return default_parallelism()

    @model_validator(mode="after")
    def _pools_name_devices(self) -> "Farm":
        unknown = sorted(set(self.pools.devices) - set(self.devices)) if self.pools else []
        if unknown:
            raise ValueError(f"pools.devices names {', '.join(unknown)}, not in devices "
                             f"({', '.join(self.devices)})")
        return self

    @field_validator("devices", mode="before")
    @classmethod
    def _default_transport(cls, value: Any) -> Any:
        # A device without `transport` is the local kind, as the shipped farm.yaml shows.
        if isinstance(value, dict):
            return {name: {**device, "transport": "local"}
                    if isinstance(device, dict) and "transport" not in device else device
                    for name, device in value.items()}
        return value

    @field_validator("devices")
    @classmethod
    def _safe_names(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if not DEVICE_NAME.match(name):
                raise ValueError(
                    f"device name {name!r} is not allowed (letters, digits, '_', '.', '-'; "
                    "starting with a letter or digit; at most 64 characters)")
        return value

    @field_validator("devices")
    @classmethod
    def _one_folder_each(cls, value: dict[str, Any]) -> dict[str, Any]:
        """Two device entries reaching one folder (same host, port and workdir; a relative
        workdir is in the user's home) would release into one ``app`` and share runs:
        refused, naming both."""
        seen: dict[tuple[Any, ...], str] = {}
        for name, device in value.items():
            if not isinstance(device, SshDevice):
                continue
            folder = posixpath.normpath(device.workdir)
            place = (device.host.lower(), device.port,
                     folder if folder.startswith("/") else f"~{device.user}/{folder}")
            if place in seen:
                raise ValueError(
                    f"{seen[place]!r} and {name!r} are one folder on one board (host "
                    f"{device.host}, port {device.port}, workdir {device.workdir}): their "
                    "releases and runs would overwrite each other; give each its own workdir")
            seen[place] = name
        return value


def _rebuild_farm() -> None:
    Farm.model_fields["devices"].annotation = dict[str, _device_union()]  # type: ignore[misc]
    Farm.model_rebuild(force=True)


# What every kind of entry has, read without knowing the kind: ``transport`` tags the
# entry, ``requirements`` are the device's overrides (select's effective_requirements).
ENTRY_FIELDS = {"transport": "a Literal of its one tag",
                "requirements": "Requirements | None, the device's overrides"}


def register_device_kind(model: type[StrictModel]) -> None:
    """Make ``model`` a kind of farm.yaml entry, tagged by its ``transport`` field (a
    ``Literal`` of one tag); the entries of :class:`Farm` validate against it from now.
    A model without a field of :data:`ENTRY_FIELDS` is refused (ConfigError), before
    anything is registered."""
    for name in ENTRY_FIELDS:
        if name not in model.model_fields:
            raise ConfigError(
                f"farm.yaml entry model {model.__name__} has no `{name}` field: every kind of "
                "entry has " + " and ".join(f"`{field}` ({what})"
                                            for field, what in ENTRY_FIELDS.items()))
    tags = get_args(model.model_fields["transport"].annotation)
    if len(tags) != 1:
        raise ConfigError(f"farm.yaml entry model {model.__name__}: its `transport` field is "
                          "not a Literal of one tag")
    DEVICE_KINDS[tags[0]] = model
    _rebuild_farm()


def unregister_device_kind(tag: str) -> None:
    """Undo :func:`register_device_kind` for ``tag``."""
    DEVICE_KINDS.pop(tag, None)
    _rebuild_farm()


def check_key_file(name: str, device: SshDevice) -> None:
    """Refuse (:class:`ConfigError`) a device whose ``key_file`` is missing, not a file,
    unreadable, or open to group or others (OpenSSH refuses such a key; paramiko would
    use it). Checked before connecting, not at load: a command that never authenticates
    (``farm trust``, the training steps) needs no key, and key files stay off machines
    that only train."""
    path = device.key_file
    where = f"device {name!r}: key_file {path}"
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ConfigError(f"{where} does not exist (create the key, or fix key_file in "
                          "farm.yaml)") from None
    except OSError as error:
        raise ConfigError(f"{where}: cannot read: {error.strerror}") from None
    if stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"{where} is a folder, not a private key file")
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{where} is not a regular file")
    if info.st_mode & 0o077:
        raise ConfigError(f"{where} is open to group or others (mode "
                          f"{stat.S_IMODE(info.st_mode):04o}), which OpenSSH refuses for a "
                          f"private key: chmod 600 {shlex.quote(str(path))}")
    try:
        with open(path, "rb"):
            pass
    except OSError as error:
        raise ConfigError(f"{where}: cannot read: {error.strerror}") from None


def check_key_files(farm: Farm, names: Iterable[str] | None = None) -> None:
    """:func:`check_key_file` for every SSH device of ``names`` (default: the whole farm):
    what a command that connects calls before its first connection."""
    for name in farm.devices if names is None else names:
        device = farm.devices.get(name)
        if isinstance(device, SshDevice):
            check_key_file(name, device)


def effective_requirements(params: RequirementParams, device: Any) -> Requirements:
    """The experiment's requirements with the device's overrides applied on top."""
    merged = {key: getattr(params, key) for key in Requirements.model_fields}
    if device.requirements is not None:
        merged.update(device.requirements.model_dump(exclude_unset=True))
    return Requirements(**merged)
