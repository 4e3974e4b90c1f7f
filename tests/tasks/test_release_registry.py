"""The MLflow registry of releases against a real sqlite store: experiment folders
whose names MLflow's filters and model names cannot take as they are (``bob's exp``,
``exp:v1``), every released version linked to its logged model (the model's page lists
it), and a microcontroller's bundle registered like a board's release."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tasks.config import BenchmarkParams, load_farm
from tasks.core.layout import Layout
from tasks.release import release_device
from tasks.release.registry import alias, registered_model_name

FARM = """\
devices:
  local: {threads: 1, workdir: .edgeflow/devices/local}
  esp: {transport: mcu, flash_kb: 4096, ram_kb: 512}
"""
QUICK = BenchmarkParams(warmup_runs=2, warmup_seconds=0.0, runs=10, seconds=0.01,
                        max_seconds=0.05, accuracy_samples=0, timeout_seconds=60)
LINK_TAG = "mlflow.modelVersions"  # what MLflow's logged-model page reads its versions from


def client_for(layout: Layout) -> Any:
    from mlflow import MlflowClient

    uri = json.loads(layout.tracking_record.read_text())["tracking_uri"]
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


@pytest.fixture(scope="module")
def tracked(tiny_project: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny project converted to onnx-fp32 (a board) and tflm-int8 (the
    microcontroller), benchmarked, selected and tracked, in a folder named ``bob's exp``."""
    from tasks.benchmark import benchmark_device
    from tasks.convert import ConvertInputs, convert
    from tasks.config import ConvertParams, QuantizationParams
    from tasks.select import select
    from tasks.track import track

    source = tiny_project.layout
    layout = Layout(tmp_path_factory.mktemp("registry") / "bob's exp")
    shutil.copytree(source.prepared, layout.prepared)
    shutil.copytree(source.base_model, layout.base_model)
    shutil.copytree(source.train_metrics.parent, layout.train_metrics.parent)
    convert({"tflm": ["int8"], "onnx": ["fp32"]}, ConvertParams(check_samples=40),
            QuantizationParams(calibration_samples=50), 0.5,
            ConvertInputs(source.base_model, None, layout.prepared), layout.variants)
    (layout.root / "farm.yaml").write_text(FARM, encoding="utf-8")
    farm = load_farm(layout.root / "farm.yaml")
    for name, device in farm.devices.items():
        benchmark_device(name, device, QUICK, layout.variants, layout.prepared,
                         layout.device_results(name))
    select(tiny_project.params.requirements, farm, layout.results,
           layout.base_model / "reference.json", layout.reports, layout.train_metrics.parent)
    track(tiny_project.params.model_dump(mode="json"), layout)
    return layout.root


def copied(tracked: Path, folder: Path) -> Layout:
    """A copy of the tracked project in ``folder`` with its own MLflow store."""
    shutil.copytree(tracked, folder, symlinks=True)
    record = folder / "metrics" / "mlflow_run.json"
    document = json.loads(record.read_text())
    document["tracking_uri"] = f"sqlite:///{(folder / 'mlflow' / 'mlflow.db').resolve()}"
    record.write_text(json.dumps(document))
    return Layout(folder)


@pytest.mark.parametrize("folder", ["bob's exp", "exp:v1", 'say "hi"'])
def test_an_experiment_folder_of_any_name_releases_and_registers_linked_versions(
        tiny_project: Any, tracked: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        folder: str) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    layout = copied(tracked, tmp_path / folder)
    farm = load_farm(layout.root / "farm.yaml")
    summary = json.loads(layout.summary.read_text())
    assert summary["recommendations"] == {"local": "onnx-fp32", "esp": "tflm-int8"}
    model_ids = json.loads(layout.tracking_record.read_text())["model_ids"]
    client = client_for(layout)
    name = registered_model_name(layout)

    for device in ("local", "esp"):
        outcome = release_device(tiny_project.params, farm, layout, device)
        assert outcome.status == "released", outcome.message
        variant = summary["recommendations"][device]
        version = client.get_model_version_by_alias(name, alias(device))
        assert str(version.version) == outcome.mlflow_version
        # Made from the logged model's files (MLflow's sqlite registry keeps no model id:
        # edgeflow's tag names it).
        logged = client.get_logged_model(model_ids[variant])
        assert version.source == logged.artifact_location
        assert version.tags["edgeflow.model_id"] == model_ids[variant]
        assert version.tags["edgeflow.variant"] == variant
        # The logged model's page lists the version made from it.
        listed = json.loads(client.get_logged_model(model_ids[variant]).tags[LINK_TAG])
        assert [(entry["name"], str(entry["version"])) for entry in listed] == [
            (name, outcome.mlflow_version)]
    assert [version.version for version in client.search_model_versions()] != []
    esp = json.loads((layout.device_releases("esp") / "release.json").read_text())
    assert esp["current"]["mlflow"]["version"] == str(client.get_model_version_by_alias(
        name, alias("esp")).version)

    # Registering again (a release by hand of the same variant) links nothing twice.
    from tasks.release import registry

    again = registry.register(layout, "onnx-fp32", "local")
    assert again is not None and again["version"] == str(client.get_model_version_by_alias(
        name, alias("local")).version)
    assert len(json.loads(client.get_logged_model(model_ids["onnx-fp32"]).tags[LINK_TAG])) == 1


def test_registered_model_names_are_ones_mlflow_takes_and_stay_unique(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(registry_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                          tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    folders = ["myexp", "bob's exp", "exp:v1", "exp_v1", 'say "hi"', "back\\slash", "tab\there"]
    names = [registered_model_name(Layout(tmp_path / folder)) for folder in folders]
    assert names[:2] == ["edgeflow-myexp", "edgeflow-bob's exp"], "names MLflow takes are kept"
    assert names[2].startswith("edgeflow-exp_v1-") and len(names[2]) == len("edgeflow-exp_v1-") + 8
    assert names[3] == "edgeflow-exp_v1"
    assert len(set(names)) == len(names)
    for name in names:
        client.create_registered_model(name)
    assert sorted(model.name for model in client.search_registered_models()) == sorted(names)


def test_filter_literals_find_exactly_their_value_in_a_real_store(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    from tasks.core.mlflow_store import quoted

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("edgeflow")
    values = ["/exp/bob's exp", 'say "hi"', "exp:v1", "a\\b", "c;d and e", "é ü"]
    runs = {value: client.create_run(experiment, tags={"k": value}).info.run_id
            for value in values}
    for value in values:
        literal = quoted(value)
        assert literal is not None
        found = client.search_runs([experiment], filter_string=f"tags.k = {literal}")
        assert [run.info.run_id for run in found] == [runs[value]], value
    assert quoted("both ' and \"") is None and quoted("ends\\") is None


def test_runs_left_running_are_closed_and_named_in_a_folder_with_quotes(tmp_path: Path) -> None:
    import socket
    from datetime import datetime, timezone

    from mlflow import MlflowClient

    from tasks.track import EXPERIMENT_TAG, HOST_TAG, close_abandoned_runs
    from tasks.track.provenance import run_name

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("edgeflow")
    folder = str(tmp_path / "bob's exp")
    killed = client.create_run(experiment, tags={EXPERIMENT_TAG: folder,
                                                 HOST_TAG: socket.gethostname()}).info.run_id
    other = client.create_run(experiment, tags={EXPERIMENT_TAG: str(tmp_path / "bob"),
                                                HOST_TAG: socket.gethostname()}).info.run_id
    assert close_abandoned_runs(client, experiment, folder) == [killed]
    assert client.get_run(other).info.status == "RUNNING"

    when = datetime(2026, 11, 5, 14, 23, 1, tzinfo=timezone.utc)
    layout = Layout(tmp_path / "bob's exp")
    assert run_name(client, experiment, layout, when) == "bob's exp-20261105-142301"
    client.create_run(experiment, run_name="bob's exp-20261105-142301")
    assert run_name(client, experiment, layout, when) == "bob's exp-20261105-142301-2"
