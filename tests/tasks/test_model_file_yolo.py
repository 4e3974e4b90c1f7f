"""A detector you bring (tasks/models/model_file.py, ``model.format: yolo``): an Ultralytics
YOLOv8 ONNX export (tests/data/yolo_scenes96.onnx, made by tests/data/make_yolo.py) is read
as one, its class count from its output; a wrong class count, a task that is not the
data's and a classifier declared yolo are each refused in one line naming both sides."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.models.model_file import (ModelFileError, ModelFileOptions, check_fits, check_task,
                                     input_spec, inspect_model_file)

DATA = Path(__file__).resolve().parents[1] / "data"
YOLO = DATA / "yolo_scenes96.onnx"
CLASSIFIER = DATA / "torch_cnn16.onnx"


def one_line(error: pytest.ExceptionInfo[ModelFileError]) -> str:
    text = str(error.value)
    assert "\n" not in text
    return text


def test_a_yolo_export_is_read_as_a_detector_of_its_classes() -> None:
    found = inspect_model_file(YOLO, output_format="yolo")
    assert (found.kind, found.layout, found.input_shape, found.classes) == (
        "onnx", "NCHW", (3, 96, 96), 10)
    check_fits(found, (96, 96), "rgb", 10, new_head=False)
    spec = input_spec(found, ModelFileOptions(path=YOLO, task="detection", format="yolo"),
                      (96, 96))
    assert spec == {"dtype": "float32", "shape": [1, 3, 96, 96], "layout": "NCHW",
                    "quantization": None, "normalize": None}


def test_a_yolo_export_read_as_a_classifier_is_refused() -> None:
    with pytest.raises(ModelFileError) as refused:
        inspect_model_file(YOLO)
    assert one_line(refused) == ("yolo_scenes96.onnx: its output [1, 14, 189] is not one "
                                 "score per class (batch, classes)")


def test_a_classifier_declared_yolo_is_refused() -> None:
    with pytest.raises(ModelFileError) as refused:
        inspect_model_file(CLASSIFIER, output_format="yolo")
    assert one_line(refused) == (
        "torch_cnn16.onnx: its output [?, 10] is not a YOLO detection output (1, 4 + "
        "classes, boxes), as model.format yolo says (an Ultralytics export without NMS)")


def test_a_yolo_of_another_class_count_than_the_data_is_refused() -> None:
    found = inspect_model_file(YOLO, output_format="yolo")
    with pytest.raises(ModelFileError) as refused:
        check_fits(found, (96, 96), "rgb", 5, new_head=False)
    assert one_line(refused).startswith("yolo_scenes96.onnx outputs 10 classes; the data has 5")


def test_the_models_task_must_be_the_datas_and_its_format_made_for_it() -> None:
    check_task(ModelFileOptions(path=YOLO, task="detection", format="yolo"), "detection")
    check_task(ModelFileOptions(path=CLASSIFIER), "classification")
    cases = (
        (ModelFileOptions(path=YOLO, task="detection", format="yolo"), "classification",
         "model.task detection does not match data.task classification: the model must do "
         "the task its data is prepared for"),
        (ModelFileOptions(path=CLASSIFIER), "detection",
         "model.task classification does not match data.task detection: the model must do "
         "the task its data is prepared for"),
        (ModelFileOptions(path=YOLO, format="yolo"), "classification",
         "model.format yolo is a detection output; model.task is classification"),
        (ModelFileOptions(path=CLASSIFIER, task="detection"), "detection",
         "model.format classifier is a classification output; model.task is detection"),
    )
    for options, data_task, message in cases:
        with pytest.raises(ModelFileError) as refused:
            check_task(options, data_task)
        assert one_line(refused) == message
