"""A lifecycle that fails before (or while) tracking still leaves a run: FAILED, with
every param, the origin tags, the error's line as the ``edgeflow.error`` tag and the
error with its traceback as ``error.txt``. Called by the flow with the error it is about
to raise; never raises itself (the lifecycle's own error is what people must see)."""

from __future__ import annotations

import logging
from typing import Any

from tasks.core.layout import Layout
from tasks.track.runs import RECORDED, record_error, start_parent
from tasks.track.store import experiment_id, store_lock, tracking_uri

LOGGER = logging.getLogger(__name__)


def record_failure(params_dump: dict[str, Any], layout: Layout, error: BaseException) -> str | None:
    """Log a FAILED parent run for ``error``; returns its id. None when the track step
    already logged this error on its own run, or when MLflow could not be written (a
    warning says why)."""
    if getattr(error, RECORDED, None):
        return None
    from mlflow import MlflowClient

    uri = tracking_uri(layout.root)
    try:
        with store_lock(uri):
            client = MlflowClient(tracking_uri=uri)
            run_id, _ = start_parent(client, experiment_id(client, layout.root, uri), layout,
                                     params_dump)
            try:
                record_error(client, run_id, error)
            finally:
                client.set_terminated(run_id, status="FAILED")
            return run_id
    except Exception as problem:  # noqa: BLE001 (the lifecycle's error must surface, not this)
        LOGGER.warning("could not record the failed run in MLflow (%s): %s", uri, problem)
        return None
