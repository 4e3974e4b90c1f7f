"""``train`` adopting a detector you bring (tasks/train/__init__.py, ``adopt``): the
Ultralytics YOLOv8 fixture (tests/data/yolo_scenes96.onnx, made by tests/data/make_yolo.py
on edgeflow's digit scenes) scored on scenes it never saw as the detection kind scores
(its "yolo" layout decoded, the kind's default post-processing), written with its output
layout for convert; a data task it was not made for is refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tasks.config import DataParams, TrainParams
from tasks.core.errors import TrainingError
from tasks.models.model_file import ModelFileOptions
from tasks.prepare import prepare
from tasks.train import train

YOLO = Path(__file__).resolve().parents[1] / "data" / "yolo_scenes96.onnx"
# What the fixture scores on the test split of these 200 scenes (seed 7: none of them is
# one it was trained on), measured once: ONNX Runtime in f32 is deterministic here.
MEASURED_TEST_MAP50 = 0.6469
TOLERANCE = 0.01


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    params = DataParams(task="detection", source="digit_scenes", scenes=200,
                        image_size=(96, 96), color="rgb", seed=7)
    return prepare(params, tmp_path_factory.mktemp("scenes") / "prepared")


@pytest.fixture(scope="module")
def adopted(prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path]:
    root = tmp_path_factory.mktemp("adopted")
    result = train(ModelFileOptions(path=YOLO, task="detection", format="yolo"), TrainParams(),
                   prepared, root / "base", root / "metrics")
    return result, root


def test_the_yolo_fixture_earns_its_measured_map_on_unseen_scenes(adopted: tuple[object, Path]
                                                                  ) -> None:
    result, root = adopted
    assert result.test.samples == 40
    assert result.test.map50 == pytest.approx(MEASURED_TEST_MAP50, abs=TOLERANCE)
    assert result.test.map50 > 0.3  # it learned the scenes: far above a model that did not
    metrics = json.loads((root / "metrics" / "train.json").read_text())
    assert metrics["test_map50"] == result.test.map50
    assert metrics["architecture"] == "file (onnx, yolo)"
    assert metrics["post_processing"] == {"format": "yolo", "score_threshold": 0.25,
                                          "iou_threshold": 0.45, "max_detections": 100}
    assert set(metrics["test_ap50"]) == {str(digit) for digit in range(10)}


def test_the_adopted_detector_is_written_with_its_layout_and_reference(
        adopted: tuple[object, Path]) -> None:
    _, root = adopted
    source = json.loads((root / "base" / "source.json").read_text())
    assert (source["kind"], source["classes"], source["output"]) == ("onnx", 10, {"format": "yolo"})
    assert source["input"]["shape"] == [1, 3, 96, 96] and source["input"]["layout"] == "NCHW"
    reference = json.loads((root / "base" / "reference.json").read_text())
    assert reference["task"] == "detection" and len(reference["test_correct"]) == 40
    assert (root / "base" / "model.onnx").is_file()
    hits = np.concatenate([np.asarray(record["hits"]).reshape(-1, 10)[:, 0]
                           for record in reference["test_correct"]])
    assert hits.mean() > 0.5  # most boxes it keeps at score 0.25 are right at IoU 0.5


def test_a_yolo_for_data_of_another_task_is_refused_in_one_line(tmp_path: Path) -> None:
    params = DataParams(task="classification", source="digits", image_size=(96, 96),
                        color="rgb", seed=7)
    classification = prepare(params, tmp_path / "prepared")
    with pytest.raises(TrainingError) as refused:
        train(ModelFileOptions(path=YOLO, task="detection", format="yolo"), TrainParams(),
              classification, tmp_path / "base", tmp_path / "metrics")
    assert str(refused.value) == ("train: model.task detection does not match data.task "
                                  "classification: the model must do the task its data is "
                                  "prepared for")
    assert not (tmp_path / "base").exists()
