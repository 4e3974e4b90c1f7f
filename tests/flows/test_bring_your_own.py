"""The whole lifecycle from a model you bring: an NCHW ONNX model (a PyTorch export's
layout, its batch left open) goes through train (checked, evaluated), optimize (pruning
skipped: no Keras model), convert (TFLite through onnx2tf), benchmark, select, track and
release on the local device; replacing the file re-runs from train, touching it runs nothing."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.model_files import bring
from tests.tiny import TINY_FARM, TINY_PARAMS, write_tiny_config

BROUGHT = TINY_PARAMS.replace(
    "model: {architecture: small_cnn, filters: [8, 16], dropout: 0.1}",
    "model: {source: file, path: brought/model_nchw.onnx}").replace(
    "optimize: {pruning: []}",
    "optimize: {pruning: [{name: pruned50, method: magnitude, sparsity: 0.5}]}").replace(
    "formats: {tflite: [fp32], onnx: [fp32], openvino: [fp32]}",
    "formats: {tflite: [fp32], onnx: [fp32], openvino: [fp32, int8]}")


@pytest.fixture(scope="module")
def experiment(tiny_project: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("brought-experiment")
    assert BROUGHT != TINY_PARAMS and "source: file" in BROUGHT
    write_tiny_config(root, BROUGHT, TINY_FARM)
    layout = tiny_project.layout
    bring(layout.base_model, layout.variants / "onnx-fp32" / "model.onnx", root / "brought")
    return root


@pytest.fixture(scope="module")
def first_run(experiment: Path) -> Any:
    from flows.lifecycle import run_lifecycle

    return run_lifecycle(experiment / "params.yaml", experiment / "farm.yaml")


def test_an_nchw_onnx_model_goes_through_every_step(experiment: Path, first_run: Any) -> None:
    state, outcome = first_run
    assert state.is_completed(), state.message
    assert outcome.executed == ["prepare", "train", "optimize", "convert", "benchmark[local]",
                                "select", "track", "release[local]"]
    summary = json.loads((experiment / "reports" / "summary.json").read_text())
    rows = {row["variant"]: row for row in summary["results"]}
    assert set(rows) == {"tflite-fp32", "onnx-fp32", "openvino-fp32", "openvino-int8"}
    for name in ("tflite-fp32", "onnx-fp32", "openvino-fp32"):
        assert rows[name]["status"] == "pass", rows[name]["reasons"]
        assert rows[name]["latency_ms"]["p50"] > 0
        # Benchmarked on the same test images as the ONNX Runtime reference.
        assert rows[name]["accuracy_drop"] == 0.0
    # ONNX Runtime and OpenVINO fed NCHW as the model reads it, batch 1; the TFLite model
    # onnx2tf wrote reads NHWC: the harness checked what it timed.
    index = json.loads((experiment / "models" / "variants" / "index.json").read_text())
    shapes = {variant["name"]: variant["spec"]["input"]["shape"] for variant in index["variants"]
              if variant["status"] == "ok" and variant["precision"] == "fp32"}
    assert shapes == {"tflite-fp32": [1, 16, 16, 1], "onnx-fp32": [1, 1, 16, 16],
                      "openvino-fp32": [1, 1, 16, 16]}
    tflite = next(variant for variant in index["variants"] if variant["name"] == "tflite-fp32")
    assert tflite["details"]["converter"].startswith("onnx2tf 2.")
    assert tflite["check"]["max_abs_logit_diff"] < 1e-4
    pruned = json.loads((experiment / "models" / "pruned" / "index.json").read_text())
    assert pruned == {"sources": [], "skipped": [
        {"name": "pruned50", "reason": "pruning needs a Keras model; the source is onnx "
                                       "(model_nchw.onnx)"}]}
    trained = json.loads((experiment / "metrics" / "train.json").read_text())
    assert trained["architecture"] == "file (onnx)"


def test_touching_the_file_runs_nothing_and_replacing_it_reruns_from_train(
        experiment: Path, first_run: Any) -> None:
    from flows.lifecycle import run_lifecycle

    model = experiment / "brought" / "model_nchw.onnx"
    os.utime(model, (1, 1))
    state, outcome = run_lifecycle(experiment / "params.yaml", experiment / "farm.yaml")
    assert state.is_completed() and outcome.executed == []
    # Another model of the same shape: the NHWC export behind the same file name.
    shutil.copyfile(experiment / "brought" / "model.onnx", model)
    state, outcome = run_lifecycle(experiment / "params.yaml", experiment / "farm.yaml")
    assert state.is_completed(), state.message
    assert outcome.cached == ["prepare"]
    assert outcome.executed[:3] == ["train", "optimize", "convert"]
    described = json.loads((experiment / "models" / "base" / "source.json").read_text())
    assert described["input"]["layout"] == "NHWC"


def test_a_file_that_is_no_model_fails_train_in_one_line_and_keeps_the_last_model(
        experiment: Path, first_run: Any) -> None:
    from flows.lifecycle import run_lifecycle

    before = (experiment / "models" / "base" / "source.json").read_text()
    broken = experiment / "brought" / "broken.onnx"
    broken.write_bytes(b"\x08\x07garbage")
    (experiment / "params.yaml").write_text(
        BROUGHT.replace("brought/model_nchw.onnx", "brought/broken.onnx"), encoding="utf-8")
    from tasks.core.errors import TrainingError

    try:
        with pytest.raises(TrainingError) as refused:
            run_lifecycle(experiment / "params.yaml", experiment / "farm.yaml")
    finally:
        (experiment / "params.yaml").write_text(BROUGHT, encoding="utf-8")
    assert str(refused.value).startswith("train: broken.onnx is not a readable ONNX model (")
    assert "\n" not in str(refused.value)
    assert (experiment / "models" / "base" / "source.json").read_text() == before
