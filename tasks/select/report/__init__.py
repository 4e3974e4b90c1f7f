"""The report of a summary (``reports/summary.json``,
:class:`~tasks.core.contracts.summary.Summary`), one module per view, each a pure
function of the summary (no measurement happens here):

- :mod:`.cells`: what every view writes for a result, the reference, the requirements;
- :mod:`.markdown`: ``report.md`` (and the recommendation lines the CLI and the run page
  share);
- :mod:`.html`: ``report.html``, one self-contained page;
- :mod:`.terminal`: the results table a console prints;
- :mod:`tasks.select.plots`: the PNG plots.

This module writes the report's files (:func:`write_report`); nothing below imports it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from tasks.core.contracts.summary import Summary
from tasks.select.report.html import render_html
from tasks.select.report.markdown import render_markdown

if TYPE_CHECKING:  # numpy is imported where it is used
    import numpy as np


def write_report(summary: Summary, reports_dir: Path,
                 latencies: dict[tuple[str, str], np.ndarray]) -> Path:
    """Write ``plots/``, ``report.md`` and ``report.html`` under ``reports_dir``;
    ``latencies`` are the raw ones in ms per (device, variant). Returns report.md."""
    # Imported here: the plots (numpy, matplotlib) are for the select step only, and a
    # console that prints the results table imports this package.
    from tasks.select.plots import write_plots

    plots = write_plots(summary, latencies, reports_dir / "plots")
    (reports_dir / "report.html").write_text(render_html(summary, plots), encoding="utf-8")
    target = reports_dir / "report.md"
    target.write_text(render_markdown(summary, [(plot.title, plot.path.relative_to(reports_dir)
                                                 .as_posix()) for plot in plots]),
                      encoding="utf-8")
    return target
