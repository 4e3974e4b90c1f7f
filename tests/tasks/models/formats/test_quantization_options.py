"""The ``quantization`` options arrive at the library that quantises: what ORT's
``quantize_static``/``quantize_dynamic``, NNCF's ``quantize`` and the TFLite converter are
given, watched at their entry points. Every value differs from its default (17 samples,
not 200 nor 32; percentile, not minmax; no per-channel, no reduce-range; mixed, not
performance), so an option dropped on its way reads as the default and fails."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from tasks.models.formats import onnx as onnx_format
from tasks.models.formats import openvino as openvino_format
from tasks.models.formats import tflite as tflite_format
from tasks.models.formats.base import ExportRequest, QuantizationParams

SAMPLES = 17
OPTIONS = QuantizationParams(calibration_samples=SAMPLES, onnx_calibration="percentile",
                             per_channel=False, onnx_reduce_range=False,
                             openvino_preset="mixed")
DEFAULTS = QuantizationParams()


def test_the_options_differ_from_their_defaults() -> None:
    """Else a dropped option would give the same value and these tests pass anyway."""
    for name, value in OPTIONS.model_dump().items():
        assert value != getattr(DEFAULTS, name), name


def calibration_split(count: int = 40) -> np.ndarray:
    """Images each marked by its index, so which ones reached the library can be told."""
    return np.arange(count, dtype=np.float64)[:, None, None, None] * np.ones((1, 4, 4, 1))


def request(tmp_path: Path, precision: str, quantization: QuantizationParams = OPTIONS,
            **fields: Any) -> ExportRequest:
    source = SimpleNamespace(require_saved_model=lambda: tmp_path / "saved_model",
                             saved_model_dir=tmp_path / "saved_model", onnx_path=None,
                             input_shape=(4, 4, 1))
    return ExportRequest(source=source, precision=precision, out_dir=tmp_path,  # type: ignore[arg-type]
                         calibration=calibration_split(), quantization=quantization,
                         **fields)


def image_index(batch: np.ndarray) -> int:
    assert batch.shape == (1, 4, 4, 1) and batch.dtype == np.float32
    return int(batch[0, 0, 0, 0])


def tiny_onnx(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper

    # Two output columns of different ranges (one reaching -1, one at most 0.5): per-channel
    # scales differ from the per-tensor one.
    columns = np.stack([np.linspace(-1, 1, 16), np.linspace(-0.25, 0.5, 16)], axis=1)
    weight = helper.make_tensor("w", TensorProto.FLOAT, [16, 2],
                                columns.astype(np.float32).ravel())
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["x"], ["flat"]),
         helper.make_node("MatMul", ["flat", "w"], ["y"])], "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 4, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_onnx_static_quantisation_gets_the_method_the_options_and_the_calibration_count(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from onnxruntime import quantization

    given: dict[str, Any] = {}

    def quantize_static(model: Any, target: Any, reader: Any, **kwargs: Any) -> None:
        given.update(kwargs)
        given["images"] = []
        while (feed := reader.get_next()) is not None:
            given["images"].append(image_index(feed["x"]))

    monkeypatch.setattr(quantization, "quantize_static", quantize_static)
    onnx_format._quantize_qdq(request(tmp_path, "int8-qdq"), tiny_onnx(tmp_path / "fp32.onnx"),
                              tmp_path / "int8.onnx")
    assert given["calibrate_method"] == quantization.CalibrationMethod.Percentile
    assert (given["per_channel"], given["reduce_range"]) == (False, False)
    # Signed weights, said here, not left to ORT's default (which has changed before).
    assert given["weight_type"] == quantization.QuantType.QInt8
    assert given["quant_format"] == quantization.QuantFormat.QDQ
    assert given["images"] == list(range(SAMPLES)), "the first calibration_samples images"


@pytest.mark.parametrize(("method", "expected"), [("minmax", "MinMax"), ("entropy", "Entropy"),
                                                  ("percentile", "Percentile")])
def test_each_onnx_calibration_method_reaches_ort_as_itself(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str, expected: str) -> None:
    from onnxruntime import quantization

    given: list[Any] = []

    def quantize_static(model: Any, target: Any, reader: Any, **kwargs: Any) -> None:
        cache = kwargs["calibration_cache_path"]
        given.append((kwargs["calibrate_method"], kwargs["per_channel"], kwargs["reduce_range"],
                      reader is None, cache and quantization.load_tensors_data(cache)))

    monkeypatch.setattr(quantization, "quantize_static", quantize_static)
    calibrators: list[dict[str, Any]] = []
    create_calibrator = quantization.create_calibrator
    monkeypatch.setattr(quantization, "create_calibrator", lambda *args, **kwargs: (
        calibrators.append(kwargs["extra_options"]) or create_calibrator(*args, **kwargs)))
    options = OPTIONS.model_copy(update={"onnx_calibration": method})
    onnx_format._quantize_qdq(request(tmp_path, "int8-qdq", options),
                              tiny_onnx(tmp_path / "fp32.onnx"), tmp_path / "int8.onnx")
    [(calibrate_method, per_channel, reduce_range, no_reader, ranges)] = given
    assert calibrate_method == getattr(quantization.CalibrationMethod, expected)
    assert (per_channel, reduce_range) == (False, False), "the options, whatever the method"
    if method == "entropy":  # calibrated beforehand (see ENTROPY_HISTOGRAM_BINS): its ranges
        assert no_reader and ranges.calibration_method == calibrate_method
        assert set(ranges) == {"x", "flat", "y"}, "every tensor quantize_static quantises"
        # Both bin counts by ORT's own option names (128 is also ORT's default: a
        # misspelt key would be ignored silently).
        assert calibrators == [{"num_bins": 2048, "num_quantized_bins": 128}]
    else:  # quantize_static calibrates on the reader by itself, as ORT ships it
        assert not no_reader and ranges is None and calibrators == []


def test_onnx_dynamic_quantisation_gets_per_channel_and_reduce_range(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from onnxruntime import quantization

    given: dict[str, Any] = {}
    monkeypatch.setattr(quantization, "quantize_dynamic",
                        lambda model, target, **kwargs: given.update(kwargs))
    onnx_format._quantize_dynamic(request(tmp_path, "int8-dynamic"), tmp_path / "fp32.onnx",
                                  tmp_path / "int8.onnx")
    assert (given["per_channel"], given["reduce_range"]) == (False, False)
    # Signed weights, said here, not left to ORT's default (which has changed before).
    assert given["weight_type"] == quantization.QuantType.QInt8


class NncfWatch:
    """nncf.quantize and nncf.quantize_with_accuracy_control, recording what they get."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def quantize(self, name: str) -> Any:
        def quantize(model: Any, calibration_dataset: Any, **kwargs: Any) -> Any:
            images = [image_index(item) for item in calibration_dataset.get_inference_data()]
            self.calls.append((name, {**kwargs, "images": images}))
            return model
        return quantize


@pytest.mark.parametrize("precision", ["int8", "int8-acc"])
def test_nncf_gets_the_preset_and_the_calibration_count(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, precision: str) -> None:
    import nncf

    watch = NncfWatch()
    monkeypatch.setattr(nncf, "quantize", watch.quantize("quantize"))
    monkeypatch.setattr(nncf, "quantize_with_accuracy_control",
                        watch.quantize("quantize_with_accuracy_control"))
    validation = (calibration_split(5), np.zeros(5, np.int64))
    model = object()
    assert openvino_format.TRANSFORMS[precision](
        model, request(tmp_path, precision, validation=validation, max_accuracy_drop=0.07)) is model
    [(name, given)] = watch.calls
    assert name == {"int8": "quantize", "int8-acc": "quantize_with_accuracy_control"}[precision]
    assert given["preset"] == nncf.QuantizationPreset.MIXED
    assert given["subset_size"] == SAMPLES
    assert given["images"] == list(range(SAMPLES)), "the first calibration_samples images"
    if precision == "int8-acc":
        assert given["max_drop"] == 0.07


def test_the_tflite_converter_is_calibrated_on_the_first_calibration_samples(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """tflite_bytes hands convert_tflite calibration_samples images, and the int8 recipe
    gives the converter each of them, batch-1 float32, as its representative dataset."""
    import tensorflow as tf

    given: dict[str, Any] = {}

    def convert(saved_model: Path, precision: str, calibration: np.ndarray) -> bytes:
        converter = SimpleNamespace(target_spec=SimpleNamespace())
        tflite_format.RECIPES[precision](converter, tf, calibration)
        given["images"] = [image_index(batch) for [batch] in converter.representative_dataset()]
        return b"flatbuffer"

    monkeypatch.setattr(tflite_format, "convert_tflite", convert)
    assert tflite_format.tflite_bytes(request(tmp_path, "int8"), "int8").model == b"flatbuffer"
    assert given["images"] == list(range(SAMPLES))


# ----------------------------------------------- what the options changed in the model

def quantised_initializers(path: Path) -> tuple[list[str], dict[str, np.ndarray]]:
    """The op types of an ONNX model's graph and its initializers by name."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    return ([node.op_type for node in graph.node],
            {tensor.name: numpy_helper.to_array(tensor) for tensor in graph.initializer})


# ORT's own x86 choice (unsigned activations, signed weights) and the options: per-channel
# weights get a scale per output column, 7-bit weights (reduce_range) reach 64 at most
# (ORT rounds the symmetric range to [-64, 64]) where 8-bit ones reach 127.
@pytest.mark.parametrize("quantization", [OPTIONS, DEFAULTS], ids=["options", "defaults"])
def test_onnx_static_quantisation_writes_the_options_into_the_model(
        tmp_path: Path, quantization: QuantizationParams) -> None:
    quantization = quantization.model_copy(update={"calibration_samples": SAMPLES})
    target = tmp_path / "int8.onnx"
    onnx_format._quantize_qdq(request(tmp_path, "int8-qdq", quantization),
                              tiny_onnx(tmp_path / "fp32.onnx"), target)
    ops, tensors = quantised_initializers(target)
    # QDQ: the MatMul stays float between QuantizeLinear/DequantizeLinear pairs.
    assert sorted(set(ops)) == ["DequantizeLinear", "Flatten", "MatMul", "QuantizeLinear"]
    assert tensors["flat_zero_point"].dtype == np.uint8, "activations unsigned"
    assert tensors["w_quantized"].dtype == np.int8, "weights signed"
    assert tensors["w_scale"].shape == ((2,) if quantization.per_channel else ())
    assert np.abs(tensors["w_quantized"]).max() == (64 if quantization.onnx_reduce_range else 127)
    # Calibrated on the first 17 images (grey levels 0..16, not the 40 there are): the
    # input's range is [0, 16] (minmax exactly; the 99.999th percentile a hair below).
    assert tensors["flat_zero_point"] == 0
    assert tensors["flat_scale"] * 255 == pytest.approx(SAMPLES - 1, rel=1e-3)


@pytest.mark.parametrize("quantization", [OPTIONS, DEFAULTS], ids=["options", "defaults"])
def test_onnx_dynamic_quantisation_writes_the_options_into_the_model(
        tmp_path: Path, quantization: QuantizationParams) -> None:
    target = tmp_path / "int8.onnx"
    onnx_format._quantize_dynamic(request(tmp_path, "int8-dynamic", quantization),
                                  tiny_onnx(tmp_path / "fp32.onnx"), target)
    ops, tensors = quantised_initializers(target)
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= set(ops) and "MatMul" not in ops
    assert "QuantizeLinear" not in ops, "no calibrated activations: dynamic"
    assert tensors["w_quantized"].dtype == np.int8
    assert tensors["w_scale"].shape == ((2,) if quantization.per_channel else ())
    assert np.abs(tensors["w_quantized"]).max() == (64 if quantization.onnx_reduce_range else 127)


def calibration_ranges(tmp_path: Path, method: str) -> dict[str, float]:
    """Each activation's scale in the model int8-qdq calibrates by ``method`` on images
    of mostly small values and one bright outlier (where the methods part ways); a far
    brighter one (1000) lies beyond the first calibration_samples images."""
    import dataclasses

    images = np.random.default_rng(0).exponential(0.2, (2 * SAMPLES, 4, 4, 1))
    images[1, 0, 0, 0] = 20.0
    images[SAMPLES, 0, 0, 0] = 1000.0
    options = OPTIONS.model_copy(update={"onnx_calibration": method})
    folder = tmp_path / method
    folder.mkdir()
    onnx_format._quantize_qdq(
        dataclasses.replace(request(folder, "int8-qdq", options), calibration=images),
        tiny_onnx(folder / "fp32.onnx"), folder / "int8.onnx")
    _, tensors = quantised_initializers(folder / "int8.onnx")
    return {name: float(tensors[f"{name}_scale"]) for name in ("flat", "y")}


def _calibration_methods() -> tuple[str, ...]:
    from typing import get_args

    return get_args(QuantizationParams.model_fields["onnx_calibration"].annotation)


@pytest.mark.parametrize("method", _calibration_methods())
def test_each_onnx_calibration_method_sets_its_own_ranges_in_the_model(
        tmp_path: Path, method: str) -> None:
    """Every method the options allow (walked from the option's type, so a new one joins):
    minmax spans the calibration images exactly (the outlier, 20, included; 1000 comes
    after them); every other method gives ranges of its own."""
    minmax = calibration_ranges(tmp_path, "minmax")
    assert minmax["flat"] * 255 == pytest.approx(20.0, rel=1e-6)
    if method != "minmax":
        assert calibration_ranges(tmp_path, method) != minmax


def test_onnx_entropy_calibration_clips_the_outlier_by_its_kl_threshold_search(
        tmp_path: Path) -> None:
    """Entropy's KL search on the 2048-bin histogram over [-20, 20] (bins 40/2048 wide)
    keeps the window of 66 bins above zero: [0, 1.2890625], far inside minmax's [0, 20].
    Under quantize_static's own 128 bins it would keep the whole range (minmax's model);
    at other bin counts the threshold falls on other edges; calibrated on all 34 images
    the histogram spans [-1000, 1000] and the edges move."""
    minmax, entropy = (calibration_ranges(tmp_path, method) for method in ("minmax", "entropy"))
    assert entropy["flat"] * 255 == pytest.approx(1.2890625, rel=1e-6)  # 66 * 40 / 2048
    assert entropy["y"] < minmax["y"] / 5, "the MatMul's output is clipped too"
