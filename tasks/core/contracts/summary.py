"""Contract of ``reports/summary.json``: written by select, read by the report renderers
(:mod:`tasks.select.report`), the CLI, the flow's verdict, the regression gate and track.

Every (variant, device) result as a :class:`SummaryRow` with its :class:`RowStatus`
against the requirements and the reasons, the recommendation per device, counts per
status, and the fp32 :class:`Reference` the accuracy drops are relative to.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from pathlib import Path
from typing import Annotated

from pydantic import Field, JsonValue, Strict

from tasks.core.contracts.prepared import DEFAULT_TASK
from tasks.core.contracts import Contract, read_contract, write_contract
from tasks.core.contracts.results import McuFit


# Before an estimated latency wherever one is shown (tables, notes): not a measurement.
ESTIMATED_MARK = "~"


class RowStatus(StrEnum):
    """A result judged against its device's requirements."""

    PASS = "pass"        # meets every requirement
    FAIL = "fail"        # misses one (reasons say which, by how much), or convert rejected it
    ERROR = "error"      # the harness or the device failed
    SKIPPED = "skipped"  # the device cannot run it, or the variant could not be produced


# A status read from a file is a string: the enum is checked by value (strict elsewhere).
Status = Annotated[RowStatus, Strict(False)]


# A device's requirements as select applied them (params overridden by farm.yaml): limits,
# the preference order (rank_by), None where unset.
DeviceRequirements = dict[str, float | list[str] | None]


class RowLatency(Contract):
    p50: float
    p90: float
    p99: float
    mean: float


class EndToEndRow(Contract):
    """The application's view of a result: decode, pre-process, infer and post-process
    of each camera frame, timed together (ms), the frame rate they allow, the median of
    each stage, and the accuracy on the frames."""

    latency_ms: RowLatency
    latency_ci95_ms: dict[str, list[float] | None] | None = None
    throughput_fps: float
    stages_ms: dict[str, float]
    accuracy: float
    frames: JsonValue = None
    # Energy per frame end to end, above idle (mJ), measured or estimated like the
    # row's; absent from older summaries and where there is none.
    energy_mj: float | None = None
    energy_source: str | None = None


class SummaryRow(Contract):
    """One result judged: identity, what was measured (None where nothing was), notes,
    the status and its reasons. ``runtime_version`` and ``execution_precision`` are the
    device's own words (visible and capped, unchecked)."""

    variant: str
    format: str
    precision: str
    source: str
    device: str
    runtime: str
    size_bytes: int | None
    threads: int | None
    # As the result record says (absent: a physical board): an emulated board's timings
    # are shown marked, never recommended on or gated unless opted in.
    emulated: bool | None = None
    emulation: str | None = None
    accuracy: float | None
    accuracy_samples: int | None
    accuracy_interval: list[float] | None
    accuracy_drop: float | None
    latency_ms: RowLatency | None
    # The 95% intervals of p50 and p90 ([low, high] ms, null: too few runs); absent from
    # older summaries and where nothing was timed.
    latency_ci95_ms: dict[str, list[float] | None] | None = None
    throughput_fps: float | None
    # Timed end to end too (benchmark.end_to_end); absent from older summaries.
    end_to_end: EndToEndRow | None = None
    peak_rss_mb: float | None
    load_ms: float | None
    runtime_version: JsonValue
    execution_precision: JsonValue
    mcu: McuFit | None
    # A microcontroller's latency estimated from the instructions counted on its emulated
    # core (instructions x cycles per instruction / clock): never a measurement, so not in
    # latency_ms, not checked against a latency requirement, not ranked on; shown marked
    # ESTIMATED_MARK. Absent from older summaries and where there is none.
    estimated_latency_ms: float | None = None
    # Energy per inference above idle (mJ) with its 95% interval, the average power
    # while inferring and the idle power (W): ``energy_source`` says whether the board's
    # meter measured it or it is estimated from farm.yaml's power x latency (shown marked
    # ESTIMATED_MARK), ``energy_meter`` which meter or which power profile. Battery
    # hours on the device's farm.yaml battery at ``battery_fps`` (its fps, or the
    # variant's throughput where lower). Absent from older summaries and where none.
    energy_mj: float | None = None
    energy_interval: list[float] | None = None
    power_w: float | None = None
    idle_w: float | None = None
    energy_source: str | None = None
    energy_meter: str | None = None
    battery_hours: float | None = None
    battery_fps: float | None = None
    notes: list[str]
    status: Status
    reasons: list[str]

    def remarks(self) -> str:
        """The reasons, then the notes, as one ``; ``-separated text ("" when none)."""
        return "; ".join(self.reasons + self.notes)


class Counts(Contract):
    passed: int = Field(alias="pass")  # `pass` is a Python keyword
    fail: int
    error: int
    skipped: int

    @classmethod
    def of(cls, rows: Iterable[SummaryRow]) -> Counts:
        """How many of ``rows`` have each status."""
        statuses = [row.status for row in rows]
        return cls.model_validate({status.value: statuses.count(status) for status in RowStatus})

    def count(self, status: RowStatus) -> int:
        return getattr(self, "passed" if status is RowStatus.PASS else status.value)

    def text(self) -> str:
        """``3 pass, 1 fail, 0 error, 2 skipped``."""
        return ", ".join(f"{self.count(status)} {status}" for status in RowStatus)


class Reference(Contract):
    """The fp32 model's (Keras, host) accuracy on the test split the variants' drops are
    relative to: the number of test images and the 95% interval where known (older
    summaries have the accuracy only). In ``summary.json`` as ``reference_*`` keys."""

    accuracy: float
    samples: int | None = None
    interval: list[float] | None = None


class Summary(Contract):
    reference_accuracy: float
    reference_samples: int | None = None  # absent from older summaries
    reference_interval: list[float] | None = None  # absent from older summaries
    # The experiment's preference order (one measure in older summaries); each device's
    # own, overrides applied, is its requirements' rank_by.
    rank_by: str | list[str]
    requirements: dict[str, DeviceRequirements]  # per device
    counts: Counts
    recommendations: dict[str, str | None]  # per device: the best passing variant
    # Per device: one line on why its variant won (or why none did), and the passing
    # variants no other beats on accuracy, p90 and size. Absent from older summaries.
    why_recommended: dict[str, str] | None = None
    pareto: dict[str, list[str]] | None = None
    # Per device left without a recommendation on purpose (an emulated board, without
    # select.include_emulated): why, in one line. Absent when there is none.
    excluded: dict[str, str] | None = None
    # The kind of task the scores are of (train's reference.json): what "accuracy" means
    # (mAP@0.5 for a detector). Absent from older summaries: classification.
    task: str = DEFAULT_TASK
    # Per device with a battery in farm.yaml: how long the recommended and runner-up
    # variants last on it at its fps, one line each. Absent when no device has one.
    battery: dict[str, list[str]] | None = None
    results: list[SummaryRow]

    @property
    def reference(self) -> Reference:
        return Reference(accuracy=self.reference_accuracy, samples=self.reference_samples,
                         interval=self.reference_interval)

    def excluded_reason(self, device: str) -> str | None:
        """Why ``device`` was left without a recommendation on purpose (an emulated
        board, :attr:`excluded`), None when it was not."""
        return (self.excluded or {}).get(device)

    def why_none(self, device: str) -> str:
        """Why ``device`` has no recommendation, in one line: the reason it was left out
        (:meth:`excluded_reason`), else that nothing met the requirements."""
        return self.excluded_reason(device) or "no variant meets the requirements"

    @property
    def devices(self) -> list[str]:
        """Every device with a result, in row order (the farm's)."""
        return list(dict.fromkeys(row.device for row in self.results))


def write_summary(path: Path, summary: Summary) -> Path:
    return write_contract(path, summary)


def read_summary(path: Path) -> Summary:
    return read_contract(path, Summary, keys=("results", "counts", "recommendations"),
                         written_by="select")
