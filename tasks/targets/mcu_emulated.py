"""The benchmark of a microcontroller whose core edgeflow emulates (farm.yaml ``target``,
:data:`tasks.config.cores.CORES`).

Each produced ``tflm`` variant's own C sources (convert's ``model_data.cc``/``.h``, as a
release bundle holds them) are built into a TFLite Micro + CMSIS-NN firmware for the core
and run in ``qemu-system-arm`` over the test split (``benchmark.accuracy_samples``
images; 0: all) (:mod:`tasks.targets.firmware`). Its result is the host's fit check
(:mod:`tasks.targets.mcu_fit`) with the target's figures added
(:class:`~tasks.core.contracts.results.McuOnTarget`): accuracy (the kind's score: a
detector's mAP@0.5 from the firmware's output tensors decoded on the host, with its
bootstrap interval over images), the arena the target needs, the firmware's text +
data, instructions per inference and the latency *estimated* from them at the device's
clock and cycles per instruction. select checks the budgets against the target's
figures.

Where the toolchain, the emulator or the pinned sources are missing, every ``tflm``
variant is ``skipped`` with that reason and the host's fit check in words (its
:class:`~tasks.core.contracts.results.McuFit` kept in the record); a firmware that does
not build or run fails its variant, and a TFLM library that does not build fails every
variant, each with the reason. Built files stay in a scratch folder: nothing is a result
but the records (the library is cached, :mod:`tasks.targets.firmware.library`).
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tasks.config import BenchmarkParams, McuDevice
from tasks.config.cores import estimated_latency_ms
from tasks.core.contracts.prepared import load_split
from tasks.core.contracts.results import McuFit, McuOnTarget
from tasks.core.contracts.variants import Variant, read_variant_index
from tasks.core.errors import ConfigError, StepError
from tasks.core.files import write_json
from tasks.core.interrupt import raise_if_stopped
from tasks.targets.base import BenchmarkJob, DeviceRun
from tasks.targets.firmware.measure import (Toolchain, missing_prerequisites, run_bundle,
                                            toolchain)
from tasks.targets.firmware.run import FirmwareRun
from tasks.targets.mcu_fit import host_fit_text, host_outcome, write_outcomes

# Parallel compiles of a cold TFLM build (minutes): a benchmark shares the machine.
BUILD_JOBS = 2


def variant_bundle(variant: Variant, variants_dir: Path, folder: Path) -> Path:
    """``folder`` holding what a firmware build reads of a release bundle, from the
    variant itself: its C sources (convert's extras) and its spec (``manifest.json``)."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in variant.extras or []:
        shutil.copyfile(variants_dir / path, folder / Path(path).name)
    write_json(folder / "manifest.json", {"variant": variant.name, "spec": variant.spec})
    return folder


def on_target(run: FirmwareRun, device: McuDevice, built: Toolchain) -> McuOnTarget:
    """A firmware run's figures as a result keeps them, with the estimated latency."""
    assert device.clock_mhz is not None and device.cycles_per_instruction is not None
    instructions = run.instructions_per_inference
    cpi = device.cycles_per_instruction
    return McuOnTarget(
        core=run.core, board=run.machine, accuracy=float(run.accuracy or 0.0),
        accuracy_samples=run.images, arena_bytes=run.arena_needed_bytes,
        arena_used_bytes=run.arena_used_bytes, firmware_text_bytes=run.text_bytes,
        firmware_data_bytes=run.data_bytes, instructions_per_inference=instructions,
        instruction_resolution=run.instructions_per_tick, cpi=cpi,
        clock_mhz=device.clock_mhz,
        estimated_latency_ms=estimated_latency_ms(instructions, cpi, device.clock_mhz),
        sources_sha256=built.sources_sha256, compiler=built.compiler,
        # The kind's own interval over these images where it is not the binomial one.
        **({"accuracy_interval": run.accuracy_interval}
           if run.accuracy_interval is not None else {}))


@dataclass
class _Emulation:
    """One device's emulation so far: the test images, the toolchain once built, and why
    none can be (missing: skip; failed to build: fail)."""

    device: McuDevice
    params: BenchmarkParams
    variants_dir: Path
    scratch: Path
    images: np.ndarray
    labels: np.ndarray
    missing: str | None = None
    build_error: str | None = None
    built: Toolchain | None = None

    def toolchain(self) -> Toolchain | None:
        if self.built is None and self.build_error is None:
            try:
                self.built = toolchain(self.params.firmware, str(self.device.target), BUILD_JOBS)
            except (ConfigError, StepError) as error:
                self.build_error = str(error)
        return self.built

    def outcome(self, variant: Variant, host: McuFit) -> dict[str, Any]:
        """The variant's outcome: the host's fit check with the target's figures, or
        skipped (nothing to build with) or failed (the build or the run failed)."""
        core = self.device.target
        if self.missing is not None:
            return {"status": "skipped",
                    "mcu": host.model_copy(update={"not_emulated": self.missing}),
                    "error": f"not run on the emulated {core}: {self.missing}; host fit "
                             f"check: {host_fit_text(host)}"}
        built = self.toolchain()
        if built is None:
            return {"status": "failed", "error": f"TFLite Micro for {core}: {self.build_error}"}
        try:
            bundle = variant_bundle(variant, self.variants_dir, self.scratch / variant.name)
            run = run_bundle(bundle, self.images, self.labels,
                             self.scratch / variant.name / "work", built,
                             timeout=self.params.timeout_seconds)
        except (ConfigError, StepError, OSError) as error:
            return {"status": "failed", "error": f"firmware on the emulated {core}: {error}"}
        return {"status": "ok", "error": None,
                "mcu": host.model_copy(update={"target": on_target(run, self.device, built)})}


def benchmark_on_target(device_name: str, device: McuDevice, job: BenchmarkJob) -> DeviceRun:
    """Every variant's result on ``device`` (:mod:`module docs <tasks.targets.mcu_emulated>`)."""
    images, labels = load_split(job.prepared, "test")
    if job.params.accuracy_samples:
        images, labels = images[:job.params.accuracy_samples], labels[:job.params.accuracy_samples]
    core = device.core
    assert core is not None
    facts = {"class": "mcu", "core": core.name, "board": core.board,
             "clock_mhz": device.clock_mhz, **device.tags}
    with tempfile.TemporaryDirectory(prefix="edgeflow-firmware-") as scratch:
        missing = missing_prerequisites(job.params.firmware, core.name)
        emulation = _Emulation(device, job.params, job.variants_dir, Path(scratch), images,
                               labels, missing=missing)

        def outcome_of(variant: Variant) -> dict[str, Any]:
            raise_if_stopped()
            outcome = host_outcome(variant, device_name, device)
            return emulation.outcome(variant, outcome["mcu"]) if outcome["status"] == "ok" \
                else outcome

        paths = write_outcomes(device_name, read_variant_index(job.variants_dir).variants,
                               job.out_dir, facts, outcome_of)
    return DeviceRun(device_name, paths, {"class": "mcu", "core": core.name})
