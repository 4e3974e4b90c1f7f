"""The whole lifecycle from a detector you bring: the Ultralytics YOLOv8 fixture
(tests/data/yolo_scenes96.onnx, ``model: {source: file, task: detection, format: yolo}``)
on digit scenes goes through train (adopted, scored by mAP), convert (its spec's detection
entry names the "yolo" layout), benchmark, select, track and release on the local device,
and the released predictor answers boxes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.tiny import write_tiny_config

YOLO = Path(__file__).resolve().parents[1] / "data" / "yolo_scenes96.onnx"
YOLO_PARAMS = """\
data: {task: detection, source: digit_scenes, scenes: 150, image_size: [96, 96], color: rgb,
       fit: letterbox_grey, calibration_size: 32, seed: 7}
model: {source: file, path: yolo.onnx, task: detection, format: yolo}
optimize: {pruning: []}
quantization: {calibration_samples: 32}
formats: {onnx: [fp32]}
convert: {max_abs_logit_diff: 0.01}
benchmark: {warmup_runs: 2, warmup_seconds: 0.0, runs: 10, seconds: 0.05, max_seconds: 0.2,
            accuracy_samples: 0, timeout_seconds: 120}
requirements: {min_map50: 0.3, max_map_drop: 0.05}
select: {include_emulated: false}
release: {policy: auto, check_images: 20}
"""
FARM = """\
devices:
  local: {threads: 1}
"""


@pytest.fixture(scope="module")
def experiment(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("yolo-experiment")
    write_tiny_config(root, YOLO_PARAMS, FARM)
    shutil.copyfile(YOLO, root / "yolo.onnx")
    return root


@pytest.fixture(scope="module")
def run(experiment: Path) -> Any:
    from flows.lifecycle import run_lifecycle

    return run_lifecycle(experiment / "params.yaml", experiment / "farm.yaml")


def test_a_yolo_export_goes_through_every_step(experiment: Path, run: Any) -> None:
    state, outcome = run
    assert state.is_completed(), state.message
    assert outcome.executed == ["prepare", "train", "optimize", "convert", "benchmark[local]",
                                "select", "track", "release[local]"]
    trained = json.loads((experiment / "metrics" / "train.json").read_text())
    assert trained["architecture"] == "file (onnx, yolo)" and trained["test_map50"] > 0.3
    index = json.loads((experiment / "models" / "variants" / "index.json").read_text())
    (variant,) = index["variants"]
    assert variant["name"] == "onnx-fp32" and variant["status"] == "ok"
    assert variant["spec"]["detection"] == {"format": "yolo", "classes": 10,
                                            "score_threshold": 0.25, "iou_threshold": 0.45,
                                            "max_detections": 100}
    summary = json.loads((experiment / "reports" / "summary.json").read_text())
    (row,) = summary["results"]
    assert row["status"] == "pass", row["reasons"]
    # Measured on the device on the test scenes: the reference's mAP, the same model.
    assert row["accuracy"] == pytest.approx(trained["test_map50"], abs=1e-9)


def test_the_released_yolo_answers_boxes(experiment: Path, run: Any) -> None:
    state, _ = run
    assert state.is_completed(), state.message
    app = experiment / ".edgeflow" / "devices" / "local" / "app" / "current"
    manifest = json.loads((app / "manifest.json").read_text())
    assert manifest["spec"]["detection"]["format"] == "yolo"
    # The application pads a frame of another shape as Ultralytics does: grey borders.
    assert manifest["input"]["fit"] == "letterbox_grey"
    images = [str(app / "check" / name) for name in manifest["check"]["images"][:5]]
    answered = subprocess.run([sys.executable, str(app / "predict.py"), *images],
                              capture_output=True, text=True, timeout=120, check=True)
    answers = [json.loads(line) for line in answered.stdout.splitlines() if line.strip()]
    detections = [found for answer in answers for found in answer["detections"]]
    assert len(answers) == len(images) and detections, answered.stdout
    for found in detections:
        assert found["class"] in [str(digit) for digit in range(10)]
        assert 0.25 < found["score"] <= 1.0
        x0, y0, x1, y1 = found["box"]  # in the check image's pixels (96 x 96)
        assert 0 <= x0 < x1 <= 96 and 0 <= y0 < y1 <= 96
