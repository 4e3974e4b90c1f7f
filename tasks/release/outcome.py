"""What a release attempt ended as, and the record of a device's releases kept here
(``releases/<device>/release.json``)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from tasks.core.contracts.release import (HISTORY_KEPT, RECORD_NAME, UNSUCCESSFUL,
                                          ReleaseDecision, ReleaseOutcome, ReleaseStatus,
                                          last_outcome, read_record, record_path, write_record)
from tasks.core.layout import Layout

__all__ = ["FAILED", "HISTORY_KEPT", "RECORD_NAME", "REFUSED", "RELEASED", "ROLLED_BACK",
           "SKIPPED", "UNCHANGED", "UNSUCCESSFUL", "ReleaseDecision", "ReleaseOutcome",
           "ReleaseRun", "last_attempt", "last_settled", "read_record", "record_path",
           "unsuccessful", "write_record"]

RELEASED, ROLLED_BACK, UNCHANGED, SKIPPED, REFUSED, FAILED = (
    ReleaseStatus.RELEASED, ReleaseStatus.ROLLED_BACK, ReleaseStatus.UNCHANGED,
    ReleaseStatus.SKIPPED, ReleaseStatus.REFUSED, ReleaseStatus.FAILED)


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


def _last(layout: Layout, device: str) -> ReleaseOutcome | None:
    return last_outcome(read_record(layout, device))


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
