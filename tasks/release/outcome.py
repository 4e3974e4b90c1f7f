"""What a release attempt ended as, and the record of a device's releases kept here
(``releases/<device>/release.json``)."""

from __future__ import annotations

import time
from collections.abc import Iterable
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
# A deployment that did not happen: the command, the run and the step end non-zero.
UNSUCCESSFUL = (REFUSED, FAILED)


@dataclass(frozen=True)
class ReleaseOutcome:
    """One device's release attempt: ``status`` (released, unchanged, skipped, refused:
    the device said no (health check, on_release), failed: it could not be done), the
    variant and release id, and why, in one line. ``pending``: skipped only for want of
    an approval (a person may approve the next run)."""

    device: str
    status: str
    variant: str | None
    release_id: str | None
    message: str
    mlflow_version: str | None = None
    pending: bool = False

    @property
    def settled(self) -> bool:
        """Whether a later run with the same inputs may reuse this attempt instead of
        trying again: not when it waits for an approval (a "no", or nobody to ask, is not
        a lasting refusal) nor when it failed or was refused (a scheduler must see it fail
        again, not a cached success)."""
        return not self.pending and self.status not in UNSUCCESSFUL

    def line(self) -> str:
        """``device: status: why`` (and the MLflow version)."""
        version = f" (MLflow version {self.mlflow_version})" if self.mlflow_version else ""
        return f"{self.device}: {self.status}: {self.message}{version}"


@dataclass(frozen=True)
class ReleaseRun:
    """What one release step did on every device (``edgeflow step release``, ``dvc
    repro``): each device's outcome, in farm order."""

    outcomes: tuple[ReleaseOutcome, ...]

    def describe(self) -> str:
        """Each device's status, on one line."""
        return ", ".join(f"{outcome.device} {outcome.status}" for outcome in self.outcomes)

    def lines(self) -> list[str]:
        """One line per device: ``release: device: status: why``."""
        return [f"release: {outcome.line()}" for outcome in self.outcomes]

    def problem(self) -> str | None:
        """The devices whose release failed or was refused, in one line; None if none."""
        bad = _unsuccessful(self.outcomes)
        return f"release {', '.join(bad)} (the lines above say why)" if bad else None


def _unsuccessful(outcomes: Iterable[ReleaseOutcome | None]) -> list[str]:
    """``status on device`` for each of ``outcomes`` that failed or was refused."""
    return [f"{outcome.status} on {outcome.device}" for outcome in outcomes
            if outcome is not None and outcome.status in UNSUCCESSFUL]


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


def _last(layout: Layout, device: str) -> ReleaseOutcome | None:
    attempts = read_record(layout, device).get("attempts") or []
    if not attempts:
        return None
    last = attempts[-1]
    return ReleaseOutcome(**{name: last[name] for name in ReleaseOutcome.__dataclass_fields__
                             if name in last})


def last_attempt(layout: Layout, device: str) -> str:
    """The device's last release attempt as one line: ``device: status: why``."""
    last = _last(layout, device)
    return last.line() if last is not None else f"{device}: no release attempted"


def last_settled(layout: Layout, device: str) -> bool:
    """Whether the device's last release attempt may be reused by a later run with the
    same inputs (:attr:`ReleaseOutcome.settled`); True when there is none."""
    last = _last(layout, device)
    return last is None or last.settled


def unsuccessful(layout: Layout, devices: list[str]) -> list[str]:
    """``status on device`` for each of ``devices`` whose last release attempt failed or
    was refused."""
    return _unsuccessful(_last(layout, device) for device in devices)
