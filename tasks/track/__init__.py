"""Step ``track``: record a lifecycle run in MLflow.

Reads every params section, ``reports/`` (summary, report, plots), ``results/``,
``models/variants/`` (each through its contract, :mod:`tasks.core.contracts`),
``data/prepared/`` (the splits as dataset inputs, ``meta.json``'s hash),
``metrics/train.json`` and ``metrics/train_history.json``. Writes:

- one parent run, named ``<experiment folder>-<UTC time>``: params, reference accuracy
  and its 95% interval, the training metrics as ``train.*``, the per-epoch curves as
  ``epoch.*`` with the epoch as step, counts, the report and plots; the train/val/test
  splits as dataset inputs; tags: origin (:mod:`tasks.track.provenance`: git commit,
  edgeflow version, Prefect flow run, data hash) and ``recommended.<device>``;
- each benchmarked variant as a LoggedModel in its runtime's flavour, once per artifact
  (:mod:`tasks.track.models`), output of the parent run that first logged it;
- one nested run per (variant, device), named ``<variant>@<device>``: params ``variant
  format precision source device runtime runtime_version execution_precision threads``
  (and ``emulated emulation`` on an emulated board, also as ``device.*`` tags),
  metrics ``accuracy accuracy_low accuracy_high accuracy_samples size_bytes
  latency_p50_ms latency_p90_ms latency_p99_ms latency_mean_ms throughput_fps
  peak_rss_mb load_ms`` and, timed end to end, ``e2e_latency_*_ms e2e_<stage>_ms
  e2e_throughput_fps e2e_accuracy``, with an energy figure ``energy_mj energy_low_mj
  energy_high_mj power_w idle_w battery_hours battery_fps e2e_energy_mj`` (params
  ``energy_source energy_meter``: measured, or estimated and from which power profile),
  and the kind of task's further measures
  (:func:`task_metrics`: a detector's ``map50_95``, ``ap50_<class>``...) (logged against
  the variant's model, the accuracies against the test split), tags (origin, device facts, status, reasons, ``edgeflow.recommended``),
  the variant's model and the test split as inputs, and the raw harness result.

A track that fails leaves its parent run FAILED with the error (:mod:`tasks.track.runs`);
a lifecycle that fails before tracking gets one through :func:`record_failure`.
Writes ``metrics/mlflow_run.json`` (the run ids) for people and DVC, naming the store
without credentials (:func:`~tasks.core.mlflow_store.without_credentials`). The store is
:mod:`tasks.track.store`'s.
"""

from __future__ import annotations

import time
from pathlib import Path
from collections.abc import Mapping
from typing import Any

from tasks.core.contracts.results import HarnessOk, ResultRecord, read_result
from tasks.core.contracts.summary import Summary, SummaryRow, read_summary
from tasks.core.contracts.variants import read_variant_index
from tasks.core.files import read_json, write_json
from tasks.core.layout import Layout
from tasks.core.mlflow_store import without_credentials
from tasks.track.datasets import dataset_inputs
from tasks.track.failure import record_failure
from tasks.track.models import log_variant_models
from tasks.track.provenance import git_commit
from tasks.track.runs import flatten, log, record_error, start_parent
from tasks.track.store import (EXPERIMENT, EXPERIMENT_TAG, HOST_TAG, STORE_LOCK_WAIT_SECONDS,
                               close_abandoned_runs, experiment_id, store_lock, tracking_uri)

__all__ = ["EXPERIMENT", "EXPERIMENT_TAG", "HOST_TAG", "STORE_LOCK_WAIT_SECONDS",
           "close_abandoned_runs", "flatten", "git_commit", "record_failure", "store_lock",
           "track", "tracking_uri"]

RECOMMENDED_TAG = "edgeflow.recommended"
# MLflow's UI shows a parent run expanded when its nested runs are evaluations (a
# (variant, device) run evaluates a model on a device): the runs table then lists
# `variant@device` under each lifecycle without a click.
EVALUATION_TAGS = {"mlflow.runType": "evaluation"}
# The metrics measured on the test split: logged with it as their dataset.
ACCURACY_METRICS = frozenset({"accuracy", "accuracy_low", "accuracy_high", "accuracy_samples",
                              "accuracy_drop"})


def task_metrics(scores: Mapping[str, Any]) -> dict[str, float]:
    """The kind of task's further measures (the harness's ``task_scores``) as metrics: a
    number by its key (``map50_95``), a per-class table's entries as ``<key>_<class>``
    (``ap50_3``); anything else is left out."""
    metrics: dict[str, float] = {}
    for key, value in scores.items():
        if isinstance(value, Mapping):
            metrics |= {f"{key}_{label}": float(item) for label, item in value.items()
                        if isinstance(item, (int, float)) and not isinstance(item, bool)}
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            metrics[key] = float(value)
    return metrics


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
    for key, bounds in (row.latency_ci95_ms or {}).items():
        if bounds:
            metrics[f"latency_{key}_low_ms"], metrics[f"latency_{key}_high_ms"] = bounds
    if row.end_to_end:
        timed = row.end_to_end
        metrics |= {f"e2e_latency_{key}_ms": value
                    for key, value in timed.latency_ms.document().items()}
        metrics |= {f"e2e_{stage}_ms": value for stage, value in timed.stages_ms.items()}
        metrics |= {"e2e_throughput_fps": timed.throughput_fps, "e2e_accuracy": timed.accuracy}
    if isinstance(record.harness, HarnessOk):
        metrics["first_inference_ms"] = record.harness.first_inference_ms
        metrics["latency_std_ms"] = record.harness.latency_ms.std
        metrics |= task_metrics(record.harness.task_scores or {})
    low, high = row.energy_interval or (None, None)
    metrics |= {"energy_mj": row.energy_mj, "energy_low_mj": low, "energy_high_mj": high,
                "power_w": row.power_w, "idle_w": row.idle_w,
                "battery_hours": row.battery_hours, "battery_fps": row.battery_fps,
                "e2e_energy_mj": row.end_to_end.energy_mj if row.end_to_end else None}
    for key in ("model_bytes", "arena_bytes", "flash_budget_bytes", "ram_budget_bytes"):
        metrics[f"mcu_{key}"] = getattr(row.mcu, key, None)
    target = row.mcu.target if row.mcu else None
    if target is not None:  # the emulated core's figures; the latency an estimate
        metrics |= {"mcu_target_arena_bytes": target.arena_bytes,
                    "mcu_firmware_flash_bytes": target.firmware_flash_bytes,
                    "mcu_instructions_per_inference": target.instructions_per_inference,
                    "estimated_latency_ms": target.estimated_latency_ms}
    return {key: float(value) for key, value in metrics.items() if value is not None}


def _energy_params(row: SummaryRow) -> dict[str, str]:
    """Where the row's energy comes from (``energy_source``: measured or estimated, and
    the meter or power profile), only where it has one."""
    if row.energy_source is None:
        return {}
    return {"energy_source": row.energy_source, "energy_meter": row.energy_meter or "n/a"}


def _reference_metrics(summary: Summary) -> dict[str, float]:
    """The fp32 reference accuracy with its 95% interval (older summaries have none)."""
    reference = summary.reference
    metrics = {"reference_accuracy": reference.accuracy}
    if reference.interval:
        low, high = reference.interval
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


def track(params_dump: dict[str, Any], layout: Layout, run_name: str | None = None) -> Path:
    """Log the run; returns the path of ``metrics/mlflow_run.json``.

    Uses an explicit ``MlflowClient``: no process-wide tracking URI or active run is
    left behind for the next project tracked in the same process.
    """
    uri = tracking_uri(layout.root)
    with store_lock(uri):
        return _track(params_dump, layout, uri, run_name)


def _track(params_dump: dict[str, Any], layout: Layout, uri: str, run_name: str | None) -> Path:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = experiment_id(client, layout.root, uri)
    close_abandoned_runs(client, experiment, str(layout.root.resolve()))
    summary = read_summary(layout.summary)
    index = read_variant_index(layout.variants)
    parent, origin = start_parent(client, experiment, layout, params_dump, run_name)
    nested: dict[str, str] = {}
    status = "FAILED"
    try:
        log(client, parent, {},
            {**_reference_metrics(summary), **_training_metrics(layout),
             **{f"results_{name}": float(count)
                for name, count in summary.counts.document().items()}},
            {f"recommended.{device}": variant or "none"
             for device, variant in summary.recommendations.items()})
        client.log_inputs(parent, datasets=dataset_inputs(layout.prepared, ("train", "val", "test")))
        _log_curves(client, parent, layout.train_metrics.with_name("train_history.json"))
        client.log_artifacts(parent, str(layout.reports), artifact_path="reports")
        client.log_artifact(parent, str(layout.train_metrics), artifact_path="metrics")
        models = log_variant_models(client, experiment, parent, index, layout.variants,
                                    layout.prepared, {row.variant for row in summary.results})
        client.set_tag(parent, "edgeflow.models_logged", str(len(models.created)))
        test_input = dataset_inputs(layout.prepared, ("test",))
        for row in summary.results:
            nested[f"{row.variant}@{row.device}"] = _log_result(
                client, experiment, parent, row, layout, origin, models.ids.get(row.variant),
                test_input, summary.recommendations.get(row.device) == row.variant)
        status = "FINISHED"
    except Exception as error:
        record_error(client, parent, error)
        raise
    finally:
        client.set_terminated(parent, status=status)
    # Committed with the metrics: the store without credentials (release reaches it
    # again through store_uri). A local store keeps its path: release registers into the
    # store that holds these runs, also from a copy of the experiment without its mlflow/.
    return write_json(layout.tracking_record, {
        "tracking_uri": without_credentials(uri), "experiment_id": experiment,
        "parent_run_id": parent, "nested_run_ids": nested, "model_ids": models.ids})


def _emulation(row: SummaryRow) -> dict[str, str]:
    """An emulated board's run says so (params and ``device.*`` tags ``emulated`` and
    ``emulation``), so that nobody compares its timings with a physical board's in
    MLflow; a physical board's run has neither, as before."""
    return {"emulated": "true", "emulation": str(row.emulation)} if row.emulated else {}


def _log_result(client: Any, experiment_id: str, parent: str, row: SummaryRow, layout: Layout,
                origin: dict[str, str], model_id: str | None, test_input: list[Any],
                recommended: bool) -> str:
    """One nested run for one (variant, device) result, with its record, linked to its
    variant's model; returns its run id."""
    from mlflow.entities import LoggedModelInput

    record_path = layout.device_results(row.device) / f"{row.variant}.json"
    record = read_result(record_path)
    run_id = client.create_run(experiment_id, run_name=f"{row.variant}@{row.device}",
                               tags={"mlflow.parentRunId": parent}).info.run_id
    dataset = test_input[0].dataset
    try:
        log(client, run_id,
            {"variant": row.variant, "format": row.format, "precision": row.precision,
             "source": row.source, "device": row.device, "runtime": row.runtime,
             "runtime_version": row.runtime_version or "n/a",
             "execution_precision": row.execution_precision or "n/a",
             "threads": row.threads, **_emulation(row), **_energy_params(row)},
            _metrics(row, record),
            {**origin, **EVALUATION_TAGS, "status": row.status,
             RECOMMENDED_TAG: str(recommended).lower(),
             "reasons": "; ".join(row.reasons)[:5000] or "none",
             **{f"device.{key}": str(value) for key, value in record.device_facts.items()},
             **{f"device.{key}": value for key, value in _emulation(row).items()}},
            model_id=model_id, dataset=(dataset.name, dataset.digest),
            dataset_metrics=ACCURACY_METRICS)
        client.log_inputs(run_id, datasets=test_input,
                          models=[LoggedModelInput(model_id)] if model_id else None)
        client.log_artifact(run_id, str(record_path), artifact_path="harness")
        latencies = (record.harness.latencies or {}) if isinstance(record.harness, HarnessOk) \
            else {}
        if isinstance(latencies.get("file"), str):
            client.log_artifact(run_id, str(record_path.parent / str(latencies["file"])),
                                artifact_path="harness")
    finally:
        client.set_terminated(run_id)
    return run_id
