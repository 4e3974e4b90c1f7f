"""A release bundle measured on an emulated core: sources unpacked, TFLM built (both
cached), the bundle's firmware built and run over test images.

Input: a tflm bundle folder (``model_data.cc``/``.h``, ``manifest.json`` with the
variant's spec: its input and output tensors, its kind of task), images (N, H, W, C) in
[0, 1] as the prepared splits hold them, their labels (scored as the spec's kind
scores them: accuracy, mAP@0.5), the firmware settings (the archives' digest checked
against the pin, when set). Output: :class:`~tasks.targets.firmware.run.FirmwareRun`.
The images are quantised here exactly as every runtime's inputs are
(``tasks/device/tensors.py``'s ``quantize_input``, with the bundle's input spec).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tasks.core import device_code
from tasks.core.errors import ConfigError, StepError
from tasks.core.files import read_json
from tasks.targets.firmware.build import build_firmware, read_bundle
from tasks.targets.firmware.library import (Core, Library, compiler_version, core_named, library,
                                            require_newlib, require_toolchain)
from tasks.targets.firmware.run import FirmwareRun, require_qemu, run_firmware
from tasks.targets.firmware.settings import FirmwarePaths, FirmwareSettings, resolve
from tasks.targets.firmware.sources import source_tree, sources_key


def bundle_spec(bundle: Path) -> dict[str, Any]:
    """The variant's spec the bundle's ``manifest.json`` holds (its input at least)."""
    spec = read_json(bundle / "manifest.json", ["spec"])["spec"]
    if not isinstance(spec, dict) or "input" not in spec:
        raise StepError(f"firmware: {bundle / 'manifest.json'} has no input spec (spec.input)")
    return spec


def bundle_inputs(bundle: Path, images: np.ndarray) -> np.ndarray:
    """``images`` as the bundle's model takes them: (N, input bytes) int8."""
    spec = bundle_spec(bundle)
    tensors = device_code.load("tensors")
    return np.stack([tensors.quantize_input(image, spec["input"]).reshape(-1)
                     for image in np.asarray(images, dtype=np.float32)])


@dataclass(frozen=True)
class Toolchain:
    """A core's TFLM library, ready to link, and what it was built from: the source
    archives' digest (:func:`~tasks.targets.firmware.sources.sources_key`) and the
    compiler's version line."""

    core: Core
    library: Library
    sources_sha256: str
    compiler: str


def checked_sources(settings: FirmwareSettings | None) -> tuple[FirmwarePaths, str]:
    """The resolved folders and the archives' digest; a :class:`ConfigError` (one line)
    when the folder or an archive is missing, or the archives are not those
    ``sources_sha256`` pins."""
    paths = resolve(settings)
    key = sources_key(paths.sources)
    pinned = settings.sources_sha256 if settings is not None else None
    if pinned is not None and key != pinned:
        raise ConfigError(f"firmware sources: the archives in {paths.sources} have digest "
                          f"{key}, not the {pinned} benchmark.firmware.sources_sha256 pins "
                          f"(other TFLite Micro sources: pin theirs, or point sources at the "
                          f"pinned ones)")
    return paths, key


def missing_prerequisites(settings: FirmwareSettings | None,
                          core: str = "cortex-m4") -> str | None:
    """Why no firmware for ``core`` can be built and run here (the toolchain, newlib for
    the core, the emulator, the sources or their pin), in one line; None when all are
    present. Checks only what is there: nothing is unpacked or built."""
    try:
        require_toolchain()
        require_newlib(core_named(core))
        require_qemu()
        checked_sources(settings)
    except (ConfigError, StepError) as error:
        return str(error)
    return None


def toolchain(settings: FirmwareSettings | None, core: str = "cortex-m4",
              jobs: int = 2) -> Toolchain:
    """``core``'s TFLM library from the pinned sources: unpacked and built the first
    time (minutes), found in the cache after."""
    target = core_named(core)
    paths, key = checked_sources(settings)
    lib = library(source_tree(paths.sources, paths.cache), paths.cache, target, jobs)
    return Toolchain(target, lib, key, compiler_version())


def run_bundle(bundle: Path, images: np.ndarray, labels: np.ndarray | None, work: Path,
               built: Toolchain, timeout: float = 300.0) -> FirmwareRun:
    """Build ``bundle``'s firmware with ``built`` in ``work/build`` and run it over
    ``images`` in ``work/run``."""
    read_bundle(bundle)
    inputs = bundle_inputs(bundle, images)
    firmware = build_firmware(bundle, built.library, built.core, work / "build")
    # The spec decodes the outputs as every host runtime's are (its kind of task).
    return run_firmware(firmware, built.core.machine, inputs, work / "run", labels, timeout,
                        spec=bundle_spec(bundle))


def measure_bundle(bundle: Path, images: np.ndarray, labels: np.ndarray | None, work: Path,
                   settings: FirmwareSettings | None = None, core: str = "cortex-m4",
                   timeout: float = 300.0, jobs: int = 2) -> FirmwareRun:
    """Build ``bundle``'s firmware for ``core`` in ``work/build`` and run it over
    ``images`` in ``work/run`` (:mod:`module docs <tasks.targets.firmware.measure>`)."""
    core_named(core)
    read_bundle(bundle)  # a bundle that cannot make a firmware fails before any build
    bundle_inputs(bundle, images)
    return run_bundle(bundle, images, labels, work, toolchain(settings, core, jobs), timeout)
