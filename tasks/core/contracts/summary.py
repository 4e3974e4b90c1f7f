"""Contract of ``reports/summary.json``: written by select, read by the report renderers
(:mod:`tasks.select.report`), the CLI, the flow's verdict and track.

Every (variant, device) result as a :class:`SummaryRow` with its status against the
requirements and the reasons, the recommendation per device, counts per status, and the
fp32 reference the accuracy drops are relative to.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, JsonValue

from tasks.core.contracts import Contract, read_contract, write_contract
from tasks.core.contracts.results import McuFit

RowStatus = Literal["pass", "fail", "error", "skipped"]


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
    notes: list[str]
    status: RowStatus
    reasons: list[str]


class Counts(Contract):
    passed: int = Field(alias="pass")  # `pass` is a Python keyword
    fail: int
    error: int
    skipped: int


class Summary(Contract):
    reference_accuracy: float
    reference_samples: int | None = None  # absent from older summaries
    reference_interval: list[float] | None = None  # absent from older summaries
    # The experiment's preference order (one measure in older summaries); each device's
    # own, overrides applied, is its requirements' rank_by.
    rank_by: str | list[str]
    requirements: dict[str, dict[str, float | list[str] | None]]  # per device
    counts: Counts
    recommendations: dict[str, str | None]  # per device: the best passing variant
    # Per device: one line on why its variant won (or why none did), and the passing
    # variants no other beats on accuracy, p90 and size. Absent from older summaries.
    why_recommended: dict[str, str] | None = None
    pareto: dict[str, list[str]] | None = None
    results: list[SummaryRow]


def write_summary(path: Path, summary: Summary) -> Path:
    return write_contract(path, summary)


def read_summary(path: Path) -> Summary:
    return read_contract(path, Summary, keys=("results", "counts", "recommendations"),
                         written_by="select")
