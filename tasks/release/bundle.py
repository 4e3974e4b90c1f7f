"""A release, built here before it goes to a device: every file at its place.

A release folder holds the variant's artifact files (at their paths under
``models/variants/``), ``manifest.json`` (:func:`manifest`), the device code's package
(``edgeflow_device/``: the predictor, its pre-processing, the harness's modules it
loads through and the kinds of task, ``kinds/``, with the variant's among them) with the predictor's launcher beside it (``predict.py``: ``python
predict.py IMAGE`` and ``from predict import Model`` work as they did when the device
code was loose files), the device-side release manager (``releases.py``) and
``check/``: test images as PNG files, what an application would pass, with their
labels, for the health check the predictor runs on the device before the release
becomes current.

The manifest lists every one of those files with its sha256 and size (``files``): the
predictor refuses to load, and ``edgeflow status`` reports as drift, a release any file
of which changed. The manifest cannot hold its own hash, so ``manifest.sha256`` beside
it does (``sha256sum -c manifest.sha256`` checks it by hand), and the board's answer
after the release, which edgeflow records, carries the manifest's sha256 too: a manifest
edited together with its digest file still differs from the recorded one.
"""

from __future__ import annotations

import getpass
import shutil
import socket
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tasks.core import device_code
from tasks.config import LocalDevice, ReleaseParams, SshDevice
from tasks.core.contracts.prepared import PreparedMeta, load_split
from tasks.core.contracts.release import new_release_id
from tasks.core.contracts.summary import Summary
from tasks.core.contracts.variants import Variant
from tasks.core.files import sha256_file, write_json

MANIFEST_VERSION = 2  # what the device-side predictor reads
MANIFEST_NAME, MANIFEST_DIGEST = "manifest.json", "manifest.sha256"
CHECK_DIR = "check"
ENTRY_MODULES = ("predict",)  # what a release runs: the predictor (a launcher each)


@dataclass(frozen=True)
class Bundle:
    """A release built in ``folder``: its id, the files (relative to the folder) and the
    manifest."""

    release_id: str
    folder: Path
    files: tuple[str, ...]
    manifest: dict[str, Any]


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


def write_check_images(folder: Path, prepared: Path, count: int,
                       kind: Any) -> tuple[list[str], list[Any]]:
    """The first ``count`` test images as 8-bit PNG files (what a camera or a file gives
    an application) and their labels as ``kind`` (the variant's kind of task,
    ``device_code.task_kinds()``) writes them in JSON
    (``kind.json_label``: a class index; a detector's image's boxes)."""
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
    return names, [kind.json_label(label) for label in labels[:count]]


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


def build_bundle(target: Path, device_name: str, device: LocalDevice | SshDevice,
                 variant: Variant, variants_dir: Path, prepared: Path, meta: PreparedMeta,
                 summary: Summary, params: ReleaseParams,
                 mlflow: dict[str, Any] | None) -> Bundle:
    """Build the release of ``variant`` for ``device`` in a new folder under ``target``."""
    # The variant's kind of task ships in the package's kinds/ only when this process
    # knows it (built in, or registered from its file): refused here (ValueError naming
    # the known kinds), not by the board's health check.
    kind = device_code.task_kinds().of_spec(variant.spec or {})
    release_id = new_release_id(variant.name)
    folder = target / release_id
    folder.mkdir(parents=True)
    files = []
    for entry in variant.files or []:
        (folder / entry.path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(variants_dir / entry.path, folder / entry.path)
        files.append(entry.path)
    files += device_code.ship(folder, ENTRY_MODULES)
    shutil.copyfile(device_code.RELEASES_PATH, folder / device_code.RELEASES_PATH.name)
    files.append(device_code.RELEASES_PATH.name)
    names, labels = write_check_images(folder / CHECK_DIR, prepared, params.check_images, kind)
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
