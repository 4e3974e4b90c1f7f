"""Step convert: every registered format exports, loads in its runtime and agrees with
the Keras model; disagreement and export failures stop the step with the numbers. The
agreement check itself on scripted artifacts (in-process, no runtime): exact numbers,
which floor and tolerance hold which precision, limits met exactly."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tasks.core.accuracy import accuracy_interval
from tasks.config import ConvertParams, QuantizationParams
from tasks import convert as convert_step
from tasks.convert import ConvertInputs, check_variant, convert, load_source, variant_name
from tasks.core.contracts.variants import Variant, VariantCheck
from tasks.core.errors import ConversionError, StepError
from tasks.core.files import sha256_file
from tasks.models.formats import (FORMATS, Exported, ExportRequest, Skipped, float_spec,
                                  validate_format_matrix)
from tests.helpers import fork_safe, index_entries


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


def test_no_variant_file_names_the_folder_the_project_sits_in(tiny_project) -> None:
    """A variant's bytes are the same wherever the project is cloned (DVC's cache and the
    release's sha256 compare them): OpenVINO's IR records the converted model's path in
    its rt_info, which is kept as the file's name only."""
    root = str(tiny_project.layout.root.resolve())
    files = [path for path in tiny_project.layout.variants.rglob("*") if path.is_file()]
    assert any(path.suffix == ".xml" for path in files)
    named = [str(path) for path in files if root.encode() in path.read_bytes()]
    assert named == []
    xml = next(path for path in files if path.suffix == ".xml").read_text(encoding="utf-8")
    assert '<input_model value="saved_model" />' in xml


def test_check_reports_disagreement_with_numbers(tiny_project) -> None:
    layout = tiny_project.layout
    variant = next(v for v in index_entries(layout.variants) if v["format"] == "onnx")
    from tasks.models.formats import Exported

    exported = Exported(layout.variants / variant["file"], (), variant["spec"])
    with np.load(layout.prepared / "test.npz") as data:
        images, labels = data["x"][:40], data["y"][:40]
    # A reference that is the artifact's own logits rolled by one class disagrees everywhere.
    from tasks.device import runtimes, tensors
    logits = tensors.predict(runtimes.load_runner("onnxruntime", str(exported.main_file)),
                             images, variant["spec"])
    check = check_variant(exported, "onnxruntime", images, labels, np.roll(logits, 1, axis=1),
                          "fp32", ConvertParams())
    assert not check.passed
    assert any(f.startswith("argmax agreement") for f in check.failures)
    assert any(f.startswith("max |logit diff|") for f in check.failures)


# An artifact scripted image by image (image i answers row i), against reference logits:
# it agrees on three of four images (the last one's argmax differs) and its largest
# logit difference is 0.25 (exact in float32, so limits can be met exactly).
REFERENCE = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]
DISAGREES_ON_LAST = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.25], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]]
AGREES_WITHIN_025 = [[1.0, 0.25, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.75], [1.0, 0.0, 0.0]]
LABELS = [0, 1, 1, 0]  # the reference gets 3 right, DISAGREES_ON_LAST 2


def scripted_check(monkeypatch: pytest.MonkeyPatch, logits: list[list[float]], precision: str,
                   params: ConvertParams = ConvertParams(), ran: str = "f32",
                   declared: str | None = "f32", note: str | None = None) -> VariantCheck:
    """check_variant on an artifact that answers ``logits`` and reports it ran in ``ran``
    (and, with ``note``, was checked in f32 in place of what it declares)."""
    from tasks.device.runtimes import Runner

    rows = np.asarray(logits, dtype=np.float32)
    runner = Runner(lambda x: rows[int(x.item())][np.newaxis], "scripted", "0",
                    execution_precision=ran)
    monkeypatch.setattr(convert_step, "_check_runner", lambda exported, runtime: (runner, note))
    spec = float_spec((1, 1, 1))
    if declared is not None:
        spec["execution_precision"] = declared
    images = np.arange(len(rows), dtype=np.float32).reshape(-1, 1, 1, 1)
    return check_variant(Exported(Path("model.scripted"), (), spec), "scripted", images,
                         np.asarray(LABELS), np.asarray(REFERENCE, dtype=np.float32), precision,
                         params)


def test_check_measures_agreement_logit_difference_and_both_accuracies(monkeypatch) -> None:
    check = scripted_check(monkeypatch, DISAGREES_ON_LAST, "int8")
    assert check == VariantCheck(
        samples=4, agreement=0.75, max_abs_logit_diff=1.0, accuracy=0.5, reference_accuracy=0.75,
        passed=False, failures=["argmax agreement 0.7500 < 0.95"], execution_precision="f32",
        note=None)


@pytest.mark.parametrize(("precision", "floor"), [
    ("fp32", "min_agreement"), ("fp16", "min_agreement"),
    ("int8", "min_agreement_quantized"), ("bf16", "min_agreement_quantized")])
def test_float_and_quantised_variants_are_held_to_their_own_agreement_floor(
        monkeypatch, precision: str, floor: str) -> None:
    """Agreement 0.75 meets a floor of exactly 0.75 and misses 0.8; the other floor is
    set the other way round, so a variant held to the wrong one is caught."""
    other = "min_agreement_quantized" if floor == "min_agreement" else "min_agreement"
    lenient = ConvertParams(max_abs_logit_diff=1.0, **{floor: 0.75, other: 0.8})
    check = scripted_check(monkeypatch, DISAGREES_ON_LAST, precision, lenient)
    assert check.passed and check.failures == []
    strict = ConvertParams(max_abs_logit_diff=1.0, **{floor: 0.8, other: 0.75})
    check = scripted_check(monkeypatch, DISAGREES_ON_LAST, precision, strict)
    assert not check.passed and check.failures == ["argmax agreement 0.7500 < 0.8"]


@pytest.mark.parametrize(("precision", "held"), [
    ("fp32", True), ("fp16", False), ("int8", False), ("int8-qdq", False)])
def test_only_fp32_is_held_to_the_logit_tolerance(monkeypatch, precision: str,
                                                  held: bool) -> None:
    """fp16 weights and quantisation move logits by design; fp32 must match Keras. A
    difference of exactly the tolerance is within it."""
    exact = scripted_check(monkeypatch, AGREES_WITHIN_025, precision,
                           ConvertParams(max_abs_logit_diff=0.25))
    assert exact.max_abs_logit_diff == 0.25 and exact.agreement == 1.0
    # 3 of LABELS right (the last class-2 answer is wrong): 0.75, not the 0.25 it got wrong.
    assert exact.accuracy == exact.reference_accuracy == 0.75
    assert exact.passed and exact.failures == []
    tight = scripted_check(monkeypatch, AGREES_WITHIN_025, precision,
                           ConvertParams(max_abs_logit_diff=0.125))
    assert tight.failures == (["max |logit diff| 0.25 > 0.125"] if held else [])
    assert tight.passed is not held


def test_a_variant_run_in_another_precision_than_declared_fails_the_check(monkeypatch) -> None:
    check = scripted_check(monkeypatch, AGREES_WITHIN_025, "fp32", ran="bf16")
    assert check.failures == ["ran in bf16, not the f32 it declares", "max |logit diff| 0.25 > 0.001"]
    assert not check.passed and check.execution_precision == "bf16"
    # A spec that declares nothing declares f32.
    assert scripted_check(monkeypatch, AGREES_WITHIN_025, "int8", ran="bf16",
                          declared=None).failures == ["ran in bf16, not the f32 it declares"]
    assert scripted_check(monkeypatch, AGREES_WITHIN_025, "bf16", ran="f32",
                          declared="bf16").failures == ["ran in f32, not the bf16 it declares"]


def test_a_bf16_variant_checked_in_f32_here_says_so_and_passes(monkeypatch) -> None:
    """On a CPU without bf16 the same graph is checked in f32: what it must run in
    here is f32, and the note says why."""
    note = "checked in f32 here (no bf16); devices measure its bf16 accuracy"
    check = scripted_check(monkeypatch, AGREES_WITHIN_025, "bf16", ran="f32", declared="bf16",
                           note=note)
    assert check.passed and check.failures == []
    assert check.note == note and check.execution_precision == "f32"


def checked_variant(name: str, precision: str, failures: list[str]) -> Variant:
    """An index entry whose check found ``failures`` (none: it passed)."""
    check = VariantCheck(samples=4, agreement=0.5, max_abs_logit_diff=1.0, accuracy=0.5,
                         reference_accuracy=0.75, passed=not failures, failures=failures)
    return Variant(name=name, format=name.split("-")[0], precision=precision, source="base",
                   runtime="onnxruntime", status="ok", reason=None, file=f"{name}/model",
                   files=[], bytes=1, sha256="0" * 64, spec={}, accuracy=0.5, details={},
                   check=check)


def test_float_variants_that_disagree_fail_the_step_naming_each() -> None:
    variants = [checked_variant("onnx-fp32", "fp32", ["a", "b"]),
                checked_variant("tflite-fp32", "fp32", []),
                checked_variant("onnx-int8-qdq", "int8-qdq", ["c"]),  # rejected, not a fault
                Variant(name="edgetpu-int8", format="edgetpu", precision="int8", source="base",
                        runtime="edgetpu", status="skipped", reason="no compiler"),
                checked_variant("openvino-fp16", "fp16", ["d"])]
    with pytest.raises(ConversionError) as caught:
        convert_step._refuse_disagreements(variants)
    assert str(caught.value) == ("convert: artifacts disagree with their Keras model: "
                                 "onnx-fp32: a; b | openvino-fp16: d")
    convert_step._refuse_disagreements(variants[1:4])  # quantised or skipped: no fault


def test_convert_fails_with_numbers_and_keeps_previous_variants(tiny_project, tmp_path: Path) -> None:
    layout = tiny_project.layout
    out = tmp_path / "variants"
    shutil.copytree(layout.variants, out)
    before = sorted(p.name for p in out.iterdir())
    impossible = ConvertParams(max_abs_logit_diff=1e-12)
    with pytest.raises(ConversionError) as error:
        fork_safe(convert, {"onnx": ["fp32"]}, impossible, QuantizationParams(), 0.01,
                  ConvertInputs(layout.base_model, None, layout.prepared), out)
    message = str(error.value)
    assert "onnx-fp32" in message and "max |logit diff|" in message and "\n" not in message
    assert sorted(p.name for p in out.iterdir()) == before


def test_one_variants_export_failure_is_its_own_failed_row(tiny_project, tmp_path: Path) -> None:
    """A broken SavedModel fails the TFLite export only: that variant is ``failed`` with
    the error in one line, its folder gone; the ONNX variant (from the .keras file) is
    converted and kept, and benchmark reports the failed one as convert's failure."""
    from tasks.benchmark import not_produced
    from tasks.core.contracts.variants import read_variant_index

    layout = tiny_project.layout
    broken = tmp_path / "base"
    shutil.copytree(layout.base_model, broken)
    (broken / "saved_model" / "saved_model.pb").write_bytes(b"not a graph")
    fork_safe(convert, {"tflite": ["fp32"], "onnx": ["fp32"]}, ConvertParams(check_samples=40),
              QuantizationParams(), 0.01, ConvertInputs(broken, None, layout.prepared),
              tmp_path / "v")
    variants = {variant.name: variant for variant in read_variant_index(tmp_path / "v").variants}
    assert variants["onnx-fp32"].status == "ok" and variants["onnx-fp32"].check.passed
    failed = variants["tflite-fp32"]
    assert failed.status == "failed" and not failed.runnable and failed.file is None
    assert failed.reason.startswith("export failed: ") and "\n" not in failed.reason
    assert not (tmp_path / "v" / "tflite-fp32").exists()
    assert (tmp_path / "v" / "onnx-fp32" / "model.onnx").is_file()
    assert not_produced(failed.status, failed.reason) == {
        "status": "failed", "error": f"failed by convert: {failed.reason}"}


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
    # Every quantisation option away from its default, and an accuracy drop away from
    # the 0.01 an exporter assumes: a value dropped on its way to the exporter shows.
    quantization = QuantizationParams(calibration_samples=16, onnx_calibration="percentile",
                                      per_channel=False, onnx_reduce_range=False,
                                      openvino_preset="mixed")
    convert(matrix, ConvertParams(), quantization, 0.05,
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
        assert request.quantization == quantization, where
        assert (request.max_accuracy_drop, request.precision) == (0.05, precision), where
    # One scratch folder for the source, shared by all its exports (the fp32 ONNX graph
    # and the int8 flatbuffer are made once).
    assert len({request.scratch for request in requests.values()}) == 1
    assert next(iter(requests.values())).scratch is not None


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


@pytest.mark.parametrize("normalize", [{"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
                                       None])
def test_a_variant_takes_the_normalisation_of_the_source_it_was_made_from(
        tmp_path: Path, normalize: dict[str, list[float]] | None) -> None:
    """A brought model's mean/std reach each variant's input spec (every runtime and the
    harness feed by it), beside the spec's other input fields; edgeflow's own model
    (no input of its own) gets normalize None: pixels in [0, 1] as they are."""
    from tasks.convert import with_source_input
    from tasks.models.formats import SourceModel

    source = SourceModel("base", None, None, (8, 8, 3), input=(
        {"layout": "nchw", "normalize": normalize} if normalize else None))
    exported = Exported(tmp_path / "model.onnx", (), float_spec((8, 8, 3)))
    spec = with_source_input(exported, source).spec
    assert spec["input"] == {**float_spec((8, 8, 3))["input"], "normalize": normalize}
    assert spec["output"] == exported.spec["output"]
    assert "normalize" not in exported.spec["input"]  # the export itself is left as it was


# ------------------------------------------------------- what a detector's spec carries
def test_a_detectors_spec_says_its_grid_classes_and_decoding_params() -> None:
    from tasks.config.params import DetectionDecoding

    decoding = DetectionDecoding(score_threshold=0.3, iou_threshold=0.5, max_detections=7)
    reference = np.zeros((2, 6, 6, 5 + 3), np.float32)  # N, S, S, 5 + C
    entries = convert_step.task_entries("detection", reference, 3, decoding)
    assert entries == {"detection": {"format": "grid", "classes": 3, "grid": 6,
                                     "score_threshold": 0.3, "iou_threshold": 0.5,
                                     "max_detections": 7}}
    assert convert_step.task_entries("classification", np.zeros((2, 10)), 10, decoding) == {}
    exported = Exported(Path("m.tflite"), (), {"input": {}, "output": {}})
    spec = convert_step.with_task(exported, "detection", entries).spec
    assert spec["task"] == "detection" and spec["detection"]["grid"] == 6
    # The kind decodes a flattened output by it: one cell, one box.
    from tasks.core import device_code

    kind = device_code.task_kinds().get("detection")
    output = np.full((6, 6, 8), -9.0)
    output[2, 3, :5] = [9.0, 0.0, 0.0, 0.0, 0.0]  # centre of cell (row 2, column 3), half size
    output[2, 3, 5 + 1] = 9.0
    boxes = kind.decode(output.reshape(-1), spec)
    assert boxes.shape == (1, 6) and boxes[0, 0] == 1
    assert np.allclose(boxes[0, 2:], [3.5 / 6 - 0.25, 2.5 / 6 - 0.25, 3.5 / 6 + 0.25,
                                      2.5 / 6 + 0.25])


@pytest.mark.parametrize("shape", [(2, 6, 5, 8), (2, 6, 6, 9), (2, 288)])
def test_a_detector_whose_output_is_no_grid_of_its_classes_is_refused(
        shape: tuple[int, ...]) -> None:
    with pytest.raises(ConversionError) as refused:
        convert_step.task_entries("detection", np.zeros(shape), 3)
    assert str(refused.value) == (f"convert: the detector answers {shape[1:]}, not a square "
                                  f"grid of 5 + 3 values per cell (objectness, box, one score "
                                  f"per class)")


def test_a_yolo_sources_spec_says_its_layout_and_classes_from_its_flattened_output() -> None:
    # ONNX Runtime's outputs reach convert flattened: (N, (4 + C) * boxes).
    reference = np.zeros((2, (4 + 3) * 21), np.float32)
    entries = convert_step.task_entries("detection", reference, 3, None,
                                        {"format": "yolo"})
    assert entries == {"detection": {"format": "yolo", "classes": 3, "score_threshold": 0.25,
                                     "iou_threshold": 0.45, "max_detections": 100}}
    assert convert_step.task_entries("detection", np.zeros((2, 7, 21)), 3, None,
                                     {"format": "yolo"})["detection"]["format"] == "yolo"


@pytest.mark.parametrize("shape", [(2, 7 * 21 + 1), (2, 8, 21), (2, 0)])
def test_a_yolo_source_whose_output_is_not_its_classes_is_refused(
        shape: tuple[int, ...]) -> None:
    with pytest.raises(ConversionError) as refused:
        convert_step.task_entries("detection", np.zeros(shape), 3, None,
                                  {"format": "yolo"})
    assert str(refused.value) == (f"convert: the YOLO detector answers {shape[1:]}, not 4 + 3 "
                                  "values (box, one score per class) for each of its boxes")
