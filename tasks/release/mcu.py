"""A microcontroller's release: a firmware-ready bundle written here, never flashed.

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
from datetime import datetime, timezone
from pathlib import Path

from tasks.config import McuDevice, ReleaseParams
from tasks.core.contracts.prepared import read_meta
from tasks.core.contracts.variants import Variant
from tasks.core.files import write_json
from tasks.core.layout import Layout
from tasks.release.bundle import RELEASE_ID_PATTERN, new_release_id
from tasks.release.outcome import REFUSED, RELEASED, UNCHANGED, ReleaseOutcome, read_record

MCU_FORMAT = "tflm"


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


def write_mcu_bundle(layout: Layout, device: str, entry: McuDevice, variant: Variant,
                     params: ReleaseParams) -> ReleaseOutcome:
    """Write the bundle of ``variant`` for ``device`` (a ``tflm`` variant only)."""
    if variant.format != MCU_FORMAT:
        return ReleaseOutcome(device, REFUSED, variant.name, None,
                              f"{device} is a microcontroller: only {MCU_FORMAT} variants run "
                              f"there, not {variant.name}")
    record = read_record(layout, device)
    current = record.get("current") or {}
    if current.get("sha256") == variant.sha256 and current.get("variant") == variant.name:
        return ReleaseOutcome(device, UNCHANGED, variant.name, current.get("release"),
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
    kept = sorted(path.name for path in layout.device_releases(device).iterdir()
                  if path.is_dir() and RELEASE_ID_PATTERN.match(path.name))
    for old in kept[:-params.keep]:
        if old != current.get("release"):
            shutil.rmtree(layout.device_releases(device) / old, ignore_errors=True)
    outcome = ReleaseOutcome(device, RELEASED, variant.name, release_id,
                             f"firmware bundle for {device}: {folder}")
    return outcome


def bundle_state(variant: Variant, release_id: str) -> dict[str, str | None]:
    """What the record keeps of a bundle as ``current``."""
    return {"release": release_id, "variant": variant.name, "sha256": variant.sha256}
