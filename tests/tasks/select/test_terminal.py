"""What a console prints of the results: the full table past 120 columns, the compact one
(numbered rows, the reasons under them) at 120 or fewer; skipped rows only on request."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from tasks.core.contracts.summary import Summary
from tasks.select.report.cells import COLUMNS
from tasks.select.report.terminal import COMPACT_COLUMNS, COMPACT_UP_TO, terminal_summary
from tests.tasks.select.summaries import summary_of, summary_row


def summary() -> Summary:
    return summary_of([summary_row("a", "pi", accuracy=0.9, size_bytes=2048,
                                   latency_ms={"p50": 1.0, "p90": 2.0, "p99": 3.0, "mean": 1.0}),
                       summary_row("b", "pi", "fail", reasons=["[Errno 111] slow"]),
                       summary_row("c", "pi", "skipped", reasons=["no runtime"])], {"pi": "a"})


def headers(table: Table) -> list[str]:
    return [str(column.header) for column in table.columns]


def test_a_wide_console_gets_the_full_table_and_a_narrow_one_the_compact_one() -> None:
    [full] = terminal_summary(summary(), COMPACT_UP_TO + 1)
    assert headers(full) == [*COLUMNS, "reasons / notes"] and full.row_count == 2
    compact, reasons = terminal_summary(summary(), COMPACT_UP_TO)
    assert headers(compact) == ["#", *COMPACT_COLUMNS] and compact.row_count == 2
    console = Console(width=80, record=True, color_system=None)
    console.print(reasons)
    assert console.export_text().split() == ["[2]", "pi", "b:", "[Errno", "111]", "slow"]


def test_skipped_rows_are_shown_on_request() -> None:
    [full] = terminal_summary(summary(), 200, include_skipped=True)
    assert full.row_count == 3
    compact, _ = terminal_summary(summary(), 80, include_skipped=True)
    assert compact.row_count == 3


def four_statuses() -> Summary:
    timed = {"p50": 1.0, "p90": 2.0, "p99": 3.0, "mean": 1.5}
    return summary_of([summary_row("a", "pi", "pass", accuracy=0.9, size_bytes=2048,
                                   latency_ms=timed),
                       summary_row("b", "pi", "fail"), summary_row("c", "pi", "error"),
                       summary_row("d", "pi", "skipped")], {"pi": "a"})


def test_the_full_table_colours_the_status_cell_by_status() -> None:
    [full] = terminal_summary(four_statuses(), 200, include_skipped=True)
    cells = {str(column.header): list(column.cells) for column in full.columns}
    assert cells["status"] == ["[green]pass[/]", "[yellow]fail[/]", "[red]error[/]",
                               "[dim]skipped[/]"]
    assert cells["variant"] == ["a", "b", "c", "d"] and cells["device"] == ["pi"] * 4


def test_the_compact_table_shows_p90_and_colours_the_status() -> None:
    compact, *_ = terminal_summary(four_statuses(), 80, include_skipped=True)
    cells = {str(column.header): list(column.cells) for column in compact.columns}
    assert [str(text) for text in cells["status"]] == ["pass", "fail", "error", "skipped"]
    assert [text.style for text in cells["status"]] == ["green", "yellow", "red", "dim"]
    assert [cells[column][0] for column in ("accuracy", "p90 ms", "size KB")] == [
        "0.900", "2.000", "2.0"]
    assert cells["p90 ms"][1:] == ["—"] * 3
