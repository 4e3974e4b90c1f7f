"""The runtimes a board may have, behind one interface: each loads an artifact and gives
a :class:`Runner` whose ``infer`` takes one runtime-ready input (batch 1) and returns the
raw output. A runtime is one loader in :data:`RUNTIMES` (and the modules that provide it
in :data:`RUNTIME_MODULES`): adding one is one function and one entry.

Execution precision: the precision the runtime's float (non-quantised) arithmetic runs
in. Each runtime is asked for the spec's precision explicitly, never a hardware default
(OpenVINO computes in bf16 by default on CPUs with AVX512-BF16 or AMX, and in f16 on ARM
CPUs with fp16), and the runner records what the runtime reports it used. A precision
the hardware cannot run natively raises :class:`PrecisionUnavailable`.

Threads: what the runtime reports it was configured with is ``Runner.threads`` (ONNX
Runtime's session options, OpenVINO's compiled model, which runs at most one thread per
core), None where the runtime cannot say (LiteRT).

Standard library only at import (a probe must stay fast and work without NumPy); each
runtime is imported when its loader runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    import numpy as np

    from .spec import VariantSpec

Infer = Callable[["np.ndarray"], "np.ndarray"]



# The precision a variant's float arithmetic runs in, when its spec does not say.
DEFAULT_EXECUTION_PRECISION = "f32"
# What a runtime reports when it cannot say what a delegate or provider computes in.
UNVERIFIED = "unverified"


class PrecisionUnavailable(RuntimeError):
    """The device cannot run the requested execution precision natively: the variant is
    skipped there, never measured in another precision under its name."""


class Runner:
    """A loaded artifact: ``infer`` takes one runtime-ready input and returns logits."""

    def __init__(self, infer: Infer, runtime: str, version: str, accelerator: str = "CPU",
                 execution_precision: str = UNVERIFIED, threads: int | None = None) -> None:
        self.infer = infer
        self.runtime = runtime
        self.version = version
        self.accelerator = accelerator  # what actually runs it, as the runtime reports
        # What the float arithmetic runs in, as the runtime reports it (or as pinned).
        self.execution_precision = execution_precision
        self.threads = threads  # the threads the runtime reports; None where it cannot say


def requested_precision(options: dict[str, Any]) -> str:
    return str(options.get("execution_precision") or DEFAULT_EXECUTION_PRECISION)


def _require_f32(runtime: str, options: dict[str, Any]) -> None:
    """Runtimes whose CPU kernels compute float ops in f32 only (LiteRT/XNNPACK, ONNX
    Runtime's CPU provider, TFLite Micro): any other request cannot be honoured."""
    requested = requested_precision(options)
    if requested != "f32":
        raise PrecisionUnavailable(f"{runtime} runs float operations in f32 on this device; "
                                   f"{requested} execution is not available")


def _load_tflite(artifact: str, threads: int, options: dict[str, Any]) -> Runner:
    # LiteRT is the current name of the TFLite runtime; older boards carry
    # tflite_runtime, and a full TensorFlow install carries tf.lite.
    try:
        from ai_edge_litert import interpreter as module
        name = "ai-edge-litert"
    except ImportError:
        try:
            from tflite_runtime import interpreter as module  # type: ignore[no-redef]
            name = "tflite-runtime"
        except ImportError:
            import tensorflow as tf  # type: ignore[import-not-found]
            module, name = tf.lite, "tensorflow-lite"
    _require_f32("LiteRT", options)
    delegate_path = options.get("tflite_delegate")
    delegates = []
    if delegate_path:
        load_delegate = getattr(module, "load_delegate", None) or module.experimental.load_delegate
        delegates.append(load_delegate(delegate_path))
    interpreter = module.Interpreter(model_path=artifact, num_threads=threads,
                                     experimental_delegates=delegates or None)
    input_detail = interpreter.get_input_details()[0]
    shape = [1, *list(input_detail["shape"][1:])]
    if list(input_detail["shape"]) != shape:
        interpreter.resize_tensor_input(input_detail["index"], shape)
    # A delegate (GPU, NPU) picks its own arithmetic (GPU delegates default to f16) and
    # does not report it: unverified. Without one, XNNPACK computes float ops in f32
    # unless the model carries "reduced_precision_support" metadata (TFLiteConverter
    # writes it on fp16 models) and the CPU has fp16 arithmetic: then it computes in
    # f16. edgeflow's converter removes that metadata; a model that still has it is
    # reported as it runs here, and fails its f32 declaration where that is f16.
    precision = (f"{UNVERIFIED} (delegate {delegate_path})" if delegate_path
                 else "f16" if _allows_reduced_precision(artifact) and cpu_has_fp16_arithmetic()
                 else "f32")
    return Runner(_interpreter_infer(interpreter), name, _package_version(name, module),
                  f"delegate {delegate_path}" if delegate_path else "CPU", precision)


REDUCED_PRECISION_METADATA = b"reduced_precision_support"
# /proc/cpuinfo flags of native fp16 arithmetic: ARMv8.2 (asimdhp), x86 AVX512-FP16.
FP16_ARITHMETIC_FLAGS = frozenset({"asimdhp", "avx512_fp16"})


def _allows_reduced_precision(artifact: str, block: int = 1 << 16) -> bool:
    """Whether a .tflite flatbuffer names the metadata that lets XNNPACK compute in f16
    (metadata names are stored as plain strings in the flatbuffer). Read in blocks: the
    whole model in memory would count in the harness's peak RSS."""
    overlap = len(REDUCED_PRECISION_METADATA) - 1
    tail = b""
    with open(artifact, "rb") as handle:
        for chunk in iter(lambda: handle.read(block), b""):
            if REDUCED_PRECISION_METADATA in tail + chunk:
                return True
            tail = chunk[-overlap:]
    return False


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU's feature flags (x86 "flags", ARM "Features"); empty when unreadable."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip().lower() in {"flags", "features"}:
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


def cpu_has_fp16_arithmetic() -> bool:
    return bool(cpu_flags() & FP16_ARITHMETIC_FLAGS)


def _interpreter_infer(interpreter: Any) -> Infer:
    """Batch-1 inference through a (LiteRT / tflite_runtime) Interpreter."""
    interpreter.allocate_tensors()
    input_index = interpreter.get_input_details()[0]["index"]
    output_index = interpreter.get_output_details()[0]["index"]

    def infer(x: np.ndarray) -> np.ndarray:
        interpreter.set_tensor(input_index, x)
        interpreter.invoke()
        return interpreter.get_tensor(output_index)

    return infer


def _load_tflm(artifact: str, threads: int, options: dict[str, Any]) -> Runner:
    # The real TensorFlow Lite Micro interpreter, built for the host: what an MCU runs,
    # op for op, so its accuracy is the MCU's accuracy (its latency is the host's).
    from tflite_micro.python.tflite_micro import runtime as tflm

    _require_f32("TensorFlow Lite Micro", options)
    with open(artifact, "rb") as handle:
        model = handle.read()
    arena = options.get("arena_bytes")
    interpreter = tflm.Interpreter.from_bytes(model, arena_size=int(arena) if arena else None)

    def infer(x: np.ndarray) -> np.ndarray:
        interpreter.set_input(x, 0)
        interpreter.invoke()
        return interpreter.get_output(0)

    # Reference kernels: integer ops in integers, float ops in f32 on every target.
    return Runner(infer, "tflite-micro", _package_version("tflite-micro", tflm),
                  execution_precision="f32")


def _load_edgetpu(artifact: str, threads: int, options: dict[str, Any]) -> Runner:
    # An Edge-TPU-compiled model runs in the TFLite interpreter with Coral's delegate.
    try:
        from ai_edge_litert import interpreter as module
    except ImportError:
        from tflite_runtime import interpreter as module  # type: ignore[no-redef]
    _require_f32("Edge TPU", options)
    delegate = module.load_delegate(EDGETPU_LIBRARY)
    interpreter = module.Interpreter(model_path=artifact, experimental_delegates=[delegate])
    # The TPU runs the int8 graph; what it cannot map stays on the CPU in f32.
    return Runner(_interpreter_infer(interpreter), "edgetpu",
                  _package_version("ai-edge-litert", module), "Edge TPU", "f32")


def _load_onnxruntime(artifact: str, threads: int, options: dict[str, Any]) -> Runner:
    import onnxruntime as ort

    _require_f32("ONNX Runtime", options)
    session_options = ort.SessionOptions()
    # Pinned, not left to the build: ARM64 builds can run fp32 GEMMs in bf16 ("fastmath")
    # when this is on. Off is the default today; a variant's name must not hang on that.
    session_options.add_session_config_entry(ORT_ARM64_BF16_FASTMATH, "0")
    session_options.intra_op_num_threads = threads
    session_options.inter_op_num_threads = 1
    session_options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    providers = options.get("onnxruntime_providers") or ["CPUExecutionProvider"]
    missing = [name for name in providers if name not in ort.get_available_providers()]
    if missing:
        raise RuntimeError(f"execution provider(s) {', '.join(missing)} not available in this "
                           f"onnxruntime (available: {', '.join(ort.get_available_providers())})")
    session = ort.InferenceSession(artifact, session_options, providers=providers)
    input_name = session.get_inputs()[0].name
    output_name = session.get_outputs()[0].name

    def infer(x: np.ndarray) -> np.ndarray:
        return session.run([output_name], {input_name: x})[0]

    used = session.get_providers()
    # The CPU provider computes float ops in f32 (fastmath pinned off above); other
    # providers (CUDA, TensorRT, OpenVINO, QNN) choose for themselves and do not say.
    precision = ("f32" if used == ["CPUExecutionProvider"]
                 else f"{UNVERIFIED} (providers {','.join(used)})")
    return Runner(infer, "onnxruntime", ort.__version__, ",".join(used), precision,
                  session.get_session_options().intra_op_num_threads)


ORT_ARM64_BF16_FASTMATH = "mlas.enable_gemm_fastmath_arm64_bfloat16"


def _load_openvino(artifact: str, threads: int, options: dict[str, Any]) -> Runner:
    import openvino as ov

    core = ov.Core()
    device = options.get("openvino_device") or "CPU"
    config = openvino_config(device, requested_precision(options), threads,
                             _openvino_capabilities(core, device))
    model = core.read_model(artifact)
    shape = options.get("input_shape")
    if shape and model.inputs[0].get_partial_shape().is_dynamic:
        # An IR exported with a dynamic batch ([?,96,96,3], as Keras and PyTorch give)
        # would infer on an empty batch: fix it to the spec's shape (batch 1).
        model.reshape([int(size) for size in shape])
    compiled = core.compile_model(model, device, config)
    request = compiled.create_infer_request()
    input_tensor = request.get_input_tensor(0)

    def infer(x: np.ndarray) -> np.ndarray:
        # Copy into the request's own input tensor and read the output tensor in place:
        # infer({0: x}) builds dicts and copies per call, which costs as much as a
        # small model's inference (measured against benchmark_app).
        input_tensor.data[...] = x
        request.infer()
        return request.get_output_tensor(0).data

    return Runner(infer, "openvino", ov.__version__,
                  ",".join(compiled.get_property("EXECUTION_DEVICES")),
                  _openvino_precision(compiled), _openvino_threads(compiled))


# The OPTIMIZATION_CAPABILITIES entry a device lists when it runs a precision natively.
OPENVINO_CAPABILITIES = {"f32": "FP32", "f16": "FP16", "bf16": "BF16"}


def _openvino_capabilities(core: Any, device: str) -> list[str] | None:
    """What ``device`` lists as native, or None where it lists nothing (AUTO, MULTI,
    HETERO choose devices at compile time: the compiled model's hint then tells)."""
    try:
        return list(core.get_property(device, "OPTIMIZATION_CAPABILITIES"))
    except Exception:  # noqa: BLE001 - a virtual device without the property
        return None


def openvino_config(device: str, precision: str, threads: int,
                    capabilities: list[str] | None) -> dict[str, Any]:
    """The compile config that runs ``precision`` on ``device``, stated explicitly.

    OpenVINO's CPU plugin otherwise picks the precision from the hardware: bf16 on CPUs
    with AVX512-BF16 or AMX, f16 on ARM CPUs with fp16 arithmetic; and a hint the CPU
    cannot honour is silently replaced (f16 asked of an AVX512-BF16 CPU compiles to
    bf16). So a precision the device does not list as native is refused here, and the
    compiled model's own ``INFERENCE_PRECISION_HINT`` is what the result records.
    """
    if precision not in OPENVINO_CAPABILITIES:
        raise ValueError(f"unknown execution precision {precision!r} "
                         f"(known: {', '.join(OPENVINO_CAPABILITIES)})")
    if capabilities is not None and OPENVINO_CAPABILITIES[precision] not in capabilities:
        raise PrecisionUnavailable(f"{device} lacks native {precision} (OpenVINO lists "
                                   f"{', '.join(capabilities) or 'nothing'})")
    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": precision}
    if device == "CPU":
        config["INFERENCE_NUM_THREADS"] = threads
    return config


def _openvino_threads(compiled: Any) -> int | None:
    """The compiled model's thread count (CPU: at most one per core), or None where the
    device does not report one (GPU, NPU)."""
    try:
        return int(compiled.get_property("INFERENCE_NUM_THREADS"))
    except Exception:  # noqa: BLE001 - a plugin without the property
        return None


def _openvino_precision(compiled: Any) -> str:
    """The compiled model's inference precision ("f32", "bf16", "f16")."""
    try:
        return compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
    except Exception:  # noqa: BLE001 - a plugin that does not report it
        return UNVERIFIED


# The modules that provide each runtime, in the order the loader tries them.
RUNTIME_MODULES: dict[str, tuple[str, ...]] = {
    "tflite": ("ai_edge_litert", "tflite_runtime", "tensorflow"),
    "onnxruntime": ("onnxruntime",),
    "openvino": ("openvino",),
    "tflm": ("tflite_micro",),
    "edgetpu": ("ai_edge_litert", "tflite_runtime"),
}
# Runtimes that also need a native library (Coral's Edge TPU delegate).
EDGETPU_LIBRARY = "libedgetpu.so.1"
RUNTIME_LIBRARIES: dict[str, str] = {"edgetpu": EDGETPU_LIBRARY}

RUNTIMES: dict[str, Callable[[str, int, dict[str, Any]], Runner]] = {
    "tflite": _load_tflite,
    "onnxruntime": _load_onnxruntime,
    "openvino": _load_openvino,
    "tflm": _load_tflm,
    "edgetpu": _load_edgetpu,
}


def _package_version(name: str, module: Any) -> str:
    try:
        from importlib.metadata import version
        return version(name if name != "tensorflow-lite" else "tensorflow-cpu")
    except Exception:  # noqa: BLE001 - a version is informative, never required
        return str(getattr(module, "__version__", "unknown"))


def load_runner(runtime: str, artifact: str, threads: int = 1,
                options: dict[str, Any] | None = None) -> Runner:
    """Load ``artifact`` in ``runtime``; raises ValueError for an unknown runtime."""
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r} (known: {', '.join(sorted(RUNTIMES))})")
    return RUNTIMES[runtime](artifact, threads, options or {})


def runtime_options(spec: VariantSpec, accelerators: dict[str, Any]) -> dict[str, Any]:
    """What :func:`load_runner` is given for a variant (its ``spec``) on a device: the
    device's accelerator hints, the variant's arena size and execution precision."""
    return {**accelerators, "arena_bytes": spec.get("arena_bytes"),
            "execution_precision": spec.get("execution_precision"),
            "input_shape": (spec.get("input") or {}).get("shape")}



def _loadable(library: str) -> bool:
    """Whether the dynamic loader finds ``library`` (dlopen: what the runtime will do;
    ctypes.util.find_library would start ldconfig and a compiler to answer)."""
    import ctypes

    try:
        ctypes.CDLL(library)
        return True
    except OSError:
        return False


def available() -> dict[str, str]:
    """Runtime -> the module that provides it here, for the runtimes importable on this
    board (found, not imported: cheap), with the native library they need loadable."""
    from importlib.util import find_spec

    found = {runtime: next((module for module in modules if find_spec(module)), None)
             for runtime, modules in RUNTIME_MODULES.items()}
    for runtime, library in RUNTIME_LIBRARIES.items():
        if found.get(runtime) and not _loadable(library):
            found[runtime] = None
    return {name: module for name, module in found.items() if module}
