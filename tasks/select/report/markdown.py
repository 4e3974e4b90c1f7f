"""``reports/report.md``: the report in Markdown, and the Markdown lines other views
share (the recommendation per device: the terminal, the Prefect run page).

Texts from devices reach the summary already visible and capped
(:mod:`tasks.farm.untrusted`); this module escapes Markdown's own syntax in every text it
writes (:func:`markdown_text`)."""

from __future__ import annotations

from collections.abc import Callable

from tasks.core.contracts.summary import Summary
from tasks.select.report.cells import (COLUMNS, EMULATED_MARK, columns, interval_label, metric_label,
                                       preference_text, reference_line, row_cells, runs_on,
                                       stated_requirements)

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


def recommendation_lines(summary: Summary, text: Callable[[str], str] = str) -> list[str]:
    """One Markdown line per device; ``text`` escapes the names (:func:`markdown_text`
    for the report; the terminal strips the Markdown instead)."""
    lines = []
    for device, variant in summary.recommendations.items():
        if variant is None:
            lines.append(f"- **{text(device)}**: {text(summary.why_none(device))}")
        else:
            why = (summary.why_recommended or {}).get(device)
            lines.append(f"- **{text(device)}**: `{text(variant)}` ("
                         + (text(why) if why else
                            f"best passing by {text(preference_text(summary.rank_by))}")
                         + ")")
        front = (summary.pareto or {}).get(device)
        if front:
            lines.append(f"  - Pareto frontier ({metric_label(summary)}, p90, size): "
                         f"{', '.join(f'`{text(name)}`' for name in front)}")
        lines += [f"  - battery: {text(line)}" for line in (summary.battery or {}).get(device, [])]
    return lines


def runs_on_lines(summary: Summary, text: Callable[[str], str] = str) -> list[str]:
    """:func:`~tasks.select.report.cells.runs_on` as one Markdown line per variant."""
    return [f"- `{text(variant)}`: " + (", ".join(text(device) for device in devices)
                                        or "no device")
            for variant, devices in runs_on(summary).items()]


def render_markdown(summary: Summary, plots: list[tuple[str, str]]) -> str:
    """The Markdown report; ``plots`` are (title, path relative to the report)."""
    lines = [
        "# edgeflow report", "",
        f"fp32 reference {metric_label(summary)} (source model, test split, 95% interval): "
        f"**{reference_line(summary.reference)}**",
        "",
        f"Results: {summary.counts.text()}.", "",
        "## Recommendation per device", "", *recommendation_lines(summary, markdown_text), "",
        "## Devices each variant meets the requirements on", "",
        *runs_on_lines(summary, markdown_text), "",
        "## Results", "",
        "| " + " | ".join(columns(summary)) + " | reasons / notes |",
        "|" + "---|" * (len(COLUMNS) + 1),
    ]
    for row in summary.results:
        reasons = markdown_text(row.remarks()) or "—"
        lines.append("| " + " | ".join(map(markdown_text, row_cells(row))) + f" | {reasons} |")
    lines += ["", "Latency is batch 1, per inference, measured by the same harness protocol "
              f"on every runtime; {metric_label(summary)} is on the test images the device "
              f"evaluated, with its 95% {interval_label(summary)} in brackets; drop is relative "
              "to the fp32 reference on the same images; exec is the precision the runtime reports its float arithmetic ran in; "
              f"a timing marked{EMULATED_MARK} is an emulated board's (the emulator's speed, "
              "not the hardware's); energy is per inference above idle, measured by the "
              "board's meter, or marked ~ est: estimated from farm.yaml's power x latency, "
              "not measured.", "",
              "## Requirements per device", ""]
    for device, requirements in summary.requirements.items():
        lines.append(f"- **{markdown_text(device)}**: "
                     f"{markdown_text(stated_requirements(requirements))}")
    lines += ["", "## Plots", "", "The same report with its plots embedded: `report.html`.", ""]
    lines += [f"![{markdown_text(title)}]({path})" for title, path in plots]
    return "\n".join(lines) + "\n"
