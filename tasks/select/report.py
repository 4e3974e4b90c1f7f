"""Rendering of a summary (``reports/summary.json``, the document of
:class:`~tasks.core.contracts.summary.Summary`): the Markdown report, the PNG plots and
the terminal table. Pure functions of the summary: no measurement happens here.

Texts from devices reach the summary already visible and capped (:mod:`tasks.farm.untrusted`);
the Markdown report escapes its own syntax in every text it writes
(:func:`markdown_text`), the terminal table rich's markup."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.core.accuracy import format_accuracy

if TYPE_CHECKING:  # numpy is imported where it is used: every command reads this module
    import numpy as np

# "e2e p90 ms": decode + pre-process + infer + post-process (benchmark.end_to_end).
COLUMNS = ("device", "variant", "status", "exec", "accuracy", "drop", "size KB", "p50 ms", "p90 ms",
           "p99 ms", "fps", "e2e p90 ms", "RSS MB")


# What a text cell could turn into table structure, code, links, images or HTML (a
# reason quoting "<script>" from a board). Emphasis (* and _) is left as it is: harmless,
# and names like max_accuracy_drop stay readable in the raw file.
MARKDOWN_ESCAPES = str.maketrans({"\\": "\\\\", "`": "\\`", "|": "\\|", "[": "\\[",
                                  "]": "\\]", "&": "&amp;", "<": "&lt;", ">": "&gt;",
                                  "\n": " ", "\r": " "})


def markdown_text(text: str) -> str:
    """``text`` as literal text in a Markdown table cell or line (GitHub-flavoured):
    ``\\ ` | [ ]`` backslash-escaped, ``& < >`` as HTML entities, one line."""
    return text.translate(MARKDOWN_ESCAPES)


def _fmt(value: Any, pattern: str) -> str:
    return "—" if value is None else format(value, pattern)


def accuracy_cell(accuracy: float | None, samples: int | None) -> str:
    """``0.90 [0.77, 0.96]``: the accuracy with its 95% interval (four decimals when the
    number of images it was measured on is unknown, "—" when nothing was measured)."""
    if accuracy is None:
        return "—"
    return format_accuracy(accuracy, samples) if samples else f"{accuracy:.4f}"


def reference_line(summary: dict[str, Any]) -> str:
    """The fp32 reference accuracy, its interval and the number of test images."""
    samples = summary.get("reference_samples")
    text = accuracy_cell(summary["reference_accuracy"], samples)
    return f"{text} on {samples} test images" if samples else text


def row_cells(row: dict[str, Any]) -> list[str]:
    latency = row.get("latency_ms") or {}
    return [row["device"], row["variant"], row["status"], row.get("execution_precision") or "—",
            accuracy_cell(row.get("accuracy"), row.get("accuracy_samples")),
            _fmt(row.get("accuracy_drop"), ".2%"),
            _fmt(row["size_bytes"] / 1024 if row.get("size_bytes") is not None else None, ".1f"),
            _fmt(latency.get("p50"), ".3f"), _fmt(latency.get("p90"), ".3f"),
            _fmt(latency.get("p99"), ".3f"), _fmt(row.get("throughput_fps"), ".0f"),
            _fmt(((row.get("end_to_end") or {}).get("latency_ms") or {}).get("p90"), ".3f"),
            _fmt(row.get("peak_rss_mb"), ".0f")]


def recommendation_lines(summary: dict[str, Any],
                         text: Callable[[str], str] = str) -> list[str]:
    """One Markdown line per device; ``text`` escapes the names (:func:`markdown_text`
    for the report; the terminal strips the Markdown instead)."""
    lines = []
    for device, variant in summary["recommendations"].items():
        if variant is None:
            lines.append(f"- **{text(device)}**: no variant meets the requirements")
        else:
            why = (summary.get("why_recommended") or {}).get(device)
            lines.append(f"- **{text(device)}**: `{text(variant)}` ("
                         + (text(why) if why else
                            f"best passing by {text(preference_text(summary['rank_by']))}")
                         + ")")
        front = (summary.get("pareto") or {}).get(device)
        if front:
            lines.append(f"  - Pareto frontier (accuracy, p90, size): "
                         f"{', '.join(f'`{text(name)}`' for name in front)}")
    return lines


def runs_on(summary: dict[str, Any]) -> dict[str, list[str]]:
    """The reverse view: every variant (in row order) with the devices it passes on."""
    return {variant: [row["device"] for row in summary["results"]
                      if row["variant"] == variant and row["status"] == "pass"]
            for variant in dict.fromkeys(row["variant"] for row in summary["results"])}


def runs_on_lines(summary: dict[str, Any], text: Callable[[str], str] = str) -> list[str]:
    """:func:`runs_on` as one Markdown line per variant."""
    return [f"- `{text(variant)}`: " + (", ".join(text(device) for device in devices)
                                        or "no device")
            for variant, devices in runs_on(summary).items()]


def preference_text(rank_by: str | list[str]) -> str:
    """A preference order as read: ``latency_p90_ms > accuracy``."""
    return rank_by if isinstance(rank_by, str) else " > ".join(rank_by)


def stated_requirements(requirements: dict[str, Any]) -> str:
    """A device's requirements as ``key=value, ...`` (the unset ones left out; the
    preference order as ``rank_by=a > b``)."""
    return ", ".join(f"{key}={preference_text(value) if key == 'rank_by' else value}"
                     for key, value in requirements.items() if value is not None) or "none"


def render_markdown(summary: dict[str, Any], plots: list[tuple[str, str]]) -> str:
    """The Markdown report; ``plots`` are (title, path relative to the report)."""
    counts = summary["counts"]
    lines = [
        "# edgeflow report", "",
        f"fp32 reference accuracy (Keras, test split, 95% interval): **{reference_line(summary)}**",
        "",
        f"Results: {counts['pass']} pass, {counts['fail']} fail, {counts['error']} error, "
        f"{counts['skipped']} skipped.", "",
        "## Recommendation per device", "", *recommendation_lines(summary, markdown_text), "",
        "## Devices each variant meets the requirements on", "",
        *runs_on_lines(summary, markdown_text), "",
        "## Results", "",
        "| " + " | ".join(COLUMNS) + " | reasons / notes |",
        "|" + "---|" * (len(COLUMNS) + 1),
    ]
    for row in summary["results"]:
        reasons = markdown_text("; ".join(row["reasons"] + row.get("notes", []))) or "—"
        lines.append("| " + " | ".join(map(markdown_text, row_cells(row))) + f" | {reasons} |")
    lines += ["", "Latency is batch 1, per inference, measured by the same harness protocol "
              "on every runtime; accuracy is on the test images the device evaluated, with its 95% "
              "Wilson interval in brackets; drop is relative to the fp32 reference on the same "
              "images; exec is the precision the runtime reports its float arithmetic ran in.", "",
              "## Requirements per device", ""]
    for device, requirements in summary["requirements"].items():
        lines.append(f"- **{markdown_text(device)}**: "
                     f"{markdown_text(stated_requirements(requirements))}")
    lines += ["", "## Plots", "", "The same report with its plots embedded: `report.html`.", ""]
    lines += [f"![{markdown_text(title)}]({path})" for title, path in plots]
    return "\n".join(lines) + "\n"


def write_report(summary: dict[str, Any], reports_dir: Path,
                 latencies: dict[tuple[str, str], np.ndarray]) -> Path:
    """Write ``plots/``, ``report.md`` and ``report.html`` under ``reports_dir``;
    ``latencies`` are the raw ones in ms per (device, variant). Returns report.md."""
    from tasks.select.plots import write_plots
    from tasks.select.report_html import render_html

    plots = write_plots(summary, latencies, reports_dir / "plots")
    (reports_dir / "report.html").write_text(render_html(summary, plots), encoding="utf-8")
    target = reports_dir / "report.md"
    target.write_text(render_markdown(summary, [(plot.title, plot.path.relative_to(reports_dir)
                                                 .as_posix()) for plot in plots]),
                      encoding="utf-8")
    return target


def summary_table(summary: dict[str, Any], include_skipped: bool = False) -> Any:
    """A rich Table of the results, for the terminal (skipped rows only on request:
    report.md always has them all)."""
    from rich.markup import escape
    from rich.table import Table

    styles = {"pass": "green", "fail": "yellow", "error": "red", "skipped": "dim"}
    table = Table(title=f"edgeflow results (fp32 reference accuracy {reference_line(summary)})")
    for column in COLUMNS:
        table.add_column(column, justify="left" if column in {"device", "variant", "status", "exec"} else "right")
    table.add_column("reasons / notes")
    for row in summary["results"]:
        if row["status"] == "skipped" and not include_skipped:
            continue
        # Reasons quote devices and runtimes ("[Errno 111] ..."): never rich markup.
        cells = [escape(cell) for cell in row_cells(row)]
        cells[2] = f"[{styles[row['status']]}]{cells[2]}[/]"
        table.add_row(*cells, escape("; ".join(row["reasons"] + row.get("notes", []))))
    return table


# At this many columns or fewer the full table is unreadable (13 columns and the reasons
# squeezed to a word per line): the terminal gets :func:`compact_summary` instead.
COMPACT_UP_TO = 120
COMPACT_COLUMNS = ("device", "variant", "status", "accuracy", "p90 ms", "size KB")


def terminal_summary(summary: dict[str, Any], width: int,
                     include_skipped: bool = False) -> list[Any]:
    """What a console ``width`` columns wide prints of the results (rich renderables):
    the full table when it is wider than :data:`COMPACT_UP_TO`, else
    :func:`compact_summary`. report.md and report.html always have the full table."""
    if width > COMPACT_UP_TO:
        return [summary_table(summary, include_skipped)]
    return compact_summary(summary, include_skipped)


def compact_summary(summary: dict[str, Any], include_skipped: bool = False) -> list[Any]:
    """The results in six columns (device, variant, status, accuracy, p90, size), each row
    numbered, then its reasons and notes as a list under the table, one entry per row
    that has any (``[2] local tflite-int8: ...``), wrapped to the console's width."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    styles = {"pass": "green", "fail": "yellow", "error": "red", "skipped": "dim"}
    table = Table(title=f"edgeflow results (fp32 reference accuracy {reference_line(summary)})",
                  box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True,
                  caption="full table: report.md / report.html")
    table.add_column("#", justify="right", no_wrap=True)
    for column in COMPACT_COLUMNS:
        # Headers stay whole (min_width); long names fold inside their cell.
        table.add_column(column, min_width=len(column), overflow="fold",
                         justify="left" if column in {"device", "variant", "status"} else "right")
    # Under the table, one entry per row with reasons or notes: its number, then the text
    # wrapped beside it. Reasons quote devices and runtimes ("[Errno 111] ..."): plain
    # Text, never markup.
    reasons = Table.grid(padding=(0, 1))
    reasons.add_column(justify="right", no_wrap=True)
    reasons.add_column(overflow="fold")
    rows = [row for row in summary["results"] if row["status"] != "skipped" or include_skipped]
    for number, row in enumerate(rows, 1):
        latency = row.get("latency_ms") or {}
        size = row["size_bytes"] / 1024 if row.get("size_bytes") is not None else None
        table.add_row(str(number), Text(row["device"]), Text(row["variant"]),
                      Text(row["status"], style=styles[row["status"]]),
                      _fmt(row.get("accuracy"), ".3f"), _fmt(latency.get("p90"), ".3f"),
                      _fmt(size, ".1f"))
        said = "; ".join(row["reasons"] + row.get("notes", []))
        if said:
            reasons.add_row(f"[{number}]", Text(f"{row['device']} {row['variant']}: {said}"))
    return [table, reasons] if reasons.row_count else [table]
