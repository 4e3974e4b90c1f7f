"""Releases in the MLflow model registry: one registered model per experiment, a version
per released variant, and an alias per device on the version that is current there.

The version is made from the variant's LoggedModel (``models:/<model id>``, logged by
track with its signature and input example) and linked to the (variant, device) run
that measured it; the same model released to two devices is one version. The alias
``device-<name>`` (a ``.`` in the name becomes ``_``: MLflow aliases are letters,
digits, ``_`` and ``-``) moves with every release and rollback, so
``MlflowClient(<the store>).get_model_version_by_alias(name, "device-pi5")`` answers
"what runs on pi5 now" (README: the store is the one the release record names).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from pathlib import Path
from typing import Any

from tasks.core.files import read_json
from tasks.core.layout import Layout
from tasks.core.mlflow_store import check_answers, quoted, store_lock, store_uri

MODEL_ID_TAG = "edgeflow.model_id"
# Devices release in parallel threads of one flow run: the store's file lock is
# re-entrant within a process, so the registry's check-then-create is serialised here.
_REGISTRY = threading.Lock()
VARIANT_TAG = "edgeflow.variant"


# What MLflow refuses in a registered model's name ("/" and ":"), and what its filter
# syntax could not quote beside a "'" (:func:`~tasks.core.mlflow_store.quoted`).
UNNAMEABLE = re.compile(r'[/:"\\\x00-\x1f\x7f]')


def registered_model_name(layout: Layout) -> str:
    """``edgeflow-<experiment folder>``; the characters MLflow would refuse or could not
    search for become ``_``, and the name then ends with 8 hex digits of the folder name's
    sha256, so that ``exp:v1`` and ``exp_v1`` keep two registered models."""
    folder = layout.root.resolve().name
    safe = UNNAMEABLE.sub("_", folder)
    if safe == folder:
        return f"edgeflow-{folder}"
    return f"edgeflow-{safe}-{hashlib.sha256(folder.encode()).hexdigest()[:8]}"


def alias(device: str) -> str:
    return "device-" + device.replace(".", "_")


def _client(uri: str) -> Any:
    """A registry client of ``uri``; ConfigError at once for a server that does not
    answer (MLflow's client would retry each call for minutes)."""
    from mlflow import MlflowClient

    check_answers(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def register(layout: Layout, variant: str, device: str) -> dict[str, Any] | None:
    """The registry version of ``variant`` as measured on ``device`` (made if new):
    ``{"registered_model", "version", "model_id", "run_id", "tracking_uri"}``; None when
    track has not logged it (no ``metrics/mlflow_run.json``, or no model for it)."""
    record_path = layout.tracking_record
    if not record_path.is_file():
        return None
    record = read_json(record_path)
    model_id = (record.get("model_ids") or {}).get(variant)
    run_id = (record.get("nested_run_ids") or {}).get(f"{variant}@{device}")
    if not model_id:
        return None
    # The board's manifest keeps the URI that reaches the store from here (what
    # point_alias and pointed_version use); release.json records it without credentials.
    uri = store_uri(str(record["tracking_uri"]), layout.root)
    with _REGISTRY, store_lock(uri):
        return _register(_client(uri), registered_model_name(layout), model_id, run_id, variant,
                         uri)


def _register(client: Any, name: str, model_id: str, run_id: str | None, variant: str,
              uri: str) -> dict[str, Any]:
    if not client.search_registered_models(filter_string=f"name = {quoted(name)}"):
        client.create_registered_model(
            name, description="Variants released to devices by edgeflow; the alias "
                              "device-<name> is the version current on that device.")
    found = client.search_model_versions(
        filter_string=f"name = {quoted(name)} and tags.`{MODEL_ID_TAG}` = {quoted(model_id)}")
    if found:
        version = found[0]
    else:
        # The model's own artifact location, not "models:/<id>": MLflow's sqlite registry
        # resolves that through the process-wide tracking URI, not this client's (3.17).
        logged = client.get_logged_model(model_id)
        version = client.create_model_version(
            name, source=logged.artifact_location, run_id=run_id or logged.source_run_id,
            model_id=model_id, tags={MODEL_ID_TAG: model_id, VARIANT_TAG: variant})
    _link(client, model_id, name, version.version)
    return {"registered_model": name, "version": str(version.version), "model_id": model_id,
            "run_id": run_id, "tracking_uri": uri}


def _link(client: Any, model_id: str, name: str, version: Any) -> None:
    """List ``name`` version ``version`` on its logged model (the tag
    ``mlflow.modelVersions``, from which the model's page shows where it is registered).
    MLflow's server adds it when it creates a version; a client writing to a database
    directly does not, and a version made before this was linked is linked now."""
    from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

    listed = json.loads(client.get_logged_model(model_id).tags.get(MLFLOW_MODEL_VERSIONS) or "[]")
    if any((entry.get("name"), str(entry.get("version"))) == (name, str(version))
           for entry in listed):
        return
    client.set_logged_model_tags(model_id, {MLFLOW_MODEL_VERSIONS: json.dumps(
        [*listed, {"name": name, "version": version}])})


def point_alias(mlflow: dict[str, Any] | None, device: str) -> None:
    """Move ``device``'s alias to the version in ``mlflow`` (a manifest's record)."""
    if not mlflow:
        return
    with _REGISTRY, store_lock(mlflow["tracking_uri"]):
        _client(mlflow["tracking_uri"]).set_registered_model_alias(
            mlflow["registered_model"], alias(device), str(mlflow["version"]))


def pointed_version(mlflow: dict[str, Any], device: str) -> str | None:
    """The version ``device``'s alias points at in the registered model of ``mlflow``
    (a manifest's record), None where it points at none."""
    from mlflow.exceptions import MlflowException

    try:
        return str(_client(mlflow["tracking_uri"]).get_model_version_by_alias(
            mlflow["registered_model"], alias(device)).version)
    except MlflowException:
        return None


def store_exists(mlflow: dict[str, Any]) -> bool:
    """Whether the store ``mlflow`` (a manifest's record) names is there: a sqlite file
    that is gone (the experiment moved) is not read, which would create an empty one."""
    uri = str(mlflow.get("tracking_uri") or "")
    return bool(uri) and (not uri.startswith("sqlite:///")
                          or Path(uri.removeprefix("sqlite:///")).is_file())
