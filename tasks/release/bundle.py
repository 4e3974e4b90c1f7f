"""A release, built here before it goes to a device: every file at its place.

A release folder holds the variant's artifact files (at their paths under
``models/variants/``), ``manifest.json`` (:func:`manifest`), the device-side predictor
with the harness it loads through (``predict.py``, ``harness.py``), the registry of
kinds of task with the variant's kind (``kinds/__init__.py``, ``kinds/<name>.py``), the device-side
release manager (``releases.py``) and ``check/``: test images as PNG files, what an
application would pass, with their labels, for the health check the predictor runs on
the device before the release becomes current.

The manifest lists every one of those files with its sha256 and size (``files``): the
predictor refuses to load, and ``edgeflow status`` reports as drift, a release any file
of which changed. The manifest cannot hold its own hash, so ``manifest.sha256`` beside
it does (``sha256sum -c manifest.sha256`` checks it by hand), and the board's answer
after the release, which edgeflow records, carries the manifest's sha256 too: a manifest
edited together with its digest file still differs from the recorded one.
"""

from __future__ import annotations

import getpass
import re
import shutil
import socket
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tasks.core import device_code, task_kinds
from tasks.config import LocalDevice, ReleaseParams, SshDevice
from tasks.core.contracts.prepared import PreparedMeta, load_split
from tasks.core.contracts.summary import Summary
from tasks.core.contracts.variants import Variant
from tasks.core.files import sha256_file, write_json

MANIFEST_VERSION = 2  # what the device-side predictor reads
MANIFEST_NAME, MANIFEST_DIGEST = "manifest.json", "manifest.sha256"
# A release id: its UTC creation time (sorts by it) and its variant; the device-side
# manager accepts nothing else.
RELEASE_ID_PATTERN = re.compile(r"^\d{8}T\d{12}Z-[A-Za-z0-9][A-Za-z0-9_.-]{0,100}$")
CHECK_DIR = "check"
DEVICE_FILES = (device_code.PREDICT_PATH, device_code.PREPROCESS_PATH, device_code.HARNESS_PATH,
                device_code.RELEASES_PATH)


@dataclass(frozen=True)
class Bundle:
    """A release built in ``folder``: its id, the files (relative to the folder) and the
    manifest."""

    release_id: str
    folder: Path
    files: tuple[str, ...]
    manifest: dict[str, Any]


def new_release_id(variant: str, now: datetime | None = None) -> str:
    """A release id that sorts by creation time and names its variant."""
    moment = now or datetime.now(timezone.utc)
    return f"{moment.strftime('%Y%m%dT%H%M%S%fZ')}-{variant}"


def accuracy_floor(summary: Summary, device: str) -> float | None:
    """The least accuracy the device's requirements allow: ``min_accuracy``, and the
    fp32 reference less ``max_accuracy_drop`` (relative), whichever is higher."""
    requirements = summary.requirements.get(device, {})
    floors = []
    if requirements.get("min_accuracy") is not None:
        floors.append(float(requirements["min_accuracy"]))  # type: ignore[arg-type]
    if requirements.get("max_accuracy_drop") is not None:
        drop = float(requirements["max_accuracy_drop"])  # type: ignore[arg-type]
        floors.append(summary.reference_accuracy * (1.0 - drop))
    return max(floors) if floors else None


def write_check_images(folder: Path, prepared: Path, count: int) -> tuple[list[str], list[int]]:
    """The first ``count`` test images as 8-bit PNG files (what a camera or a file gives
    an application) and their labels."""
    import numpy as np
    from PIL import Image

    images, labels = load_split(prepared, "test")
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for index, image in enumerate(images[:count]):
        pixels = np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
        name = f"{index:04d}.png"
        if pixels.shape[-1] == 1:
            Image.fromarray(pixels[..., 0], "L").save(folder / name)
        else:
            Image.fromarray(pixels, "RGB").save(folder / name)
        names.append(name)
    return names, [int(label) for label in labels[:count]]


def manifest(release_id: str, device_name: str, device: LocalDevice | SshDevice,
             variant: Variant, meta: PreparedMeta, summary: Summary, check: dict[str, Any],
             mlflow: dict[str, Any] | None, files: list[dict[str, Any]]) -> dict[str, Any]:
    """What the predictor and a person need to know about a release; ``files``: every
    file of the release folder but the manifest and its digest (path, sha256, bytes)."""
    height, width, channels = meta.input_shape
    return {
        "manifest_version": MANIFEST_VERSION, "release_id": release_id, "device": device_name,
        "variant": variant.name, "format": variant.format, "precision": variant.precision,
        "source": variant.source, "runtime": variant.runtime, "artifact": variant.file,
        "sha256": variant.sha256, "files": files,
        "spec": variant.spec, "classes": meta.classes,
        "input": {"height": height, "width": width, "channels": channels, "color": meta.color,
                  "layout": "NHWC", "resize": "bilinear", "fit": meta.fit, "scale": "pixel / 255",
                  "trained_on": meta.normalisation},
        "threads": device.threads,
        "accelerators": device.accelerators.model_dump(exclude_none=True),
        "check": check, "mlflow": mlflow,
        "measured": {"accuracy": _measured(summary, variant.name, device_name)},
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "created_by": f"{getpass.getuser()}@{socket.gethostname()}",
    }


def _measured(summary: Summary, variant: str, device: str) -> float | None:
    rows = [row for row in summary.results if row.variant == variant and row.device == device]
    return rows[0].accuracy if rows else None


def _copy_task_kind(variant: Variant, folder: Path) -> list[str]:
    """The registry of kinds of task and the variant's kind, copied where the predictor
    finds them (``kinds/__init__.py``, ``kinds/<name>.py``); their paths in the release."""
    name = task_kinds.registry().of_spec(variant.spec).name
    copied = []
    for source, relative in device_code.task_kind_files():
        if relative in (f"{device_code.KINDS_FOLDER}/__init__.py",
                        f"{device_code.KINDS_FOLDER}/{name}.py"):
            (folder / relative).parent.mkdir(exist_ok=True)
            shutil.copyfile(source, folder / relative)
            copied.append(relative)
    return copied


def build_bundle(target: Path, device_name: str, device: LocalDevice | SshDevice,
                 variant: Variant, variants_dir: Path, prepared: Path, meta: PreparedMeta,
                 summary: Summary, params: ReleaseParams,
                 mlflow: dict[str, Any] | None) -> Bundle:
    """Build the release of ``variant`` for ``device`` in a new folder under ``target``."""
    release_id = new_release_id(variant.name)
    folder = target / release_id
    folder.mkdir(parents=True)
    files = []
    for entry in variant.files or []:
        (folder / entry.path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(variants_dir / entry.path, folder / entry.path)
        files.append(entry.path)
    for source in DEVICE_FILES:
        shutil.copyfile(source, folder / source.name)
        files.append(source.name)
    files += _copy_task_kind(variant, folder)
    names, labels = write_check_images(folder / CHECK_DIR, prepared, params.check_images)
    files += [f"{CHECK_DIR}/{name}" for name in names]
    requirements = summary.requirements.get(device_name, {})
    check = {"folder": CHECK_DIR, "images": names, "labels": labels,
             "accuracy_floor": accuracy_floor(summary, device_name),
             "max_latency_p90_ms": requirements.get("max_latency_p90_ms")}
    # The artifact's files with the sha256 convert recorded (a copy that differs is
    # refused on the device), the files written here with their own.
    listed = [{"path": entry.path, "sha256": entry.sha256, "bytes": entry.bytes}
              for entry in variant.files or []]
    listed += [{"path": name, "sha256": sha256_file(folder / name),
                "bytes": (folder / name).stat().st_size} for name in files[len(listed):]]
    document = manifest(release_id, device_name, device, variant, meta, summary, check, mlflow,
                        listed)
    write_json(folder / MANIFEST_NAME, document)
    (folder / MANIFEST_DIGEST).write_text(
        f"{sha256_file(folder / MANIFEST_NAME)}  {MANIFEST_NAME}\n", encoding="utf-8")
    files += [MANIFEST_NAME, MANIFEST_DIGEST]
    return Bundle(release_id, folder, tuple(files), document)
