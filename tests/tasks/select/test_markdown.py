"""The Markdown lines of a summary: a device's recommendation with its reason (or the
preference order when none was stated), the Pareto frontier, an unserved device, and
every name escaped in the report's flavour."""

from __future__ import annotations

import re

from tasks.select.report.cells import COLUMNS
from tasks.select.report.markdown import (markdown_text, recommendation_lines, render_markdown,
                                          runs_on_lines)
from tests.tasks.select.summaries import summary_of, summary_row


def test_each_device_gets_its_recommendation_and_why() -> None:
    rows = [summary_row("a|b", "pi"), summary_row("c", "board", "fail", reasons=["slow"])]
    summary = summary_of(rows, {"pi": "a|b", "board": None},
                         rank_by=["latency_p90_ms", "accuracy"], pareto={"pi": ["a|b"]})
    assert recommendation_lines(summary) == [
        "- **pi**: `a|b` (best passing by latency_p90_ms > accuracy)",
        "  - Pareto frontier (accuracy, p90, size): `a|b`",
        "- **board**: no variant meets the requirements"]
    why = summary.model_copy(update={"why_recommended": {"pi": "the only one"}})
    assert recommendation_lines(why, markdown_text)[0] == "- **pi**: `a\\|b` (the only one)"


def test_the_report_counts_lists_and_escapes_every_row() -> None:
    rows = [summary_row("a", "pi"), summary_row("b", "pi", "error", reasons=["<b>|x"])]
    report = render_markdown(summary_of(rows, {"pi": "a"}), [("p90 [all]", "plots/p.png")])
    assert "Results: 1 pass, 0 fail, 1 error, 0 skipped." in report
    assert "fp32 reference accuracy (source model, test split, 95% interval): **0.9000**" in report
    table = [line for line in report.splitlines() if line.startswith("| pi |")]
    assert len(table) == 2 and table[1].endswith(" | &lt;b&gt;\\|x |")
    assert report.endswith("![p90 \\[all\\]](plots/p.png)\n")


def test_the_results_table_has_one_column_per_cell_in_every_line() -> None:
    # GitHub renders a table only when the separator has as many cells as the header.
    rows = [summary_row("a", "pi"), summary_row("b|c", "pi", "fail", reasons=["x|y"])]
    report = render_markdown(summary_of(rows, {"pi": "a"}), []).splitlines()
    start = report.index("| " + " | ".join(COLUMNS) + " | reasons / notes |")
    header, separator, *body = report[start:start + 2 + len(rows)]
    pipes = len(COLUMNS) + 2  # a | before each cell (the columns and the reasons), one after
    assert pipes == 16  # today's 14 columns
    assert separator == "|" + "---|" * (len(COLUMNS) + 1)
    assert separator == "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    assert separator.count("---") == len(COLUMNS) + 1
    for line in [header, separator, *body]:
        assert len(re.findall(r"(?<!\\)\|", line)) == pipes, line
    assert len(body) == 2 and body[1].startswith("| pi | b\\|c | fail |")
    assert report[start + 2 + len(rows)] == ""  # and nothing else in the table


def test_the_reverse_view_and_the_frontier_escape_and_list_every_name() -> None:
    rows = [summary_row("a|1", "pi|2"), summary_row("a|1", "b`x"),
            summary_row("c", "pi|2", "error")]
    summary = summary_of(rows, {"pi|2": "a|1"}, pareto={"pi|2": ["a|1", "c]"]})
    assert runs_on_lines(summary, markdown_text) == ["- `a\\|1`: pi\\|2, b\\`x", "- `c`: no device"]
    assert recommendation_lines(summary, markdown_text)[1] == (
        "  - Pareto frontier (accuracy, p90, size): `a\\|1`, `c\\]`")
