"""The microcontroller kind (``transport: mcu``): a profile in farm.yaml (flash, RAM,
margins), no shell to run the harness.

Benchmark: with a ``target`` core that edgeflow emulates, each ``tflm`` variant is built
into a firmware and run on that core in qemu (:mod:`tasks.targets.mcu_emulated`:
accuracy, arena, firmware size and an estimated latency from the target); without one,
its ``tflm`` variants are checked to fit flash and RAM with margins (:func:`check_fit`),
their accuracy that of the real TFLite Micro interpreter run on the host by convert.
Other runtimes are skipped. Probe: the profile, from farm.yaml.
Release: a firmware-ready bundle written here, never flashed (:func:`write_bundle`);
with a ``target`` core, built into a firmware and checked on that core before it counts
as released (:mod:`tasks.targets.mcu_release`: the firmware image kept in the bundle);
there is no release state on the device but edgeflow's record, and no rollback (the
previous bundle is flashed by hand).

``releases/<device>/<release-id>/`` holds the TFLite Micro C sources of the variant
(``model_data.cc``/``model_data.h``: the model array, ``kTensorArenaSize`` and the op
resolver calls), ``labels.h`` (the class names in output order and their count), the
model itself (``model.tflite``) and ``manifest.json`` (variant, sha256, arena bytes,
input shape and quantisation, classes, the flash and RAM budget it was checked
against). The README gives the commands that build and flash it for each board. The
newest ``release.keep`` bundles stay.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tasks.config import McuDevice, ReleaseParams, SshDevice
from tasks.core.contracts.prepared import read_meta
from tasks.core.contracts.release import (RELEASE_ID_PATTERN, BoardState, ReleaseDecision,
                                          ReleaseOutcome, ReleaseStatus, new_release_id,
                                          read_record)
from tasks.core.contracts.variants import Variant, read_variant_index
from tasks.core.errors import ConfigError
from tasks.core.files import write_json
from tasks.core.layout import Layout
from tasks.farm.probe import DeviceProbe
from tasks.targets.base import BenchmarkJob, DeviceRun, ReleaseJob, register
from tasks.targets.mcu_emulated import benchmark_on_target
from tasks.targets.mcu_fit import host_outcome, no_emulator, write_outcomes
from tasks.targets.mcu_release import check_bundle

MCU_FORMAT = "tflm"


class McuTarget:
    """A microcontroller profile (:mod:`tasks.targets.base` has the contract)."""

    kind = "mcu"

    def __init__(self, name: str, entry: McuDevice) -> None:
        self.name, self.entry = name, entry

    def probe(self, timeout: float = 60.0) -> DeviceProbe:
        core = self.entry.core
        emulated = ({"core": core.name, "emulator": f"qemu-system-arm -M {core.board}",
                     "clock_mhz": self.entry.clock_mhz} if core else {})
        return DeviceProbe(self.name, False, {"class": "mcu", "flash_kb": self.entry.flash_kb,
                                              "ram_kb": self.entry.ram_kb, **emulated,
                                              **self.entry.tags},
                           error="microcontroller profile: no shell to probe")

    def managed_setup(self) -> SshDevice | None:
        return None

    def benchmark(self, job: BenchmarkJob) -> DeviceRun:
        if self.entry.target is not None:
            return benchmark_on_target(self.name, self.entry, job)
        return check_fit(self.name, self.entry, job.variants_dir, job.out_dir)

    def release(self, job: ReleaseJob) -> ReleaseDecision:
        """The bundle, registered as a board's release is: a version, and the device's
        alias on it. With a ``target`` core, only once its firmware passed the check on
        that core (:mod:`tasks.targets.mcu_release`): a refused or failed check removes
        the bundle, and the device keeps its current release."""
        checked = self.entry.target is not None
        outcome = write_bundle(job.layout, self.name, self.entry, job.variant, job.params,
                               prune=not checked)
        if outcome.status != ReleaseStatus.RELEASED or outcome.release_id is None:
            return ReleaseDecision(outcome)
        state = bundle_state(job.variant, outcome.release_id)
        if checked:
            folder = job.layout.device_releases(self.name) / outcome.release_id
            found = check_bundle(folder, self.name, self.entry, job.variant.name,
                                 outcome.release_id, job.firmware, job.layout.prepared,
                                 job.params.check_images, job.accuracy_floor(),
                                 job.params.check_timeout_seconds)
            if found.refusal is not None:
                shutil.rmtree(folder, ignore_errors=True)
                return ReleaseDecision(found.refusal)
            prune_bundles(job.layout, self.name, job.params.keep)
            outcome = replace(outcome, message=outcome.message + found.clause)
            state = {**state, "firmware": found.state}
        mlflow = job.register()
        outcome = replace(outcome, message=outcome.message + job.alias_moved(mlflow))
        return ReleaseDecision(
            replace(outcome, mlflow_version=mlflow and str(mlflow["version"])),
            {**state, "mlflow": mlflow}, read_record(job.layout, self.name).get("current"))

    def rollback(self, layout: Layout, on_board: Callable[[Any], ReleaseDecision]
                 ) -> ReleaseDecision:
        raise ConfigError(f"{self.name} is a microcontroller: flash its previous bundle from "
                          f"{layout.device_releases(self.name)} (see the README)")

    def release_state(self, on_board: Callable[[Any], BoardState]) -> BoardState | None:
        return None


def check_fit(device_name: str, device: McuDevice, variants_dir: Path,
              out_dir: Path) -> DeviceRun:
    """A microcontroller without an emulated core: its ``tflm`` variants are checked
    against flash and RAM budgets (capacity minus margin); accuracy is the host TFLite
    Micro interpreter's, measured by convert on the whole test split; each fit says why
    there are no target figures (:func:`~tasks.targets.mcu_fit.no_emulator`). Other
    runtimes are skipped."""
    why = no_emulator(device_name, device)
    return DeviceRun(device_name, write_outcomes(
        device_name, read_variant_index(variants_dir).variants, out_dir,
        {"class": "mcu", **device.tags},
        lambda variant: host_outcome(variant, device_name, device, not_emulated=why)), {})


def labels_header(classes: list[str]) -> str:
    """``labels.h``: the class names as a C array, in the model's output order."""
    names = ",\n".join("    " + _c_string(name) for name in classes)
    return ("// Class names in the model's output order (written by edgeflow release).\n"
            "#pragma once\n\n"
            f"constexpr int kLabelCount = {len(classes)};\n"
            f"constexpr const char* kLabels[kLabelCount] = {{\n{names}\n}};\n")


def _c_string(text: str) -> str:
    """``text`` as a C/C++ narrow string literal holding exactly its UTF-8 bytes.

    Printable ASCII stays readable; every other byte (UTF-8 of ``Über``, control
    characters) is a three-digit octal escape. Not ``\\x``: a hex escape runs on
    through every following hex digit (``"\\xdcber"`` is one escape, out of range) and
    Python's ``\\u00dc`` is a universal character name whose narrow encoding the
    compiler picks. Octal escapes stop after three digits, so they never swallow the
    next character. ``?`` is escaped so that no ``??x`` trigraph can form (C, C++11).
    """
    return '"' + "".join(_c_byte(byte) for byte in text.encode("utf-8")) + '"'


def _c_byte(byte: int) -> str:
    char = chr(byte)
    if char in '"\\?':
        return "\\" + char
    if 0x20 <= byte < 0x7f:
        return char
    return f"\\{byte:03o}"


def write_bundle(layout: Layout, device: str, entry: McuDevice, variant: Variant,
                 params: ReleaseParams, prune: bool = True) -> ReleaseOutcome:
    """Write the bundle of ``variant`` for ``device`` (a ``tflm`` variant only); then,
    when ``prune``, remove the bundles past ``params.keep`` (:func:`prune_bundles`)."""
    if variant.format != MCU_FORMAT:
        return ReleaseOutcome(device, ReleaseStatus.REFUSED, variant.name, None,
                              f"{device} is a microcontroller: only {MCU_FORMAT} variants run "
                              f"there, not {variant.name}")
    record = read_record(layout, device)
    current = record.get("current") or {}
    if current.get("sha256") == variant.sha256 and current.get("variant") == variant.name:
        return ReleaseOutcome(device, ReleaseStatus.UNCHANGED, variant.name, current.get("release"),
                              f"{device}'s bundle is already {variant.name}")
    release_id = new_release_id(variant.name, datetime.now(timezone.utc))
    folder = layout.device_releases(device) / release_id
    folder.mkdir(parents=True)
    # The model and, beside it, the C sources convert wrote (the variant's extras).
    for path in [*(file.path for file in variant.files or []), *(variant.extras or [])]:
        shutil.copyfile(layout.variants / path, folder / Path(path).name)
    meta = read_meta(layout.prepared)
    (folder / "labels.h").write_text(labels_header(meta.classes), encoding="utf-8")
    write_json(folder / "manifest.json", {
        "release_id": release_id, "device": device, "variant": variant.name,
        "sha256": variant.sha256, "files": sorted(path.name for path in folder.iterdir()),
        "arena_bytes": (variant.spec or {}).get("arena_bytes"), "spec": variant.spec,
        "classes": meta.classes, "input_shape": meta.input_shape,
        "budget": {"flash_kb": entry.flash_kb, "ram_kb": entry.ram_kb,
                   "flash_margin": entry.flash_margin, "ram_margin": entry.ram_margin},
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    if prune:
        prune_bundles(layout, device, params.keep)
    return ReleaseOutcome(device, ReleaseStatus.RELEASED, variant.name, release_id,
                          f"firmware bundle for {device}: {folder}")


def prune_bundles(layout: Layout, device: str, keep: int) -> None:
    """Remove ``device``'s bundles but the newest ``keep`` and the one its record names
    as current (only folders named like a release count)."""
    current = (read_record(layout, device).get("current") or {}).get("release")
    kept = sorted(path.name for path in layout.device_releases(device).iterdir()
                  if path.is_dir() and RELEASE_ID_PATTERN.match(path.name))
    for old in kept[:-keep]:
        if old != current:
            shutil.rmtree(layout.device_releases(device) / old, ignore_errors=True)


def bundle_state(variant: Variant, release_id: str) -> dict[str, str | None]:
    """What the record keeps of a bundle as ``current``."""
    return {"release": release_id, "variant": variant.name, "sha256": variant.sha256}


register("mcu", McuTarget)
