"""The report's cells: what every view of a summary (Markdown, HTML, the terminal, the
Prefect run page) writes for a result, the reference, a preference order and a device's
requirements, as plain text. Each view escapes these texts in its own syntax."""

from __future__ import annotations

from typing import Any

from tasks.core import device_code
from tasks.core.accuracy import format_accuracy
from tasks.core.contracts.prepared import DEFAULT_TASK
from tasks.core.contracts.summary import (ESTIMATED_MARK, DeviceRequirements, Reference,
                                          RowStatus, Summary, SummaryRow)

# "e2e p90 ms": decode + pre-process + infer + post-process (benchmark.end_to_end).
# "energy mJ": per inference above idle, measured, or estimated and marked (~1.23 est).
COLUMNS = ("device", "variant", "status", "exec", "accuracy", "drop", "size KB", "p50 ms", "p90 ms",
           "p99 ms", "fps", "e2e p90 ms", "RSS MB", "energy mJ")
TEXT_COLUMNS = frozenset({"device", "variant", "status", "exec"})


def fmt(value: float | None, pattern: str) -> str:
    """``value`` formatted by ``pattern``; "—" when nothing was measured."""
    return "—" if value is None else format(value, pattern)


def accuracy_cell(accuracy: float | None, samples: int | None,
                  interval: list[float] | None = None) -> str:
    """``0.90 [0.77, 0.96]``: the accuracy with its 95% interval, ``interval`` where the
    result has its kind's own (a detector's bootstrap over images; :func:`interval_label`
    names it), else Wilson's (four decimals when the number of images it was measured on
    is unknown, "—" when nothing was measured)."""
    if accuracy is None:
        return "—"
    return format_accuracy(accuracy, samples, interval) if samples else f"{accuracy:.4f}"


def metric_label(summary: Summary) -> str:
    """What the results' accuracy is, by the experiment's kind of task: ``accuracy``, or
    a detector's ``mAP@0.5`` (an unknown kind's results read as accuracy)."""
    return metric_name(summary.task)


def _kind(task: str | None) -> Any:
    """The kind of task that scored a result: an older record's, which names none, or an
    unknown kind's is classification's (its results read as accuracy)."""
    kinds = device_code.task_kinds()
    return kinds.get(task if task in kinds.names() else DEFAULT_TASK)


def metric_name(task: str | None) -> str:
    """What a kind of task calls its score (``accuracy``, ``mAP@0.5``)."""
    return _kind(task).metric_name


def interval_label(summary: Summary) -> str:
    """What the bracketed interval beside a result is, by the experiment's kind of task."""
    return _kind(summary.task).interval_name


def columns(summary: Summary) -> tuple[str, ...]:
    """:data:`COLUMNS` with the accuracy column named as :func:`metric_label` says."""
    label = metric_label(summary)
    return tuple(label if column == "accuracy" else column for column in COLUMNS)


def reference_line(reference: Reference) -> str:
    """The fp32 reference accuracy, its interval and the number of test images."""
    text = accuracy_cell(reference.accuracy, reference.samples, reference.interval)
    return f"{text} on {reference.samples} test images" if reference.samples else text


# After every timing of an emulated board (its rows' notes say so too), so that nobody
# reads the emulator's latency as the hardware's.
EMULATED_MARK = " emu"


def timing(row: SummaryRow, value: float | None, pattern: str) -> str:
    """A timing cell: :func:`fmt`, marked :data:`EMULATED_MARK` on an emulated board."""
    text = fmt(value, pattern)
    return text + EMULATED_MARK if row.emulated and value is not None else text


def size_kb(row: SummaryRow) -> float | None:
    return row.size_bytes / 1024 if row.size_bytes is not None else None


# After an estimated latency (a microcontroller's, from its emulated core's instruction
# count): with the "~" before it, never to be read as a measured one.
ESTIMATED_SUFFIX = " est"


def latency_cell(row: SummaryRow, value: float | None) -> str:
    """A p50 or p90 cell: the measured ``value`` (:func:`timing`), else the row's
    estimated latency marked ``~12.345 est``, else "—"."""
    if value is None and row.estimated_latency_ms is not None:
        return f"{ESTIMATED_MARK}{row.estimated_latency_ms:.3f}{ESTIMATED_SUFFIX}"
    return timing(row, value, ".3f")


def energy_cell(row: SummaryRow) -> str:
    """Energy per inference: measured ``1.234``; estimated ``~1.234 est`` (never to be
    read as a measurement); "—" where there is none."""
    if row.energy_mj is None:
        return "—"
    if row.energy_source == "measured":
        return f"{row.energy_mj:.4g}"
    return f"{ESTIMATED_MARK}{row.energy_mj:.4g}{ESTIMATED_SUFFIX}"


def row_cells(row: SummaryRow) -> list[str]:
    """One result's cells, in :data:`COLUMNS` order."""
    latency = row.latency_ms
    end_to_end = row.end_to_end.latency_ms.p90 if row.end_to_end else None
    return [row.device, row.variant, row.status.value, row.execution_precision or "—",
            accuracy_cell(row.accuracy, row.accuracy_samples, row.accuracy_interval),
            fmt(row.accuracy_drop, ".2%"), fmt(size_kb(row), ".1f"),
            latency_cell(row, latency and latency.p50),
            latency_cell(row, latency and latency.p90),
            timing(row, latency and latency.p99, ".3f"), timing(row, row.throughput_fps, ".0f"),
            timing(row, end_to_end, ".3f"), fmt(row.peak_rss_mb, ".0f"), energy_cell(row)]


def runs_on(summary: Summary) -> dict[str, list[str]]:
    """The reverse view: every variant (in row order) with the devices it passes on."""
    return {variant: [row.device for row in summary.results
                      if row.variant == variant and row.status is RowStatus.PASS]
            for variant in dict.fromkeys(row.variant for row in summary.results)}


def preference_text(rank_by: str | list[str]) -> str:
    """A preference order as read: ``latency_p90_ms > accuracy``."""
    return rank_by if isinstance(rank_by, str) else " > ".join(rank_by)


def stated_requirements(requirements: DeviceRequirements) -> str:
    """A device's requirements as ``key=value, ...`` (the unset ones left out; the
    preference order as ``rank_by=a > b``)."""
    return ", ".join(f"{key}={preference_text(value) if key == 'rank_by' else value}"
                     for key, value in requirements.items() if value is not None) or "none"
