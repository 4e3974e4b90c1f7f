"""What the firmware tests need (tests/conftest.py's fixtures use it): the third-party
source archives (``EDGEFLOW_THIRD_PARTY``, else ``../shared/third_party`` beside the
repository, as on the CI machines), why a firmware cannot be built and run here, and the
tiny model's tflm release bundle. The TFLM library is cached between runs
(``EDGEFLOW_FIRMWARE_CACHE``, else ``~/.cache/edgeflow/firmware``): a cold build takes
5-7 minutes on two busy cores. Importing this module has no side effects."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from tasks.targets.firmware.settings import SOURCES_ENV

REPO = Path(__file__).resolve().parents[1]
NEWLIB_NANO = Path("/usr/lib/arm-none-eabi/newlib/thumb/v7e-m+fp/hard/libstdc++_nano.a")


def third_party() -> Path:
    named = os.environ.get(SOURCES_ENV)
    return Path(named) if named else REPO.parent / "shared" / "third_party"


def unavailable() -> str | None:
    """Why a firmware cannot be built and run here, or None."""
    for tool, package in (("arm-none-eabi-g++", "gcc-arm-none-eabi"),
                          ("qemu-system-arm", "qemu-system-arm")):
        if shutil.which(tool) is None:
            return f"{tool} not found (Debian's {package}; `make system-deps` installs it)"
    if not NEWLIB_NANO.is_file():
        return ("newlib's libstdc++ for Cortex-M4F not found (Debian's "
                "libstdc++-arm-none-eabi-newlib; `make system-deps` installs it)")
    if not (third_party() / "tflite-micro.tar.gz").is_file():
        return (f"no TFLite Micro source archives in {third_party()} (set {SOURCES_ENV} to "
                f"their folder)")
    return None


def release_tflm_bundle(tiny_layout: Any, root: Path) -> tuple[Path, Path]:
    """(bundle folder, prepared data folder): the tiny model's tflm-int8 variant converted
    for real into a project at ``root`` and released to a microcontroller profile as
    ``edgeflow release`` does."""
    from tasks.config import ConvertParams, McuDevice, QuantizationParams, ReleaseParams
    from tasks.convert import ConvertInputs, convert
    from tasks.core.contracts.variants import read_variant_index
    from tasks.core.layout import Layout
    from tasks.targets.mcu import write_bundle

    layout = Layout(root)
    shutil.copytree(tiny_layout.prepared, layout.prepared)
    convert({"tflm": ["int8"]}, ConvertParams(check_samples=40),
            QuantizationParams(calibration_samples=50), 0.5,
            ConvertInputs(tiny_layout.base_model, None, layout.prepared), layout.variants)
    variant = next(v for v in read_variant_index(layout.variants).variants
                   if v.name == "tflm-int8")
    outcome = write_bundle(layout, "nano", McuDevice(transport="mcu", flash_kb=1024, ram_kb=256),
                           variant, ReleaseParams())
    return layout.device_releases("nano") / str(outcome.release_id), layout.prepared


def bundle_of(model: bytes, folder: Path, input_shape: list[int]) -> Path:
    """A bundle folder of an int8 .tflite ``model`` as the tflm format and the release
    write it (model_data.cc/.h with the host-measured arena and the op resolver calls,
    model.tflite, manifest.json's spec), for a model no experiment converted."""
    import json

    from tasks.models.formats.tflite import tflite_spec
    from tasks.models.formats.tflm import c_sources, measure_arena_bytes, model_ops

    folder.mkdir(parents=True)
    (folder / "model.tflite").write_bytes(model)
    arena = measure_arena_bytes(model)
    header, source = c_sources(model, arena, model_ops(folder / "model.tflite"))
    (folder / "model_data.h").write_text(header, encoding="utf-8")
    (folder / "model_data.cc").write_text(source, encoding="utf-8")
    spec = {**tflite_spec(folder / "model.tflite", input_shape), "arena_bytes": arena}
    (folder / "manifest.json").write_text(json.dumps({"arena_bytes": arena, "spec": spec}),
                                          encoding="utf-8")
    return folder
