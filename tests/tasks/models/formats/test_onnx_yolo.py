"""ONNX int8-qdq of a detector you bring (tasks/models/formats/onnx.py): the node that
writes a YOLO's output (the Concat of pixel boxes and 0-1 scores) stays float, the rest is
quantised; without a declared output the whole output shares one 8-bit scale."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np

from tasks.config import QuantizationParams
from tasks.models.formats import FORMATS, ExportRequest, SourceModel

YOLO = Path(__file__).resolve().parents[3] / "data" / "yolo_scenes96.onnx"


def output_writer(exported_file: Path) -> str:
    import onnx

    model = onnx.load(str(exported_file))
    producer = {output: node.op_type for node in model.graph.node for output in node.output}
    assert "DequantizeLinear" in producer.values()  # quantised inside
    return producer[model.graph.output[0].name]


def test_a_yolo_int8_qdq_writes_its_output_in_float(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    shutil.copyfile(YOLO, path)
    source = SourceModel("base", None, None, (3, 96, 96), path,
                         {"shape": [1, 3, 96, 96], "layout": "NCHW", "normalize": None},
                         {"format": "yolo"})
    calibration = np.random.default_rng(0).random((8, 3, 96, 96), dtype=np.float32)
    written = {}
    for name, model in (("yolo", source), ("undeclared", replace(source, output=None))):
        out = tmp_path / name
        out.mkdir()
        exported = FORMATS["onnx"].export(ExportRequest(
            model, "int8-qdq", out, calibration, QuantizationParams(calibration_samples=8)))
        written[name] = output_writer(exported.main_file)
    assert written == {"yolo": "Concat", "undeclared": "DequantizeLinear"}
