"""Where a tracked run came from: its name, the code (git commit, edgeflow version), who
and what started it (the Prefect flow run), and the data hash. Tags every run carries, so
that a run in MLflow leads back to the commit, the flow run and the data that made it.
"""

from __future__ import annotations

import getpass
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from tasks.core.files import sha256_file
from tasks.core.layout import Layout
from tasks.core.mlflow_store import quoted

UNKNOWN = "unknown"


def git_commit(root: Path) -> str:
    """The commit checked out where the experiment lives; ``unknown`` outside git."""
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return UNKNOWN
    return result.stdout.strip() if result.returncode == 0 else UNKNOWN


def edgeflow_version() -> str:
    try:
        return metadata.version("edgeflow")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return UNKNOWN


def prefect_flow_run() -> tuple[str, str] | None:
    """``(id, name)`` of the Prefect flow run this code runs in (from its flow or one of
    its tasks), or None outside one (``edgeflow step track``, ``dvc repro``)."""
    if "prefect" not in sys.modules:  # nothing started Prefect: no flow run to ask about
        return None
    from prefect.runtime import flow_run

    run_id = flow_run.get_id()
    return (str(run_id), str(flow_run.get_name() or "")) if run_id else None


def origin_tags(layout: Layout) -> dict[str, str]:
    """Tags for every run of one lifecycle: MLflow's own source tags (the UI's Source
    and Version columns read them), the edgeflow version, the Prefect flow run and the
    hash of the prepared data's description."""
    commit = git_commit(layout.root)
    flow_run = prefect_flow_run()
    tags = {"git_commit": commit,
            "edgeflow.version": edgeflow_version(),
            "mlflow.user": getpass.getuser(),
            "mlflow.source.type": "JOB" if flow_run else "LOCAL",
            "mlflow.source.name": "edgeflow-lifecycle (Prefect)" if flow_run else "edgeflow step"}
    if commit != UNKNOWN:
        tags["mlflow.source.git.commit"] = commit
    if flow_run:
        tags["prefect.flow_run_id"], tags["prefect.flow_run_name"] = flow_run
    meta = layout.prepared / "meta.json"
    if meta.is_file():
        tags["data_hash"] = sha256_file(meta)[:16]
    return tags


def run_name(client: Any, experiment_id: str, layout: Layout,
             now: datetime | None = None) -> str:
    """``<experiment folder>-<UTC time>``, e.g. ``digits-20261105-142301``: says which
    experiment and when, sorts by time, and does not depend on any seeding of Python's
    ``random`` (MLflow's own generated names do: seeded training repeated them). A name
    already taken in the experiment gets ``-2``, ``-3``..."""
    now = now or datetime.now(timezone.utc)
    base = f"{layout.root.resolve().name}-{now:%Y%m%d-%H%M%S}"
    name, suffix = base, 1
    # A folder name no filter can quote (both kinds of quotes) is not checked: the time
    # makes it unique but for two lifecycles in one second.
    while (literal := quoted(name)) is not None and client.search_runs(
            [experiment_id], filter_string=f"attributes.run_name = {literal}", max_results=1):
        suffix += 1
        name = f"{base}-{suffix}"
    return name
