"""tasks.compare.sources: a project folder names its reports/summary.json; a run id is
read from the MLflow store, the artifact of that very run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tasks.compare import sources
from tasks.core.contracts.summary import write_summary
from tasks.core.errors import StepError
from tasks.core.layout import Layout
from tests.tasks.test_compare import row, summary


def test_a_project_folder_names_its_summary(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    written = summary(row(p50=2.5))
    write_summary(layout.summary, written)
    assert sources.load_summary(str(tmp_path), Layout(tmp_path / "elsewhere")) == (
        written, str(layout.summary))


def test_a_folder_without_a_summary_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(StepError) as caught:
        sources.load_summary(str(tmp_path), Layout(tmp_path))
    assert str(caught.value) == (f"{tmp_path}: a folder without reports/summary.json "
                                 f"(expected {sources.ACCEPTED})")


def test_a_run_id_reads_that_runs_summary_artifact(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    run_id = "0123456789abcdef" * 2
    written = summary(row(p50=4.0))
    asked: list[Any] = []

    class Client:
        def download_artifacts(self, run: str, artifact: str, scratch: str) -> str:
            asked.append((run, artifact))
            return str(write_summary(Path(scratch) / "summary.json", written))

    monkeypatch.setattr(sources, "_client", lambda layout, reference: (Client(), "uri"))
    assert sources.load_summary(run_id, Layout(tmp_path)) == (written, f"MLflow run {run_id}")
    assert asked == [(run_id, "reports/summary.json")]
