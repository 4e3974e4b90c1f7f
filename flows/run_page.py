"""What a flow run shows on its Prefect page, so that the page answers "what passed
where" without opening files: the results table and the recommendation per device, as
Prefect artifacts, from ``reports/summary.json`` (read through its contract,
:mod:`tasks.core.contracts.summary`).

Keys are stable (:data:`RESULTS_KEY`, :data:`RECOMMENDATIONS_KEY`): each run adds a
version under the same key, so the artifacts page keeps the history of every run.
"""

from __future__ import annotations

from pathlib import Path

from tasks.core.contracts.summary import Summary, read_summary
from tasks.select.report.cells import columns, metric_label, reference_line, row_cells
from tasks.select.report.markdown import markdown_text, recommendation_lines

RESULTS_KEY = "edgeflow-results"
RECOMMENDATIONS_KEY = "edgeflow-recommendations"
REASONS = "reasons / notes"


def results_rows(summary: Summary) -> list[dict[str, str]]:
    """One row per (variant, device) result, skipped ones included (with their reason),
    in the report's columns."""
    return [{**dict(zip(columns(summary), row_cells(row))), REASONS: row.remarks() or "—"}
            for row in summary.results]


def recommendations_markdown(summary: Summary, verdict: str, experiment: Path,
                             releases: list[str] | None = None) -> str:
    return "\n".join([
        "# edgeflow: recommendation per device", "",
        *recommendation_lines(summary, markdown_text), "",
        *([f"Releases of this run: {'; '.join(markdown_text(line) for line in releases)}", ""]
          if releases else []),
        f"Results: {summary.counts.text()}. "
        f"fp32 reference {metric_label(summary)}: {reference_line(summary.reference)}.", "",
        f"Verdict: {markdown_text(verdict)}", "",
        f"Experiment: `{markdown_text(str(experiment))}` (`reports/report.html` there has the plots)",
    ]) + "\n"


def publish(summary_path: Path, verdict: str, releases: list[str] | None = None) -> tuple[str, str]:
    """Create this run's two artifacts (``releases``: this run's release lines, one per
    device); returns their keys. Call inside a flow run."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    summary = read_summary(summary_path)
    experiment = summary_path.parent.parent
    create_table_artifact(key=RESULTS_KEY, table=results_rows(summary),
                          description=f"Every (variant, device) result of {experiment}")
    create_markdown_artifact(key=RECOMMENDATIONS_KEY,
                             markdown=recommendations_markdown(summary, verdict, experiment,
                                                               releases),
                             description=f"Best passing variant per device of {experiment}")
    return RESULTS_KEY, RECOMMENDATIONS_KEY


COMPARISON_KEY = "edgeflow-comparison"


def publish_comparison(markdown: str, against: str) -> str:
    """This run's regression gate as an artifact; returns its key. Call inside a flow run."""
    from prefect.artifacts import create_markdown_artifact

    create_markdown_artifact(key=COMPARISON_KEY, markdown=markdown,
                             description=f"This run against {against}")
    return COMPARISON_KEY
