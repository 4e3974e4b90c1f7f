"""The track step against a real MLflow sqlite store: a lifecycle parent run with one
nested run per (variant, device), in the project's own ``mlflow/`` folder (or wherever
``MLFLOW_TRACKING_URI`` points), without leaking the tracking URI or writing ``mlruns``
into the current folder."""

from __future__ import annotations

import json
import os
import re
import shutil
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from tasks.config import BenchmarkParams
from tasks.core.contracts.summary import RowStatus
from tasks.core.errors import StepError
from tasks.core.files import read_json, write_json
from tasks.core.layout import Layout
from tasks.track import EXPERIMENT, flatten, track
from tasks.track.models import FLAVOURS
from tests.helpers import benchmarked_copy

FARM = """\
devices:
  local: {threads: 2, workdir: .edgeflow/devices/local}
  onnx-only: {threads: 1, workdir: .edgeflow/devices/onnx-only, runtimes: [onnxruntime],
              emulation: qemu-user}
"""
QUICK = BenchmarkParams(warmup_runs=2, warmup_seconds=0.0, runs=10, seconds=0.01,
                        max_seconds=0.05, accuracy_samples=0, timeout_seconds=60)
CHILD_PARAMS = {"variant", "format", "precision", "source", "device", "runtime",
                "runtime_version", "execution_precision", "threads"}
OK_METRICS = {"accuracy", "size_bytes", "latency_p50_ms", "latency_p90_ms", "latency_p99_ms",
              "latency_mean_ms", "throughput_fps", "peak_rss_mb", "load_ms"}


@pytest.fixture(scope="module")
def benchmarked(tiny_project: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project folder after prepare/train/convert (copied), benchmark and select."""
    root = tmp_path_factory.mktemp("tracked") / "project"
    benchmarked_copy(tiny_project, root, FARM, QUICK)
    return root


@pytest.fixture()
def project(benchmarked: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Layout:
    """A fresh copy of the benchmarked project; the current folder is ``tmp_path``."""
    root = tmp_path / "project"
    shutil.copytree(benchmarked, root)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return Layout(root)


def params_dump(tiny_project: Any) -> dict[str, Any]:
    return tiny_project.params.model_dump(mode="json")


def client_for(uri: str) -> Any:
    import mlflow

    return mlflow.MlflowClient(tracking_uri=uri)


def all_runs(client: Any, experiment_id: str) -> list[Any]:
    return client.search_runs([experiment_id], max_results=1000)


def test_track_logs_parent_and_nested_runs(tiny_project: Any, project: Layout,
                                           tmp_path: Path) -> None:
    record_path = track(params_dump(tiny_project), project, run_name="lifecycle-test")
    assert record_path == project.tracking_record
    assert "MLFLOW_TRACKING_URI" not in os.environ, "the tracking URI leaked into the environment"
    assert list(tmp_path.rglob("mlruns")) == [], "MLflow wrote ./mlruns"

    db = project.root / "mlflow" / "mlflow.db"
    assert db.is_file()
    client = client_for(f"sqlite:///{project.root}/mlflow/mlflow.db")
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None
    artifacts_root = (project.root / "mlflow" / "artifacts").resolve()
    assert experiment.artifact_location == artifacts_root.as_uri()

    runs = all_runs(client, experiment.experiment_id)
    parents = [run for run in runs if "mlflow.parentRunId" not in run.data.tags]
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.run_name == "lifecycle-test"
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["edgeflow.kind"] == "lifecycle"
    assert set(parent.data.params) == set(flatten(params_dump(tiny_project)))
    assert parent.data.params["train.epochs"] == "6"
    assert parent.data.params["model.architecture"] == "small_cnn"
    summary = read_json(project.summary)
    assert parent.data.metrics["reference_accuracy"] == pytest.approx(summary["reference_accuracy"])
    low, high = summary["reference_interval"]
    assert parent.data.metrics["reference_accuracy_low"] == pytest.approx(low) and low < high
    assert parent.data.metrics["reference_accuracy_high"] == pytest.approx(high)
    trained = read_json(project.train_metrics)
    assert parent.data.metrics["train.val_accuracy_low"] == pytest.approx(trained["val_accuracy_low"])
    assert parent.data.metrics["train.best_epoch"] == trained["best_epoch"]
    # Per-epoch curves: one point per epoch, the epoch as step, the values of the history.
    history = read_json(project.train_metrics.with_name("train_history.json"))
    for key in ("loss", "val_loss", "val_accuracy", "learning_rate"):
        points = client.get_metric_history(parent.info.run_id, f"epoch.{key}")
        assert sorted((p.step, p.value) for p in points) == [
            (row["epoch"], pytest.approx(row[key])) for row in history]
    assert parent.data.metrics["results_pass"] == summary["counts"]["pass"]
    assert parent.data.metrics["results_skipped"] == summary["counts"]["skipped"] == 2
    parent_files = {item.path for item in client.list_artifacts(parent.info.run_id, "reports")}
    assert {"reports/summary.json", "reports/report.md", "reports/report.html",
            "reports/plots"} <= parent_files
    logged_plots = {item.path for item in client.list_artifacts(parent.info.run_id,
                                                                "reports/plots")}
    assert {"reports/plots/p90_heatmap.png", "reports/plots/accuracy_vs_size.png",
            "reports/plots/devices"} <= logged_plots

    children = [run for run in runs if run is not parent]
    assert all(run.data.tags["mlflow.parentRunId"] == parent.info.run_id for run in children)
    expected = {(row["variant"], row["device"]) for row in summary["results"]}
    assert len(expected) == 6
    by_key = {(run.data.params["variant"], run.data.params["device"]): run for run in children}
    assert set(by_key) == expected and len(children) == len(expected)

    tracked = read_json(record_path)
    assert tracked["tracking_uri"] == f"sqlite:///{db.resolve()}"
    assert tracked["experiment_id"] == experiment.experiment_id
    assert tracked["parent_run_id"] == parent.info.run_id
    assert tracked["nested_run_ids"] == {f"{variant}@{device}": run.info.run_id
                                         for (variant, device), run in by_key.items()}

    meta = read_json(project.prepared / "meta.json")
    for row in summary["results"]:
        child = by_key[(row["variant"], row["device"])]
        record = read_json(project.device_results(row["device"]) / f"{row['variant']}.json")
        assert child.info.run_name == f"{row['variant']}@{row['device']}"
        # An emulated board's runs say so in params and device tags (issue 28); a
        # physical board's have neither.
        emulated = {"emulated": "true", "emulation": "qemu-user"} \
            if row["device"] == "onnx-only" else {}
        assert set(child.data.params) == CHILD_PARAMS | set(emulated)
        assert {key: child.data.params[key] for key in emulated} == emulated
        assert {key: value for key, value in child.data.tags.items()
                if key in ("device.emulated", "device.emulation")} == {
            f"device.{key}": value for key, value in emulated.items()}
        assert child.data.params["format"] == row["format"]
        assert child.data.params["precision"] == row["precision"]
        assert child.data.params["source"] == "base"
        assert child.data.params["runtime"] == row["runtime"]
        # farm.yaml's threads for the device (the default 1 would hide a dropped setting).
        assert record["threads"] == {"local": 2, "onnx-only": 1}[row["device"]]
        assert child.data.params["threads"] == str(record["threads"])
        assert child.data.tags["device.arch"] == record["device_facts"]["arch"]
        assert child.data.tags["git_commit"] == parent.data.tags["git_commit"]
        assert child.data.tags["data_hash"] == parent.data.tags["data_hash"]
        assert len(child.data.tags["data_hash"]) == 16
        assert child.data.tags["status"] == row["status"]
        assert child.data.metrics["size_bytes"] == row["size_bytes"]
        if row["status"] == "skipped":
            assert child.data.params["runtime_version"] == "n/a"
            assert child.data.params["execution_precision"] == "n/a"
            assert set(child.data.metrics) == {"size_bytes"}
            assert child.data.tags["reasons"] == row["reasons"][0]
        else:
            assert OK_METRICS <= set(child.data.metrics)
            assert child.data.params["runtime_version"] == record["harness"]["runtime"]["version"]
            assert child.data.params["execution_precision"] == row["execution_precision"] == (
                record["harness"]["runtime"]["execution_precision"]) == "f32"
            assert child.data.metrics["accuracy"] == pytest.approx(row["accuracy"])
            assert child.data.metrics["latency_p50_ms"] == pytest.approx(row["latency_ms"]["p50"])
            assert child.data.metrics["latency_p99_ms"] == pytest.approx(row["latency_ms"]["p99"])
            assert child.data.metrics["throughput_fps"] == pytest.approx(row["throughput_fps"])
            assert child.data.metrics["load_ms"] == pytest.approx(row["load_ms"])
            assert child.data.metrics["peak_rss_mb"] > 0
            # The p50 interval as two metrics, around the p50.
            low, high = row["latency_ci95_ms"]["p50"]
            assert (child.data.metrics["latency_p50_low_ms"],
                    child.data.metrics["latency_p50_high_ms"]) == (low, high)
            assert low <= row["latency_ms"]["p50"] <= high

        files = {item.path for item in client.list_artifacts(child.info.run_id, "harness")}
        # Every timed latency beside the result (measured rows only).
        assert files == {f"harness/{row['variant']}.json"} | (
            {f"harness/{row['variant']}.latencies.npz"} if row["status"] != "skipped" else set())
        # The artifact is not copied into every (variant, device) run: the run links the
        # variant's one logged model and the test split it was measured on.
        assert client.list_artifacts(child.info.run_id, "artifact") == []
        run_dir = artifacts_root / child.info.run_id / "artifacts"
        assert read_json(run_dir / "harness" / f"{row['variant']}.json") == record
        assert [m.model_id for m in client.get_run(child.info.run_id).inputs.model_inputs] == [
            tracked["model_ids"][row["variant"]]]
        assert [(d.dataset.name, d.dataset.digest) for d in child.inputs.dataset_inputs] == [
            ("sklearn.datasets.load_digits-test", meta["sha256"]["test"][:16])]
        assert child.data.tags["mlflow.runType"] == "evaluation"  # the UI expands the parent
        recommended = summary["recommendations"][row["device"]] == row["variant"]
        assert child.data.tags["edgeflow.recommended"] == str(recommended).lower()
        assert child.data.tags["edgeflow.version"] == metadata.version("edgeflow")
    assert {device: parent.data.tags[f"recommended.{device}"]
            for device in summary["recommendations"]} == {
        device: variant or "none" for device, variant in summary["recommendations"].items()}
    assert sum(run.data.tags["edgeflow.recommended"] == "true" for run in children) == sum(
        variant is not None for variant in summary["recommendations"].values()) >= 1

    # The parent's dataset inputs: every split with its file's sha256 as digest.
    assert sorted((d.dataset.name, d.dataset.digest, d.tags[0].value)
                  for d in parent.inputs.dataset_inputs) == sorted(
        (f"sklearn.datasets.load_digits-{split}", meta["sha256"][split][:16], split)
        for split in ("train", "val", "test"))
    dataset = next(d.dataset for d in parent.inputs.dataset_inputs if d.tags[0].value == "test")
    assert json.loads(dataset.profile)["features_shape"][0] == meta["counts"]["test"]


def test_each_variant_is_one_logged_model_that_runs_and_is_reused(
        tiny_project: Any, project: Layout, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow
    import numpy as np

    from tasks.core import device_code

    # The project's own store, named for MLflow's `models:/` loader as well.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project.root.resolve()}/mlflow/mlflow.db")
    first = read_json(track(params_dump(tiny_project), project, run_name="first"))
    client = client_for(first["tracking_uri"])
    assert set(first["model_ids"]) == {"tflite-fp32", "onnx-fp32", "openvino-fp32"}
    assert client.get_run(first["parent_run_id"]).data.tags["edgeflow.models_logged"] == "3"
    variants = {entry["name"]: entry for entry in read_json(project.variants_index)["variants"]}
    images, labels = np.load(project.prepared / "test.npz")["x"][:40], np.load(
        project.prepared / "test.npz")["y"][:40]
    classes = read_json(project.prepared / "meta.json")["classes"]
    # What an application has: 8-bit pixels, here the test images as they were decoded
    # (16x16 grey), and camera-like frames of another size in RGB.
    raw = np.round(images * 255.0).astype(np.uint8)
    frames = np.repeat(np.repeat(np.repeat(raw, 3, axis=1), 2, axis=2), 3, axis=3)  # 48x32x3
    for name, model_id in first["model_ids"].items():
        model = client.get_logged_model(model_id)
        assert model.name == name and str(model.status) == "READY"
        assert model.source_run_id == first["parent_run_id"]
        assert model.params["format"] == variants[name]["format"]
        assert model.params["precision"] == "fp32" and model.params["source"] == "base"
        assert model.model_type == "python_function"
        info = mlflow.models.get_model_info(f"models:/{model_id}")
        assert "python_function" in info.flavors
        (spec,) = info.signature.inputs.inputs
        assert (spec.type, spec.shape) == (np.dtype(np.uint8), (-1, -1, -1, -1))
        assert info.signature.outputs.input_names() == ["class", "index", "score", "scores"]
        assert info.saved_input_example_info is not None
        # The logged model classifies raw images as the harness does from the variant's
        # own file on the same pixels, and names what it answers.
        loaded = mlflow.pyfunc.load_model(f"models:/{model_id}")
        answer = loaded.predict(raw)
        runtimes, tensors = device_code.load("runtimes"), device_code.load("tensors")
        runner = runtimes.load_runner(variants[name]["runtime"],
                                      str(project.variants / variants[name]["file"]), 1, {})
        logits = tensors.predict(runner, raw.astype(np.float32) / 255.0, variants[name]["spec"])
        expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        assert list(answer.columns) == ["class", "index", "score", "scores"]
        assert list(answer["index"]) == list(logits.argmax(1))
        assert list(answer["class"]) == [classes[index] for index in logits.argmax(1)]
        assert np.allclose(np.stack(answer["scores"]), expected, atol=1e-5)
        assert np.allclose(answer["score"], expected.max(1), atol=1e-5)
        assert (answer["index"] == labels).mean() > 0.5
        # Frames of another size and colour mode, and images of different sizes at once
        # (a ragged batch) are taken as they come.
        framed = loaded.predict(frames)
        assert (framed["index"] == labels).mean() > 0.5
        ragged = np.empty(2, dtype=object)
        ragged[0], ragged[1] = raw[0], frames[1]
        assert list(loaded.predict(ragged)["index"]) == [answer["index"][0], framed["index"][1]]

    # A re-track (a re-benchmark): the same models, none logged again.
    second = read_json(track(params_dump(tiny_project), project, run_name="second"))
    assert second["model_ids"] == first["model_ids"]
    assert client.get_run(second["parent_run_id"]).data.tags["edgeflow.models_logged"] == "0"
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert len(client.search_logged_models([experiment.experiment_id])) == 3
    # A changed artifact is a new model; the others are kept.
    onnx_file = project.variants / variants["onnx-fp32"]["file"]
    index = read_json(project.variants_index)
    for entry in index["variants"]:
        if entry["name"] == "onnx-fp32":
            entry["files"][0]["sha256"] = "0" * 64
    write_json(project.variants_index, index)
    assert onnx_file.is_file()
    third = read_json(track(params_dump(tiny_project), project, run_name="third"))
    assert third["model_ids"]["onnx-fp32"] != first["model_ids"]["onnx-fp32"]
    assert third["model_ids"]["tflite-fp32"] == first["model_ids"]["tflite-fp32"]
    assert client.get_run(third["parent_run_id"]).data.tags["edgeflow.models_logged"] == "1"


@pytest.mark.parametrize("fit", ["squash", "letterbox", None])
def test_the_logged_model_brings_images_to_size_as_the_prepared_data_says(
        tiny_project: Any, tmp_path: Path, fit: str | None) -> None:
    """A letterbox project's logged model letterboxes (as its release's predictor does),
    a squash project's squashes, and a model logged before ``fit`` was recorded
    (``fit`` None here: absent from serving.json) squashes."""
    import dataclasses

    import mlflow.pyfunc
    import numpy as np
    from mlflow.models import Model

    from tasks.core.contracts.variants import read_variant_index
    from tasks.device import preprocess
    from tasks.track.models import _quietly, _save_harness_pyfunc, model_inputs

    prepared = tmp_path / "prepared"
    shutil.copytree(tiny_project.layout.prepared, prepared)
    meta = read_json(prepared / "meta.json")
    meta["fit"] = fit or "squash"
    write_json(prepared / "meta.json", meta)
    inputs = model_inputs(prepared)
    assert inputs.input["fit"] == (fit or "squash")
    if fit is None:
        inputs = dataclasses.replace(inputs, input={
            key: value for key, value in inputs.input.items() if key != "fit"})
    variants = tiny_project.layout.variants
    (variant,) = [entry for entry in read_variant_index(variants).variants
                  if entry.name == "onnx-fp32"]
    with _quietly():
        _save_harness_pyfunc(variant, variants, tmp_path / "model", Model(), inputs)
        model = mlflow.pyfunc.load_model(str(tmp_path / "model")).unwrap_python_model()
    # A wide frame (3:1) with no black pixel: letterboxing adds black bands above and
    # below, squashing none.
    wide = np.random.default_rng(0).integers(50, 256, (16, 48, 3), dtype=np.uint8)
    height, width, color = (inputs.input[key] for key in ("height", "width", "color"))
    expected = preprocess.to_model_input(preprocess.image_from_array(wide), height, width,
                                         color, fit or "squash")
    prepared_image = model._prepared(wide)
    assert np.array_equal(prepared_image, expected)
    black_rows = int((prepared_image.reshape(height, -1).max(axis=1) == 0).sum())
    assert black_rows == (0 if fit in ("squash", None) else height - round(height / 3))


def test_the_pyfunc_class_answers_each_image_by_its_own_softmax_and_decodes_bytes(
        tiny_project: Any, tmp_path: Path) -> None:
    """HarnessModel itself (imported, not the copy MLflow runs as the model's code):
    loaded from a saved model's artifacts, it answers a batch of five raw images and the
    same images as PNG bytes with the variant's own logits, each row's softmax over the
    classes (the row's own maximum subtracted, not another row's) in its ``scores``."""
    import io

    import mlflow.pyfunc
    import numpy as np
    from mlflow.models import Model
    from PIL import Image

    from tasks.core import device_code
    from tasks.core.contracts.variants import read_variant_index
    from tasks.device import preprocess
    from tasks.track.models import _quietly, _save_harness_pyfunc, model_inputs
    from tasks.track.pyfunc_model import HarnessModel

    inputs = model_inputs(tiny_project.layout.prepared)
    variants = tiny_project.layout.variants
    (variant,) = [entry for entry in read_variant_index(variants).variants
                  if entry.name == "onnx-fp32"]
    saved = tmp_path / "model"
    with _quietly():
        _save_harness_pyfunc(variant, variants, saved, Model(), inputs)
        mlflow.pyfunc.load_model(str(saved))  # puts the model's code on sys.path
    artifacts = {key: str(saved / entry["path"]) for key, entry in
                 Model.load(str(saved)).flavors["python_function"]["artifacts"].items()}
    model = HarnessModel()
    model.load_context(mlflow.pyfunc.PythonModelContext(artifacts=artifacts, model_config={}))

    pixels = np.load(tiny_project.layout.prepared / "test.npz")["x"][:5]
    raw = np.round(pixels * 255.0).astype(np.uint8)
    height, width, color = (inputs.input[key] for key in ("height", "width", "color"))
    runner = device_code.load("runtimes").load_runner(
        variant.runtime, str(variants / str(variant.file)), 1, {})
    batch = np.stack([preprocess.to_model_input(preprocess.image_from_array(image), height,
                                                width, color) for image in raw])
    logits = device_code.load("tensors").predict(runner, batch, variant.spec)
    # A large shared offset would hide a row normalised by another row's maximum.
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)

    def png(image: Any) -> bytes:
        encoded = io.BytesIO()
        Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).save(
            encoded, format="PNG")
        return encoded.getvalue()

    for given in (raw, [png(image) for image in raw]):
        answer = model.predict(None, given)
        assert list(answer.columns) == ["class", "index", "score", "scores"]
        assert np.allclose(np.stack(answer["scores"]), expected, atol=1e-6)
        assert list(answer["index"]) == list(expected.argmax(1))
        assert list(answer["class"]) == [inputs.classes[index] for index in expected.argmax(1)]
        assert np.allclose(answer["score"], expected.max(1), atol=1e-6)
    assert len(model.predict(None, raw[:0])) == 0


def test_runs_carry_their_origin_and_a_name_of_experiment_and_time(
        tiny_project: Any, project: Layout) -> None:
    import random
    import subprocess

    from tasks.track.provenance import run_name

    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(project.root)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "x"], check=True)
    commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()
    names = []
    for _ in range(2):
        random.seed(0)  # seeded training seeds `random`: names must not repeat with it
        names.append(client_for(read_json(track(params_dump(tiny_project), project))[
            "tracking_uri"]).get_run(read_json(project.tracking_record)["parent_run_id"]))
    first, second = names
    assert first.info.run_name != second.info.run_name
    for parent in names:
        assert re.fullmatch(r"project-\d{8}-\d{6}(-\d+)?", parent.info.run_name)
        assert parent.data.tags["mlflow.source.git.commit"] == parent.data.tags["git_commit"] == commit
        assert parent.data.tags["edgeflow.version"] == metadata.version("edgeflow")
        assert parent.data.tags["mlflow.source.name"] == "edgeflow step"
        assert "prefect.flow_run_id" not in parent.data.tags  # no Prefect flow here
    # One second, two lifecycles: the second name gets a suffix.
    client = client_for(read_json(project.tracking_record)["tracking_uri"])
    experiment = client.get_experiment_by_name(EXPERIMENT).experiment_id
    when = datetime(2026, 11, 5, 14, 23, 1, tzinfo=timezone.utc)
    assert run_name(client, experiment, project, when) == "project-20261105-142301"
    client.create_run(experiment, run_name="project-20261105-142301")
    assert run_name(client, experiment, project, when) == "project-20261105-142301-2"


def test_the_experiment_opens_as_model_training_unless_someone_chose(tmp_path: Path) -> None:
    from tasks.track.store import experiment_id

    client = client_for(f"sqlite:///{tmp_path / 'mlflow.db'}")
    created = experiment_id(client, tmp_path, f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert client.get_experiment(created).tags["mlflow.experimentKind"] == "custom_model_development"
    client.delete_experiment_tag(created, "mlflow.experimentKind")  # an older store
    assert experiment_id(client, tmp_path, "") == created
    assert client.get_experiment(created).tags["mlflow.experimentKind"] == "custom_model_development"
    client.set_experiment_tag(created, "mlflow.experimentKind", "genai_development")
    experiment_id(client, tmp_path, "")
    assert client.get_experiment(created).tags["mlflow.experimentKind"] == "genai_development"


def test_a_track_that_fails_leaves_its_run_failed_with_the_error(tiny_project: Any,
                                                                 project: Layout) -> None:
    from tasks.track import record_failure

    broken = next(project.results.glob("*/onnx-fp32.json"))
    broken.write_text("{", encoding="utf-8")
    with pytest.raises(StepError) as caught:
        track(params_dump(tiny_project), project)
    client = client_for(f"sqlite:///{project.root}/mlflow/mlflow.db")
    experiment = client.get_experiment_by_name(EXPERIMENT)
    parents = [run for run in all_runs(client, experiment.experiment_id)
               if "mlflow.parentRunId" not in run.data.tags]
    assert [run.info.status for run in parents] == ["FAILED"]
    line = str(caught.value).splitlines()[0]
    assert "onnx-fp32.json" in line
    assert parents[0].data.tags["edgeflow.error"] == line
    assert parents[0].data.tags["edgeflow.error_type"] == "StepError"
    text = (project.root / "mlflow" / "artifacts" / parents[0].info.run_id / "artifacts" /
            "error.txt").read_text()
    assert text.startswith("Traceback") and line in text
    # The flow hands the same error on: it is already in MLflow, no second run.
    before = len(all_runs(client, experiment.experiment_id))
    assert record_failure(params_dump(tiny_project), project, caught.value) is None
    assert len(all_runs(client, experiment.experiment_id)) == before


def test_a_lifecycle_that_fails_before_tracking_leaves_a_failed_run(
        tiny_project: Any, project: Layout, monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.track import record_failure

    try:
        raise StepError("train: val accuracy 0.31 [0.22, 0.42] is no better than chance\nmore")
    except StepError as caught:
        error = caught
    run_id = record_failure(params_dump(tiny_project), project, error)
    client = client_for(f"sqlite:///{project.root}/mlflow/mlflow.db")
    run = client.get_run(run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["edgeflow.error"] == (
        "train: val accuracy 0.31 [0.22, 0.42] is no better than chance")
    assert run.data.tags["edgeflow.kind"] == "lifecycle"
    assert run.data.params["train.epochs"] == "6"
    assert re.fullmatch(r"project-\d{8}-\d{6}", run.info.run_name)
    text = (project.root / "mlflow" / "artifacts" / run_id / "artifacts" / "error.txt").read_text()
    assert "Traceback" in text and "raise StepError" in text and "more" in text
    # MLflow out of reach: a warning, never an error that hides the lifecycle's own.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9/")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    assert record_failure(params_dump(tiny_project), project, error) is None


def test_tracking_uri_from_environment_is_used_and_kept(tiny_project: Any, project: Layout,
                                                        tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    other_dir = tmp_path / "elsewhere"
    other_dir.mkdir()
    other = f"sqlite:///{other_dir}/other.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", other)
    tracked = read_json(track(params_dump(tiny_project), project))
    assert os.environ["MLFLOW_TRACKING_URI"] == other
    assert tracked["tracking_uri"] == other
    assert not (project.root / "mlflow").exists(), "the project store was used"

    client = client_for(other)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment.experiment_id == tracked["experiment_id"]
    runs = all_runs(client, experiment.experiment_id)
    assert len(runs) == 1 + 6
    parent = client.get_run(tracked["parent_run_id"])
    assert parent.data.tags["edgeflow.kind"] == "lifecycle"


def test_failing_track_keeps_the_store_and_the_environment(tiny_project: Any,
                                                          project: Layout) -> None:
    first = read_json(track(params_dump(tiny_project), project))
    project.summary.unlink()
    with pytest.raises(StepError, match=r"summary.json is missing: run the select step first"):
        track(params_dump(tiny_project), project)
    assert "MLFLOW_TRACKING_URI" not in os.environ
    # The earlier run and its record are untouched; the failed one logged no run.
    assert read_json(project.tracking_record) == first
    client = client_for(first["tracking_uri"])
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment.experiment_id == first["experiment_id"]
    runs = all_runs(client, experiment.experiment_id)
    assert len(runs) == 1 + 6
    assert all(run.info.status == "FINISHED" for run in runs)


def test_mlflow_tracking_uri_is_restored_after_track(tiny_project: Any, project: Layout) -> None:
    import mlflow

    before = mlflow.get_tracking_uri()
    project.summary.unlink()  # the cheapest way through track(): it fails after connecting
    with pytest.raises(StepError):
        track(params_dump(tiny_project), project)
    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert mlflow.get_tracking_uri() == before


def test_runs_a_killed_process_left_running_are_closed_for_their_experiment_only(
        tmp_path: Path) -> None:
    from mlflow import MlflowClient

    import socket

    from tasks.track import EXPERIMENT_TAG, HOST_TAG, close_abandoned_runs

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment_id = client.create_experiment("edgeflow")

    def parent(root: str, host: str = socket.gethostname()) -> str:
        return client.create_run(experiment_id,
                                 tags={EXPERIMENT_TAG: root, HOST_TAG: host}).info.run_id

    killed, finished, other = parent("/exp/a"), parent("/exp/a"), parent("/exp/b")
    elsewhere = parent("/exp/a", host="another-ci-runner")  # live on another machine
    nested = client.create_run(experiment_id, tags={"mlflow.parentRunId": killed}).info.run_id
    done_nested = client.create_run(experiment_id, tags={"mlflow.parentRunId": killed}).info.run_id
    client.set_terminated(done_nested)
    client.set_terminated(finished)
    assert sorted(close_abandoned_runs(client, experiment_id, "/exp/a")) == sorted([killed, nested])
    status = {run_id: client.get_run(run_id).info.status
              for run_id in (killed, nested, done_nested, finished, other, elsewhere)}
    assert status == {killed: "KILLED", nested: "KILLED", done_nested: "FINISHED",
                      finished: "FINISHED", other: "RUNNING", elsewhere: "RUNNING"}
    assert close_abandoned_runs(client, experiment_id, "/exp/a") == []


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_make_mlflow_serves_the_store_and_track_logs_through_it(
        tiny_project: Any, project: Layout, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`make mlflow` (the Makefile's target, this venv) on a free port over a fresh
    store; the track step logs through MLFLOW_TRACKING_URI=http://... and the runs and
    models are read back from the server."""
    import signal
    import subprocess
    import sys
    import time
    import urllib.request

    repo, port, store = Path(__file__).resolve().parents[2], _free_port(), tmp_path / "store"
    server = subprocess.Popen(
        ["make", "-s", "-C", str(repo), "-o", ".venv/.installed", "mlflow",
         f"BIN={Path(sys.executable).parent}", f"MLFLOW_DIR={store}", f"MLFLOW_PORT={port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if urllib.request.urlopen(f"{uri}/health", timeout=2).read() == b"OK":
                    break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "no server"
                time.sleep(0.5)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        tracked = read_json(track(params_dump(tiny_project), project))
        assert tracked["tracking_uri"] == uri
        assert (store / "mlflow.db").is_file() and not (project.root / "mlflow").exists()

        client = client_for(uri)
        experiment = client.get_experiment_by_name(EXPERIMENT)
        assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
        assert experiment.artifact_location == f"{(store / 'artifacts').resolve().as_uri()}/1"
        runs = all_runs(client, experiment.experiment_id)
        assert len(runs) == 1 + 6
        parent = client.get_run(tracked["parent_run_id"])
        assert parent.info.status == "FINISHED" and parent.data.tags["edgeflow.kind"] == "lifecycle"
        assert {run.info.run_name for run in runs if run.info.run_id != parent.info.run_id} == {
            f"{row['variant']}@{row['device']}" for row in read_json(project.summary)["results"]}
        models = client.search_logged_models([experiment.experiment_id])
        assert sorted(model.name for model in models) == ["onnx-fp32", "openvino-fp32",
                                                          "tflite-fp32"]
        # Artifacts are plain files of the store's folder, listed through the server too.
        assert (store / "artifacts" / "1" / parent.info.run_id / "artifacts" / "reports"
                / "summary.json").is_file()
        listed = urllib.request.urlopen(
            f"{uri}/api/2.0/mlflow/artifacts/list?run_id={parent.info.run_id}").read()
        assert b'"reports"' in listed
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


# ------------------------------------------------- what each piece writes, exactly
# One sqlite store for the module (its migrations cost seconds); each test makes its
# own experiment or runs in it and reads back exactly what arrived.


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, str]:
    """A client on a fresh sqlite store and one experiment in it."""
    folder = tmp_path_factory.mktemp("store")
    client = client_for(f"sqlite:///{folder / 'mlflow.db'}")
    return client, client.create_experiment("pieces", artifact_location=(
        folder / "artifacts").as_uri())


def _harness_ok(**changes: Any) -> dict[str, Any]:
    """A harness result whose every number differs from every other."""
    return {"runtime": {"name": "onnxruntime", "version": "1.32.0",
                        "execution_precision": "f32"},
            "load_ms": 11.5, "first_inference_ms": 7.25, "runs": 40,
            "latency_ms": {"p50": 2.5, "p90": 3.5, "p99": 4.5, "mean": 2.75, "std": 0.625,
                           "min": 2.0, "max": 5.0},
            "throughput_fps": 390.0, "peak_rss_mb": 123.0, "accuracy": 0.875,
            "accuracy_samples": 64, "status": "ok", **changes}


def _record(row: Any, harness: dict[str, Any] | None) -> dict[str, Any]:
    return {"variant": row.variant, "device": row.device, "format": row.format,
            "precision": row.precision, "source": row.source, "runtime": row.runtime,
            "size_bytes": row.size_bytes, "sha256": "ab" * 32, "threads": row.threads,
            "device_facts": {"arch": "aarch64", "cpu_count": 4, "fp16": True},
            "status": "ok" if harness else "skipped", "error": None if harness else "no",
            "harness": harness}


def _full_row(status: str = "pass", **changes: Any) -> Any:
    """A row where every measured column holds its own value (a metric read from the
    wrong column shows), timed end to end, with both latency intervals and an MCU fit."""
    from tests.tasks.select.summaries import summary_row

    return summary_row(
        "onnx-int8", device="pi", status=status, size_bytes=1111, threads=3,
        accuracy=0.8125, accuracy_samples=48, accuracy_interval=[0.6875, 0.9375],
        accuracy_drop=0.0625, latency_ms={"p50": 2.5, "p90": 3.5, "p99": 4.5, "mean": 2.75},
        latency_ci95_ms={"p50": [2.25, 2.625], "p90": [3.25, 3.875], "p99": None},
        throughput_fps=390.0, peak_rss_mb=123.0, load_ms=11.5,
        end_to_end={"latency_ms": {"p50": 5.5, "p90": 6.5, "p99": 7.5, "mean": 5.75},
                    "throughput_fps": 170.0, "accuracy": 0.78125,
                    "stages_ms": {"decode": 0.5, "preprocess": 1.25, "infer": 2.5,
                                  "postprocess": 0.125}},
        mcu={"model_bytes": 2001, "arena_bytes": 3001, "flash_bytes": 4001,
             "ram_bytes": 5001, "flash_budget_bytes": 6001, "ram_budget_bytes": 7001,
             "accuracy": 0.5, "accuracy_samples": 9, "ops": ["CONV_2D"]},
        runtime_version="1.32.0", execution_precision="f32",
        reasons=["p90 3.5 ms > 3 ms", "size 1111 B > 1000 B"], **changes)


# Every metric a fully measured row gives, by name, and the column it comes from.
FULL_ROW_METRICS = {
    "size_bytes": 1111.0, "accuracy": 0.8125, "accuracy_low": 0.6875,
    "accuracy_high": 0.9375, "accuracy_samples": 48.0, "accuracy_drop": 0.0625,
    "throughput_fps": 390.0, "peak_rss_mb": 123.0, "load_ms": 11.5,
    "latency_p50_ms": 2.5, "latency_p90_ms": 3.5, "latency_p99_ms": 4.5,
    "latency_mean_ms": 2.75, "latency_p50_low_ms": 2.25, "latency_p50_high_ms": 2.625,
    "latency_p90_low_ms": 3.25, "latency_p90_high_ms": 3.875,
    "e2e_latency_p50_ms": 5.5, "e2e_latency_p90_ms": 6.5, "e2e_latency_p99_ms": 7.5,
    "e2e_latency_mean_ms": 5.75, "e2e_decode_ms": 0.5, "e2e_preprocess_ms": 1.25,
    "e2e_infer_ms": 2.5, "e2e_postprocess_ms": 0.125, "e2e_throughput_fps": 170.0,
    "e2e_accuracy": 0.78125, "first_inference_ms": 7.25, "latency_std_ms": 0.625,
    "mcu_model_bytes": 2001.0, "mcu_arena_bytes": 3001.0, "mcu_flash_budget_bytes": 6001.0,
    "mcu_ram_budget_bytes": 7001.0}


def test_every_column_of_a_row_reaches_its_own_metric_and_nothing_unmeasured_does() -> None:
    from tasks.core.contracts.results import ResultRecord
    from tasks.track import _metrics
    from tests.tasks.select.summaries import summary_row

    row = _full_row()
    record = ResultRecord.model_validate(_record(row, _harness_ok()))
    assert _metrics(row, record) == FULL_ROW_METRICS
    # Nothing measured (a skipped row): only what is known without measuring.
    bare = summary_row("onnx-int8", device="pi", status="skipped", size_bytes=1111)
    assert _metrics(bare, ResultRecord.model_validate(_record(bare, None))) == {
        "size_bytes": 1111.0}


def test_an_emulated_cores_figures_reach_their_metrics_the_latency_as_an_estimate() -> None:
    from tasks.core.contracts.results import ResultRecord
    from tasks.track import _metrics

    on_target = {"core": "cortex-m4", "board": "mps2-an386", "accuracy": 0.75,
                 "accuracy_samples": 360, "arena_bytes": 3872, "arena_used_bytes": 3860,
                 "firmware_text_bytes": 71396, "firmware_data_bytes": 4,
                 "instructions_per_inference": 643200, "instruction_resolution": 40,
                 "cpi": 1.25, "clock_mhz": 64.0, "estimated_latency_ms": 12.5625,
                 "sources_sha256": "ab" * 32, "compiler": "arm-none-eabi-gcc 12.2"}
    from tasks.core.contracts.summary import SummaryRow

    full = _full_row().document()
    row = SummaryRow.model_validate({
        **full, "latency_ms": None, "latency_ci95_ms": None, "end_to_end": None,
        "estimated_latency_ms": 12.5625, "mcu": {**full["mcu"], "target": on_target}})
    metrics = _metrics(row, ResultRecord.model_validate(_record(row, _harness_ok())))
    assert {key: metrics[key] for key in metrics if "target" in key or "firmware" in key
            or "instructions" in key or "estimated" in key} == {
        "mcu_target_arena_bytes": 3872.0, "mcu_firmware_flash_bytes": 71400.0,
        "mcu_instructions_per_inference": 643200.0, "estimated_latency_ms": 12.5625}
    assert not {"latency_p50_ms", "latency_p90_ms", "latency_mean_ms"} & set(metrics)


@pytest.mark.parametrize("status", list(RowStatus))
def test_a_result_run_holds_exactly_its_params_metrics_tags_and_inputs(
        tiny_project: Any, store: tuple[Any, str], tmp_path: Path, status: Any) -> None:
    """One nested run, read back from the store: every param, every metric with its
    value (logged against the variant's model; the accuracies against the test split
    too), every tag (the status walked through each member), the model and the split as
    inputs, the harness result as an artifact."""
    from tasks.core.contracts.results import ResultRecord
    from tasks.track import ACCURACY_METRICS, _log_result
    from tasks.track.datasets import dataset_inputs

    client, experiment = store
    row = _full_row(status=str(status), emulated=True, emulation="qemu-user")
    layout = Layout(tmp_path)
    record = ResultRecord.model_validate(_record(row, _harness_ok()))
    write_json(layout.device_results("pi") / "onnx-int8.json", record.model_dump(mode="json"))
    parent = client.create_run(experiment).info.run_id
    model_id = client.create_logged_model(experiment, name="onnx-int8").model_id
    test_input = dataset_inputs(tiny_project.layout.prepared, ("test",))
    run_id = _log_result(client, experiment, parent, row, layout, {"git_commit": "c0ffee"},
                         model_id, test_input, recommended=False)
    run = client.get_run(run_id)
    assert run.info.run_name == "onnx-int8@pi" and run.info.status == "FINISHED"
    assert run.data.params == {
        "variant": "onnx-int8", "format": "onnx", "precision": "int8", "source": "base",
        "device": "pi", "runtime": "onnx", "runtime_version": "1.32.0",
        "execution_precision": "f32", "threads": "3", "emulated": "true",
        "emulation": "qemu-user"}
    assert run.data.metrics == FULL_ROW_METRICS
    assert {key: value for key, value in run.data.tags.items()
            if key != "mlflow.runName"} == {
        "mlflow.parentRunId": parent, "git_commit": "c0ffee",
        "mlflow.runType": "evaluation", "status": status.value,
        "edgeflow.recommended": "false",
        "reasons": "p90 3.5 ms > 3 ms; size 1111 B > 1000 B",
        "device.arch": "aarch64", "device.cpu_count": "4", "device.fp16": "True",
        "device.emulated": "true", "device.emulation": "qemu-user"}
    # Metrics against the model; those measured on the test split against it too.
    split = test_input[0].dataset
    attributed = {metric.key: (metric.value, metric.step, metric.dataset_name,
                               metric.dataset_digest)
                  for metric in client.get_logged_model(model_id).metrics}
    assert attributed == {key: (value, 0, *((split.name, split.digest)
                                            if key in ACCURACY_METRICS else (None, None)))
                          for key, value in FULL_ROW_METRICS.items()}
    assert {"accuracy", "accuracy_low", "accuracy_high", "accuracy_samples",
            "accuracy_drop"} == ACCURACY_METRICS
    assert [m.model_id for m in run.inputs.model_inputs] == [model_id]
    assert [(d.dataset.name, d.dataset.digest, [(t.key, t.value) for t in d.tags])
            for d in run.inputs.dataset_inputs] == [
        (split.name, split.digest, [("mlflow.data.context", "test")])]
    assert [item.path for item in client.list_artifacts(run_id, "harness")] == [
        "harness/onnx-int8.json"]


def test_a_run_without_a_model_or_reasons_says_none_and_a_recommended_one_true(
        tiny_project: Any, store: tuple[Any, str], tmp_path: Path) -> None:
    from tasks.core.contracts.results import ResultRecord
    from tasks.track import _log_result
    from tasks.track.datasets import dataset_inputs
    from tests.tasks.select.summaries import summary_row

    client, experiment = store
    row = summary_row("tflite-fp32", device="pi", size_bytes=5, threads=2)
    layout = Layout(tmp_path)
    write_json(layout.device_results("pi") / "tflite-fp32.json",
               ResultRecord.model_validate(_record(row, None)).model_dump(mode="json"))
    run_id = _log_result(client, experiment, client.create_run(experiment).info.run_id, row,
                         layout, {}, None, dataset_inputs(tiny_project.layout.prepared,
                                                          ("test",)), recommended=True)
    run = client.get_run(run_id)
    assert run.data.tags["reasons"] == "none"
    assert run.data.tags["edgeflow.recommended"] == "true"
    assert (run.data.params["runtime_version"], run.data.params["execution_precision"]) == (
        "n/a", "n/a")
    assert "emulated" not in run.data.params and "device.emulated" not in run.data.tags
    assert run.inputs.model_inputs == []


def test_training_metrics_are_the_numbers_of_train_json_prefixed(tmp_path: Path) -> None:
    from tasks.track import _training_metrics

    layout = Layout(tmp_path)
    write_json(layout.train_metrics, {"val_accuracy": 0.75, "best_epoch": 4, "stopped": True,
                                      "classes": ["a"], "note": "x", "val_accuracy_low": 0.5})
    assert _training_metrics(layout) == {"train.val_accuracy": 0.75, "train.best_epoch": 4.0,
                                         "train.val_accuracy_low": 0.5}


def test_training_curves_cross_log_batchs_limit_with_every_point_at_its_epoch(
        store: tuple[Any, str], tmp_path: Path) -> None:
    """More points than one ``log_batch`` takes (1000): every point arrives, once, at its
    epoch as step; the epoch itself and what is no number are not curves."""
    from tasks.track import _log_curves

    client, experiment = store
    history = [{"epoch": epoch, "loss": 1.0 / (epoch + 1), "accuracy": epoch / 1000,
                "val_loss": 2.0 / (epoch + 1), "val_accuracy": epoch / 2000, "note": "x"}
               for epoch in range(251)]  # 1004 points: one more batch of 4
    write_json(tmp_path / "train_history.json", history)
    run_id = client.create_run(experiment).info.run_id
    _log_curves(client, run_id, tmp_path / "train_history.json")
    _log_curves(client, run_id, tmp_path / "absent.json")  # no history: nothing, no error
    assert set(client.get_run(run_id).data.metrics) == {
        "epoch.loss", "epoch.accuracy", "epoch.val_loss", "epoch.val_accuracy"}
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        points = client.get_metric_history(run_id, f"epoch.{key}")
        assert sorted((point.step, point.value) for point in points) == [
            (row["epoch"], row[key]) for row in history]


def test_flatten_joins_keys_with_dots_and_keeps_lists_whole() -> None:
    assert flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": None, 3: "x"}) == {
        "a.b": 1, "a.c.d": [1, 2], "e": None, "3": "x"}
    assert flatten({"b": 1}, "a") == {"a.b": 1}
    assert flatten(5, "a") == {"a": 5}


@pytest.mark.parametrize("message, line", [
    ("first\nsecond", "first"),
    ("\n  padded  \nnext", "padded  "),  # leading blank lines dropped
    ("", "RuntimeError"),
    ("x" * 600, "x" * 500),
])
def test_an_error_is_recorded_by_its_first_line_type_note_and_traceback(
        store: tuple[Any, str], message: str, line: str) -> None:
    from tasks.track.runs import ERROR_FILE, RECORDED, record_error

    client, experiment = store
    run_id = client.create_run(experiment).info.run_id
    try:
        raise RuntimeError(message) if message else RuntimeError()
    except RuntimeError as caught:
        error = caught
    record_error(client, run_id, error)
    tags = client.get_run(run_id).data.tags
    assert (tags["edgeflow.error"], tags["edgeflow.error_type"],
            tags["mlflow.note.content"]) == (line, type(error).__name__, f"**Failed:** {line}")
    text = client.download_artifacts(run_id, ERROR_FILE)
    assert Path(text).read_text().startswith("Traceback (most recent call last)")
    assert getattr(error, RECORDED) == run_id


def test_origin_tags_say_job_or_local_commit_and_data_hash(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import getpass

    from tasks.core.files import sha256_file
    from tasks.track import provenance

    layout = Layout(tmp_path)
    monkeypatch.setattr(provenance, "git_commit", lambda root: provenance.UNKNOWN)
    monkeypatch.setattr(provenance, "prefect_flow_run", lambda: None)
    monkeypatch.setattr(provenance, "edgeflow_version", lambda: "9.9")
    assert provenance.origin_tags(layout) == {
        "git_commit": "unknown", "edgeflow.version": "9.9", "mlflow.user": getpass.getuser(),
        "mlflow.source.type": "LOCAL", "mlflow.source.name": "edgeflow step"}
    write_json(layout.prepared / "meta.json", {"source": "x"})
    monkeypatch.setattr(provenance, "git_commit", lambda root: "abc123")
    monkeypatch.setattr(provenance, "prefect_flow_run", lambda: ("f-id", "f-name"))
    assert provenance.origin_tags(layout) == {
        "git_commit": "abc123", "edgeflow.version": "9.9", "mlflow.user": getpass.getuser(),
        "mlflow.source.type": "JOB", "mlflow.source.name": "edgeflow-lifecycle (Prefect)",
        "mlflow.source.git.commit": "abc123", "prefect.flow_run_id": "f-id",
        "prefect.flow_run_name": "f-name",
        "data_hash": sha256_file(layout.prepared / "meta.json")[:16]}


def test_outside_git_and_outside_prefect_the_origin_says_so(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from tasks.track import provenance

    assert provenance.git_commit(tmp_path) == "unknown"
    assert provenance.git_commit(tmp_path / "absent") == "unknown"
    monkeypatch.delitem(sys.modules, "prefect", raising=False)
    assert provenance.prefect_flow_run() is None


@pytest.mark.parametrize("uri, where", [
    ("sqlite:///{root}/mlflow/mlflow.db", "{root}/mlflow/artifacts"),
    ("sqlite:///{root}/other/runs.db", "{root}/other/runs-artifacts"),
    ("http://127.0.0.1:5000", None),
    ("postgresql://db/mlflow", None),
])
def test_a_new_experiment_keeps_artifacts_beside_its_sqlite_database_only(
        tmp_path: Path, uri: str, where: str | None) -> None:
    from tasks.track.store import artifact_location

    root = tmp_path.resolve()
    expected = Path(where.format(root=root)).as_uri() if where else None
    assert artifact_location(root, uri.format(root=root)) == expected


@pytest.mark.parametrize("given, count", [
    ("batch4", 4), ("image3", 1), ("image2", 1), ("bytes", 1), ("frame", 2), ("dict", 4),
    ("list", 3), ("ragged", 2)])
def test_the_pyfunc_takes_images_in_every_form_it_documents(given: str, count: int) -> None:
    import numpy as np
    import pandas as pd

    from tasks.track.pyfunc_model import images_of

    batch = np.arange(4 * 5 * 6 * 3, dtype=np.uint8).reshape(4, 5, 6, 3)
    ragged = np.empty(2, dtype=object)
    ragged[0], ragged[1] = batch[0], batch[1, :3]
    model_input = {"batch4": batch, "image3": batch[0], "image2": batch[0, :, :, 0],
                   "bytes": bytearray(b"\x89PNG"),
                   "frame": pd.DataFrame({"images": [batch[0], batch[1]]}),
                   "dict": {"images": batch}, "list": [batch[0], batch[1], batch[2]],
                   "ragged": ragged}[given]
    images = images_of(model_input)
    assert len(images) == count
    if given == "bytes":
        assert images == [b"\x89PNG"] and type(images[0]) is bytes
    elif given in ("image3", "image2"):
        assert images[0] is model_input
    else:
        for image, expected in zip(images, [batch[0], batch[1], batch[2], batch[3]][:count]
                                   if given != "ragged" else list(ragged)):
            assert np.array_equal(image, expected)


def _variant(name: str = "onnx-int8", runtime: str = "onnxruntime", **changes: Any) -> Any:
    from tasks.core.contracts.variants import Variant

    return Variant.model_validate({
        "name": name, "format": "onnx", "precision": "int8", "source": "base",
        "runtime": runtime, "status": "ok", "reason": None, "file": f"{name}/model.onnx",
        "files": [{"path": f"{name}/model.onnx", "bytes": 10, "sha256": "a" * 64},
                  {"path": f"{name}/extra.bin", "bytes": 5, "sha256": "b" * 64}],
        "bytes": 15, "sha256": "a" * 64,
        "spec": {"arena_bytes": 4096, "execution_precision": "f16", "input": "x"},
        "accuracy": 0.9, "details": {},
        "check": {"samples": 8, "agreement": 1.0, "max_abs_logit_diff": 0.0, "accuracy": 0.9,
                  "reference_accuracy": 0.9, "passed": True, "failures": []}, **changes})


# Each part of what identifies a logged model, changed alone: the digest must change
# (else a re-track reuses a model that no longer is the variant).
DIGEST_CHANGES = {
    "name": {"name": "onnx-int8b"},
    "runtime": {"runtime": "openvino"},
    "spec": {"spec": {"arena_bytes": 4097, "execution_precision": "f16", "input": "x"}},
    "file path": {"files": [{"path": "onnx-int8/other.onnx", "bytes": 10, "sha256": "a" * 64},
                            {"path": "onnx-int8/extra.bin", "bytes": 5, "sha256": "b" * 64}]},
    "second file's hash": {"files": [
        {"path": "onnx-int8/model.onnx", "bytes": 10, "sha256": "a" * 64},
        {"path": "onnx-int8/extra.bin", "bytes": 5, "sha256": "c" * 64}]},
}


@pytest.mark.parametrize("change", list(DIGEST_CHANGES))
def test_the_model_digest_changes_with_each_thing_that_identifies_a_variant(change: str) -> None:
    from tasks.track.models import artifact_digest

    base = _variant()
    assert artifact_digest(base) == artifact_digest(_variant())
    assert re.fullmatch(r"[0-9a-f]{64}", artifact_digest(base))
    fields = {key: value for key, value in DIGEST_CHANGES[change].items() if key != "name"}
    changed = _variant(name=DIGEST_CHANGES[change].get("name", "onnx-int8"), **fields)
    assert artifact_digest(changed) != artifact_digest(base)


def test_the_model_digest_changes_with_the_device_code_and_the_flavour(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.core import device_code
    from tasks.track import models

    before = models.artifact_digest(_variant())
    monkeypatch.setattr(models, "FLAVOUR_VERSION", "next")
    after_flavour = models.artifact_digest(_variant())
    assert after_flavour != before
    files = device_code.package_files()
    edited = tmp_path / "edited.py"
    edited.write_bytes(files[-1][0].read_bytes() + b"\n# edited\n")
    monkeypatch.setattr(device_code, "package_files",
                        lambda: (*files[:-1], (edited, files[-1][1])))
    assert models.artifact_digest(_variant()) != after_flavour


class _Page(list):  # type: ignore[type-arg]
    def __init__(self, items: list[Any], token: str | None) -> None:
        super().__init__(items)
        self.token = token


def test_existing_models_pages_through_every_ready_variant_model() -> None:
    """Every page is read; only READY models with a digest count; the first model of a
    digest wins; the search asks for variant models only."""
    from types import SimpleNamespace

    from mlflow.entities import LoggedModelStatus

    from tasks.track.models import DIGEST_TAG, existing_models

    def model(model_id: str, digest: str | None, status: Any = LoggedModelStatus.READY) -> Any:
        return SimpleNamespace(model_id=model_id, status=status,
                               tags={DIGEST_TAG: digest} if digest else {})

    pages = {None: _Page([model("m1", "d1"), model("m2", "d2", LoggedModelStatus.FAILED),
                          model("m3", None)], "next"),
             "next": _Page([model("m4", "d1"), model("m5", "d2"),
                            model("m6", "d3", LoggedModelStatus.PENDING)], None)}
    asked = []

    class Client:
        def search_logged_models(self, experiments: list[str], max_results: int,
                                 page_token: str | None, filter_string: str) -> _Page:
            asked.append((experiments, max_results, page_token, filter_string))
            return pages[page_token]

    assert existing_models(Client(), "7") == {"d1": "m1", "d2": "m5"}
    assert asked == [(["7"], 100, None, "tags.`edgeflow.kind` = 'variant'"),
                     (["7"], 100, "next", "tags.`edgeflow.kind` = 'variant'")]


def test_only_runnable_named_variants_with_a_flavour_are_logged_once_per_digest(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.core.contracts.variants import VariantIndex
    from tasks.track import models

    known = _variant("known")
    index = VariantIndex(reference_accuracy=0.9, sources={}, variants=[
        _variant("new"), known, _variant("not-named"),
        _variant("failed", status="failed", reason="x"),
        _variant("no-flavour", runtime="tensorrt"),
        _variant("new", format="copy")])  # the same digest again: logged once
    monkeypatch.setattr(models, "existing_models",
                        lambda client, experiment: {models.artifact_digest(known): "m-known"})
    monkeypatch.setattr(models, "model_inputs", lambda prepared: "inputs")
    logged = []

    def log_model(client: Any, experiment: str, run: str, variant: Any, variants_dir: Path,
                  inputs: Any, digest: str) -> str:
        assert (inputs, digest) == ("inputs", models.artifact_digest(variant))
        logged.append(variant.name)
        return f"m-{variant.name}"

    monkeypatch.setattr(models, "_log_model", log_model)
    result = models.log_variant_models(None, "1", "run", index, Path("v"), Path("p"),
                                       {"new", "known", "failed", "no-flavour"})
    assert result == models.LoggedModels({"new": "m-new", "known": "m-known"}, ("new",))
    assert logged == ["new"]
    # No result at all (an empty set of names): no model, rather than every variant's.
    assert models.log_variant_models(None, "1", "run", index, Path("v"), Path("p"),
                                     set()) == models.LoggedModels({}, ())
    everything = models.log_variant_models(None, "1", "run", index, Path("v"), Path("p"))
    assert everything.ids == {"new": "m-new", "known": "m-known", "not-named": "m-not-named"}


# The distribution that installs each runtime's Python module (what the harness imports
# for it): a runtime with a flavour that is not here fails until it is added.
RUNTIME_DISTRIBUTIONS = {"onnxruntime": "onnxruntime", "tflite": "ai-edge-litert",
                         "edgetpu": "ai-edge-litert", "tflm": "tflite-micro",
                         "openvino": "openvino"}


@pytest.mark.parametrize("runtime", sorted(FLAVOURS))
def test_each_runtimes_model_pins_its_distribution_and_serves_its_artifact(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, runtime: str) -> None:
    """What MLflow is given to save, for every runtime with a flavour: the pinned
    requirements (the runtime's own distribution among them), the files as artifacts,
    the main file named in serving.json with the spec's options, input and classes."""
    import mlflow.pyfunc
    from importlib import metadata as md

    from tasks.track.models import ModelInputs, _save_harness_pyfunc

    saved: dict[str, Any] = {}

    def save_model(path: str, **kwargs: Any) -> None:
        saved.update(kwargs, path=path, serving=json.loads(
            Path(kwargs["artifacts"]["serving"]).read_text()))

    monkeypatch.setattr(mlflow.pyfunc, "save_model", save_model)
    # The main file listed second: its key is the one of its place in the list.
    variant = _variant(runtime=runtime, file="onnx-int8/extra.bin")
    inputs = ModelInputs("signature", "example", {"height": 8, "width": 6, "color": "rgb",
                                                  "fit": "letterbox"}, ["cat", "dog"])
    _save_harness_pyfunc(variant, tmp_path, tmp_path / "model", "mlflow-model", inputs)
    assert saved["pip_requirements"] == [
        f"{name}=={md.version(name)}"
        for name in ("numpy", "pillow", "pandas", RUNTIME_DISTRIBUTIONS[runtime])]
    assert {key: value for key, value in saved["artifacts"].items() if key != "serving"} == {
        "file0": str(tmp_path / "onnx-int8/model.onnx"),
        "file1": str(tmp_path / "onnx-int8/extra.bin")}
    assert saved["serving"] == {
        "package": "edgeflow_device", "runtime": runtime, "artifact": "file1",
        "spec": variant.spec, "options": {"arena_bytes": 4096, "execution_precision": "f16"},
        "input": inputs.input, "classes": ["cat", "dog"]}
    assert (saved["path"], saved["signature"], saved["input_example"],
            saved["mlflow_model"]) == (str(tmp_path / "model"), "signature", "example",
                                       "mlflow-model")


def test_a_kinds_further_measures_become_metrics_by_key_and_class() -> None:
    from tasks.track import task_metrics

    assert task_metrics({"map50": 0.61, "map50_95": 0.32, "ap50": {"0": 0.5, "3": 0.72},
                         "ap50_95": {"0": 0.25}, "note": "text", "flag": True}) == {
        "map50": 0.61, "map50_95": 0.32, "ap50_0": 0.5, "ap50_3": 0.72, "ap50_95_0": 0.25}
    assert task_metrics({}) == {}
