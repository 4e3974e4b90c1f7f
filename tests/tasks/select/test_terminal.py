"""What a console prints of the results: the full table past 120 columns, the compact one
(numbered rows, the reasons under them) at 120 or fewer; skipped rows only on request."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console
from rich.table import Table

from tasks.core.contracts.summary import RowStatus, Summary
from tasks.select.report.cells import COLUMNS
from tasks.select.report.terminal import (COMPACT_COLUMNS, COMPACT_UP_TO, STYLES,
                                          terminal_summary)
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
    # No row has an energy: the console leaves its column out (report.md has it).
    assert headers(full) == [*COLUMNS[:-1], "reasons / notes"] and full.row_count == 2
    # Text columns read from the left, figures line up on the right; the notes as text.
    assert [column.justify for column in full.columns] == [
        "left" if name in {"device", "variant", "status", "exec"} else "right"
        for name in COLUMNS[:-1]] + ["left"]
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


def every_status() -> Summary:
    """A row of each status, with figures where the wrong field or unit would show: p50
    and p90 differ, sizes whose KB differ from kB, an emulated board's timing."""
    def timed(p50: float, p90: float) -> dict:
        return {"p50": p50, "p90": p90, "p99": p90 * 2, "mean": p50}

    rows = {
        RowStatus.PASS: summary_row("tflite-int8", "pi5", "pass", accuracy=0.91264,
                                    accuracy_samples=360, size_bytes=2560,
                                    latency_ms=timed(1.25, 2.3456)),
        RowStatus.FAIL: summary_row("onnx-fp32", "pi5", "fail", accuracy=0.8,
                                    size_bytes=1048576, latency_ms=timed(10.0, 12.0),
                                    reasons=["p90 latency 12.000 ms > max_latency_p90_ms 5"],
                                    notes=["[Errno 111] quoted"]),
        RowStatus.ERROR: summary_row("openvino-fp16", "qemu-aarch64", "error",
                                     reasons=["the harness exited 1"]),
        RowStatus.SKIPPED: summary_row("edgetpu-int8", "pi5", "skipped",
                                       reasons=["runtime edgetpu is not on this device"])}
    assert set(rows) == set(RowStatus), "a row for every status"
    emulated = summary_row("onnx-int8", "qemu-aarch64", "pass", accuracy=0.9, size_bytes=1000,
                           latency_ms=timed(3.0, 4.0), emulated=True)
    return summary_of([*rows.values(), emulated], {"pi5": "tflite-int8"},
                      reference_samples=360)


def printed_at_80_columns(renderables: list) -> list[str]:
    console = Console(width=80, record=True, color_system=None, file=io.StringIO())
    for renderable in renderables:
        console.print(renderable)
    return [line.rstrip() for line in console.export_text().splitlines()]


def test_the_compact_summary_at_80_columns_reads_exactly() -> None:
    """Numbered rows of every status in six columns (p90 to a thousandth, not p50; size
    in KB of 1024 bytes; an emulated board's timing marked), the caption, then each row's
    reasons and notes under its number, wrapped at 80 (a row with none has no entry);
    skipped rows only with --all, the rows numbered as shown."""
    assert printed_at_80_columns(terminal_summary(every_status(), 80,
                                                  include_skipped=True)) == [
        "edgeflow results (fp32 reference accuracy 0.90 [0.86, 0.93] on 360 test",
        "                                images)",
        "",
        " #  device        variant        status   accuracy     p90 ms  size KB",
        " " + "\u2500" * 69,
        " 1  pi5           tflite-int8    pass        0.913      2.346      2.5",
        " 2  pi5           onnx-fp32      fail        0.800     12.000   1024.0",
        " 3  qemu-aarch64  openvino-fp16  error           \u2014          \u2014        \u2014",
        " 4  pi5           edgetpu-int8   skipped         \u2014          \u2014        \u2014",
        " 5  qemu-aarch64  onnx-int8      pass        0.900  4.000 emu      1.0",
        "",
        "                  full table: report.md / report.html",
        "[2] pi5 onnx-fp32: p90 latency 12.000 ms > max_latency_p90_ms 5; [Errno 111]",
        "    quoted",
        "[3] qemu-aarch64 openvino-fp16: the harness exited 1",
        "[4] pi5 edgetpu-int8: runtime edgetpu is not on this device"]
    assert printed_at_80_columns(terminal_summary(every_status(), 80)) == [
        "  edgeflow results (fp32 reference accuracy 0.90 [0.86, 0.93] on 360",
        "                             test images)",
        "",
        " #  device        variant        status  accuracy     p90 ms  size KB",
        " " + "\u2500" * 68,
        " 1  pi5           tflite-int8    pass       0.913      2.346      2.5",
        " 2  pi5           onnx-fp32      fail       0.800     12.000   1024.0",
        " 3  qemu-aarch64  openvino-fp16  error          \u2014          \u2014        \u2014",
        " 4  qemu-aarch64  onnx-int8      pass       0.900  4.000 emu      1.0",
        "",
        "                 full table: report.md / report.html",
        "[2] pi5 onnx-fp32: p90 latency 12.000 ms > max_latency_p90_ms 5; [Errno 111]",
        "    quoted",
        "[3] qemu-aarch64 openvino-fp16: the harness exited 1"]


def test_without_reasons_or_notes_the_compact_summary_is_the_table_alone() -> None:
    timed = {"p50": 1.0, "p90": 2.0, "p99": 3.0, "mean": 1.5}
    quiet = summary_of([summary_row("a", "pi", accuracy=0.9, latency_ms=timed)], {"pi": "a"})
    [table] = terminal_summary(quiet, 80)
    assert table.row_count == 1


@pytest.mark.parametrize("status", list(RowStatus))
def test_each_status_has_its_own_colour_in_both_tables(status: RowStatus) -> None:
    assert STYLES[status] == {"pass": "green", "fail": "yellow", "error": "red",
                              "skipped": "dim"}[status.value]
    one = summary_of([summary_row("a", "pi", status.value)], {"pi": None})
    [full] = terminal_summary(one, COMPACT_UP_TO + 1, include_skipped=True)
    compact, *_ = terminal_summary(one, COMPACT_UP_TO, include_skipped=True)
    assert list(full.columns[2].cells) == [f"[{STYLES[status]}]{status.value}[/]"]
    [cell] = compact.columns[3].cells
    assert (str(cell), cell.style) == (status.value, STYLES[status])


def test_a_detectors_results_name_their_score_map50_everywhere() -> None:
    """A detection experiment's accuracy is its mAP@0.5: the terminal's tables, their
    titles, report.md, report.html and the run page say so; classification's say
    accuracy."""
    from flows.run_page import recommendations_markdown, results_rows
    from tasks.select.report.html import render_html
    from tasks.select.report.markdown import render_markdown

    detection = summary().model_copy(update={"task": "detection"})
    [full] = terminal_summary(detection, COMPACT_UP_TO + 1)
    assert headers(full)[4] == "mAP@0.5" and "accuracy" not in headers(full)
    assert str(full.title).startswith("edgeflow results (fp32 reference mAP@0.5 0.9")
    compact = terminal_summary(detection, COMPACT_UP_TO)[0]
    assert headers(compact) == ["#", "device", "variant", "status", "mAP@0.5", "p90 ms",
                                "size KB"]
    markdown = render_markdown(detection, [])
    assert "fp32 reference mAP@0.5 (source model" in markdown
    assert "| device | variant | status | exec | mAP@0.5 | drop |" in markdown
    bootstrap = ("mAP@0.5 is on the test images the device evaluated, with its 95% bootstrap "
                 "interval (images resampled) in brackets")
    assert bootstrap in markdown and "Wilson" not in markdown
    pareto = detection.model_copy(update={"pareto": {device: ["a"] for device
                                                     in detection.recommendations}})
    assert "Pareto frontier (mAP@0.5, p90, size): `a`" in render_markdown(pareto, [])
    assert "Pareto frontier (mAP@0.5, p90, size): <code>a</code>" in render_html(pareto, [])
    html = render_html(detection, [])
    assert "<th>mAP@0.5</th>" in html and "fp32 reference mAP@0.5 (source model" in html
    assert bootstrap in html and "Wilson" not in html
    assert "mAP@0.5" in results_rows(detection)[0]
    assert "fp32 reference mAP@0.5: " in recommendations_markdown(detection, "ok", Path("x"))
    [plain] = terminal_summary(summary(), COMPACT_UP_TO + 1)
    assert headers(plain)[4] == "accuracy"
    plain_markdown = render_markdown(summary(), [])
    assert "fp32 reference accuracy (source model" in plain_markdown
    assert ("accuracy is on the test images the device evaluated, with its 95% Wilson interval "
            "in brackets") in plain_markdown
    assert "with its 95% Wilson interval in brackets" in render_html(summary(), [])


def test_the_energy_column_shows_only_where_a_row_has_an_energy() -> None:
    from tasks.select.report.terminal import summary_table
    from tests.tasks.select.summaries import summary_of, summary_row

    plain = summary_of([summary_row("onnx-fp32")], {"local": "onnx-fp32"})
    assert "energy mJ" not in [column.header for column in summary_table(plain).columns]
    energetic = summary_of([summary_row("onnx-fp32", energy_mj=2.5, energy_source="estimated")],
                           {"local": "onnx-fp32"})
    table = summary_table(energetic)
    headers = [column.header for column in table.columns]
    assert headers[-2:] == ["energy mJ", "reasons / notes"]
    assert list(table.columns[-2].cells) == ["~2.5 est"]
