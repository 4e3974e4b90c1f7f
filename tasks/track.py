"""Step ``track``: record a lifecycle run in MLflow.

Reads every params section, ``reports/`` (summary, report, plots), ``results/``,
``models/variants/``, ``data/prepared/meta.json`` and ``metrics/train.json``. Writes
one parent run (params, reference accuracy, counts, the report and plots) with one
nested run per (variant, device): params ``variant format precision source device
runtime runtime_version threads``, metrics ``accuracy size_bytes latency_p50_ms
latency_p90_ms latency_p99_ms latency_mean_ms throughput_fps peak_rss_mb load_ms``, tags
(device facts, git commit, data hash, status, reasons), the artifact and the raw
harness result. Writes ``metrics/mlflow_run.json`` (the run ids) for people and DVC.

The store is ``sqlite:///<root>/mlflow/mlflow.db`` with artifacts under
``<root>/mlflow/artifacts`` unless ``MLFLOW_TRACKING_URI`` is set.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tasks.files import read_json, sha256_file, write_json
from tasks.layout import Layout

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


def _experiment_id(root: Path, embedded: bool) -> str:
    import mlflow

    experiment = mlflow.get_experiment_by_name(EXPERIMENT)
    if experiment is not None:
        return experiment.experiment_id
    # A sqlite store puts artifacts under ./mlruns of the current folder unless the
    # experiment says where: keep them inside the project's mlflow/ folder.
    location = (root / "mlflow" / "artifacts").resolve().as_uri() if embedded else None
    return mlflow.create_experiment(EXPERIMENT, artifact_location=location)


@contextmanager
def _tracking_to(uri: str) -> Iterator[None]:
    """Point MLflow at ``uri`` for this block only: ``mlflow.set_tracking_uri`` also
    exports MLFLOW_TRACKING_URI, which would leak into later runs of other projects."""
    import mlflow

    saved = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = saved


def _metrics(row: dict[str, Any], record: dict[str, Any]) -> dict[str, float]:
    metrics = {"size_bytes": float(row["size_bytes"])}
    if row.get("latency_ms"):
        harness = record["harness"]
        metrics.update({
            "accuracy": row["accuracy"], "accuracy_drop": row["accuracy_drop"],
            **{f"latency_{key}_ms": value for key, value in row["latency_ms"].items()},
            "throughput_fps": row["throughput_fps"], "peak_rss_mb": row["peak_rss_mb"],
            "load_ms": row["load_ms"], "first_inference_ms": harness["first_inference_ms"],
            "latency_std_ms": harness["latency_ms"]["std"]})
    return metrics


def track(params_dump: dict[str, Any], layout: Layout, run_name: str | None = None) -> Path:
    """Log the run; returns the path of ``metrics/mlflow_run.json``."""
    embedded = "MLFLOW_TRACKING_URI" not in os.environ
    uri = tracking_uri(layout.root)
    with _tracking_to(uri):
        return _log_run(params_dump, layout, uri, run_name, embedded)


def _log_run(params_dump: dict[str, Any], layout: Layout, uri: str, run_name: str | None,
             embedded: bool) -> Path:
    import mlflow

    experiment_id = _experiment_id(layout.root, embedded)
    summary = read_json(layout.summary)
    variants = {variant["name"]: variant for variant in read_json(layout.variants_index)["variants"]}
    data_hash = sha256_file(layout.prepared / "meta.json")[:16]
    commit = git_commit(layout.root)
    common_tags = {"git_commit": commit, "data_hash": data_hash}

    nested: dict[str, str] = {}
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as parent:
        mlflow.set_tags({**common_tags, "edgeflow.kind": "lifecycle"})
        mlflow.log_params({key: str(value)[:500] for key, value in flatten(params_dump).items()})
        mlflow.log_metrics({"reference_accuracy": summary["reference_accuracy"],
                            **{f"results_{status}": float(count)
                               for status, count in summary["counts"].items()}})
        mlflow.log_artifacts(str(layout.reports), artifact_path="reports")
        mlflow.log_artifact(str(layout.train_metrics), artifact_path="metrics")
        for row in summary["results"]:
            record_path = layout.device_results(row["device"]) / f"{row['variant']}.json"
            record = read_json(record_path)
            facts = record.get("device_facts") or {}
            with mlflow.start_run(experiment_id=experiment_id, nested=True,
                                  run_name=f"{row['variant']}@{row['device']}") as child:
                mlflow.log_params({
                    "variant": row["variant"], "format": row["format"],
                    "precision": row["precision"], "source": row["source"],
                    "device": row["device"], "runtime": row["runtime"],
                    "runtime_version": row.get("runtime_version") or "n/a",
                    "threads": row["threads"]})
                mlflow.log_metrics(_metrics(row, record))
                mlflow.set_tags({**common_tags, "status": row["status"],
                                 "reasons": "; ".join(row["reasons"])[:5000] or "none",
                                 **{f"device.{key}": str(value) for key, value in facts.items()}})
                mlflow.log_artifact(str(record_path), artifact_path="harness")
                variant = variants.get(row["variant"])
                if variant is not None:
                    for entry in variant["files"]:
                        mlflow.log_artifact(str(layout.variants / entry["path"]),
                                            artifact_path="artifact")
                nested[f"{row['variant']}@{row['device']}"] = child.info.run_id
    return write_json(layout.tracking_record, {
        "tracking_uri": uri, "experiment_id": experiment_id,
        "parent_run_id": parent.info.run_id, "nested_run_ids": nested})
