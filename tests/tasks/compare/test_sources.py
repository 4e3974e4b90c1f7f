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


def test_the_lifecycle_runs_are_found_past_a_full_page_of_other_projects_runs(
        tmp_path: Path) -> None:
    """A shared store whose newest 200 finished lifecycle runs (one search page) are
    another project's: this project's are on the next page, found by its page token,
    newest first; a regressed run is no baseline."""
    from mlflow import MlflowClient

    from tasks.core.mlflow_store import EXPERIMENT, EXPERIMENT_TAG, KIND_RUN_TAG, LIFECYCLE

    layout = Layout(tmp_path / "ours")
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment(EXPERIMENT)

    def finished(folder: Path, started: int, **tags: str) -> str:
        run = client.create_run(experiment, start_time=started, tags={
            KIND_RUN_TAG: LIFECYCLE, EXPERIMENT_TAG: str(folder.resolve()), **tags})
        client.set_terminated(run.info.run_id)
        return str(run.info.run_id)

    oldest, older = finished(layout.root, 1), finished(layout.root, 2)
    regressed = finished(layout.root, 3, **{sources.GATE_TAG: sources.REGRESSED})
    for started in range(200):
        finished(tmp_path / "theirs", 1000 + started)
    pages: list[Any] = []

    class Counted:  # the real client, its searches counted
        def get_experiment_by_name(self, name: str) -> Any:
            return client.get_experiment_by_name(name)

        def search_runs(self, *args: Any, **kwargs: Any) -> Any:
            pages.append(kwargs.get("page_token"))
            assert len(pages) <= 3, "the same page searched again"
            return client.search_runs(*args, **kwargs)

    found = sources._lifecycle_runs(Counted(), layout)
    assert [run.info.run_id for run in found] == [regressed, older]
    assert pages[0] is None and len(pages) == 2 and pages[1]
    pages.clear()
    found = sources._lifecycle_runs(Counted(), layout, wanted=3, baselines_only=True)
    assert [run.info.run_id for run in found] == [older, oldest]
