"""The precision matrix on the tiny model: every quantisation recipe of every runtime,
TensorFlow Lite Micro C sources and arena, the Edge TPU compiler (stand-in and missing),
and what the MCU fit check and the report make of them."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tasks.device import harness, runtimes, tensors
from tasks.config import ConvertParams, McuDevice, QuantizationParams, RequirementParams
from tasks.convert import ConvertInputs, convert
from tasks.models.formats.edgetpu import parse_compiler_log
from tasks.models.formats.tflm import resolver_call
from tests.helpers import index_entries

MATRIX = {"tflite": ["fp32", "fp16", "dynamic", "int8"],
          "onnx": ["fp32", "int8-dynamic", "int8-qdq"],
          "openvino": ["fp32", "fp16", "bf16", "int8", "int8-acc"],
          "tflm": ["int8"], "edgetpu": ["int8"]}
QUANTIZATION = QuantizationParams(calibration_samples=32)
TINY_FLOOR = 0.6  # argmax agreement; chance is 0.1

COMPILER_LOG = """\
Edge TPU Compiler version 16.0.384591198
Started a compilation timeout timer of 180 seconds.

Model compiled successfully in 41 ms.

Input model: model.tflite
Input size: 9.02KiB
Output model: model_edgetpu.tflite
Output size: 41.21KiB
On-chip memory used for caching model parameters: 7.25KiB
On-chip memory remaining for caching model parameters: 7.99MiB
Off-chip memory used for streaming uncached model parameters: 0.00B
Number of Edge TPU subgraphs: 1
Total number of operations: 5
Operation log: model_edgetpu.log

Model successfully compiled but not all operations are supported by the Edge TPU. A percentage of the model will instead run on the CPU, which is slower.
Number of operations that will run on Edge TPU: 4
Number of operations that will run on CPU: 1

Operator                       Count      Status

CONV_2D                        2          Mapped to Edge TPU
MAX_POOL_2D                    1          Mapped to Edge TPU
FULLY_CONNECTED                1          Mapped to Edge TPU
MEAN                           1          Operation is otherwise supported, but not mapped due to some unspecified limitation
"""

STAND_IN_COMPILER = """#!/bin/sh
# A stand-in for Coral's edgetpu_compiler: same arguments, same outputs, same log.
out=.
while [ $# -gt 1 ]; do
  case "$1" in
    --out_dir) out="$2"; shift 2;;
    *) shift;;
  esac
done
cp "$1" "$out/model_edgetpu.tflite"
cat "$(dirname "$0")/log.txt" > "$out/model_edgetpu.log"
cat "$(dirname "$0")/log.txt"
"""


@pytest.fixture(scope="module")
def matrix(tiny_project, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    layout = tiny_project.layout
    out = tmp_path_factory.mktemp("matrix") / "variants"
    # The tiny model is barely trained (low-margin logits), so quantisation moves more of
    # its argmax decisions than on a real model: the mechanics are tested here, the
    # acceptance figures on the default model by benchmarks/quantization.py.
    convert(MATRIX, ConvertParams(min_agreement_quantized=TINY_FLOOR), QUANTIZATION, 0.05,
            ConvertInputs(layout.base_model, None, layout.prepared), out)
    return out, {v["name"]: v for v in index_entries(out)}


def test_every_listed_variant_is_produced_or_skipped_with_a_reason(matrix) -> None:
    _, variants = matrix
    expected = {f"{fmt}-{precision}" for fmt, precisions in MATRIX.items() for precision in precisions}
    assert set(variants) == expected
    for name, variant in variants.items():
        assert variant["status"] in {"ok", "skipped", "rejected"}, name
        if variant["status"] != "ok":
            assert variant["reason"], name


# --------------------------------------------------------------------------- execution precision

CPU_HAS_BF16 = "BF16" in __import__("openvino").Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
DECLARED = {"bf16": "bf16"}  # every other precision's float arithmetic runs in f32


class RecordingCore:
    """openvino.Core as the harness uses it, recording each compile config and, when
    ``capabilities`` is given, answering OPTIMIZATION_CAPABILITIES as another CPU would."""

    def __init__(self, capabilities: list[str] | None = None) -> None:
        import openvino as ov

        self.configs: list[dict[str, Any]] = []
        recorder = self

        class Core(ov.Core):
            def compile_model(self, model: Any, device: str, config: dict[str, Any]) -> Any:
                recorder.configs.append(dict(config))
                return super().compile_model(model, device, config)

            def get_property(self, device: str, name: str) -> Any:
                if capabilities is not None and name == "OPTIMIZATION_CAPABILITIES":
                    return capabilities
                return super().get_property(device, name)

        self.core = Core


@pytest.mark.parametrize("name", ["openvino-fp32", "openvino-fp16", "openvino-int8",
                                  "openvino-int8-acc", "openvino-bf16"])
def test_openvino_variants_compile_at_the_precision_they_declare(
        matrix, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hint is asked for explicitly (on a CPU whose default is f32 too) and the
    compiled model's own property is what the runner reports; a bf16 variant runs in
    bf16 where the CPU has it and is refused where it does not."""
    import openvino

    out, variants = matrix
    variant = variants[name]
    assert variant["status"] == "ok", variant.get("reason")
    declared = DECLARED.get(variant["precision"], "f32")
    assert variant["spec"]["execution_precision"] == declared
    recording = RecordingCore()
    monkeypatch.setattr(openvino, "Core", recording.core)
    load = lambda: runtimes.load_runner("openvino", str(out / variant["file"]), 1,  # noqa: E731
                                       {"execution_precision": declared})
    if declared == "bf16" and not CPU_HAS_BF16:
        with pytest.raises(runtimes.PrecisionUnavailable, match="CPU lacks native bf16"):
            load()
        assert recording.configs == [], "nothing may be compiled in another precision"
        return
    runner = load()
    assert recording.configs[-1]["INFERENCE_PRECISION_HINT"] == declared
    assert runner.execution_precision == declared
    compiled = openvino.Core().compile_model(str(out / variant["file"]), "CPU",
                                             recording.configs[-1])
    assert compiled.get_property("INFERENCE_PRECISION_HINT").to_string() == declared


def test_a_cpu_without_native_bf16_skips_the_bf16_variant(matrix, tmp_path: Path,
                                                         tiny_project,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import openvino

    out, variants = matrix
    variant = variants["openvino-bf16"]
    monkeypatch.setattr(openvino, "Core", RecordingCore(["FP32", "INT8", "BIN"]).core)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(variant["spec"]), encoding="utf-8")
    result_path = tmp_path / "result.json"
    code = harness.main(["--artifact", str(out / variant["file"]), "--runtime", "openvino",
                         "--data", str(tiny_project.layout.prepared / "test.npz"),
                         "--spec", str(spec), "--out", str(result_path), "--runs", "2",
                         "--seconds", "0", "--warmup-runs", "0", "--warmup-seconds", "0"])
    result = json.loads(result_path.read_text(encoding="utf-8"))
    assert (code, result["status"]) == (0, "skipped")
    assert result["error"] == "CPU lacks native bf16 (OpenVINO lists FP32, INT8, BIN)"
    assert "latency_ms" not in result


def test_bf16_is_checked_in_bf16_where_the_cpu_has_it_and_in_f32_elsewhere(matrix) -> None:
    _, variants = matrix
    check = variants["openvino-bf16"]["check"]
    if CPU_HAS_BF16:
        assert (check["execution_precision"], check["note"]) == ("bf16", None)
        # Held to the quantised floor, not the fp32 logit tolerance: bf16 keeps 8 bits
        # of mantissa, so its logits move by about 1e-2 where fp32's move by 1e-6.
        assert check["max_abs_logit_diff"] > variants["openvino-fp32"]["check"]["max_abs_logit_diff"]
    else:
        assert check["execution_precision"] == "f32"
        assert check["note"].startswith("checked in f32 here (CPU lacks native bf16")
    assert variants["openvino-fp32"]["check"]["execution_precision"] == "f32"
    assert variants["openvino-fp32"]["check"]["max_abs_logit_diff"] <= 1e-4


def test_openvino_config_pins_the_precision_and_refuses_what_the_device_lacks() -> None:
    x86_bf16 = ["BF16", "FP32", "INT8"]
    plain = ["FP32", "INT8"]
    arm_fp16 = ["FP16", "FP32", "INT8"]
    for capabilities in (x86_bf16, plain, arm_fp16):
        config = runtimes.openvino_config("CPU", "f32", 2, capabilities)
        assert config == {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32",
                          "INFERENCE_NUM_THREADS": 2}
    assert runtimes.openvino_config("CPU", "bf16", 1, x86_bf16)["INFERENCE_PRECISION_HINT"] == "bf16"
    assert runtimes.openvino_config("CPU", "f16", 1, arm_fp16)["INFERENCE_PRECISION_HINT"] == "f16"
    for precision, capabilities in (("bf16", plain), ("bf16", arm_fp16), ("f16", x86_bf16)):
        with pytest.raises(runtimes.PrecisionUnavailable, match=f"CPU lacks native {precision}"):
            runtimes.openvino_config("CPU", precision, 1, capabilities)
    # Another device gets the same hint and no CPU thread count.
    assert runtimes.openvino_config("GPU", "f32", 4, ["FP32", "FP16"]) == {
        "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
    with pytest.raises(ValueError, match="unknown execution precision 'fp8'"):
        runtimes.openvino_config("CPU", "fp8", 1, x86_bf16)


@pytest.mark.parametrize("name", ["tflite-fp32", "tflite-fp16", "tflite-int8", "onnx-fp32",
                                  "onnx-int8-qdq", "tflm-int8"])
def test_other_runtimes_report_f32_and_refuse_other_precisions(matrix, name: str) -> None:
    out, variants = matrix
    variant = variants[name]
    assert variant["spec"]["execution_precision"] == "f32"
    assert variant["check"]["execution_precision"] == "f32"
    options = {"execution_precision": "f32", "arena_bytes": variant["spec"].get("arena_bytes")}
    runner = runtimes.load_runner(variant["runtime"], str(out / variant["file"]), 1, options)
    assert runner.execution_precision == "f32"
    with pytest.raises(runtimes.PrecisionUnavailable, match="bf16 execution is not available"):
        runtimes.load_runner(variant["runtime"], str(out / variant["file"]), 1,
                            {**options, "execution_precision": "bf16"})


def _metadata_names(model: bytes) -> set[bytes]:
    from tensorflow.lite.tools import flatbuffer_utils

    return {entry.name for entry in
            flatbuffer_utils.convert_bytearray_to_object(bytearray(model)).metadata}


def test_tflite_fp16_loses_the_mark_that_lets_xnnpack_compute_in_f16(tiny_project, matrix,
                                                                     tmp_path: Path,
                                                                     monkeypatch) -> None:
    """TFLiteConverter marks fp16 models ``reduced_precision_support``: on an ARM CPU with
    fp16 arithmetic XNNPACK then computes in f16. The export removes the mark; a model
    that has it reports f16 where the CPU has fp16 arithmetic, f32 elsewhere."""
    from tasks.models.formats.tflite import RECIPES, without_reduced_precision

    out, variants = matrix
    exported = (out / variants["tflite-fp16"]["file"]).read_bytes()
    assert runtimes.REDUCED_PRECISION_METADATA not in exported
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(
        str(tiny_project.layout.base_model / "saved_model"))
    RECIPES["fp16"](converter, tf, np.zeros((0,)))
    marked = converter.convert()
    assert runtimes.REDUCED_PRECISION_METADATA in marked  # what the converter writes
    stripped = without_reduced_precision(marked)
    assert runtimes.REDUCED_PRECISION_METADATA not in stripped
    assert _metadata_names(stripped) == _metadata_names(marked) - {b"reduced_precision_support"}
    fp32 = (out / variants["tflite-fp32"]["file"]).read_bytes()
    assert without_reduced_precision(fp32) == fp32

    path = tmp_path / "marked.tflite"
    path.write_bytes(marked)
    arm = tmp_path / "cpuinfo-arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd evtstrm aes crc32 fphp asimdhp cpuid\n")
    x86 = tmp_path / "cpuinfo-x86"
    x86.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16\n")
    real_flags = runtimes.cpu_flags
    for cpuinfo, expected in ((arm, "f16"), (x86, "f32")):
        monkeypatch.setattr(runtimes, "cpu_flags", lambda: real_flags(str(cpuinfo)))
        assert runtimes.load_runner("tflite", str(path)).execution_precision == expected
        assert runtimes.load_runner("tflite", str(out / variants["tflite-fp16"]["file"])
                                   ).execution_precision == "f32"


@pytest.mark.parametrize("name", ["tflite-fp16", "tflite-dynamic", "tflite-int8", "onnx-int8-dynamic",
                                  "onnx-int8-qdq", "openvino-fp16", "openvino-int8",
                                  "openvino-int8-acc", "tflm-int8"])
def test_quantised_variants_are_smaller_and_agree_with_the_model(tiny_project, matrix,
                                                                name: str) -> None:
    out, variants = matrix
    variant = variants[name]
    assert variant["status"] == "ok", variant.get("reason")
    fp32 = variants[f"{'tflite' if variant['format'] == 'tflm' else variant['format']}-fp32"]
    assert _weights_bytes(variant, out) < _weights_bytes(fp32, out), "weights must shrink"
    assert variant["check"]["agreement"] >= TINY_FLOOR
    assert 0.0 <= variant["accuracy_drop"] <= 1.0 and variant["gzip_bytes"] > 0
    # Loads and predicts in its own runtime through the harness loader.
    runner = runtimes.load_runner(variant["runtime"], str(out / variant["file"]))
    with np.load(tiny_project.layout.prepared / "test.npz") as data:
        logits = tensors.predict(runner, data["x"][:4], variant["spec"])
    assert logits.shape == (4, 10) and np.isfinite(logits).all()


def _weights_bytes(variant: dict[str, Any], variants_dir: Path) -> int:
    """Bytes of the stored weights. On a model this small the graph itself (OpenVINO's
    XML, ONNX's QDQ nodes) outweighs the weights, so file sizes would say nothing; the
    default model's file-size ratios are measured by benchmarks/quantization.py."""
    if variant["format"] == "onnx":
        import onnx
        from onnx import numpy_helper

        graph = onnx.load(str(variants_dir / variant["file"])).graph
        return sum(numpy_helper.to_array(tensor).nbytes for tensor in graph.initializer)
    return sum(entry["bytes"] for entry in variant["files"] if not entry["path"].endswith(".xml"))


def test_full_int8_tflite_has_int8_io_and_quantisation_parameters(matrix) -> None:
    _, variants = matrix
    spec = variants["tflite-int8"]["spec"]
    assert spec["input"]["dtype"] == "int8" and spec["output"]["dtype"] == "int8"
    assert spec["input"]["quantization"]["scale"] > 0
    assert -128 <= spec["input"]["quantization"]["zero_point"] <= 127
    # Float variants keep float inputs.
    assert variants["onnx-int8-qdq"]["spec"]["input"]["quantization"] is None


def test_tflm_c_sources_and_measured_arena(matrix) -> None:
    out, variants = matrix
    variant = variants["tflm-int8"]
    details = variant["details"]
    model = (out / variant["file"]).read_bytes()
    assert details["model_bytes"] == len(model) == variant["bytes"]
    assert 0 < details["arena_bytes"] < 1024 * 1024
    header = (out / "tflm-int8" / "model_data.h").read_text()
    source = (out / "tflm-int8" / "model_data.cc").read_text()
    assert f"constexpr int kTensorArenaSize = {details['arena_bytes']};" in header
    assert "resolver.AddConv2D();" in header and "resolver.AddFullyConnected();" in header
    assert "alignas(16) const unsigned char g_model_data[]" in source
    assert f"const unsigned int g_model_data_len = {len(model)};" in source
    array = source.split("{", 1)[1].split("}", 1)[0]
    assert bytes(int(token, 16) for token in array.replace(",", " ").split()) == model
    assert variant["extras"] == ["tflm-int8/model_data.cc", "tflm-int8/model_data.h"]


def test_resolver_names_follow_tflm() -> None:
    assert resolver_call("CONV_2D") == "AddConv2D()"
    assert resolver_call("DEPTHWISE_CONV_2D") == "AddDepthwiseConv2D()"
    assert resolver_call("MAX_POOL_2D") == "AddMaxPool2D()"
    assert resolver_call("FULLY_CONNECTED") == "AddFullyConnected()"


def test_edgetpu_without_compiler_is_skipped_with_the_reason(matrix) -> None:
    _, variants = matrix
    if variants["edgetpu-int8"]["status"] == "ok":
        pytest.skip("a real edgetpu_compiler is installed here")
    assert variants["edgetpu-int8"]["status"] == "skipped"
    assert "edgetpu_compiler is not on PATH" in variants["edgetpu-int8"]["reason"]


def test_edgetpu_with_a_compiler_on_path_parses_its_log(tiny_project, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    tools = tmp_path / "bin"
    tools.mkdir()
    compiler = tools / "edgetpu_compiler"
    compiler.write_text(STAND_IN_COMPILER)
    compiler.chmod(compiler.stat().st_mode | stat.S_IEXEC)
    (tools / "log.txt").write_text(COMPILER_LOG)
    monkeypatch.setenv("PATH", f"{tools}{os.pathsep}{os.environ['PATH']}")
    layout = tiny_project.layout
    out = tmp_path / "variants"
    convert({"edgetpu": ["int8"]}, ConvertParams(), QUANTIZATION, 0.05,
            ConvertInputs(layout.base_model, None, layout.prepared), out)
    variant = index_entries(out)[0]
    assert variant["status"] == "ok" and variant["file"] == "edgetpu-int8/model_edgetpu.tflite"
    details = variant["details"]
    assert details["tpu_ops"] == 4 and details["cpu_ops"] == 1
    assert details["subgraphs"] == 1 and details["compiler_version"] == "16.0.384591198"
    # Checked through the int8 model it was compiled from, on the CPU.
    assert variant["check"]["agreement"] >= 0.95
    assert "edgetpu-int8/model.tflite" in variant["extras"]


def test_compiler_log_parsing() -> None:
    parsed = parse_compiler_log(COMPILER_LOG)
    assert [op["op"] for op in parsed["operators"]] == ["CONV_2D", "MAX_POOL_2D",
                                                        "FULLY_CONNECTED", "MEAN"]
    assert parsed["tpu_ops"] == parsed["tpu_ops_reported"] == 4
    assert parsed["cpu_ops"] == parsed["cpu_ops_reported"] == 1
    assert parsed["total_ops"] == 5 and parsed["on_chip_parameter_memory"] == "7.25KiB"
    assert parse_compiler_log("")["operators"] == []


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_onnx_calibration_methods(tiny_project, tmp_path: Path, method: str) -> None:
    layout = tiny_project.layout
    out = tmp_path / "variants"
    convert({"onnx": ["int8-qdq"]}, ConvertParams(),
            QuantizationParams(calibration_samples=16, onnx_calibration=method), 0.05,
            ConvertInputs(layout.base_model, None, layout.prepared), out)
    variant = index_entries(out)[0]
    assert variant["status"] in {"ok", "rejected"}
    assert variant["check"]["samples"] > 100


def test_mcu_fit_check_passes_a_big_board_and_fails_a_small_one(matrix, tmp_path: Path) -> None:
    from tasks.targets.mcu import check_fit as check_mcu_fit
    from tasks.config import Farm
    from tests.tasks.select.summaries import judge as evaluate

    out, variants = matrix
    big = McuDevice(transport="mcu", flash_kb=4096, ram_kb=512)
    small = McuDevice(transport="mcu", flash_kb=2, ram_kb=2)
    records = {}
    for name, device in (("esp32", big), ("tiny", small)):
        run = check_mcu_fit(name, device, out, tmp_path / name)
        records[name] = {json.loads(p.read_text())["variant"]: json.loads(p.read_text())
                         for p in run.results}
    assert records["esp32"]["onnx-fp32"]["status"] == "skipped"
    assert "tflm" in records["esp32"]["onnx-fp32"]["error"]
    requirements = RequirementParams(max_accuracy_drop=None)
    fits = evaluate(records["esp32"]["tflm-int8"], requirements, 0.7)
    assert fits.status == "pass" and fits.latency_ms is None
    assert "latency needs the board" in fits.notes[0]
    too_big = evaluate(records["tiny"]["tflm-int8"], requirements, 0.7)
    assert too_big.status == "fail", too_big
    assert any(r.startswith("model ") and "flash budget" in r for r in too_big.reasons)
    assert any(r.startswith("tensor arena") and "RAM budget" in r for r in too_big.reasons)
    assert Farm(devices={"esp32": big}).devices["esp32"].transport == "mcu"


def test_rejected_variants_fail_with_the_numbers_and_are_not_benchmarked() -> None:
    from tasks.benchmark import not_produced
    from tests.tasks.select.summaries import judge as evaluate
    from tests.tasks.test_select import not_ok_record

    variant = {"status": "rejected", "reason": "argmax agreement 0.9 < 0.95"}
    record = {**not_ok_record("rejected", None, variant="onnx-int8-qdq", device="pi"),
              "size_bytes": 10, **not_produced(variant["status"], variant["reason"])}
    row = evaluate(record, RequirementParams(), 0.9)
    assert row.status == "fail"
    assert row.reasons == ["rejected by convert: argmax agreement 0.9 < 0.95"]


# ------------------------------------------------ what each precision changed in the model

# The tensor types each TFLite precision leaves in the model (int32: shapes and biases):
# fp16 weights stored float16 beside float32 activations; dynamic int8 weights beside
# float32 activations; full int8 nothing float at all.
TFLITE_TENSOR_TYPES = {"fp32": {"float32", "int32"}, "fp16": {"float16", "float32", "int32"},
                       "dynamic": {"int8", "float32", "int32"}, "int8": {"int8", "int32"}}


def test_the_matrix_walks_every_precision_of_every_format() -> None:
    """So the tests below, over the matrix, cover each recipe a format has."""
    from tasks.models.formats import FORMATS

    assert {name: set(precisions) for name, precisions in MATRIX.items()} == {
        name: set(fmt.precisions) for name, fmt in FORMATS.items()}
    assert set(TFLITE_TENSOR_TYPES) == set(FORMATS["tflite"].precisions)


@pytest.mark.parametrize("precision", list(TFLITE_TENSOR_TYPES))
def test_each_tflite_precision_stores_its_tensors_in_its_own_types(matrix,
                                                                   precision: str) -> None:
    """What the converter was told (supported types, optimisations, integer I/O) read back
    from the flatbuffer it wrote: every tensor's type, and the spec's input and output
    as the interpreter reports them."""
    from ai_edge_litert.interpreter import Interpreter

    out, variants = matrix
    variant = variants[f"tflite-{precision}"]
    assert variant["status"] == "ok", variant.get("reason")
    interpreter = Interpreter(model_path=str(out / variant["file"]))
    assert {np.dtype(tensor["dtype"]).name for tensor in interpreter.get_tensor_details()} == (
        TFLITE_TENSOR_TYPES[precision])
    io = "int8" if precision == "int8" else "float32"
    for side, details in (("input", interpreter.get_input_details()[0]),
                          ("output", interpreter.get_output_details()[0])):
        scale, zero_point = details["quantization"]
        assert variant["spec"][side]["dtype"] == np.dtype(details["dtype"]).name == io
        assert variant["spec"][side]["quantization"] == (
            {"scale": scale, "zero_point": zero_point} if io == "int8" else None)


def _openvino_constant_types(path: Path) -> tuple[set[str], list[Any]]:
    """The element types of an IR's float and integer weights (constants of more than
    one element: scalars are ranges and shapes), and its input's shape."""
    import math

    import openvino

    model = openvino.Core().read_model(str(path))
    types = {op.get_output_element_type(0).get_type_name() for op in model.get_ops()
             if op.get_type_name() == "Constant"
             and op.get_output_partial_shape(0).is_static
             and math.prod(op.get_output_shape(0)) > 4}
    return types, [size.get_length() if size.is_static else None
                   for size in model.inputs[0].get_partial_shape()]


# fp32 and bf16 keep their weights f32 (bf16 rounds from them once, at compile time);
# fp16 stores them f16; the int8 ones store i8 weights (NNCF keeps what is left of a
# quantised model's floats in f32 whatever save_model is told).
OPENVINO_WEIGHT_TYPES = {"fp32": {"f32"}, "bf16": {"f32"}, "fp16": {"f16"},
                         "int8": {"i8", "f32"}, "int8-acc": {"i8", "f32"}}


@pytest.mark.parametrize("precision", list(OPENVINO_WEIGHT_TYPES))
def test_each_openvino_precision_stores_its_weights_in_its_own_types(matrix,
                                                                    precision: str) -> None:
    from tasks.models.formats import FORMATS

    assert set(OPENVINO_WEIGHT_TYPES) == set(FORMATS["openvino"].precisions)
    out, variants = matrix
    variant = variants[f"openvino-{precision}"]
    assert variant["status"] == "ok", variant.get("reason")
    types, input_shape = _openvino_constant_types(out / variant["file"])
    assert types == OPENVINO_WEIGHT_TYPES[precision]
    # Reshaped to batch 1 at the source's input shape: a static shape, as the spec says.
    assert input_shape == variant["spec"]["input"]["shape"] == [1, 16, 16, 1]
    # The source named by its file name alone (convert_model records its absolute path),
    # so that the IR's bytes are the same wherever the project sits.
    xml = (out / variant["file"]).read_text(encoding="utf-8")
    assert re.findall(r'<input_model value="([^"]*)" />', xml) == ["saved_model"]


# What each ONNX precision's graph computes with: float ops only; integer ops fed by
# activations quantised at run time; float ops between QuantizeLinear/DequantizeLinear.
ONNX_OPS = {"fp32": ({"Conv", "MatMul"}, {"QuantizeLinear", "DynamicQuantizeLinear",
                                          "ConvInteger", "MatMulInteger"}),
            "int8-dynamic": ({"DynamicQuantizeLinear", "ConvInteger", "MatMulInteger"},
                             {"QuantizeLinear", "Conv", "MatMul"}),
            "int8-qdq": ({"QuantizeLinear", "DequantizeLinear", "Conv"},
                         {"DynamicQuantizeLinear", "ConvInteger", "MatMulInteger",
                          "QLinearConv"})}


@pytest.mark.parametrize("precision", list(ONNX_OPS))
def test_each_onnx_precision_is_its_own_graph(matrix, precision: str) -> None:
    import onnx

    from tasks.models.formats import FORMATS

    assert set(ONNX_OPS) == set(FORMATS["onnx"].precisions)
    out, variants = matrix
    variant = variants[f"onnx-{precision}"]
    assert variant["status"] == "ok", variant.get("reason")
    ops = {node.op_type for node in onnx.load(str(out / variant["file"])).graph.node}
    present, absent = ONNX_OPS[precision]
    assert present <= ops and not absent & ops, sorted(ops)
