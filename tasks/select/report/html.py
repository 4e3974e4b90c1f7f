"""``reports/report.html``: the report as one self-contained page (its plots embedded as
``data:`` URIs, its style inline, no script, nothing fetched), so that it opens offline,
from an MLflow artifact or an e-mail attachment alike.

It answers "which variant for which board, and why" first (a section per device: the
recommendation and its reason, the Pareto frontier, the device's Pareto plot and latency
distributions), then the overview (heat map, accuracy against size), the reverse view,
every result and the requirements. Every text from the summary is HTML-escaped.
"""

from __future__ import annotations

import base64
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING

from tasks.core.contracts.summary import Summary
from tasks.select.report.cells import (COLUMNS, TEXT_COLUMNS, columns, interval_label, metric_label,
                                       preference_text, reference_line, row_cells, runs_on,
                                       stated_requirements)

if TYPE_CHECKING:  # the plots module imports numpy: a console printing results needs neither
    from tasks.select.plots import Plot

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222;
       padding: 0 1em; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; }
table { border-collapse: collapse; font-size: 0.8em; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: right; vertical-align: top; }
th { background: #f3f3f3; } td.text { text-align: left; }
tr.pass td.status { color: #17803d; font-weight: bold; } tr.fail td.status { color: #b8860b; }
tr.error td.status { color: #c62828; font-weight: bold; } tr.skipped { color: #888; }
.chosen { background: #fff7d6; padding: 0.6em 0.9em; border-left: 4px solid #e0b000; }
figure { margin: 0.8em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.8em; color: #555; } code { background: #f3f3f3; padding: 0 0.2em; }
"""


def image_uri(path: Path) -> str:
    """``path`` (a PNG) as a ``data:`` URI."""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _figure(plot: Plot) -> str:
    return (f'<figure><img src="{image_uri(plot.path)}" alt="{escape(plot.title)}">'
            f"<figcaption>{escape(plot.title)}</figcaption></figure>")


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def _device_section(summary: Summary, device: str, plots: list[Plot]) -> list[str]:
    chosen = summary.recommendations.get(device)
    # An excluded device's why is the line above already.
    why = "" if summary.excluded_reason(device) else \
        (summary.why_recommended or {}).get(device, "")
    front = (summary.pareto or {}).get(device) or []
    lines = [f"<h2>{escape(device)}</h2>", '<p class="chosen">']
    lines.append(f"Recommended: <code>{escape(chosen)}</code>" if chosen
                 else f"<strong>{escape(_sentence(summary.why_none(device)))}.</strong>")
    lines.append(f"<br>Why: {escape(why)}" if why else "")
    lines.append("</p>")
    if front:
        lines.append(f"<p>Pareto frontier ({escape(metric_label(summary))}, p90, size): "
                     + ", ".join(f"<code>{escape(name)}</code>" for name in front) + "</p>")
    lines += [f'<p class="battery">Battery: {escape(line)}</p>'
              for line in (summary.battery or {}).get(device, [])]
    drawn = [_figure(plot) for plot in plots if plot.device == device]
    estimated = any(row.estimated_latency_ms is not None for row in summary.results
                    if row.device == device)
    why_none = ("its latencies are estimates from the instructions its emulated core "
                "counted, marked ~ est in the table, not measurements" if estimated else
                "a microcontroller without its board is judged on its memory fit")
    return lines + (drawn or [f"<p>No latency was measured on {escape(device)} ({why_none}), "
                              "so it has no plot of its own.</p>"])


def _results_table(summary: Summary) -> list[str]:
    lines = ["<table><tr>" + "".join(f"<th>{escape(column)}</th>" for column in columns(summary))
             + "<th>reasons / notes</th></tr>"]
    for row in summary.results:
        cells = []
        for column, cell in zip(COLUMNS, row_cells(row)):
            kind = ("text status" if column == "status"
                    else "text" if column in TEXT_COLUMNS else "")
            cells.append(f'<td class="{kind}">{escape(cell)}</td>')
        notes = row.remarks() or "—"
        lines.append(f'<tr class="{escape(row.status.value)}">' + "".join(cells)
                     + f'<td class="text">{escape(notes)}</td></tr>')
    return lines + ["</table>"]


def render_html(summary: Summary, plots: list[Plot]) -> str:
    """The whole page (see the module's doc)."""
    lines = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             "<title>edgeflow report</title>", f"<style>{STYLE}</style></head><body>",
             "<h1>edgeflow report</h1>",
             f"<p>fp32 reference {escape(metric_label(summary))} (source model, test split, 95% "
             "interval): "
             f"<strong>{escape(reference_line(summary.reference))}</strong>. "
             f"Results: {summary.counts.text()}. "
             "Among the variants that meet every requirement, each device's preference "
             f"order chooses ({escape(preference_text(summary.rank_by))} unless a device "
             "overrides it; see its requirements below).</p>"]
    for device in summary.devices:
        lines += _device_section(summary, device, plots)
    lines.append("<h2>Every device and variant</h2>")
    lines += [_figure(plot) for plot in plots if plot.device is None]
    lines.append("<h2>Devices each variant meets the requirements on</h2><ul>")
    for variant, passing in runs_on(summary).items():
        lines.append(f"<li><code>{escape(variant)}</code>: "
                     f"{escape(', '.join(passing) or 'no device')}</li>")
    lines += ["</ul>", "<h2>Results</h2>", *_results_table(summary),
              "<p>Latency is batch 1, per inference, measured by the same harness protocol on "
              f"every runtime; {escape(metric_label(summary))} is on the test images the device "
              f"evaluated, with its 95% {escape(interval_label(summary))} in brackets; drop is "
              "relative to the fp32 reference.</p>",
              "<h2>Requirements per device</h2><ul>"]
    for device, requirements in summary.requirements.items():
        lines.append(f"<li><strong>{escape(device)}</strong>: "
                     f"{escape(stated_requirements(requirements))}</li>")
    lines += ["</ul></body></html>"]
    return "\n".join(line for line in lines if line) + "\n"
