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
                                    check_answers, tracking_uri)

RUN_ID = re.compile(r"^[0-9a-f]{32}$")
NAMED_RUNS = ("latest", "previous")  # newest finished lifecycle run, the one before it
SUMMARY_ARTIFACT = "reports/summary.json"  # where track logs the run's summary
ACCEPTED = ("a summary file, a project folder, an MLflow run id (32 hex digits), "
            "'latest' or 'previous'")


GATE_TAG = "edgeflow.gate"  # "regression" on a lifecycle run its gate failed
REGRESSED = "regression"


def _lifecycle_runs(client: Any, layout: Layout, wanted: int = 2,
                    baselines_only: bool = False) -> list[Any]:
    """This experiment's newest ``wanted`` finished lifecycle runs, newest first (a
    shared store holds other projects' runs too: they carry another experiment folder);
    ``baselines_only`` leaves out runs whose regression gate failed, so that a regression
    never becomes the next night's baseline."""
    from mlflow.exceptions import MlflowException

    folder = str(layout.root.resolve())
    found: list[Any] = []
    try:
        experiment = client.get_experiment_by_name(EXPERIMENT)
        token = None
        while experiment is not None and len(found) < wanted:
            page = client.search_runs(
                [experiment.experiment_id], filter_string=f"tags.`{KIND_RUN_TAG}` = "
                f"'{LIFECYCLE}' and attributes.status = 'FINISHED'",
                order_by=["attributes.start_time DESC"], max_results=200, page_token=token)
            found += [run for run in page if run.data.tags.get(EXPERIMENT_TAG) == folder
                      and not (baselines_only and run.data.tags.get(GATE_TAG) == REGRESSED)]
            token = page.token
            if not token:
                break
    except MlflowException as error:
        raise StepError(f"cannot search the MLflow store: {_first_line(error)}") from None
    return found[:wanted]


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__


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
    store = _missing_store(uri)
    if store:
        raise StepError(f"{reference!r}: no MLflow store at {store}; run `edgeflow run` first")
    check_answers(uri)  # a server that does not answer: one line now, not minutes of retries
    return MlflowClient(tracking_uri=uri), uri


def _missing_store(uri: str) -> str | None:
    """The file of a sqlite store that does not exist yet; None otherwise."""
    store = uri.removeprefix("sqlite:///")
    return store if store != uri and not Path(store).is_file() else None


def _summary_of_run(client: Any, run_id: str, uri: str) -> tuple[Summary, str]:
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory(prefix="edgeflow-compare-") as scratch:
        try:
            path = client.download_artifacts(run_id, SUMMARY_ARTIFACT, scratch)
        except (MlflowException, OSError) as error:
            raise StepError(f"MLflow run {run_id} has no {SUMMARY_ARTIFACT} in {uri} "
                            f"({_first_line(error)}): name a lifecycle run") from None
        return read_summary(Path(path)), f"MLflow run {run_id}"


def _from_mlflow(reference: str, layout: Layout) -> tuple[Summary, str]:
    client, uri = _client(layout, reference)
    return _summary_of_run(client, _run_id(reference, client, layout, uri), uri)


def previous_run_summary(layout: Layout, current_run_id: str | None) -> tuple[Summary, str] | None:
    """The summary of the newest finished lifecycle run of the experiment other than
    ``current_run_id`` (this run's own, when it logged one) whose own gate did not fail;
    None when there is none (or no store yet)."""
    if _missing_store(tracking_uri(layout.root)):  # nothing was ever tracked here
        return None
    client, uri = _client(layout, "previous")
    earlier = [run for run in _lifecycle_runs(client, layout, wanted=2, baselines_only=True)
               if run.info.run_id != current_run_id]
    return _summary_of_run(client, earlier[0].info.run_id, uri) if earlier else None


def mark_regressed(layout: Layout, run_id: str) -> None:
    """Tag lifecycle run ``run_id`` as one whose gate failed: never a baseline again."""
    client, _ = _client(layout, run_id)
    client.set_tag(run_id, GATE_TAG, REGRESSED)


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
