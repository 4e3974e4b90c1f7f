"""Where the summaries to compare come from: a summary file, a project folder (its
``reports/summary.json``), an MLflow lifecycle (parent) run by id, or ``latest`` /
``previous``: the newest and the one before among the experiment's finished lifecycle
runs in its MLflow store. What cannot be read is a one-line error naming the
reference and what is accepted."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

from tasks.core.contracts.summary import Summary, read_summary
from tasks.core.errors import StepError, UsageError
from tasks.core.layout import Layout
from tasks.core.mlflow_store import (EXPERIMENT, EXPERIMENT_TAG, KIND_RUN_TAG, LIFECYCLE,
                                    tracking_uri)

RUN_ID = re.compile(r"^[0-9a-f]{32}$")
NAMED_RUNS = ("latest", "previous")  # newest finished lifecycle run, the one before it
SUMMARY_ARTIFACT = "reports/summary.json"  # where track logs the run's summary
ACCEPTED = ("a summary file, a project folder, an MLflow run id (32 hex digits), "
            "'latest' or 'previous'")


def _lifecycle_runs(client: Any, layout: Layout) -> list[Any]:
    """This experiment's finished lifecycle runs, newest first (a shared store holds
    other projects' runs too: they carry another experiment folder)."""
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        return []
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`{KIND_RUN_TAG}` = '{LIFECYCLE}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"], max_results=200)
    folder = str(layout.root.resolve())
    return [run for run in runs if run.data.tags.get(EXPERIMENT_TAG) == folder]


def _run_id(reference: str, client: Any, layout: Layout, uri: str) -> str:
    if RUN_ID.match(reference):
        return reference
    runs = _lifecycle_runs(client, layout)
    position = NAMED_RUNS.index(reference)
    if len(runs) <= position:
        raise StepError(f"{reference!r}: the experiment has {len(runs)} finished lifecycle "
                        f"run{'s' if len(runs) != 1 else ''} in {uri}; run `edgeflow run` first")
    return str(runs[position].info.run_id)


def _client(layout: Layout, reference: str) -> tuple[Any, str]:
    """An MLflow client of the experiment's store, and its URI; a sqlite store that does
    not exist is an error (reading never creates one)."""
    # One small file at a time: no progress bar on the console.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from mlflow import MlflowClient

    uri = tracking_uri(layout.root)
    store = uri.removeprefix("sqlite:///")
    if store != uri and not Path(store).is_file():
        raise StepError(f"{reference!r}: no MLflow store at {store}; run `edgeflow run` first")
    return MlflowClient(tracking_uri=uri), uri


def _summary_of_run(client: Any, run_id: str, uri: str) -> tuple[Summary, str]:
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory(prefix="edgeflow-compare-") as scratch:
        try:
            path = client.download_artifacts(run_id, SUMMARY_ARTIFACT, scratch)
        except (MlflowException, OSError) as error:
            first = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
            raise StepError(f"MLflow run {run_id} has no {SUMMARY_ARTIFACT} in {uri}"
                            f"{f' ({first})' if first else ''}: name a lifecycle run") from None
        return read_summary(Path(path)), f"MLflow run {run_id}"


def _from_mlflow(reference: str, layout: Layout) -> tuple[Summary, str]:
    client, uri = _client(layout, reference)
    return _summary_of_run(client, _run_id(reference, client, layout, uri), uri)


def previous_run_summary(layout: Layout, current_run_id: str | None) -> tuple[Summary, str] | None:
    """The summary of the newest finished lifecycle run of the experiment other than
    ``current_run_id`` (this run's own, when it logged one); None when there is none
    (or no store yet)."""
    store = tracking_uri(layout.root).removeprefix("sqlite:///")
    if store.endswith(".db") and not Path(store).is_file():  # nothing was ever tracked here
        return None
    client, uri = _client(layout, "previous")
    earlier = [run for run in _lifecycle_runs(client, layout) if run.info.run_id != current_run_id]
    return _summary_of_run(client, earlier[0].info.run_id, uri) if earlier else None


def load_summary(reference: str, layout: Layout) -> tuple[Summary, str]:
    """The summary ``reference`` names and a description of where it came from."""
    path = Path(reference)
    if path.is_dir():
        path = Layout(path).summary
        if not path.is_file():
            raise StepError(f"{reference}: a folder without reports/summary.json "
                            f"(expected {ACCEPTED})")
    if path.is_file():
        return read_summary(path), str(path)
    if RUN_ID.match(reference) or reference in NAMED_RUNS:
        return _from_mlflow(reference, layout)
    raise UsageError(f"{reference!r} is not {ACCEPTED}")
