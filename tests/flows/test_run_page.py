"""flows/run_page.py: the run page's two artifacts, their exact text and rows (Prefect's
artifact calls faked: what they were given is what the page shows)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from flows import run_page
from tasks.core.contracts.summary import Summary
from tasks.select.report.cells import COLUMNS, row_cells
from tests.tasks.select.summaries import summary_of, summary_row


def _summary() -> Summary:
    rows = [summary_row("tflite-int8", "pi"),
            summary_row("onnx-fp32", "pi", "fail", reasons=["p90 3 > 2"], notes=["warm"]),
            summary_row("tflite-fp32", "jet|son", "skipped", notes=["not built"])]
    return summary_of(rows, {"pi": "tflite-int8", "jet|son": None}, reference_samples=400,
                      why_recommended={"pi": "fast [and] small"})


PAGE = """# edgeflow: recommendation per device

- **pi**: `tflite-int8` (fast \\[and\\] small)
- **jet\\|son**: no variant meets the requirements
{releases}
Results: 1 pass, 1 fail, 0 error, 1 skipped. fp32 reference accuracy: 0.90 [0.87, 0.93] on 400 test images.

Verdict: 1 pass \\| ok

Experiment: `/exp/a\\|b` (`reports/report.html` there has the plots)
"""


@pytest.mark.parametrize(("releases", "shown"), [
    (None, ""), ([], ""),
    (["pi: released `v`", "jet|son: none"],
     "\nReleases of this run: pi: released \\`v\\`; jet\\|son: none\n")])
def test_the_recommendations_page_is_exactly_its_lines(releases: list[str] | None,
                                                       shown: str) -> None:
    assert run_page.recommendations_markdown(_summary(), "1 pass | ok", Path("/exp/a|b"),
                                             releases) == PAGE.format(releases=shown)


def test_each_result_is_a_row_in_the_reports_columns_with_its_reasons_then_notes() -> None:
    summary = _summary()
    rows = run_page.results_rows(summary)
    assert [list(row) for row in rows] == [[*COLUMNS, "reasons / notes"]] * 3
    assert [row["reasons / notes"] for row in rows] == ["—", "p90 3 > 2; warm", "not built"]
    assert [[row[column] for column in COLUMNS] for row in rows] == \
        [list(row_cells(result)) for result in summary.results]
    assert [(row["device"], row["variant"], row["status"]) for row in rows] == [
        ("pi", "tflite-int8", "pass"), ("pi", "onnx-fp32", "fail"),
        ("jet|son", "tflite-fp32", "skipped")]


def test_publish_creates_both_artifacts_under_their_stable_keys(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import prefect.artifacts

    created: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(prefect.artifacts, "create_table_artifact",
                        lambda **kwargs: created.append(("table", kwargs)))
    monkeypatch.setattr(prefect.artifacts, "create_markdown_artifact",
                        lambda **kwargs: created.append(("markdown", kwargs)))
    experiment = tmp_path / "exp"
    summary_path = experiment / "reports" / "summary.json"
    summary_path.parent.mkdir(parents=True)
    summary = _summary()
    summary_path.write_text(summary.model_dump_json(by_alias=True), encoding="utf-8")
    assert run_page.publish(summary_path, "ok", ["pi: released v"]) == (
        "edgeflow-results", "edgeflow-recommendations")
    assert created == [
        ("table", {"key": "edgeflow-results", "table": run_page.results_rows(summary),
                   "description": f"Every (variant, device) result of {experiment}"}),
        ("markdown", {"key": "edgeflow-recommendations",
                      "markdown": run_page.recommendations_markdown(summary, "ok", experiment,
                                                                    ["pi: released v"]),
                      "description": f"Best passing variant per device of {experiment}"})]
    created.clear()
    assert run_page.publish_comparison("| a |", "run 3") == "edgeflow-comparison"
    assert created == [("markdown", {"key": "edgeflow-comparison", "markdown": "| a |",
                                     "description": "This run against run 3"})]
