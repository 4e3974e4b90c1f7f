"""Where the track step writes: the MLflow store, its experiment, and the locks and
clean-ups that keep one store sound when several processes and machines share it.

The store is ``sqlite:///<root>/mlflow/mlflow.db`` with artifacts under
``<root>/mlflow/artifacts`` unless ``MLFLOW_TRACKING_URI`` is set (a server started by
``make mlflow``, or another database).
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from tasks.core.mlflow_store import (EXPERIMENT, EXPERIMENT_TAG, STORE_LOCK_WAIT_SECONDS,
                                    quoted, store_lock, tracking_uri)

__all__ = ["EXPERIMENT", "EXPERIMENT_TAG", "STORE_LOCK_WAIT_SECONDS", "store_lock",
           "tracking_uri"]

HOST_TAG = "edgeflow.host"  # the machine that ran it
# MLflow's UI picks an experiment's page layout from this tag, and without it guesses
# "GenAI apps & agents" (traces, sessions, token usage) for an experiment that has no
# logged models yet. Ours trains and measures models: the classic runs table.
KIND_TAG, KIND = "mlflow.experimentKind", "custom_model_development"
def artifact_location(root: Path, uri: str) -> str | None:
    """Where a new experiment keeps artifacts: beside a sqlite database (a sqlite store
    otherwise uses ./mlruns of whatever folder the run started in); a server decides
    for itself."""
    if uri.startswith("sqlite:///"):
        database = Path(uri.removeprefix("sqlite:///"))
        folder = root / "mlflow" / "artifacts" if database == (root / "mlflow" / "mlflow.db").resolve() \
            else database.with_name(f"{database.stem}-artifacts")
        return folder.resolve().as_uri()
    return None


def experiment_id(client: Any, root: Path, uri: str) -> str:
    """The ``edgeflow`` experiment's id, created when missing; it is marked a
    model-training experiment unless someone already chose its kind in the UI."""
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        return client.create_experiment(EXPERIMENT, artifact_location=artifact_location(root, uri),
                                        tags={KIND_TAG: KIND})
    if KIND_TAG not in experiment.tags:  # created before this tag was set
        client.set_experiment_tag(experiment.experiment_id, KIND_TAG, KIND)
    return experiment.experiment_id


def close_abandoned_runs(client: Any, experiment_id: str, experiment: str) -> list[str]:
    """Mark KILLED the runs of ``experiment`` that a killed process left RUNNING (its
    parent runs and their nested runs); returns their ids. Called under the experiment's
    lock: no other process of this experiment can be tracking now."""
    # The experiment lock is this machine's: another machine with the same folder path
    # may be tracking to the same server right now. Only this host's runs are closed. The
    # folder is compared here, not in the filter: any character may be in its name.
    running = (f"attributes.status = 'RUNNING' and tags.`{HOST_TAG}` = "
               f"{quoted(socket.gethostname())}")
    closed = []
    for parent in client.search_runs([experiment_id], filter_string=running, max_results=1000):
        if parent.data.tags.get(EXPERIMENT_TAG) != experiment:
            continue
        nested = client.search_runs([experiment_id], filter_string=(
            f"tags.`mlflow.parentRunId` = '{parent.info.run_id}' and "
            "attributes.status = 'RUNNING'"))
        for run in [parent, *nested]:
            client.set_terminated(run.info.run_id, status="KILLED")
            closed.append(run.info.run_id)
    return closed
