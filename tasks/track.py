"""Step ``track``: record a lifecycle run in MLflow.

Reads every params section, ``reports/`` (summary, report, plots), ``results/``,
``models/variants/`` (each through its contract, :mod:`tasks.core.contracts`),
``data/prepared/meta.json`` (its hash), ``metrics/train.json`` and
``metrics/train_history.json``. Writes one parent run (params, reference accuracy and its
95% interval, the training metrics as ``train.*``, the per-epoch curves as ``epoch.*``
with the epoch as step, counts, the report and plots) with one nested run per (variant,
device): params ``variant format precision source device runtime runtime_version
execution_precision threads``, metrics ``accuracy accuracy_low accuracy_high
accuracy_samples size_bytes latency_p50_ms
latency_p90_ms latency_p99_ms latency_mean_ms throughput_fps peak_rss_mb load_ms``, tags
(device facts, git commit, data hash, status, reasons), the artifact and the raw
harness result. Writes ``metrics/mlflow_run.json`` (the run ids) for people and DVC.

The store is ``sqlite:///<root>/mlflow/mlflow.db`` with artifacts under
``<root>/mlflow/artifacts`` unless ``MLFLOW_TRACKING_URI`` is set.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from tasks.core.contracts.results import HarnessOk, ResultRecord, read_result
from tasks.core.contracts.summary import Summary, SummaryRow, read_summary
from tasks.core.contracts.variants import VariantFile, read_variant_index
from tasks.core.files import read_json, sha256_file, write_json
from tasks.core.layout import Layout
from tasks.core.locks import file_lock

EXPERIMENT = "edgeflow"


def tracking_uri(root: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(root / 'mlflow' / 'mlflow.db').resolve()}"


def flatten(document: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists stay whole values."""
    if not isinstance(document, dict):
        return {prefix: document}
    flat: dict[str, Any] = {}
    for key, value in document.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def git_commit(root: Path) -> str:
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return result.stdout.strip() if result.returncode == 0 else "unknown"


def _artifact_location(root: Path, uri: str) -> str | None:
    """Where a new experiment keeps artifacts: beside a sqlite database (a sqlite store
    otherwise uses ./mlruns of whatever folder the run started in); a server decides
    for itself."""
    if uri.startswith("sqlite:///"):
        database = Path(uri.removeprefix("sqlite:///"))
        folder = root / "mlflow" / "artifacts" if database == (root / "mlflow" / "mlflow.db").resolve() \
            else database.with_name(f"{database.stem}-artifacts")
        return folder.resolve().as_uri()
    return None


def _experiment_id(client: Any, root: Path, uri: str) -> str:
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is not None:
        return experiment.experiment_id
    return client.create_experiment(EXPERIMENT, artifact_location=_artifact_location(root, uri))


def _metrics(row: SummaryRow, record: ResultRecord) -> dict[str, float]:
    """Every number the result has; what a device could not measure is left out."""
    low, high = row.accuracy_interval or (None, None)
    metrics: dict[str, Any] = {"size_bytes": row.size_bytes, "accuracy": row.accuracy,
                               "accuracy_low": low, "accuracy_high": high,
                               "accuracy_samples": row.accuracy_samples,
                               "accuracy_drop": row.accuracy_drop,
                               "throughput_fps": row.throughput_fps,
                               "peak_rss_mb": row.peak_rss_mb, "load_ms": row.load_ms}
    for key, value in (row.latency_ms.document() if row.latency_ms else {}).items():
        metrics[f"latency_{key}_ms"] = value
    if isinstance(record.harness, HarnessOk):
        metrics["first_inference_ms"] = record.harness.first_inference_ms
        metrics["latency_std_ms"] = record.harness.latency_ms.std
    for key in ("model_bytes", "arena_bytes", "flash_budget_bytes", "ram_budget_bytes"):
        metrics[f"mcu_{key}"] = getattr(row.mcu, key, None)
    return {key: float(value) for key, value in metrics.items() if value is not None}


def _reference_metrics(summary: Summary) -> dict[str, float]:
    """The fp32 reference accuracy with its 95% interval (older summaries have none)."""
    metrics = {"reference_accuracy": summary.reference_accuracy}
    if summary.reference_interval:
        low, high = summary.reference_interval
        metrics |= {"reference_accuracy_low": low, "reference_accuracy_high": high}
    return metrics


def _training_metrics(layout: Layout) -> dict[str, float]:
    """``metrics/train.json``'s numbers (accuracies per split, their intervals, epochs),
    prefixed ``train.``."""
    document = read_json(layout.train_metrics)
    return {f"train.{key}": float(value) for key, value in document.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)}


def _log_curves(client: Any, run_id: str, history_path: Path) -> None:
    """Per-epoch training curves (loss, accuracy, val_loss, val_accuracy, learning_rate),
    one MLflow metric each with the epoch as its step, drawn as charts in the UI."""
    from mlflow.entities import Metric

    if not history_path.is_file():
        return
    now = int(time.time() * 1000)
    metrics = [Metric(f"epoch.{key}", float(value), now, int(row["epoch"]))
               for row in read_json(history_path) for key, value in row.items()
               if key != "epoch" and isinstance(value, (int, float))]
    for start in range(0, len(metrics), 1000):  # MLflow's log_batch takes 1000 at most
        client.log_batch(run_id, metrics=metrics[start:start + 1000])


def _log(client: Any, run_id: str, params: dict[str, Any], metrics: dict[str, float],
         tags: dict[str, str]) -> None:
    from mlflow.entities import Metric, Param, RunTag

    now = int(time.time() * 1000)
    client.log_batch(run_id,
                     metrics=[Metric(key, float(value), now, 0) for key, value in metrics.items()],
                     params=[Param(key, str(value)[:500]) for key, value in params.items()],
                     tags=[RunTag(key, str(value)) for key, value in tags.items()])


def track(params_dump: dict[str, Any], layout: Layout, run_name: str | None = None) -> Path:
    """Log the run; returns the path of ``metrics/mlflow_run.json``.

    Uses an explicit ``MlflowClient``: no process-wide tracking URI or active run is
    left behind for the next project tracked in the same process.
    """
    uri = tracking_uri(layout.root)
    with store_lock(uri):
        return _track(params_dump, layout, uri, run_name)


# Long enough for another experiment's track step to finish with the same store.
STORE_LOCK_WAIT_SECONDS = 600.0


def store_lock(uri: str) -> AbstractContextManager[None]:
    """Exclusive use of a sqlite store while this process creates, migrates and writes
    it. MLflow runs its schema migrations on first use, and two processes migrating one
    file at once leave it half-migrated for good (``table _alembic_tmp_tags already
    exists`` on every later run). Runs of one experiment are already serialised; this
    covers experiments that share one store through ``MLFLOW_TRACKING_URI``. A server
    store migrates itself: nothing to lock."""
    if not uri.startswith("sqlite:///"):
        return nullcontext()
    database = Path(uri.removeprefix("sqlite:///"))
    return file_lock(database.with_name(f"{database.name}.lock"), STORE_LOCK_WAIT_SECONDS)


EXPERIMENT_TAG = "edgeflow.experiment"  # the experiment folder a lifecycle run belongs to
HOST_TAG = "edgeflow.host"  # the machine that ran it


def close_abandoned_runs(client: Any, experiment_id: str, experiment: str) -> list[str]:
    """Mark KILLED the runs of ``experiment`` that a killed process left RUNNING (its
    parent runs and their nested runs); returns their ids. Called under the experiment's
    lock: no other process of this experiment can be tracking now."""
    if "'" in experiment:  # not expressible in MLflow's filter syntax: nothing closed
        return []
    # The experiment lock is this machine's: another machine with the same folder path
    # may be tracking to the same server right now. Only this host's runs are closed.
    running = (f"attributes.status = 'RUNNING' and tags.`{HOST_TAG}` = "
               f"'{socket.gethostname()}'")
    closed = []
    for parent in client.search_runs(
            [experiment_id], filter_string=f"tags.`{EXPERIMENT_TAG}` = '{experiment}' and {running}"):
        nested = client.search_runs([experiment_id], filter_string=(
            f"tags.`mlflow.parentRunId` = '{parent.info.run_id}' and "
            "attributes.status = 'RUNNING'"))
        for run in [parent, *nested]:
            client.set_terminated(run.info.run_id, status="KILLED")
            closed.append(run.info.run_id)
    return closed


def _track(params_dump: dict[str, Any], layout: Layout, uri: str, run_name: str | None) -> Path:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment_id = _experiment_id(client, layout.root, uri)
    experiment_tag = str(layout.root.resolve())
    close_abandoned_runs(client, experiment_id, experiment_tag)
    summary = read_summary(layout.summary)
    files = {variant.name: variant.files or []
             for variant in read_variant_index(layout.variants).variants}
    common_tags = {"git_commit": git_commit(layout.root),
                   "data_hash": sha256_file(layout.prepared / "meta.json")[:16]}

    parent = client.create_run(experiment_id, run_name=run_name,
                               tags={**common_tags, "edgeflow.kind": "lifecycle",
                                     EXPERIMENT_TAG: experiment_tag,
                                     HOST_TAG: socket.gethostname()}).info.run_id
    nested: dict[str, str] = {}
    status = "FAILED"
    try:
        _log(client, parent, flatten(params_dump),
             {**_reference_metrics(summary), **_training_metrics(layout),
              **{f"results_{name}": float(count)
                 for name, count in summary.counts.document().items()}},
             {})
        _log_curves(client, parent, layout.train_metrics.with_name("train_history.json"))
        client.log_artifacts(parent, str(layout.reports), artifact_path="reports")
        client.log_artifact(parent, str(layout.train_metrics), artifact_path="metrics")
        for row in summary.results:
            nested[f"{row.variant}@{row.device}"] = _log_result(
                client, experiment_id, parent, row, layout, files.get(row.variant, []),
                common_tags)
        status = "FINISHED"
    finally:
        client.set_terminated(parent, status=status)
    return write_json(layout.tracking_record, {
        "tracking_uri": uri, "experiment_id": experiment_id,
        "parent_run_id": parent, "nested_run_ids": nested})


def _log_result(client: Any, experiment_id: str, parent: str, row: SummaryRow,
                layout: Layout, files: list[VariantFile], common_tags: dict[str, str]) -> str:
    """One nested run for one (variant, device) result, with its record and its
    variant's ``files``; returns its run id."""
    record_path = layout.device_results(row.device) / f"{row.variant}.json"
    record = read_result(record_path)
    run_id = client.create_run(experiment_id, run_name=f"{row.variant}@{row.device}",
                               tags={"mlflow.parentRunId": parent}).info.run_id
    try:
        _log(client, run_id,
             {"variant": row.variant, "format": row.format, "precision": row.precision,
              "source": row.source, "device": row.device, "runtime": row.runtime,
              "runtime_version": row.runtime_version or "n/a",
              "execution_precision": row.execution_precision or "n/a",
              "threads": row.threads},
             _metrics(row, record),
             {**common_tags, "status": row.status,
              "reasons": "; ".join(row.reasons)[:5000] or "none",
              **{f"device.{key}": str(value) for key, value in record.device_facts.items()}})
        client.log_artifact(run_id, str(record_path), artifact_path="harness")
        for entry in files:
            client.log_artifact(run_id, str(layout.variants / entry.path), artifact_path="artifact")
    finally:
        client.set_terminated(run_id)
    return run_id
