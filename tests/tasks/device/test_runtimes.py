"""tasks/device/runtimes.py in process: what each runtime is given and refuses."""

from __future__ import annotations

from typing import Any

import pytest

from tasks.device import runtimes
from tests.tasks.device.test_harness import variant_entry


def test_litert_is_given_the_threads_though_it_cannot_report_them(
        tiny_project: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """LiteRT cannot read its thread count back (ONNX Runtime and OpenVINO report theirs:
    tests/tasks/test_benchmark.py), so its interpreter is watched being made."""
    from ai_edge_litert import interpreter as litert

    asked: list[Any] = []

    class Watched(litert.Interpreter):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            asked.append(kwargs.get("num_threads"))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(litert, "Interpreter", Watched)
    artifact = tiny_project.layout.variants / variant_entry(tiny_project, "tflite-fp32")["file"]
    runner = runtimes.load_runner("tflite", str(artifact), threads=2)
    assert asked == [2]
    assert runner.threads is None, "what LiteRT cannot say is not claimed"


def test_onnx_runtime_session_gets_the_pinned_options_the_threads_and_the_providers(
        tiny_project: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """What InferenceSession is given, watched being made: threads 2 (not the default 1)
    within one op, one op at a time, bf16 fastmath pinned off, and the providers asked."""
    import onnxruntime as ort

    made: list[tuple[Any, list[str]]] = []

    class Watched(ort.InferenceSession):
        def __init__(self, path: Any, options: Any, providers: list[str]) -> None:
            made.append((options, providers))
            super().__init__(path, options, providers=providers)

    monkeypatch.setattr(ort, "InferenceSession", Watched)
    artifact = tiny_project.layout.variants / variant_entry(tiny_project, "onnx-fp32")["file"]
    runner = runtimes.load_runner("onnxruntime", str(artifact), threads=2, options={
        "onnxruntime_providers": ["CPUExecutionProvider"]})
    [(options, providers)] = made
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (2, 1)
    assert options.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert options.get_session_config_entry(runtimes.ORT_ARM64_BF16_FASTMATH) == "0"
    assert providers == ["CPUExecutionProvider"]
    assert (runner.threads, runner.execution_precision) == (2, "f32")


def test_openvino_compiles_on_the_device_asked_with_the_threads_only_a_cpu_takes(
        tiny_project: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """openvino_device AUTO (not the default CPU) is where the model is compiled, and
    its config holds no thread count (AUTO chooses the device, so it is CPU's only)."""
    import openvino

    compiled_on: list[tuple[str, dict[str, Any]]] = []

    class Core(openvino.Core):
        def compile_model(self, model: Any, device: str, config: dict[str, Any]) -> Any:
            compiled_on.append((device, dict(config)))
            return super().compile_model(model, device, config)

    monkeypatch.setattr(openvino, "Core", Core)
    artifact = tiny_project.layout.variants / variant_entry(tiny_project, "openvino-fp32")["file"]
    runner = runtimes.load_runner("openvino", str(artifact), threads=2,
                                  options={"openvino_device": "AUTO"})
    assert compiled_on == [("AUTO", {"PERFORMANCE_HINT": "LATENCY",
                                     "INFERENCE_PRECISION_HINT": "f32"})]
    # What AUTO chose, as the compiled model says (CPU here), not the virtual device.
    assert runner.accelerator and "AUTO" not in runner.accelerator


def test_load_runner_rejects_unknown_runtime_in_process() -> None:
    with pytest.raises(ValueError, match=r"unknown runtime 'tensorrt' \(known: edgetpu, "
                                         r"onnxruntime, openvino, tflite, tflm\)"):
        runtimes.load_runner("tensorrt", "model.plan")
