"""The regression gate: a change is a regression only when it exceeds its threshold and
the two runs' 95% intervals do not overlap; a pass that no longer passes is one too."""

from __future__ import annotations

from typing import Any

import pytest

from tasks.compare import compare, judge
from tasks.config import CompareParams
from tasks.core.contracts.summary import RowStatus, Summary, SummaryRow

LIMITS = CompareParams(latency_increase=0.10, accuracy_drop=0.01, size_increase=0.05)


def row(variant: str = "onnx-fp32", device: str = "local", p50: float = 1.0, p90: float = 2.0,
        p50_ci: list[float] | None = None, p90_ci: list[float] | None = None,
        accuracy: float = 0.95, accuracy_ci: list[float] | None = None, size: int = 100_000,
        status: str = "pass", reasons: list[str] | None = None, ci: bool = True,
        **marks: Any) -> dict[str, Any]:
    """A summary row; by default each interval is +-1% around its value (``marks``: an
    emulated board's ``emulated`` and ``emulation``)."""
    around = lambda value: [value * 0.99, value * 1.01]  # noqa: E731
    return {"variant": variant, "format": variant.split("-")[0], "precision": "fp32",
            "source": "base", "device": device, "runtime": "onnxruntime", "size_bytes": size,
            "threads": 1, "accuracy": accuracy, "accuracy_samples": 1000,
            "accuracy_interval": accuracy_ci or [accuracy - 0.01, accuracy + 0.01],
            "accuracy_drop": 0.0, "latency_ms": {"p50": p50, "p90": p90, "p99": p90 * 1.5,
                                                 "mean": p50 * 1.1},
            **({"latency_ci95_ms": {"p50": p50_ci or around(p50), "p90": p90_ci or around(p90)}}
               if ci else {}),
            "throughput_fps": 1000 / p50, "peak_rss_mb": 50.0, "load_ms": 10.0,
            "runtime_version": "1.0", "execution_precision": "f32", "mcu": None, "notes": [],
            "status": status, "reasons": reasons or [], **marks}


def summary(*rows: dict[str, Any]) -> Summary:
    counts = {"pass": sum(r["status"] == "pass" for r in rows), "fail": 0, "error": 0,
              "skipped": 0}
    return Summary.model_validate({
        "reference_accuracy": 0.95, "rank_by": "latency_p50_ms", "requirements": {},
        "counts": counts, "recommendations": {}, "results": list(rows)})


def test_a_planted_20_percent_latency_regression_is_flagged_with_its_figures() -> None:
    comparison = compare(summary(row(p50=1.0, p90=2.0)), summary(row(p50=1.2, p90=2.4)), LIMITS)
    [pair] = comparison.pairs
    assert pair.regressions == [
        "p50 +20.0% (1 -> 1.2 ms; threshold 0.1, intervals apart)",
        "p90 +20.0% (2 -> 2.4 ms; threshold 0.1, intervals apart)"]
    assert comparison.regressions == [f"onnx-fp32@local: {reason}" for reason in pair.regressions]


def test_an_unchanged_model_measured_twice_is_no_regression() -> None:
    # Run-to-run drift: 3% slower with intervals apart (real but below the threshold),
    # 12% slower with overlapping intervals (inside the noise), accuracy within noise.
    before = summary(row("a-fp32", p50=1.0, p90=2.0), row("b-fp32", p50=1.0, p90=2.0,
                                                          p90_ci=[1.7, 2.5]))
    after = summary(row("a-fp32", p50=1.03, p90=2.06),
                    row("b-fp32", p50=0.98, p90=2.24, p90_ci=[2.0, 2.6], accuracy=0.945))
    comparison = compare(before, after, LIMITS)
    assert comparison.regressions == []
    assert [change.relative for change in comparison.pairs[1].changes if change.measure == "p90"
            ] == [pytest.approx(0.12)]


@pytest.mark.parametrize(("before", "after", "regression"), [
    # Slower past the threshold but the intervals overlap: noise, not a regression.
    (row(p50=1.0, p50_ci=[0.8, 1.3]), row(p50=1.2, p50_ci=[1.1, 1.4]), None),
    # Exactly at the threshold: not past it.
    (row(p50=1.0), row(p50=1.1), None),
    # Faster is never a regression, however far apart.
    (row(p50=1.0), row(p50=0.5), None),
    # No intervals (older summaries): the threshold alone decides, and says so.
    (row(p50=1.0, ci=False), row(p50=1.2, ci=False),
     "p50 +20.0% (1 -> 1.2 ms; threshold 0.1, no intervals to check)"),
])
def test_a_latency_change_is_a_regression_only_past_the_threshold_and_the_noise(
        before: dict[str, Any], after: dict[str, Any], regression: str | None) -> None:
    change = judge("p50", SummaryRow.model_validate(before), SummaryRow.model_validate(after),
                   LIMITS)
    assert change is not None and change.regression == regression


def test_accuracy_and_size_regressions_are_judged_on_their_own_thresholds() -> None:
    before = row(accuracy=0.95, accuracy_ci=[0.94, 0.96], size=100_000)
    dropped = row(accuracy=0.90, accuracy_ci=[0.88, 0.92], size=106_000)
    [pair] = compare(summary(before), summary(dropped), LIMITS).pairs
    assert pair.regressions == [
        "accuracy -0.0500 (0.95 -> 0.9; threshold 0.01, intervals apart)",
        "size +6.0% (100000 -> 106000 B; threshold 0.05, no intervals to check)"]
    # A drop inside the intervals, a size within 5%: none.
    close = row(accuracy=0.935, accuracy_ci=[0.925, 0.945], size=104_000)
    assert compare(summary(before), summary(close), LIMITS).regressions == []


def test_a_pair_that_stops_passing_is_a_regression_and_new_or_gone_pairs_are_listed() -> None:
    before = summary(row("a-fp32"), row("gone-fp32"))
    after = summary(row("a-fp32", status="fail", reasons=["accuracy 0.5 < min_accuracy 0.9"]),
                    row("new-fp32"))
    comparison = compare(before, after, LIMITS)
    assert comparison.regressions == [
        "a-fp32@local: status pass -> fail (accuracy 0.5 < min_accuracy 0.9)"]
    assert (comparison.only_before, comparison.only_after) == (["gone-fp32@local"],
                                                               ["new-fp32@local"])


def test_thresholds_are_the_ones_configured() -> None:
    before, after = summary(row(p50=1.0)), summary(row(p50=1.2))
    assert compare(before, after, CompareParams(latency_increase=0.25)).regressions == []
    assert compare(before, after, CompareParams(latency_increase=0.15)).regressions != []


def test_the_markdown_view_marks_the_regressed_pair_and_lists_why() -> None:
    from tasks.compare.view import comparison_markdown

    comparison = compare(summary(row("a-fp32"), row("b-fp32")),
                         summary(row("a-fp32", p50=1.2), row("b-fp32", status="fail")), LIMITS)
    markdown = comparison_markdown(comparison, "MLflow run x", "this run")
    lines = markdown.splitlines()
    assert lines[0] == "# edgeflow: MLflow run x -> this run"
    [a_row] = [line for line in lines if line.startswith("| a-fp32 |")]
    assert "1±1.0% -> 1.2±1.0% (+20.0%)" in a_row and a_row.endswith("| **REGRESSION** |")
    [b_row] = [line for line in lines if line.startswith("| b-fp32 |")]
    assert "| pass -> fail |" in b_row and b_row.endswith("| **REGRESSION** |")
    assert "- regression: b-fp32@local: status pass -> fail" in lines


# Every status a row can have before and after, and a row only one run has: the gate's
# verdict and line, and the markdown's status cell, for each (before, after).
MISSING = "missing"
STATUSES = [status.value for status in RowStatus]


def _status_table() -> list[tuple[str, str]]:
    return [(before, after) for before in [*STATUSES, MISSING] for after in [*STATUSES, MISSING]
            if (before, after) != (MISSING, MISSING)]


@pytest.mark.parametrize(("before", "after"), _status_table())
def test_every_status_before_and_after_goes_through_the_gate(before: str, after: str) -> None:
    from tasks.compare.gate import GateResult
    from tasks.compare.view import comparison_markdown
    from tests.tasks.select.summaries import summary_of, summary_row

    def run(status: str) -> Summary:
        rows = [] if status == MISSING else [summary_row("v-fp32", status=status,
                                                         reasons=[f"why {status}"])]
        return summary_of(rows, {})

    comparison = compare(run(before), run(after), LIMITS)
    gated = GateResult(comparison, "MLflow run x")
    paired = MISSING not in (before, after)
    assert [(pair.status_before, pair.status_after) for pair in comparison.pairs] == (
        [(before, after)] if paired else [])
    assert (comparison.only_before, comparison.only_after) == (
        ["v-fp32@local"] if after == MISSING and before != MISSING else [],
        ["v-fp32@local"] if before == MISSING and after != MISSING else [])
    # Only a pass that stops passing is a regression: a row that was never a pass, one
    # that appears, or one that vanishes is none (the farm or the variants changed).
    if before == "pass" and after not in ("pass", MISSING):
        reason = f"v-fp32@local: status pass -> {after} (why {after})"
        assert comparison.regressions == [reason]
        assert gated.line() == f"1 regression against MLflow run x: {reason}"
    else:
        assert comparison.regressions == []
        assert gated.line() == f"no regression against MLflow run x in {int(paired)} pairs"
    rows = [line for line in comparison_markdown(comparison, "x", "y").splitlines()
            if line.startswith("| v-fp32 |")]
    cell = after if before == after else f"{before} -> {after}"
    verdict = "**REGRESSION**" if comparison.regressions else "ok"
    assert rows == ([f"| v-fp32 | local | {cell} |  |  |  |  | {verdict} |"] if paired else [])


# --------------------------------------------------------------------------- emulated boards
# (issue 28): an emulated board's pairs are shown but not gated unless opted in; emulated
# against physical is never compared.

QEMU = {"emulated": True, "emulation": "qemu-user"}
NOT_GATED = "emulated (qemu-user): not gated; set compare.include_emulated to gate it"


def test_an_emulated_pairs_regression_is_shown_but_not_gated_unless_opted_in() -> None:
    before = summary(row(device="pi", **QEMU), row(device="x86"))
    after = summary(row(device="pi", p50=1.5, status="fail", reasons=["slow"], **QEMU),
                    row(device="x86"))
    comparison = compare(before, after, LIMITS)
    emulated, physical = comparison.pairs
    assert emulated.regressions[0] == "status pass -> fail (slow)"
    assert "p50 +50.0% (1 -> 1.5 ms; threshold 0.1, intervals apart)" in emulated.regressions
    assert emulated.excluded == NOT_GATED and physical.excluded is None
    assert comparison.regressions == []
    assert comparison.excluded == [f"onnx-fp32@pi: {NOT_GATED}"]

    opted = compare(before, after, LIMITS.model_copy(update={"include_emulated": True}))
    assert opted.excluded == [] and opted.pairs[0].excluded is None
    assert opted.regressions == [f"onnx-fp32@pi: {reason}" for reason in emulated.regressions]


@pytest.mark.parametrize(("first", "second", "reason"), [
    (QEMU, {}, "not comparable: emulated (qemu-user) before, physical after"),
    ({}, QEMU, "not comparable: physical before, emulated (qemu-user) after"),
    (QEMU, {"emulated": True, "emulation": "qemu-system"},
     "not comparable: emulated (qemu-user) before, emulated (qemu-system) after"),
])
def test_emulated_against_physical_is_never_compared_even_when_opted_in(
        first: dict[str, Any], second: dict[str, Any], reason: str) -> None:
    before = summary(row(device="pi", **first))
    after = summary(row(device="pi", p50=3.0, status="fail", reasons=["slow"], **second))
    for limits in (LIMITS, LIMITS.model_copy(update={"include_emulated": True})):
        comparison = compare(before, after, limits)
        [pair] = comparison.pairs
        assert (pair.changes, pair.regressions, pair.excluded) == ([], [], reason)
        assert comparison.regressions == [] and comparison.excluded == [f"onnx-fp32@pi: {reason}"]


def test_the_views_and_the_gate_line_say_what_was_not_gated() -> None:
    from tasks.compare.gate import GateResult
    from tasks.compare.view import comparison_markdown

    comparison = compare(summary(row("a-fp32", device="pi", **QEMU), row("b-fp32", device="pi")),
                         summary(row("a-fp32", device="pi", p50=1.5, **QEMU),
                                 row("b-fp32", device="pi", **QEMU)), LIMITS)
    lines = comparison_markdown(comparison, "MLflow run x", "this run").splitlines()
    [a_row] = [line for line in lines if line.startswith("| a-fp32 |")]
    assert a_row.endswith(f"| {NOT_GATED} (1 regression(s), not counted) |")
    [b_row] = [line for line in lines if line.startswith("| b-fp32 |")]
    assert b_row.endswith("| not comparable: physical before, emulated (qemu-user) after |")
    assert f"- not gated: a-fp32@pi: {NOT_GATED}" in lines
    assert not any(line.startswith("- regression:") for line in lines)
    assert GateResult(comparison, "MLflow run x").line() == (
        f"no regression against MLflow run x in 0 pairs (2 not gated: a-fp32@pi: {NOT_GATED}; "
        "b-fp32@pi: not comparable: physical before, emulated (qemu-user) after)")
