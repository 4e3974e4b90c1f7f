"""What a release attempt ended as, and the record of a device's releases kept here
(``releases/<device>/release.json``)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tasks.core.files import read_json, write_json
from tasks.core.layout import Layout

RECORD_NAME = "release.json"
HISTORY_KEPT = 20
# What a release attempt can end as (ReleaseOutcome.status).
RELEASED, ROLLED_BACK, UNCHANGED, SKIPPED, REFUSED, FAILED = (
    "released", "rolled back", "unchanged", "skipped", "refused", "failed")


@dataclass(frozen=True)
class ReleaseOutcome:
    """One device's release attempt: ``status`` (released, unchanged, skipped, refused:
    the device said no (health check, on_release), failed: it could not be done), the
    variant and release id, and why, in one line."""

    device: str
    status: str
    variant: str | None
    release_id: str | None
    message: str
    mlflow_version: str | None = None


def record_path(layout: Layout, device: str) -> Path:
    return layout.device_releases(device) / RECORD_NAME


def read_record(layout: Layout, device: str) -> dict[str, Any]:
    path = record_path(layout, device)
    return read_json(path) if path.is_file() else {"device": device, "current": None,
                                                   "previous": None, "attempts": []}


def write_record(layout: Layout, outcome: ReleaseOutcome, current: dict[str, Any] | None,
                  previous: dict[str, Any] | None) -> None:
    record = read_record(layout, outcome.device)
    if current is not None:
        record["current"], record["previous"] = current, previous
    record["attempts"] = [*record.get("attempts", []),
                          {**asdict(outcome), "at": time.time()}][-HISTORY_KEPT:]
    path = record_path(layout, outcome.device)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, record)


def done(layout: Layout, outcome: ReleaseOutcome, current: dict[str, Any] | None = None,
          previous: dict[str, Any] | None = None) -> ReleaseOutcome:
    write_record(layout, outcome, current, previous)
    return outcome


def last_attempt(layout: Layout, device: str) -> str:
    """The device's last release attempt as one line: ``device: status: why``."""
    attempts = read_record(layout, device).get("attempts") or []
    if not attempts:
        return f"{device}: no release attempted"
    last = attempts[-1]
    version = f" (MLflow version {last['mlflow_version']})" if last.get("mlflow_version") else ""
    return f"{device}: {last['status']}: {last['message']}{version}"
