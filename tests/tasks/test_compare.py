"""The regression gate: a change is a regression only when it exceeds its threshold and
the two runs' 95% intervals do not overlap; a pass that no longer passes is one too."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
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


# ------------------------------------------------------------ every status through every view
# (issue 27) Each status a row can have in either run (RowStatus, so a new one joins), and
# a row one run lacks, on each kind of board pairing, gated or not, with the later run 20%
# slower: the pair, the gate's line and whether it marks the run, the Markdown and the
# terminal tables (and `edgeflow compare`'s lines and exit code: test_compare_cli.py) all
# say the same, exactly. Beside it, an unchanged control pair on another device, so that
# each count (regressions, gated pairs, pairs not gated) is told apart from the total.

MISSING = "missing"  # the row is not in that run (a variant or a device added or gone)
STATUSES = [status.value for status in RowStatus]
MEASURED = {RowStatus.PASS.value, RowStatus.FAIL.value}  # error and skipped rows have no numbers
BOARDS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "physical": ({}, {}), "emulated": (QEMU, QEMU),
    "emulated before": (QEMU, {}), "emulated after": ({}, QEMU)}
NOT_COMPARABLE = {
    "emulated before": "not comparable: emulated (qemu-user) before, physical after",
    "emulated after": "not comparable: physical before, emulated (qemu-user) after"}
SLOWER = ["p50 +20.0% (1 -> 1.2 ms; threshold 0.1, intervals apart)",
          "p90 +20.0% (2 -> 2.4 ms; threshold 0.1, intervals apart)"]
UNCHANGED_CELLS = ["0.950 [0.940, 0.960] -> 0.950 [0.940, 0.960] (+0.000)", "97.7 KB"]
CONTROL = ("| c-fp32 | x86 | pass | " + " | ".join(UNCHANGED_CELLS) +
           " | 1±1.0% -> 1±1.0% (+0.0%) | 2±1.0% -> 2±1.0% (+0.0%) | ok |")


def walked_row(status: str, slower: bool, marks: dict[str, Any]) -> dict[str, Any]:
    """The walked variant's row: timed when its status is one select measures (+20% when
    ``slower``), else only its identity and size, as select writes an error row."""
    timed = row("v-fp32", p50=1.2 if slower else 1.0, p90=2.4 if slower else 2.0,
                status=status, reasons=[] if status == "pass" else [f"why {status}", "and"],
                **marks)
    if status in MEASURED:
        return timed
    return {**timed, **{key: None for key in (
        "accuracy", "accuracy_samples", "accuracy_interval", "accuracy_drop", "latency_ms",
        "latency_ci95_ms", "throughput_fps", "peak_rss_mb", "load_ms")}}


@dataclass(frozen=True)
class Walk:
    """Two runs of one walked case and what every view must say of them."""

    before: Summary
    after: Summary
    limits: CompareParams
    paired: bool
    reasons: list[str]  # the walked pair's regressions, counted or not
    excluded: str | None  # why the walked pair is left out of the verdict
    changes: list[str]  # the measures both runs have
    cells: list[str]  # its accuracy, size, p50 and p90 cells, as the Markdown shows them
    status_cell: str

    @property
    def counted(self) -> list[str]:
        """The regressions the verdict counts, as the gate names them."""
        return ([f"v-fp32@local: {reason}" for reason in self.reasons]
                if self.paired and self.excluded is None else [])

    @property
    def not_gated(self) -> list[str]:
        return [f"v-fp32@local: {self.excluded}"] if self.paired and self.excluded else []

    @property
    def gated_pairs(self) -> int:
        return 1 + (self.paired and self.excluded is None)  # the control, and the walked one

    @property
    def verdict(self) -> str:
        """The walked pair's verdict cell (Markdown)."""
        if self.counted:
            return "**REGRESSION**"
        if self.excluded is None:
            return "ok"
        shown = f" ({len(self.reasons)} regression(s), not counted)" if self.reasons else ""
        return self.excluded + shown


def walk(before: str, after: str, board: str, include_emulated: bool) -> Walk:
    first, second = BOARDS[board]
    control = row("c-fp32", device="x86")
    runs = [summary(*([] if status == MISSING else [walked_row(status, slower, marks)]),
                    control)
            for status, slower, marks in ((before, False, first), (after, True, second))]
    limits = LIMITS.model_copy(update={"include_emulated": include_emulated})
    paired = MISSING not in (before, after)
    status_cell = after if before == after else f"{before} -> {after}"
    if not paired or board in NOT_COMPARABLE:
        return Walk(*runs, limits, paired, [], NOT_COMPARABLE.get(board) if paired else None,
                    [], ["", "", "", ""], status_cell)
    timed = before in MEASURED and after in MEASURED
    reasons = [f"status pass -> {after} (why {after}; and)"] if (
        before == "pass" and after != "pass") else []
    reasons += SLOWER if timed else []
    cells = [*UNCHANGED_CELLS, "1±1.0% -> 1.2±1.0% (+20.0%)", "2±1.0% -> 2.4±1.0% (+20.0%)"] \
        if timed else ["", "97.7 KB", "", ""]
    excluded = NOT_GATED if board == "emulated" and not include_emulated else None
    return Walk(*runs, limits, paired, reasons, excluded,
                ["accuracy", "size", "p50", "p90"] if timed else ["size"], cells, status_cell)


def walked_cases() -> list[Any]:
    return [pytest.param(before, after, board, include,
                         id=f"{before}-{after}-{board.replace(' ', '_')}-{include}")
            for before in [*STATUSES, MISSING] for after in [*STATUSES, MISSING]
            if (before, after) != (MISSING, MISSING)
            for board in BOARDS for include in (False, True)]


def sampled_cases() -> list[Any]:
    """Every status pair on a physical board; on the other pairings, a pass that fails and
    a fail that slows: each pairing's own effect, for the views of a comparison that cost
    more per case (a command in process, some 50 ms); the full walk stays here."""
    return [case for case in walked_cases()
            if case.values[2:] == ("physical", False)
            or (case.values[2] != "physical" and case.values[:2] in {("pass", "fail"),
                                                                      ("fail", "fail")})]


def gate_line(case: Walk) -> str:
    """The gate's line, its counts written out for each kind of case."""
    left_out = f" (1 not gated: {case.not_gated[0]})" if case.not_gated else ""
    if not case.counted:
        return f"no regression against MLflow run x in {case.gated_pairs} pairs{left_out}"
    many = {1: "1 regression", 2: "2 regressions", 3: "3 regressions"}[len(case.counted)]
    return f"{many} against MLflow run x: {'; '.join(case.counted)}{left_out}"


@pytest.mark.parametrize(("before", "after", "board", "include"), walked_cases())
def test_every_status_on_every_board_pairing_goes_through_the_comparison_and_the_gate(
        before: str, after: str, board: str, include: bool) -> None:
    from tasks.compare.gate import GateResult

    case = walk(before, after, board, include)
    comparison = compare(case.before, case.after, case.limits)
    walked = [pair for pair in comparison.pairs if pair.variant == "v-fp32"]
    assert [(pair.status_before, pair.status_after, [change.measure for change in pair.changes],
             pair.regressions, pair.excluded, pair.regressed) for pair in walked] == (
        [(before, after, case.changes, case.reasons, case.excluded, bool(case.counted))]
        if case.paired else [])
    assert [pair.variant for pair in comparison.pairs] == (
        ["v-fp32", "c-fp32"] if case.paired else ["c-fp32"])
    assert (comparison.only_before, comparison.only_after) == (
        ["v-fp32@local"] if after == MISSING else [],
        ["v-fp32@local"] if before == MISSING else [])
    assert comparison.regressions == case.counted
    assert comparison.excluded == case.not_gated
    assert GateResult(comparison, "MLflow run x").line() == gate_line(case)


@pytest.mark.parametrize(("before", "after", "board", "include"), walked_cases())
def test_every_status_on_every_board_pairing_reads_the_same_in_both_tables(
        before: str, after: str, board: str, include: bool) -> None:
    from tasks.compare.view import comparison_markdown, comparison_table

    case = walk(before, after, board, include)
    comparison = compare(case.before, case.after, case.limits)
    walked = [f"| v-fp32 | local | {case.status_cell} | {' | '.join(case.cells)} | "
              f"{case.verdict} |"] if case.paired else []
    assert comparison_markdown(comparison, "x", "y").splitlines() == [
        "# edgeflow: x -> y", "",
        "| variant | device | status | accuracy | size | p50 ms | p90 ms | verdict |",
        "|---|---|---|---|---|---|---|---|", *walked, CONTROL, "",
        *[f"- regression: {line}" for line in case.counted],
        *[f"- not gated: {line}" for line in case.not_gated]]

    table = comparison_table(comparison, "x", "y")
    assert [column.header for column in table.columns] == [
        "variant", "device", "status", "accuracy", "size", "p50 ms", "p90 ms", "verdict"]
    rows = list(zip(*[column.cells for column in table.columns]))
    red = [f"[bold red]{cell}[/]" if cell and case.reasons and measure in ("p50", "p90")
           else cell for measure, cell in zip(["accuracy", "size", "p50", "p90"], case.cells)]
    verdict = "[bold red]REGRESSION[/]" if case.counted else case.verdict
    assert [list(cells) for cells in rows[:-1]] == (
        [["v-fp32", "local", case.status_cell, *red, verdict]] if case.paired else [])
    assert list(rows[-1])[:3] == ["c-fp32", "x86", "pass"] and rows[-1][-1] == "ok"


# ------------------------------------------------------------------- each measure's judgement
# (issue 27) Each measure moved alone, with values where the alternatives differ: a
# relative change and an absolute one on opposite sides of the threshold, each measure at
# its own threshold (they differ: 0.10, 0.01, 0.05) and just past it, intervals that touch
# and ones a hair apart, an interval in one run only. Written out per measure, not read
# from MEASURES, so that a flag flipped there fails; a new measure must be added here.

KINDS = {"accuracy": "absolute, higher is better", "size": "relative, lower is better",
         "p50": "relative, lower is better", "p90": "relative, lower is better"}


def test_every_measure_is_judged_here() -> None:
    from tasks.compare import MEASURES

    assert list(KINDS) == list(MEASURES)


@pytest.mark.parametrize("name", ["p50", "p90", "p99", "mean"])
def test_a_latency_measure_reads_its_own_figure_and_threshold(name: str) -> None:
    # Made here, not read from MEASURES (built at import, where a mutation run cannot
    # see it): a row without latencies has none, the threshold is latency_increase.
    from tasks.compare import _latency

    measure = _latency(name)
    measured = SummaryRow.model_validate(row(p50=3.0, p90=5.0))
    figures = {"p50": 3.0, "p90": 5.0, "p99": 7.5, "mean": 3.3000000000000003}
    assert measure.value(measured) == figures[name]
    assert measure.value(SummaryRow.model_validate({**row(), "latency_ms": None})) is None
    assert measure.interval(measured) == (
        (figures[name] * 0.99, figures[name] * 1.01) if name in ("p50", "p90") else None)
    assert measure.threshold(LIMITS) == 0.10 and measure.threshold(
        CompareParams(latency_increase=0.25)) == 0.25
    assert (measure.higher_is_better, measure.relative, measure.unit) == (False, True, "ms")


def moved(measure: str, value: float, interval: list[float] | None) -> dict[str, Any]:
    """A row without intervals (unless ``interval``, the moved measure's), ``measure``
    set to ``value``."""
    moved_row = {**row(ci=False), "accuracy_interval": None}
    if measure == "accuracy":
        return {**moved_row, "accuracy": value, "accuracy_interval": interval}
    if measure == "size":
        return {**moved_row, "size_bytes": int(value)}
    return {**moved_row, "latency_ms": {**moved_row["latency_ms"], measure: value},
            **({"latency_ci95_ms": {measure: interval}} if interval else {})}


NONE = ", no intervals to check"
APART = ", intervals apart"
JUDGED = [
    # Relative and absolute on opposite sides: 10 -> 10.5 ms is +5% (under 0.10) but
    # +0.5 ms; 0.1 -> 0.125 ms is +25% but +0.025 ms; 0.5 -> 0.494 is -0.006 (under 0.01)
    # but -1.2%; 1000000 -> 1000100 B is +0.01% but +100 B.
    *[(m, 10.0, 10.5, None, None, None) for m in ("p50", "p90")],
    *[(m, 0.1, 0.125, None, None, f"{m} +25.0% (0.1 -> 0.125 ms; threshold 0.1{NONE})")
      for m in ("p50", "p90")],
    ("accuracy", 0.5, 0.494, None, None, None),
    ("size", 1_000_000, 1_000_100, None, None, None),
    # Better, by far: never a regression.
    ("accuracy", 0.5, 0.9, None, None, None), ("size", 100_000, 50_000, None, None, None),
    *[(m, 2.0, 0.5, None, None, None) for m in ("p50", "p90")],
    # At its own threshold (in floats a hair past it), then just past it.
    ("accuracy", 0.9, 0.89, None, None, None),
    ("accuracy", 0.9, 0.8899, None, None,
     f"accuracy -0.0101 (0.9 -> 0.8899; threshold 0.01{NONE})"),
    ("size", 100_000, 105_000, None, None, None),
    ("size", 100_000, 105_001, None, None,
     f"size +5.0% (100000 -> 105001 B; threshold 0.05{NONE})"),
    *[(m, 3.0, 3.3, None, None, None) for m in ("p50", "p90")],
    *[(m, 3.0, 3.3003, None, None, f"{m} +10.0% (3 -> 3.3003 ms; threshold 0.1{NONE})")
      for m in ("p50", "p90")],
    # Intervals that touch overlap (noise); a hair apart, they do not; one run's alone
    # cannot say, and the threshold decides.
    *[(m, 1.0, 1.2, [0.9, 1.1], [1.1, 1.3], None) for m in ("p50", "p90")],
    *[(m, 1.0, 1.2, [0.9, 1.1], [1.1001, 1.3], f"{m} +20.0% (1 -> 1.2 ms; threshold 0.1{APART})")
      for m in ("p50", "p90")],
    *[(m, 1.0, 1.2, *sides, f"{m} +20.0% (1 -> 1.2 ms; threshold 0.1{NONE})")
      for m in ("p50", "p90") for sides in (([0.9, 1.1], None), (None, [1.1001, 1.3]))],
    ("accuracy", 0.9, 0.85, [0.88, 0.92], [0.82, 0.88], None),
    ("accuracy", 0.9, 0.85, [0.88, 0.92], [0.82, 0.8799],
     f"accuracy -0.0500 (0.9 -> 0.85; threshold 0.01{APART})"),
    ("accuracy", 0.9, 0.85, [0.88, 0.92], None,
     f"accuracy -0.0500 (0.9 -> 0.85; threshold 0.01{NONE})"),
    ("accuracy", 0.9, 0.85, None, [0.82, 0.8799],
     f"accuracy -0.0500 (0.9 -> 0.85; threshold 0.01{NONE})"),
]


@pytest.mark.parametrize(("measure", "before", "after", "before_ci", "after_ci", "regression"),
                         JUDGED)
def test_each_measure_alone_is_judged_on_its_own_kind_threshold_and_intervals(
        measure: str, before: float, after: float, before_ci: list[float] | None,
        after_ci: list[float] | None, regression: str | None) -> None:
    [pair] = compare(summary(moved(measure, before, before_ci)),
                     summary(moved(measure, after, after_ci)), LIMITS).pairs
    # Only the moved measure changed, and only it can be named.
    assert [(change.measure, change.before, change.after) for change in pair.changes
            if change.before != change.after] == [(measure, before, after)]
    assert pair.regressions == ([regression] if regression else [])
    [change] = [change for change in pair.changes if change.measure == measure]
    assert (change.before_interval, change.after_interval) == (
        tuple(before_ci) if before_ci else None, tuple(after_ci) if after_ci else None)
    assert change.regression == regression


@pytest.fixture(scope="module")
def gated_project(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A project folder whose run tracked as ``run-now`` (its summary rewritten per case)."""
    from tasks.core.files import write_json
    from tasks.core.layout import Layout

    layout = Layout(tmp_path_factory.mktemp("gated"))
    write_json(layout.tracking_record, {"parent_run_id": "run-now"})
    return layout


def gate_of(layout: Any, baseline: Summary, after: Summary, limits: CompareParams,
            monkeypatch: pytest.MonkeyPatch) -> tuple[Any, list[Any], list[Any]]:
    """:func:`~tasks.compare.gate.regression_gate` of ``after`` against ``baseline`` (the
    previous run's, from MLflow here); the gate, what it asked MLflow for and what it
    marked regressed."""
    from tasks.compare import gate
    from tasks.core.contracts.summary import write_summary

    write_summary(layout.summary, after)
    asked: list[Any] = []
    marked: list[Any] = []
    monkeypatch.setattr(gate, "previous_run_summary", lambda where, current: (
        asked.append((where, current)) or (baseline, "MLflow run x")))
    monkeypatch.setattr(gate, "mark_regressed", lambda where, run: marked.append((where, run)))
    return gate.regression_gate(layout, limits), asked, marked


@pytest.mark.parametrize(("before", "after", "board", "include"), walked_cases())
def test_every_status_on_every_board_pairing_marks_the_run_only_when_the_gate_fails(
        before: str, after: str, board: str, include: bool, gated_project: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The run a counted regression fails is tagged (never a baseline again); a pair
    shown but not gated, gone, new or not comparable never marks it."""
    case = walk(before, after, board, include)
    gated, asked, marked = gate_of(gated_project, case.before, case.after, case.limits,
                                   monkeypatch)
    assert asked == [(gated_project, "run-now")]
    assert gated.comparison.regressions == case.counted and gated.line() == gate_line(case)
    assert marked == ([(gated_project, "run-now")] if case.counted else [])


def test_a_run_that_logged_no_mlflow_run_is_gated_but_never_marked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.core.layout import Layout

    case = walk("pass", "error", "physical", False)
    gated, asked, marked = gate_of(Layout(tmp_path), case.before, case.after, case.limits,
                                   monkeypatch)
    assert asked == [(Layout(tmp_path), None)] and marked == []
    assert gated.comparison.regressions == ["v-fp32@local: status pass -> error (why error; and)"]
