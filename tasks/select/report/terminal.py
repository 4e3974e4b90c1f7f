"""The results as a console shows them (rich renderables): the full table on a wide
console, six columns with the reasons listed under them on a narrow one. Texts from
devices are never rich markup here (``[Errno 111] ...`` stays as it is)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tasks.core.contracts.summary import RowStatus, Summary, SummaryRow
from tasks.select.report.cells import (COLUMNS, TEXT_COLUMNS, columns, metric_label, fmt, latency_cell,
                                      reference_line, row_cells, size_kb)

if TYPE_CHECKING:  # rich is imported where a table is drawn
    from rich.console import RenderableType
    from rich.table import Table

STYLES = {RowStatus.PASS: "green", RowStatus.FAIL: "yellow", RowStatus.ERROR: "red",
          RowStatus.SKIPPED: "dim"}

# At this many columns or fewer the full table is unreadable (13 columns and the reasons
# squeezed to a word per line): the terminal gets :func:`compact_summary` instead.
COMPACT_UP_TO = 120
COMPACT_COLUMNS = ("device", "variant", "status", "accuracy", "p90 ms", "size KB")


def _title(summary: Summary) -> str:
    return (f"edgeflow results (fp32 reference {metric_label(summary)} "
            f"{reference_line(summary.reference)})")


def _shown(summary: Summary, include_skipped: bool) -> list[SummaryRow]:
    """The rows a console shows: skipped ones only on request (report.md has them all)."""
    return [row for row in summary.results
            if row.status is not RowStatus.SKIPPED or include_skipped]


def summary_table(summary: Summary, include_skipped: bool = False) -> Table:
    """A rich Table of the results, for the terminal (skipped rows only on request:
    report.md always has them all)."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=_title(summary))
    # The energy column only where a row has an energy: a console has no width to spare
    # for a column of dashes (report.md and report.html always have it).
    shown = [index for index, column in enumerate(COLUMNS)
             if column != "energy mJ" or any(row.energy_mj is not None
                                             for row in summary.results)]
    headers = columns(summary)
    for index in shown:
        column = headers[index]
        table.add_column(column, justify="left" if column in TEXT_COLUMNS else "right")
    table.add_column("reasons / notes")
    for row in _shown(summary, include_skipped):
        # Reasons quote devices and runtimes ("[Errno 111] ..."): never rich markup.
        every = [escape(cell) for cell in row_cells(row)]
        cells = [every[index] for index in shown]
        cells[2] = f"[{STYLES[row.status]}]{cells[2]}[/]"
        table.add_row(*cells, escape(row.remarks()))
    return table


def terminal_summary(summary: Summary, width: int,
                     include_skipped: bool = False) -> list[RenderableType]:
    """What a console ``width`` columns wide prints of the results (rich renderables):
    the full table when it is wider than :data:`COMPACT_UP_TO`, else
    :func:`compact_summary`. report.md and report.html always have the full table."""
    if width > COMPACT_UP_TO:
        return [summary_table(summary, include_skipped)]
    return compact_summary(summary, include_skipped)


def compact_summary(summary: Summary, include_skipped: bool = False) -> list[RenderableType]:
    """The results in six columns (device, variant, status, accuracy, p90, size), each row
    numbered, then its reasons and notes as a list under the table, one entry per row
    that has any (``[2] local tflite-int8: ...``), wrapped to the console's width."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(title=_title(summary), box=box.SIMPLE_HEAD, pad_edge=False,
                  collapse_padding=True, caption="full table: report.md / report.html")
    table.add_column("#", justify="right", no_wrap=True)
    label = metric_label(summary)
    for column in (label if name == "accuracy" else name for name in COMPACT_COLUMNS):
        # Headers stay whole (min_width); long names fold inside their cell.
        table.add_column(column, min_width=len(column), overflow="fold",
                         justify="left" if column in TEXT_COLUMNS else "right")
    # Under the table, one entry per row with reasons or notes: its number, then the text
    # wrapped beside it. Reasons quote devices and runtimes ("[Errno 111] ..."): plain
    # Text, never markup.
    reasons = Table.grid(padding=(0, 1))
    reasons.add_column(justify="right", no_wrap=True)
    reasons.add_column(overflow="fold")
    for number, row in enumerate(_shown(summary, include_skipped), 1):
        p90 = row.latency_ms.p90 if row.latency_ms else None
        table.add_row(str(number), Text(row.device), Text(row.variant),
                      Text(row.status.value, style=STYLES[row.status]),
                      fmt(row.accuracy, ".3f"), latency_cell(row, p90),
                      fmt(size_kb(row), ".1f"))
        said = row.remarks()
        if said:
            reasons.add_row(f"[{number}]", Text(f"{row.device} {row.variant}: {said}"))
    return [table, reasons] if reasons.row_count else [table]
