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


# --------------------------------------------------------------------------- in process, no artifact
# Stand-in runtime modules: what each loader hands its runtime is read back from them.


class _FakeInterpreter:
    """A LiteRT Interpreter that records how it was made and what it was fed."""

    made: list[dict[str, Any]] = []
    instances: list["_FakeInterpreter"] = []

    def __init__(self, model_path: str, num_threads: int | None = None,
                 experimental_delegates: Any = None) -> None:
        self.kwargs = {"model_path": model_path, "num_threads": num_threads,
                       "experimental_delegates": experimental_delegates}
        self.resized: list[tuple[int, list[int]]] = []
        self.allocated = False
        self.fed: list[tuple[int, Any]] = []
        _FakeInterpreter.made.append(self.kwargs)
        _FakeInterpreter.instances.append(self)

    def get_input_details(self) -> list[dict[str, Any]]:
        return [{"index": 7, "shape": [4, 8, 8, 1]}]

    def get_output_details(self) -> list[dict[str, Any]]:
        return [{"index": 9}]

    def resize_tensor_input(self, index: int, shape: list[int]) -> None:
        self.resized.append((index, shape))

    def allocate_tensors(self) -> None:
        self.allocated = True

    def set_tensor(self, index: int, x: Any) -> None:
        self.fed.append((index, x))

    def invoke(self) -> None:
        pass

    def get_tensor(self, index: int) -> Any:
        return ("output", index)


def _fake_litert(monkeypatch: pytest.MonkeyPatch, names: tuple[str, ...]) -> Any:
    import sys
    import types

    module = types.ModuleType("interpreter")
    module.Interpreter = _FakeInterpreter  # type: ignore[attr-defined]
    module.loaded = []  # type: ignore[attr-defined]
    module.load_delegate = lambda path: (module.loaded.append(path), f"delegate:{path}")[1]  # type: ignore[attr-defined]
    module.__version__ = "9.9"  # type: ignore[attr-defined]
    for name in names:
        package = types.ModuleType(name)
        package.interpreter = module  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, name, package)
        monkeypatch.setitem(sys.modules, f"{name}.interpreter", module)
    _FakeInterpreter.made, _FakeInterpreter.instances = [], []
    return module


@pytest.fixture
def plain_model(tmp_path) -> str:
    path = tmp_path / "model.tflite"
    path.write_bytes(b"TFL3" + bytes(100))
    return str(path)


def test_litert_loader_resizes_to_batch_one_and_reports_cpu_f32(monkeypatch, plain_model) -> None:
    _fake_litert(monkeypatch, ("ai_edge_litert",))
    monkeypatch.setattr(runtimes, "_package_version", lambda name, module: f"v:{name}")
    runner = runtimes.load_runner("tflite", plain_model, threads=3)
    assert _FakeInterpreter.made == [{"model_path": plain_model, "num_threads": 3,
                                      "experimental_delegates": None}]
    # The model's batch of 4 is made 1, on the input's own index; its other sizes kept.
    [interpreter] = _FakeInterpreter.instances
    assert interpreter.resized == [(7, [1, 8, 8, 1])]
    assert (runner.runtime, runner.version, runner.accelerator, runner.execution_precision,
            runner.threads) == ("ai-edge-litert", "v:ai-edge-litert", "CPU", "f32", None)
    assert runner.infer("x") == ("output", 9)


def test_litert_loader_with_a_delegate_says_it_cannot_verify_the_precision(
        monkeypatch, plain_model) -> None:
    module = _fake_litert(monkeypatch, ("ai_edge_litert",))
    runner = runtimes.load_runner("tflite", plain_model, 1, {"tflite_delegate": "libgpu.so"})
    assert module.loaded == ["libgpu.so"]
    assert _FakeInterpreter.made[0]["experimental_delegates"] == ["delegate:libgpu.so"]
    assert runner.accelerator == "delegate libgpu.so"
    assert runner.execution_precision == "unverified (delegate libgpu.so)"


def test_litert_loader_falls_back_to_tflite_runtime(monkeypatch, plain_model) -> None:
    import sys

    _fake_litert(monkeypatch, ("tflite_runtime",))
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)  # not installed
    assert runtimes.load_runner("tflite", plain_model).runtime == "tflite-runtime"


def test_interpreter_infer_feeds_the_input_index_and_reads_the_output_index() -> None:
    interpreter = _FakeInterpreter("m")
    infer = runtimes._interpreter_infer(interpreter)
    assert interpreter.allocated
    assert infer("image") == ("output", 9)
    assert interpreter.fed == [(7, "image")]


def test_edgetpu_loader_loads_corals_delegate(monkeypatch, plain_model) -> None:
    module = _fake_litert(monkeypatch, ("ai_edge_litert",))
    asked: list[tuple[str, Any]] = []
    monkeypatch.setattr(runtimes, "_package_version",
                        lambda name, module: (asked.append((name, module)), f"v:{name}")[1])
    runner = runtimes.load_runner("edgetpu", plain_model, 4)
    assert runner.version == "v:ai-edge-litert" and asked == [("ai-edge-litert", module)]
    assert module.loaded == [runtimes.EDGETPU_LIBRARY] == ["libedgetpu.so.1"]
    assert _FakeInterpreter.made[0]["experimental_delegates"] == ["delegate:libedgetpu.so.1"]
    assert (runner.runtime, runner.accelerator, runner.execution_precision) == (
        "edgetpu", "Edge TPU", "f32")


@pytest.mark.parametrize(("runtime", "name"), [("tflite", "LiteRT"), ("edgetpu", "Edge TPU"),
                                               ("onnxruntime", "ONNX Runtime")])
@pytest.mark.parametrize("precision", ["bf16", "f16"])
def test_f32_only_runtimes_refuse_other_precisions_naming_themselves(
        monkeypatch, plain_model, runtime: str, name: str, precision: str) -> None:
    _fake_litert(monkeypatch, ("ai_edge_litert",))
    with pytest.raises(runtimes.PrecisionUnavailable) as refused:
        runtimes.load_runner(runtime, plain_model, 1, {"execution_precision": precision})
    assert str(refused.value) == (f"{name} runs float operations in f32 on this device; "
                                  f"{precision} execution is not available")
    assert _FakeInterpreter.made == []  # refused before anything is loaded


@pytest.mark.parametrize(("options", "expected"), [
    ({}, "f32"), ({"execution_precision": None}, "f32"), ({"execution_precision": ""}, "f32"),
    ({"execution_precision": "bf16"}, "bf16"), ({"execution_precision": "f16"}, "f16")])
def test_requested_precision_defaults_to_f32(options, expected) -> None:
    assert runtimes.requested_precision(options) == expected
    assert runtimes.DEFAULT_EXECUTION_PRECISION == "f32"


def test_runner_defaults_claim_nothing_unverified() -> None:
    runner = runtimes.Runner(lambda x: x, "rt", "1.0")
    assert (runner.accelerator, runner.execution_precision, runner.threads) == (
        "CPU", "unverified", None)


def test_reduced_precision_mark_is_found_across_block_boundaries(tmp_path) -> None:
    """Read in blocks one byte longer than the 25-byte mark: at every offset the mark
    lies whole in one block or straddles two; one byte short of it is never found."""
    mark = runtimes.REDUCED_PRECISION_METADATA
    block = len(mark) + 1
    path = tmp_path / "m.tflite"
    for at in range(2 * block + 1):
        path.write_bytes(b"x" * at + mark + b"y" * 3)
        assert runtimes._allows_reduced_precision(str(path), block=block), at
        path.write_bytes(b"x" * at + mark[:-1] + b"y" * 3 + mark[1:])
        assert not runtimes._allows_reduced_precision(str(path), block=block), at
    path.write_bytes(b"x" * 70000 + mark)  # the default block: 64 KiB
    assert runtimes._allows_reduced_precision(str(path))


@pytest.mark.parametrize(("text", "flags"), [
    ("processor\t: 0\nflags\t\t: fpu sse avx512_fp16\nflags\t: other\n",
     {"fpu", "sse", "avx512_fp16"}),
    ("processor\t: 0\nFeatures\t: fp asimd asimdhp\n", {"fp", "asimd", "asimdhp"}),
    ("processor\t: 0\nmodel name\t: x\n", set()),
])
def test_cpu_flags_read_the_first_flags_or_features_line(tmp_path, monkeypatch, text, flags) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(text)
    assert runtimes.cpu_flags(str(cpuinfo)) == frozenset(flags)
    assert runtimes.cpu_flags(str(tmp_path / "absent")) == frozenset()
    real = runtimes.cpu_flags
    monkeypatch.setattr(runtimes, "cpu_flags", lambda: real(str(cpuinfo)))
    assert runtimes.cpu_has_fp16_arithmetic() == bool(flags & {"asimdhp", "avx512_fp16"})


@pytest.mark.parametrize("flag", sorted(runtimes.FP16_ARITHMETIC_FLAGS))
def test_each_fp16_flag_alone_means_fp16_arithmetic(monkeypatch, flag: str) -> None:
    monkeypatch.setattr(runtimes, "cpu_flags", lambda: frozenset({"fp", flag}))
    assert runtimes.cpu_has_fp16_arithmetic()
    monkeypatch.setattr(runtimes, "cpu_flags", lambda: frozenset({"fp", "fphp", "avx512_bf16"}))
    assert not runtimes.cpu_has_fp16_arithmetic()


def test_runtime_options_carry_the_accelerators_and_the_variants_own_needs() -> None:
    spec = {"input": {"shape": [1, 8, 8, 3]}, "arena_bytes": 4096, "execution_precision": "bf16"}
    accelerators = {"openvino_device": "GPU", "onnxruntime_providers": ["X"],
                    "arena_bytes": 1, "execution_precision": "f16"}
    assert runtimes.runtime_options(spec, accelerators) == {
        "openvino_device": "GPU", "onnxruntime_providers": ["X"], "arena_bytes": 4096,
        "execution_precision": "bf16", "input_shape": [1, 8, 8, 3]}
    assert runtimes.runtime_options({"input": {}}, {}) == {
        "arena_bytes": None, "execution_precision": None, "input_shape": None}


def test_available_lists_the_first_module_found_and_needs_the_native_library(monkeypatch) -> None:
    import importlib.util

    installed = {"tflite_runtime", "tensorflow", "onnxruntime"}
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name: object() if name in installed else None)
    loadable: list[str] = []
    monkeypatch.setattr(runtimes, "_loadable", lambda library: library in loadable)
    assert runtimes.available() == {"tflite": "tflite_runtime", "onnxruntime": "onnxruntime"}
    loadable.append("libedgetpu.so.1")
    assert runtimes.available() == {"tflite": "tflite_runtime", "onnxruntime": "onnxruntime",
                                     "edgetpu": "tflite_runtime"}
    installed.add("ai_edge_litert")
    assert runtimes.available() == {"tflite": "ai_edge_litert", "onnxruntime": "onnxruntime",
                                     "edgetpu": "ai_edge_litert"}
    installed.clear()
    assert runtimes.available() == {}


def test_loadable_is_what_dlopen_finds() -> None:
    assert not runtimes._loadable("libedgeflow-absent.so.0")
    assert runtimes._loadable("libc.so.6")


class _Property:
    def __init__(self, value: str) -> None:
        self.value = value

    def to_string(self) -> str:
        return self.value


class _Compiled:
    def __init__(self, properties: dict[str, Any]) -> None:
        self.properties = properties

    def get_property(self, name: str) -> Any:
        return self.properties[name]


def test_openvino_reports_what_the_compiled_model_says_or_nothing() -> None:
    compiled = _Compiled({"INFERENCE_NUM_THREADS": "6",
                          "INFERENCE_PRECISION_HINT": _Property("bf16")})
    assert runtimes._openvino_threads(compiled) == 6
    assert runtimes._openvino_precision(compiled) == "bf16"
    assert runtimes._openvino_threads(_Compiled({})) is None
    assert runtimes._openvino_precision(_Compiled({})) == "unverified"


def test_openvino_capabilities_are_the_devices_or_none() -> None:
    class Core:
        def get_property(self, device: str, name: str) -> Any:
            if device != "CPU" or name != "OPTIMIZATION_CAPABILITIES":
                raise RuntimeError("no such property")
            return ("FP32", "BF16")

    assert runtimes._openvino_capabilities(Core(), "CPU") == ["FP32", "BF16"]
    assert runtimes._openvino_capabilities(Core(), "AUTO") is None


def test_package_version_asks_the_distribution_then_the_module(monkeypatch) -> None:
    import importlib.metadata
    import types

    asked: list[str] = []

    def version(name: str) -> str:
        asked.append(name)
        if name == "absent":
            raise importlib.metadata.PackageNotFoundError(name)
        return f"{name}-1.2"

    monkeypatch.setattr(importlib.metadata, "version", version)
    module = types.SimpleNamespace(__version__="0.5")
    assert runtimes._package_version("ai-edge-litert", module) == "ai-edge-litert-1.2"
    assert runtimes._package_version("tensorflow-lite", module) == "tensorflow-cpu-1.2"
    assert runtimes._package_version("absent", module) == "0.5"
    assert runtimes._package_version("absent", object()) == "unknown"
    assert asked == ["ai-edge-litert", "tensorflow-cpu", "absent", "absent"]


def test_onnx_runtime_refuses_providers_it_lacks_naming_them(monkeypatch, plain_model) -> None:
    import onnxruntime as ort

    available = ort.get_available_providers()
    with pytest.raises(RuntimeError) as refused:
        runtimes.load_runner("onnxruntime", plain_model, 1, {
            "onnxruntime_providers": ["NoSuchExecutionProvider", "CPUExecutionProvider",
                                      "OtherExecutionProvider"]})
    assert str(refused.value) == (
        "execution provider(s) NoSuchExecutionProvider, OtherExecutionProvider not available "
        f"in this onnxruntime (available: {', '.join(available)})")
