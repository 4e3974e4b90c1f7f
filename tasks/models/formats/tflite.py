"""TensorFlow Lite / LiteRT, converted from the SavedModel at four precisions (a model
brought as ONNX goes through onnx2tf instead, at fp32, dynamic and int8:
:mod:`tasks.models.formats.onnx_to_tflite`):

- ``fp32``: no optimisation;
- ``fp16``: weights stored as float16 (half the size), computed in f32 on every CPU: the
  converter marks such models ``reduced_precision_support: fp16accfp32``, which lets
  XNNPACK compute in f16 on ARM CPUs with fp16 arithmetic (Raspberry Pi 5, Jetson) and
  in f32 elsewhere; that mark is removed, so the variant's numbers mean the same on
  every board;
- ``dynamic``: dynamic-range quantisation (int8 weights, float activations);
- ``int8``: full-integer quantisation calibrated on the calibration split, with int8
  inputs and outputs (what MCUs and the Edge TPU need). The input/output scale and
  zero point go into the spec so the harness feeds correctly quantised images.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.models.formats.base import Exported, ExportRequest, Format
from tasks.models.formats.onnx_to_tflite import onnx_tflite_bytes

if TYPE_CHECKING:  # numpy is imported where it is used: every command reads this module
    import numpy as np


def _fp32(converter: Any, tf: Any, calibration: np.ndarray) -> None:
    pass


def _fp16(converter: Any, tf: Any, calibration: np.ndarray) -> None:
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]


def _dynamic(converter: Any, tf: Any, calibration: np.ndarray) -> None:
    converter.optimizations = [tf.lite.Optimize.DEFAULT]


def _int8(converter: Any, tf: Any, calibration: np.ndarray) -> None:
    import numpy as np

    def representative() -> Iterator[list[np.ndarray]]:
        for image in calibration:
            yield [image[np.newaxis].astype(np.float32)]

    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    # Integer-only kernels: a float fallback op would not run on an MCU or the Edge TPU.
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8


RECIPES: dict[str, Callable[[Any, Any, np.ndarray], None]] = {
    "fp32": _fp32, "fp16": _fp16, "dynamic": _dynamic, "int8": _int8,
}


def convert_tflite(saved_model_dir: Path, precision: str, calibration: np.ndarray) -> bytes:
    """The flatbuffer of a SavedModel at ``precision`` (one of :data:`RECIPES`)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir))
    RECIPES[precision](converter, tf, calibration)
    return without_reduced_precision(converter.convert())


REDUCED_PRECISION_METADATA = b"reduced_precision_support"


def without_reduced_precision(model: bytes) -> bytes:
    """The flatbuffer without the metadata that lets XNNPACK pick f16 arithmetic by
    hardware; unchanged (byte for byte) when it has none."""
    from tensorflow.lite.tools import flatbuffer_utils

    if REDUCED_PRECISION_METADATA not in model:
        return model
    parsed = flatbuffer_utils.convert_bytearray_to_object(bytearray(model))
    parsed.metadata = [entry for entry in parsed.metadata
                       if entry.name != REDUCED_PRECISION_METADATA]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(parsed))


def tflite_spec(path: Path, input_shape: tuple[int, ...] | None = None) -> dict[str, Any]:
    """Input/output dtypes and quantisation parameters read back from the model, and its
    input shape at batch 1: the model's own (NHWC: what a model onnx2tf wrote from an
    NCHW one reads too), ``input_shape`` (without the batch) only where the model's is
    not fixed."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    given = interpreter.get_input_details()[0]

    def describe(detail: dict[str, Any]) -> dict[str, Any]:
        scale, zero_point = detail["quantization"]
        quantized = np.dtype(detail["dtype"]).kind in "iu" and scale != 0.0
        return {"dtype": np.dtype(detail["dtype"]).name,
                "quantization": {"scale": float(scale), "zero_point": int(zero_point)}
                if quantized else None}

    own = [int(size) for size in given["shape"][1:]]
    shape = own if all(size > 0 for size in own) or input_shape is None else list(input_shape)
    return {"input": {**describe(given), "shape": [1, *shape], "layout": "NHWC"},
            "output": describe(interpreter.get_output_details()[0])}


@dataclass(frozen=True)
class Converted:
    """A flatbuffer and what its converter said beyond TensorFlow's own (onnx2tf's
    version and notes, for a model brought as ONNX): kept in the variant's details."""

    model: bytes
    details: dict[str, Any] = field(default_factory=dict)


def tflite_bytes(request: ExportRequest, precision: str) -> Converted:
    """The flatbuffer at ``precision``, converted once per source: the tflite, tflm and
    edgetpu formats all start from the same full-int8 model. A TensorFlow source goes
    through TensorFlow's converter, an ONNX one through onnx2tf
    (:mod:`tasks.models.formats.onnx_to_tflite`)."""
    source = request.source
    cached = request.scratch / f"tflite-{precision}.tflite" if request.scratch else None
    facts = cached.with_suffix(".json") if cached is not None else None
    if cached is not None and cached.is_file():
        return Converted(cached.read_bytes(),
                         json.loads(facts.read_text()) if facts and facts.is_file() else {})
    if source.saved_model_dir is None and source.onnx_path is not None:
        with tempfile.TemporaryDirectory() as work:
            model, details = onnx_tflite_bytes(request, precision, Path(work))
        # onnx2tf marks its float model fp16-computable too: the same rule as ours.
        model = without_reduced_precision(model)
    else:
        samples = request.calibration[:request.quantization.calibration_samples]
        model, details = convert_tflite(source.require_saved_model(), precision, samples), {}
    if cached is not None and facts is not None:
        cached.write_bytes(model)
        facts.write_text(json.dumps(details), encoding="utf-8")
    return Converted(model, details)


def export_tflite(request: ExportRequest) -> Exported:
    target = request.out_dir / "model.tflite"
    converted = tflite_bytes(request, request.precision)
    target.write_bytes(converted.model)
    return Exported(target, (target,), tflite_spec(target, request.source.input_shape),
                    details=converted.details)


FORMAT = Format(name="tflite", suffix=".tflite", runtime="tflite", precisions=tuple(RECIPES),
                export=export_tflite)
