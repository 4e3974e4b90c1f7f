"""A release bundle measured on an emulated core: sources unpacked, TFLM built (both
cached), the bundle's firmware built and run over test images.

Input: a tflm bundle folder (``model_data.cc``/``.h``, ``manifest.json`` with the
variant's spec), images (N, H, W, C) in [0, 1] as the prepared splits hold them, their
labels, the firmware settings. Output: :class:`~tasks.targets.firmware.run.FirmwareRun`.
The images are quantised here exactly as every runtime's inputs are
(``tasks/device/tensors.py``'s ``quantize_input``, with the bundle's input spec).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tasks.core import device_code
from tasks.core.errors import StepError
from tasks.core.files import read_json
from tasks.targets.firmware.build import build_firmware, read_bundle
from tasks.targets.firmware.library import core_named, library
from tasks.targets.firmware.run import FirmwareRun, run_firmware
from tasks.targets.firmware.settings import FirmwareSettings, resolve
from tasks.targets.firmware.sources import source_tree


def bundle_inputs(bundle: Path, images: np.ndarray) -> np.ndarray:
    """``images`` as the bundle's model takes them: (N, input bytes) int8."""
    spec = read_json(bundle / "manifest.json", ["spec"])["spec"]
    if not isinstance(spec, dict) or "input" not in spec:
        raise StepError(f"firmware: {bundle / 'manifest.json'} has no input spec (spec.input)")
    tensors = device_code.load("tensors")
    return np.stack([tensors.quantize_input(image, spec["input"]).reshape(-1)
                     for image in np.asarray(images, dtype=np.float32)])


def measure_bundle(bundle: Path, images: np.ndarray, labels: np.ndarray | None, work: Path,
                   settings: FirmwareSettings | None = None, core: str = "cortex-m4",
                   timeout: float = 300.0, jobs: int = 2) -> FirmwareRun:
    """Build ``bundle``'s firmware for ``core`` in ``work/build`` and run it over
    ``images`` in ``work/run`` (:mod:`module docs <tasks.targets.firmware.measure>`)."""
    target = core_named(core)
    read_bundle(bundle)  # a bundle that cannot make a firmware fails before any build
    inputs = bundle_inputs(bundle, images)
    paths = resolve(settings)
    lib = library(source_tree(paths.sources, paths.cache), paths.cache, target, jobs)
    firmware = build_firmware(bundle, lib, target, work / "build")
    return run_firmware(firmware, target.machine, inputs, work / "run", labels, timeout)
