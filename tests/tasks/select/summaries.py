"""Summary rows and summaries for the select and report tests: a record as benchmark
writes it judged through its contract, and hand-made rows with every column a summary
row has (unmeasured ones None)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tasks.config import Requirements
from tasks.core.contracts.results import ResultRecord
from tasks.core.contracts.summary import Counts, Summary, SummaryRow
from tasks.select import evaluate


def judge(record: dict[str, Any], requirements: Requirements,
          reference_accuracy: float, device: Any = None) -> SummaryRow:
    """:func:`tasks.select.evaluate` on a record as benchmark writes it (read through its
    contract, as select reads the file), on ``device`` (its farm.yaml entry) if given."""
    return evaluate(ResultRecord.model_validate(record), requirements, reference_accuracy,
                    device)


def summary_row(variant: str, device: str = "local", status: str = "pass",
                **columns: Any) -> SummaryRow:
    """A row with ``columns`` given and every other column unmeasured (None, no notes)."""
    fmt, _, precision = variant.partition("-")
    row: dict[str, Any] = {
        "variant": variant, "format": fmt, "precision": precision or "fp32", "source": "base",
        "device": device, "runtime": fmt, "size_bytes": None, "threads": None,
        "accuracy": None, "accuracy_samples": None, "accuracy_interval": None,
        "accuracy_drop": None, "latency_ms": None, "latency_ci95_ms": None,
        "throughput_fps": None, "end_to_end": None, "peak_rss_mb": None, "load_ms": None,
        "runtime_version": None, "execution_precision": None, "mcu": None, "notes": [],
        "status": status, "reasons": []}
    return SummaryRow.model_validate({**row, **columns})


def summary_of(rows: Sequence[SummaryRow], recommendations: dict[str, str | None],
               **fields: Any) -> Summary:
    """A summary of ``rows`` (counted) with their ``recommendations``; ``fields`` set the
    rest (a 0.9 reference, ranked by p50, no requirements by default)."""
    summary: dict[str, Any] = {"reference_accuracy": 0.9, "rank_by": "latency_p50_ms",
                               "requirements": {}, "counts": Counts.of(rows),
                               "recommendations": recommendations, "results": list(rows)}
    return Summary.model_validate({**summary, **fields})
