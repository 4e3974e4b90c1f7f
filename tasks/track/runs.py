"""Writing runs with an explicit ``MlflowClient``: batches of params, metrics and tags,
a lifecycle's parent run, and the error a failed run ends with. Nothing process-wide
(tracking URI, active run) is set or left behind."""

from __future__ import annotations

import socket
import time
import traceback
from typing import Any

from tasks.core.layout import Layout
from tasks.track.provenance import origin_tags, run_name
from tasks.core.mlflow_store import EXPERIMENT_TAG, KIND_RUN_TAG, LIFECYCLE
from tasks.track.store import HOST_TAG
ERROR_TAG = "edgeflow.error"
ERROR_FILE = "error.txt"
# Set on an exception once its run holds it, so the flow does not log a second run.
RECORDED = "edgeflow_mlflow_run_id"


def flatten(document: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists stay whole values."""
    if not isinstance(document, dict):
        return {prefix: document}
    flat: dict[str, Any] = {}
    for key, value in document.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def log(client: Any, run_id: str, params: dict[str, Any], metrics: dict[str, float],
        tags: dict[str, str], model_id: str | None = None,
        dataset: tuple[str, str] | None = None, dataset_metrics: frozenset[str] = frozenset()) -> None:
    """One batch; metrics are logged against ``model_id`` when given, and those named in
    ``dataset_metrics`` against ``dataset`` (name, digest) too."""
    from mlflow.entities import Metric, Param, RunTag

    now = int(time.time() * 1000)

    def metric(key: str, value: float) -> Metric:
        name, digest = dataset if dataset and key in dataset_metrics else (None, None)
        return Metric(key, float(value), now, 0, model_id=model_id, dataset_name=name,
                      dataset_digest=digest)

    client.log_batch(run_id,
                     metrics=[metric(key, value) for key, value in metrics.items()],
                     params=[Param(key, str(value)[:500]) for key, value in params.items()],
                     tags=[RunTag(key, str(value)) for key, value in tags.items()])


def start_parent(client: Any, experiment_id: str, layout: Layout, params_dump: dict[str, Any],
                 name: str | None = None) -> tuple[str, dict[str, str]]:
    """A RUNNING parent run for one lifecycle of ``layout``'s experiment, named (unless
    ``name``) after the experiment and the time, with its origin tags and every param;
    returns its id and the origin tags (for its nested runs)."""
    origin = origin_tags(layout)
    run_id = client.create_run(
        experiment_id, run_name=name or run_name(client, experiment_id, layout),
        tags={**origin, KIND_RUN_TAG: LIFECYCLE,
              EXPERIMENT_TAG: str(layout.root.resolve()),
              HOST_TAG: socket.gethostname()}).info.run_id
    log(client, run_id, flatten(params_dump), {}, {})
    return run_id, origin


def one_line(error: BaseException) -> str:
    """The error as people read it: its first line (an edgeflow error is one line)."""
    lines = str(error).strip().splitlines()
    return (lines[0] if lines else type(error).__name__)[:500]


def record_error(client: Any, run_id: str, error: BaseException) -> None:
    """``error`` on run ``run_id``: its line as the ``edgeflow.error`` tag and the run's
    description, its type, and the full text with the traceback as ``error.txt``."""
    line = one_line(error)
    client.log_batch(run_id, tags=[_tag(ERROR_TAG, line),
                                   _tag("edgeflow.error_type", type(error).__name__),
                                   _tag("mlflow.note.content", f"**Failed:** {line}")])
    client.log_text(run_id, "".join(traceback.format_exception(error)), ERROR_FILE)
    try:
        setattr(error, RECORDED, run_id)
    except AttributeError:  # an exception type without a __dict__: the flow logs it again
        pass


def _tag(key: str, value: str) -> Any:
    from mlflow.entities import RunTag

    return RunTag(key, value)
