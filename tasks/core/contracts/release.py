"""Contract of ``releases/<device>/release.json``: written by release and rollback, read
by them, by ``edgeflow status`` and by the lifecycle (the last attempt of each device).

A :class:`ReleaseRecord` says what the device runs (``current``), what it ran before
(``previous``) and the last :data:`HISTORY_KEPT` release attempts (``attempts``, each a
:class:`ReleaseOutcome` and the time it ended). ``current`` and ``previous`` are a
:class:`ReleaseEntry`: for a board, its own answer (the release manager's summary of a
release, kept whole: the record shows what the board said); for a microcontroller, the
bundle written (release, variant, sha256, MLflow version; for an emulated core, its
firmware's figures and files). The board's state, as its release manager answers
``status``, is a :class:`BoardState`.

The documents are typed dictionaries, not models: a record is read, one attempt added,
and written back with every key the board sent, in its order (a field a newer board adds
is kept, not dropped). What an attempt ends as is a :class:`ReleaseStatus`; how a release
or a rollback changes the record is a :class:`ReleaseDecision`, which one function of the
release step persists.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from enum import StrEnum
from pathlib import Path
from typing import Any, TypedDict

from tasks.core.errors import StepError
from tasks.core.files import read_json, write_json
from tasks.core.layout import Layout
from tasks.core.mlflow_store import public_uri

RECORD_NAME = "release.json"
HISTORY_KEPT = 20
# A release id: its UTC creation time (sorts by it) and its variant; the device-side
# manager accepts nothing else.
RELEASE_ID_PATTERN = re.compile(r"^\d{8}T\d{12}Z-[A-Za-z0-9][A-Za-z0-9_.-]{0,100}$")


def new_release_id(variant: str, now: datetime | None = None) -> str:
    """A release id that sorts by creation time and names its variant."""
    moment = now or datetime.now(timezone.utc)
    return f"{moment.strftime('%Y%m%dT%H%M%S%fZ')}-{variant}"


class ReleaseStatus(StrEnum):
    """What a release attempt can end as (written as its value)."""

    RELEASED = "released"
    ROLLED_BACK = "rolled back"
    UNCHANGED = "unchanged"
    SKIPPED = "skipped"
    REFUSED = "refused"
    FAILED = "failed"


# A deployment that did not happen: the command, the run and the step end non-zero.
UNSUCCESSFUL = (ReleaseStatus.REFUSED, ReleaseStatus.FAILED)


class Mlflow(TypedDict, total=False):
    """The model version a release was registered as (in its manifest, on the board)."""

    name: str
    version: int | str
    tracking_uri: str


class ReleaseEntry(TypedDict, total=False):
    """One release as a device's state names it (``current``, ``previous``, a rolled-back
    one): what the board's release manager summarises, or a bundle's three fields."""

    release: str
    variant: str | None
    sha256: str | None
    manifest_sha256: str | None
    created_at: str | None
    mlflow: Mlflow | None
    health: dict[str, Any] | None
    files_intact: bool | None
    changed: list[str] | None
    firmware: dict[str, Any] | None


class BoardState(TypedDict, total=False):
    """A board's answer to ``status``: what runs, what ran before, the releases kept,
    those rolled back from (never released again by policy) and its last events."""

    status: str
    current: ReleaseEntry | None
    previous: ReleaseEntry | None
    releases: list[str]
    rolled_back: list[ReleaseEntry | None]
    events: list[Any]


class Attempt(TypedDict, total=False):
    """One release attempt as the record keeps it: the outcome's fields and ``at``."""

    device: str
    status: str
    variant: str | None
    release_id: str | None
    message: str
    mlflow_version: str | None
    pending: bool
    at: float


class ReleaseRecord(TypedDict):
    """``releases/<device>/release.json``."""

    device: str
    current: ReleaseEntry | None
    previous: ReleaseEntry | None
    attempts: list[Attempt]


@dataclass(frozen=True)
class ReleaseOutcome:
    """One device's release attempt: ``status`` (released, unchanged, skipped, refused:
    the device said no (health check, on_release), failed: it could not be done), the
    variant and release id, and why, in one line. ``pending``: skipped only for want of
    an approval (a person may approve the next run)."""

    device: str
    status: ReleaseStatus
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
class ReleaseDecision:
    """What a release or a rollback decided: its ``outcome`` (an attempt in the record)
    and, when the device's releases changed or were read, what it runs now
    (``current``, None: the record's ``current`` and ``previous`` stay as they are) and
    ran before. ``stop_point``: the board's switch was under way, so a stop requested
    meanwhile ends the run once this decision is recorded (the board, the record and the
    alias agree)."""

    outcome: ReleaseOutcome
    current: ReleaseEntry | None = None
    previous: ReleaseEntry | None = None
    stop_point: bool = False


def record_path(layout: Layout, device: str) -> Path:
    return layout.device_releases(device) / RECORD_NAME


def read_record(layout: Layout, device: str) -> ReleaseRecord:
    """The device's record; an empty one when nothing was released to it yet. A record
    that is no JSON object, or whose attempts are not objects each with a status of
    :class:`ReleaseStatus` (edited by hand, damaged), is a :class:`StepError` naming the
    file and what is allowed: read here, its statuses are trusted everywhere after."""
    path = record_path(layout, device)
    if not path.is_file():
        return {"device": device, "current": None, "previous": None, "attempts": []}
    record: ReleaseRecord = read_json(path)
    attempts = (record.get("attempts") or []) if isinstance(record, dict) else None
    if not isinstance(attempts, list):
        raise StepError(f"{path} is damaged (not a JSON object with a list of attempts): "
                        "fix or delete it")
    allowed = [status.value for status in ReleaseStatus]
    for number, attempt in enumerate(attempts, 1):
        status = attempt.get("status") if isinstance(attempt, dict) else None
        if status not in allowed:
            raise StepError(f"{path} is damaged (attempt {number} has status {status!r}, not "
                            f"one of {', '.join(map(repr, allowed))}): fix or delete it")
    return record


def with_attempt(record: ReleaseRecord, decision: ReleaseDecision,
                 at: float) -> ReleaseRecord:
    """``record`` with ``decision`` applied: its attempt appended (the newest
    :data:`HISTORY_KEPT` kept) and, where it names one, the new current release."""
    changed = dict(record)
    if decision.current is not None:
        changed["current"], changed["previous"] = decision.current, decision.previous
    changed["attempts"] = [*record.get("attempts", []),
                           {**asdict(decision.outcome), "at": at}][-HISTORY_KEPT:]
    return changed  # type: ignore[return-value]  # the keys of a ReleaseRecord, in its order


def write_record(layout: Layout, decision: ReleaseDecision) -> ReleaseOutcome:
    """Persist ``decision`` in its device's record; returns its outcome. The record is
    committed: the MLflow store its releases name is written without credentials, the
    experiment's own store relative to it (:func:`~tasks.core.mlflow_store.public_uri`),
    whatever the board's manifest holds."""
    outcome = decision.outcome
    decision = replace(decision, current=_public(layout, decision.current),
                       previous=_public(layout, decision.previous))
    write_json(record_path(layout, outcome.device),
               with_attempt(read_record(layout, outcome.device), decision, time.time()))
    return outcome


def _public(layout: Layout, entry: ReleaseEntry | None) -> ReleaseEntry | None:
    mlflow = (entry or {}).get("mlflow")
    if not entry or not mlflow or not mlflow.get("tracking_uri"):
        return entry
    return {**entry, "mlflow": {**mlflow, "tracking_uri": public_uri(str(mlflow["tracking_uri"]),
                                                                    layout.root)}}


def last_outcome(record: ReleaseRecord) -> ReleaseOutcome | None:
    """The record's last attempt as an outcome; None when there is none."""
    attempts = record.get("attempts") or []
    if not attempts:
        return None
    last: dict[str, Any] = dict(attempts[-1])
    fields = {name: last[name] for name in ReleaseOutcome.__dataclass_fields__ if name in last}
    fields["status"] = ReleaseStatus(fields["status"])  # one of them: read_record checked
    return ReleaseOutcome(**fields)
