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



def test_load_runner_rejects_unknown_runtime_in_process() -> None:
    with pytest.raises(ValueError, match=r"unknown runtime 'tensorrt' \(known: edgetpu, "
                                         r"onnxruntime, openvino, tflite, tflm\)"):
        runtimes.load_runner("tensorrt", "model.plan")
