"""The release check of a microcontroller whose core edgeflow emulates (farm.yaml
``target``): the bundle just written is built into a firmware for that core and run on it
before the release counts as made.

Input: the bundle folder (:func:`tasks.targets.mcu.write_bundle`: ``model_data.cc``/``.h``,
``manifest.json`` with the variant's spec), the device's profile, the release's check
images, the firmware settings (params.yaml ``benchmark.firmware``; the TFLM library is
cached, :mod:`tasks.targets.firmware.library`) and the release's accuracy floor.

The check images are those of every other device's release check: the first
``release.check_images`` test images, judged by the board health check's rule (the
accuracy's one-sided 95% upper bound, the kind's interval, must reach the floor;
``tasks/device/predict.py``). A release is one decision made the same way on every kind
of device; the benchmark already measured the whole test split on this core, and what a
release checks is that *this* bundle's firmware still computes what was measured.

It passes when, on the target: that accuracy reaches the floor, the arena the model
needs fits the bundle's declared ``kTensorArenaSize`` and the RAM budget, and the
firmware's text + data fit the flash budget (:func:`firmware_reasons`). Then the firmware
image (``firmware.elf``; ``firmware.bin`` too where ``arm-none-eabi-objcopy`` is) is kept
in the bundle, listed with its sha256 in ``manifest.json`` (``firmware``) and, with the
figures, in the release's state. A check that fails refuses the release with a one-line
reason per figure naming its limit; a firmware that does not build or run fails it; either
way the bundle is removed and the device's record keeps its current release.

Where the toolchain, the emulator or the pinned sources are missing, the release is
made as the source bundle a device without ``target`` gets, and says that its firmware
was not built and why (the state's ``firmware.built`` is false): the benchmark of such a
device skips its rows then, so policy recommends nothing there and only a release by
hand reaches this point, and the bundle is what a person flashes with the board's own
tools either way. What is unverified is labelled so, never shown as verified.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tasks.config import McuDevice
from tasks.config.cores import estimated_latency_ms
from tasks.config.firmware import FirmwareSettings
from tasks.core import device_code
from tasks.core.contracts.prepared import load_split
from tasks.core.contracts.release import ReleaseOutcome, ReleaseStatus
from tasks.core.errors import ConfigError, StepError
from tasks.core.files import read_json, sha256_file, write_json
from tasks.targets.firmware.library import TOOLCHAIN_PREFIX
from tasks.targets.firmware.measure import missing_prerequisites, run_bundle, toolchain
from tasks.targets.firmware.run import FirmwareRun
from tasks.targets.mcu_emulated import BUILD_JOBS
from tasks.targets.mcu_fit import KB

ELF_NAME, BIN_NAME = "firmware.elf", "firmware.bin"


@dataclass(frozen=True)
class FirmwareLimits:
    """What a release's firmware must meet: the release's accuracy floor (None: none),
    the RAM and flash budgets (capacity less margin, bytes)."""

    accuracy_floor: float | None
    ram_budget_bytes: int
    flash_budget_bytes: int


def limits_of(device: McuDevice, accuracy_floor: float | None) -> FirmwareLimits:
    """The device's budgets as the benchmark's fit check computes them."""
    return FirmwareLimits(accuracy_floor,
                          ram_budget_bytes=int(device.ram_kb * KB * (1 - device.ram_margin)),
                          flash_budget_bytes=int(device.flash_kb * KB * (1 - device.flash_margin)))


@dataclass(frozen=True)
class FirmwareFigures:
    """A release's firmware on the emulated core: accuracy on the check images (and its
    one-sided 95% upper bound), the arena the model needs there and the one the bundle
    declares, the firmware's text + data, instructions per inference and the latency
    *estimated* from them at the device's clock and cycles per instruction."""

    core: str
    board: str
    images: int
    accuracy: float
    accuracy_upper: float
    arena_bytes: int
    arena_used_bytes: int
    declared_arena_bytes: int
    flash_bytes: int
    instructions_per_inference: int
    cpi: float
    clock_mhz: float
    estimated_latency_ms: float


def figures_of(run: FirmwareRun, labels: np.ndarray, device: McuDevice,
               spec: dict[str, Any]) -> FirmwareFigures:
    """A firmware run's figures, the accuracy judged as the board health check judges
    it (the variant's kind of task: its score and interval)."""
    assert device.clock_mhz is not None and device.cycles_per_instruction is not None
    kind = device_code.task_kinds().of_spec(spec)
    per_sample = kind.per_sample(list(run.predictions), list(labels))
    upper = kind.interval(per_sample, device_code.predictor().CHECK_Z)[1]
    instructions = run.instructions_per_inference
    return FirmwareFigures(
        core=run.core, board=run.machine, images=run.images,
        accuracy=float(kind.metric(per_sample)), accuracy_upper=float(upper),
        arena_bytes=run.arena_needed_bytes, arena_used_bytes=run.arena_used_bytes,
        declared_arena_bytes=run.declared_arena_bytes, flash_bytes=run.flash_bytes,
        instructions_per_inference=instructions, cpi=device.cycles_per_instruction,
        clock_mhz=device.clock_mhz,
        estimated_latency_ms=estimated_latency_ms(instructions, device.cycles_per_instruction,
                                                  device.clock_mhz))


def firmware_reasons(figures: FirmwareFigures, limits: FirmwareLimits) -> list[str]:
    """Why the firmware may not be released, one clause per figure over its limit, each
    naming the figure and the limit; empty when it may. Limits are inclusive: a figure
    equal to its limit passes."""
    on = f"on the emulated {figures.core}"
    reasons = []
    floor = limits.accuracy_floor
    if floor is not None and figures.accuracy_upper < floor:
        reasons.append(f"accuracy {figures.accuracy:.3f} {on} on {figures.images} check images "
                       f"(95% upper bound {figures.accuracy_upper:.3f}) is below the floor "
                       f"{floor:.3f}")
    if figures.arena_bytes > figures.declared_arena_bytes:
        reasons.append(f"tensor arena {figures.arena_bytes:,} bytes needed {on} > "
                       f"kTensorArenaSize {figures.declared_arena_bytes:,} bytes declared in "
                       f"model_data.h")
    if figures.arena_bytes > limits.ram_budget_bytes:
        reasons.append(f"tensor arena {figures.arena_bytes:,} bytes {on} > RAM budget "
                       f"{limits.ram_budget_bytes:,} bytes")
    if figures.flash_bytes > limits.flash_budget_bytes:
        reasons.append(f"firmware {figures.flash_bytes:,} bytes (text + data {on}) > flash "
                       f"budget {limits.flash_budget_bytes:,} bytes")
    return reasons


def figures_text(figures: FirmwareFigures, limits: FirmwareLimits) -> str:
    """The figures in one clause, each against its limit, the latency marked estimated."""
    floor = "no floor" if limits.accuracy_floor is None else f"floor {limits.accuracy_floor:.3f}"
    return (f"accuracy {figures.accuracy:.3f} on {figures.images} check images ({floor}), "
            f"arena {figures.arena_bytes:,} of {figures.declared_arena_bytes:,} bytes declared "
            f"and {limits.ram_budget_bytes:,} budget, firmware {figures.flash_bytes:,} of "
            f"{limits.flash_budget_bytes:,} bytes flash budget, "
            f"{figures.instructions_per_inference:,} instructions per inference, "
            f"~{figures.estimated_latency_ms:.3f} ms estimated at {figures.clock_mhz:g} MHz")


@dataclass(frozen=True)
class FirmwareVerdict:
    """What the check of a bundle's firmware decided: ``refusal`` (the release's outcome,
    refused or failed) or None; ``clause``, added to a release's message; ``state``, what
    the release's state records under ``firmware``."""

    refusal: ReleaseOutcome | None
    clause: str
    state: dict[str, Any]


def verdict(device_name: str, variant: str, release_id: str, figures: FirmwareFigures,
            limits: FirmwareLimits) -> FirmwareVerdict:
    """The decision on a firmware's figures (:func:`firmware_reasons`): refused with every
    reason in one line, else released with the figures."""
    state = {"built": True, "verified": True, **asdict(figures),
             "accuracy_floor": limits.accuracy_floor,
             "ram_budget_bytes": limits.ram_budget_bytes,
             "flash_budget_bytes": limits.flash_budget_bytes}
    reasons = firmware_reasons(figures, limits)
    if reasons:
        return FirmwareVerdict(ReleaseOutcome(
            device_name, ReleaseStatus.REFUSED, variant, release_id,
            f"{device_name} keeps its release: the firmware check failed: "
            f"{'; '.join(reasons)}"), "", {**state, "verified": False})
    return FirmwareVerdict(None, f"; firmware checked on the emulated {figures.core}: "
                                 f"{figures_text(figures, limits)}", state)


def objcopy_tool() -> str | None:
    """``arm-none-eabi-objcopy``'s path, None where it is not installed."""
    return shutil.which(TOOLCHAIN_PREFIX + "objcopy")


def keep_image(elf: Path, folder: Path) -> dict[str, Any]:
    """The firmware ELF copied into the bundle ``folder``, with a raw binary of it where
    ``arm-none-eabi-objcopy`` is; each file's name, sha256 and bytes."""
    shutil.copyfile(elf, folder / ELF_NAME)
    images = {"elf": _file(folder / ELF_NAME), "bin": None}
    objcopy = objcopy_tool()
    if objcopy is not None:
        subprocess.run([objcopy, "-O", "binary", str(folder / ELF_NAME), str(folder / BIN_NAME)],
                       check=True, capture_output=True)
        images["bin"] = _file(folder / BIN_NAME)
    return images


def _file(path: Path) -> dict[str, Any]:
    return {"path": path.name, "sha256": sha256_file(path), "bytes": path.stat().st_size}


def add_to_manifest(folder: Path, firmware: dict[str, Any]) -> None:
    """``manifest.json`` of the bundle with its ``firmware`` and every file it holds."""
    manifest = read_json(folder / "manifest.json")
    manifest["firmware"] = firmware
    manifest["files"] = sorted(path.name for path in folder.iterdir()
                               if path.name != "manifest.json")
    write_json(folder / "manifest.json", manifest)


def check_bundle(folder: Path, device_name: str, device: McuDevice, variant: str,
                 release_id: str, settings: FirmwareSettings | None, prepared: Path,
                 check_images: int, accuracy_floor: float | None,
                 timeout: float) -> FirmwareVerdict:
    """The release check of the bundle in ``folder`` (:mod:`module docs
    <tasks.targets.mcu_release>`). On a pass the firmware image is in the bundle and its
    manifest; on a refusal or failure nothing is removed here (the caller removes the
    bundle)."""
    core = str(device.target)
    missing = missing_prerequisites(settings, core)
    if missing is not None:
        return FirmwareVerdict(None, f"; firmware not built, so not verified on the emulated "
                                     f"{core}: {missing}",
                               {"built": False, "verified": False, "reason": missing})
    images, labels = load_split(prepared, "test")
    images, labels = images[:check_images], labels[:check_images]
    spec = read_json(folder / "manifest.json", ["spec"])["spec"] or {}
    limits = limits_of(device, accuracy_floor)
    try:
        built = toolchain(settings, core, BUILD_JOBS)
        with tempfile.TemporaryDirectory(prefix="edgeflow-release-firmware-") as scratch:
            run = run_bundle(folder, images, labels, Path(scratch), built, timeout=timeout)
            decided = verdict(device_name, variant, release_id,
                              figures_of(run, labels, device, spec), limits)
            if decided.refusal is not None:
                return decided
            files = keep_image(Path(scratch) / "build" / "firmware.elf", folder)
    except (ConfigError, StepError, OSError, subprocess.CalledProcessError) as error:
        return FirmwareVerdict(ReleaseOutcome(
            device_name, ReleaseStatus.FAILED, variant, release_id,
            f"{device_name} keeps its release: its firmware for the emulated {core} was not "
            f"built or run: {' '.join(str(error).split())}"), "",
            {"built": False, "verified": False, "reason": str(error)})
    state = {**decided.state, **files, "sources_sha256": built.sources_sha256,
             "compiler": built.compiler,
             "what": "TFLite Micro + CMSIS-NN, the bundle's model_data.cc, edgeflow's check "
                     "harness (test images in, scores out through semihosting); run on qemu "
                     f"-M {run.machine}"}
    add_to_manifest(folder, state)
    return FirmwareVerdict(None, decided.clause, state)
