"""Step convert: every registered format exports, loads in its runtime and agrees with
the Keras model; disagreement and export failures stop the step with the numbers."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tasks.core.accuracy import accuracy_interval
from tasks.core.config import ConvertParams, QuantizationParams
from tasks.convert import ConvertInputs, check_variant, convert, load_source, variant_name
from tasks.core.errors import ConversionError, StepError
from tasks.core.files import sha256_file
from tasks.models.formats import FORMATS, ExportRequest, Skipped, validate_format_matrix
from tests.helpers import index_entries


@pytest.mark.parametrize("format_name", ["tflite", "onnx", "openvino"])
def test_every_fp32_format_loads_and_agrees_with_the_model(tiny_project, format_name: str) -> None:
    variants_dir = tiny_project.layout.variants
    variant = next(v for v in index_entries(variants_dir) if v["format"] == format_name)
    assert variant["name"] == f"{format_name}-fp32" and variant["source"] == "base"
    assert variant["runtime"] == FORMATS[format_name].runtime
    assert variant["file"].endswith(FORMATS[format_name].suffix)
    for entry in variant["files"]:
        path = variants_dir / entry["path"]
        assert path.stat().st_size == entry["bytes"] > 0
        assert sha256_file(path) == entry["sha256"]
    assert variant["bytes"] == sum(entry["bytes"] for entry in variant["files"])
    check = variant["check"]
    assert check["passed"] and check["failures"] == []
    assert check["agreement"] >= 0.99 and check["max_abs_logit_diff"] <= 1e-3
    assert check["samples"] > 100 and check["accuracy"] == pytest.approx(
        check["reference_accuracy"], abs=0.01)
    assert variant["accuracy_interval"] == list(accuracy_interval(check["accuracy"], check["samples"]))
    assert variant["spec"]["input"]["shape"][0] == 1


def test_check_reports_disagreement_with_numbers(tiny_project) -> None:
    layout = tiny_project.layout
    variant = next(v for v in index_entries(layout.variants) if v["format"] == "onnx")
    from tasks.models.formats import Exported

    exported = Exported(layout.variants / variant["file"], (), variant["spec"])
    with np.load(layout.prepared / "test.npz") as data:
        images, labels = data["x"][:40], data["y"][:40]
    # A reference that is the artifact's own logits rolled by one class disagrees everywhere.
    from tasks.device import harness
    logits = harness.predict(harness.load_runner("onnxruntime", str(exported.main_file)),
                             images, variant["spec"])
    check = check_variant(exported, "onnxruntime", images, labels, np.roll(logits, 1, axis=1),
                          "fp32", ConvertParams())
    assert not check.passed
    assert any(f.startswith("argmax agreement") for f in check.failures)
    assert any(f.startswith("max |logit diff|") for f in check.failures)


def test_convert_fails_with_numbers_and_keeps_previous_variants(tiny_project, tmp_path: Path) -> None:
    layout = tiny_project.layout
    out = tmp_path / "variants"
    shutil.copytree(layout.variants, out)
    before = sorted(p.name for p in out.iterdir())
    impossible = ConvertParams(max_abs_logit_diff=1e-12)
    with pytest.raises(ConversionError) as error:
        convert({"onnx": ["fp32"]}, impossible, QuantizationParams(), 0.01,
                ConvertInputs(layout.base_model, None, layout.prepared), out)
    message = str(error.value)
    assert "onnx-fp32" in message and "max |logit diff|" in message and "\n" not in message
    assert sorted(p.name for p in out.iterdir()) == before


def test_export_failure_names_the_variant(tiny_project, tmp_path: Path) -> None:
    layout = tiny_project.layout
    broken = tmp_path / "base"
    shutil.copytree(layout.base_model, broken)
    (broken / "saved_model" / "saved_model.pb").write_bytes(b"not a graph")
    with pytest.raises(ConversionError, match="tflite-fp32: export failed"):
        convert({"tflite": ["fp32"]}, ConvertParams(), QuantizationParams(), 0.01,
                ConvertInputs(broken, None, layout.prepared), tmp_path / "v")
    assert not (tmp_path / "v").exists()


def test_convert_without_a_trained_model_is_a_step_error(tiny_project, tmp_path: Path) -> None:
    with pytest.raises(StepError, match="run the train step first"):
        load_source(tmp_path, tiny_project.layout.prepared)


def test_quantisation_is_calibrated_on_the_calib_split_never_on_test_images(
        tiny_project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Calibrated on the test split, a quantised variant would be tuned to the very
    images its accuracy is then measured on, and report a leaked figure. Every exporter
    of every format and precision is replaced by one that keeps its request and skips
    (nothing is exported): each must have been given the calib split, whole, and the
    validation split for accuracy-aware quantisation."""
    requests: dict[tuple[str, str], ExportRequest] = {}

    def recording(name: str):
        def export(request: ExportRequest):
            requests[(name, request.precision)] = request
            raise Skipped("recorded by the test")
        return export

    for name, fmt in list(FORMATS.items()):
        monkeypatch.setitem(FORMATS, name, replace(fmt, export=recording(name)))
    matrix = {name: list(fmt.precisions) for name, fmt in FORMATS.items()}
    layout = tiny_project.layout
    convert(matrix, ConvertParams(), QuantizationParams(calibration_samples=16), 0.05,
            ConvertInputs(layout.base_model, None, layout.prepared), tmp_path / "variants")

    assert set(requests) == {(name, precision) for name, precisions in matrix.items()
                             for precision in precisions}
    splits = {}
    for split in ("calib", "val", "test"):
        with np.load(layout.prepared / f"{split}.npz") as data:
            splits[split] = data["x"], data["y"]
    test_images = {image.tobytes() for image in splits["test"][0]}
    for (name, precision), request in requests.items():
        where = f"{name}-{precision}"
        np.testing.assert_array_equal(request.calibration, splits["calib"][0], err_msg=where)
        assert not test_images & {image.tobytes() for image in request.calibration}, where
        np.testing.assert_array_equal(request.validation[0], splits["val"][0], err_msg=where)
        np.testing.assert_array_equal(request.validation[1], splits["val"][1], err_msg=where)


def test_variant_names() -> None:
    assert variant_name("base", "tflite", "fp32") == "tflite-fp32"
    assert variant_name("pruned50", "tflite", "int8") == "pruned50-tflite-int8"


@pytest.mark.parametrize("matrix, message", [
    ({}, "at least one format"),
    ({"tensorrt": ["fp32"]}, "unknown format 'tensorrt' (allowed: tflite, onnx, openvino, tflm, "
                             "edgetpu)"),
    ({"onnx": ["int4"]}, "does not support precision 'int4' (supported: fp32, int8-dynamic, "
                         "int8-qdq)"),
    ({"onnx": []}, "lists no precision"),
    ({"onnx": ["fp32", "fp32"]}, "twice"),
])
def test_bad_format_matrix_is_refused(matrix, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate_format_matrix(matrix)
