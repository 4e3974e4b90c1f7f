"""Device-side benchmark harness: one file, stdlib + numpy + the one runtime it measures.

It never imports the rest of edgeflow: it is copied to a device and run there as
``python harness.py --artifact A --runtime R --data D --spec S --out O [options]``.

Protocol (identical for every runtime, so results are comparable):
  1. load the artifact (``load_ms``), run one inference (``first_inference_ms``);
  2. warm up: at least ``--warmup-runs`` inferences *and* ``--warmup-seconds``;
  3. time at least ``--runs`` inferences *and* ``--seconds``, batch 1, one image
     after another from the test split, each timed with ``perf_counter_ns``, then on
     until the distribution-free 95% intervals of p50 and p90 are each at most
     ``--interval-width`` of their percentile (or ``--max-seconds``): the result holds
     the intervals, how the run was sized, and every latency (compressed);
     the device's conditions (clock, governor, temperature, throttling, other load)
     before and after, and what changed, are recorded beside them;
  4. score the model over the test split (``--accuracy-samples``, 0 = all) as its kind
     of task says (``kinds/`` beside this file: classification's top-1 accuracy);
  5. with ``--frames``, the same again end to end, as the application sees it: each
     encoded camera frame decoded, pre-processed by ``preprocess.py`` (pushed beside
     this file: the release's own), quantised, inferred, post-processed, with the
     median of each stage and the accuracy on the frames (``end_to_end``).

Inputs: ``--data`` is an ``.npz`` with ``x`` (float32, NHWC, normalised) and ``y``
(int labels); ``--spec`` is the variant's JSON spec: ``{"input": {"dtype", "shape",
"quantization": {"scale", "zero_point"} | null}, "output": {...},
"execution_precision": "f32" | "bf16" | "f16"}``. Quantised inputs are fed as the
runtime expects them and quantised outputs are de-quantised.

Execution precision: the precision the runtime's float (non-quantised) arithmetic runs
in. The harness asks each runtime for the spec's precision explicitly, never a hardware
default (OpenVINO computes in bf16 by default on CPUs with AVX512-BF16 or AMX, and in
f16 on ARM CPUs with fp16), and records what the runtime reports it used as
``runtime.execution_precision``. A precision the hardware cannot run natively is
refused up front: the result is ``skipped`` with the reason, never measured in
another precision under the variant's name.

Threads: ``--threads`` (the device's ``threads`` in farm.yaml) is given to the runtime
and recorded as ``threads``; what the runtime reports it was configured with is
``runtime.threads`` (ONNX Runtime's session options, OpenVINO's compiled model, which
runs at most one thread per core), null where the runtime cannot say (LiteRT).

Output: one JSON object at ``--out`` with ``status`` ``ok``, ``skipped`` or ``failed``
and ``error``. A failure (runtime missing, corrupt artifact...) still writes the file
and exits with status 1, so the orchestrator records the reason instead of crashing.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import resource
import sys
import time
import traceback
from typing import Any, Callable



class _NumpyOnFirstUse:
    """``np``, imported when first used: ``--probe`` never needs numpy, so it stays fast
    (a third of a second less per device) and still answers on a board without it."""

    def __getattr__(self, name: str) -> Any:
        import numpy

        globals()["np"] = numpy
        return getattr(numpy, name)


np: Any = _NumpyOnFirstUse()

PROTOCOL_VERSION = 1

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


def _requested_precision(options: dict[str, Any]) -> str:
    return str(options.get("execution_precision") or DEFAULT_EXECUTION_PRECISION)


def _require_f32(runtime: str, options: dict[str, Any]) -> None:
    """Runtimes whose CPU kernels compute float ops in f32 only (LiteRT/XNNPACK, ONNX
    Runtime's CPU provider, TFLite Micro): any other request cannot be honoured."""
    requested = _requested_precision(options)
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
    config = openvino_config(device, _requested_precision(options), threads,
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


def runtime_options(spec: dict[str, Any], accelerators: dict[str, Any]) -> dict[str, Any]:
    """What :func:`load_runner` is given for a variant (its ``spec``) on a device: the
    device's accelerator hints, the variant's arena size and execution precision."""
    return {**accelerators, "arena_bytes": spec.get("arena_bytes"),
            "execution_precision": spec.get("execution_precision"),
            "input_shape": (spec.get("input") or {}).get("shape")}


def arrange_batch(images: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
    """Images (N, H, W, C) in [0, 1], as the model reads them: normalised by the input
    spec's ``normalize`` (per-channel ``mean`` and ``std``, the model's own training
    normalisation; none for edgeflow's models) and in its ``layout`` (NCHW: channels
    first, as PyTorch exports take them)."""
    images = np.asarray(images, dtype=np.float32)
    normalize = spec.get("normalize")
    if normalize:
        images = ((images - np.asarray(normalize["mean"], np.float32))
                  / np.asarray(normalize["std"], np.float32))
    if spec.get("layout") == "NCHW":
        images = np.transpose(images, (0, 3, 1, 2))
    return np.ascontiguousarray(images, dtype=np.float32)


def quantize_input(x: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
    """Turn one float image (H, W, C) in [0, 1] into the runtime's batch-1 input:
    arranged (:func:`arrange_batch`), then quantised where the model takes integers."""
    batch = arrange_batch(x[np.newaxis, ...], spec)
    quantization = spec.get("quantization")
    dtype = np.dtype(spec.get("dtype", "float32"))
    if quantization:
        scale, zero_point = float(quantization["scale"]), int(quantization["zero_point"])
        info = np.iinfo(dtype)
        batch = np.clip(np.round(batch / scale) + zero_point, info.min, info.max)
    return np.ascontiguousarray(batch.astype(dtype))


def dequantize_output(y: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
    """Turn a runtime output into float logits."""
    quantization = spec.get("quantization")
    y = np.asarray(y)
    if quantization:
        return (y.astype(np.float32) - int(quantization["zero_point"])) * float(quantization["scale"])
    return y.astype(np.float32)


def predict(runner: Runner, images: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
    """Each image's float output, flattened, one batch-1 inference at a time: shape (N,
    outputs) (classification: the logits, (N, classes))."""
    rows = [dequantize_output(runner.infer(quantize_input(image, spec["input"])),
                              spec.get("output", {})).reshape(-1) for image in images]
    return np.stack(rows)


def check_shapes(x: np.ndarray, y: Any, spec: dict[str, Any]) -> None:
    """What is timed must be one image in, one sample's answer out: the input as the
    spec says, the output as the spec's kind of task reads it (classification: one row
    of class scores)."""
    expected = [int(size) for size in (spec.get("input") or {}).get("shape") or x.shape]
    if list(x.shape) != expected:
        raise ValueError(f"input of shape {tuple(x.shape)} fed, the spec says {tuple(expected)}")
    task_kinds().of_spec(spec).check_output(x, y, spec)


def _peak_rss_mb() -> float:
    """Peak resident memory of this process, in MB.

    Linux's ``ru_maxrss`` survives ``exec``: a harness started from a large parent (the
    orchestrator with TensorFlow loaded) would report the parent's peak. ``VmHWM`` is
    the high-water mark of this process's own address space.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports kilobytes, macOS bytes.
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def host_facts() -> dict[str, Any]:
    return {
        "arch": platform.machine(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "numpy": _distribution_version("numpy"),
    }


def _first_number(path: str, prefix: str = "") -> float | None:
    try:
        with open(path, encoding="ascii") as handle:
            for line in handle:
                if line.startswith(prefix):
                    return float(line[len(prefix):].split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return None


# The pip distributions that may provide each runtime module (looked up by name: scanning
# every installed distribution costs most of a second on a big environment).
MODULE_DISTRIBUTIONS: dict[str, tuple[str, ...]] = {
    "ai_edge_litert": ("ai-edge-litert", "ai-edge-litert-nightly"),
    "tflite_runtime": ("tflite-runtime",),
    "tensorflow": ("tensorflow-cpu", "tensorflow", "tensorflow-aarch64"),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino",
                    "onnxruntime-qnn"),
    "openvino": ("openvino",),
    "tflite_micro": ("tflite-micro",),
}


@functools.lru_cache(maxsize=1)
def _installed_distributions() -> dict[str, str]:
    """Installed distribution -> version, from the ``<name>-<version>.dist-info`` folder
    names on sys.path (listed once): importlib.metadata costs a tenth of a second to
    import, which a small board pays on every probe."""
    found: dict[str, str] = {}
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for name in names:
            if name.endswith(".dist-info"):
                distribution, _, version = name[:-len(".dist-info")].partition("-")
                found.setdefault(distribution.lower(), version)
    return found


def _distribution_version(*distributions: str) -> str:
    """The installed version of the first of ``distributions`` found."""
    found = _installed_distributions()
    wanted = [name.replace("-", "_").lower() for name in distributions]
    return next((found[name] for name in wanted if name in found), "missing")


def _module_version(module: str) -> str:
    return _distribution_version(*MODULE_DISTRIBUTIONS.get(module, ()))


# Raspberry Pi firmware's throttling flags (vcgencmd get_throttled): bit -> meaning.
PI_THROTTLE_BITS = {0: "under-voltage", 1: "frequency capped", 2: "throttled",
                    3: "soft temperature limit"}
PI_THROTTLE_FILE = "/sys/devices/platform/soc/soc:firmware/get_throttled"
CPUFREQ = "/sys/devices/system/cpu/cpu0/cpufreq"


def _throttling() -> dict[str, Any]:
    """What the board says about its clock and throttling, where it says anything:
    CPU frequency now and at most (cpufreq), Intel/AMD thermal throttle events, and the
    Raspberry Pi firmware's flags (now, and since boot)."""
    facts: dict[str, Any] = {}
    current, highest = _first_number(f"{CPUFREQ}/scaling_cur_freq"), _first_number(
        f"{CPUFREQ}/cpuinfo_max_freq")
    if current and highest:
        facts.update(cpu_mhz=round(current / 1000), cpu_max_mhz=round(highest / 1000))
    events = _first_number("/sys/devices/system/cpu/cpu0/thermal_throttle/core_throttle_count")
    if events is not None:
        facts["thermal_throttle_events"] = int(events)
    try:
        with open(PI_THROTTLE_FILE, encoding="ascii") as handle:
            flags = int(handle.read().strip(), 16)
    except (OSError, ValueError):
        return facts
    now = [name for bit, name in PI_THROTTLE_BITS.items() if flags & (1 << bit)]
    before = [name for bit, name in PI_THROTTLE_BITS.items() if flags & (1 << (bit + 16))]
    facts["throttled"] = ", ".join(now) or "no"
    facts["throttled_since_boot"] = ", ".join(before) or "no"
    return facts


def _loadable(library: str) -> bool:
    """Whether the dynamic loader finds ``library`` (dlopen: what the runtime will do;
    ctypes.util.find_library would start ldconfig and a compiler to answer)."""
    import ctypes

    try:
        ctypes.CDLL(library)
        return True
    except OSError:
        return False


def probe() -> dict[str, Any]:
    """Host facts, memory, temperature where the board exposes it, and the runtimes
    importable here with their versions (found, not imported: cheap)."""
    from importlib.util import find_spec

    available = {runtime: next((module for module in modules if find_spec(module)), None)
                 for runtime, modules in RUNTIME_MODULES.items()}
    for runtime, library in RUNTIME_LIBRARIES.items():
        if available.get(runtime) and not _loadable(library):
            available[runtime] = None
    runtimes = {name: module for name, module in available.items() if module}
    memory_kb = _first_number("/proc/meminfo", "MemTotal:")
    available_kb = _first_number("/proc/meminfo", "MemAvailable:")
    millidegrees = _first_number("/sys/class/thermal/thermal_zone0/temp")
    return {"protocol": PROTOCOL_VERSION,
            "host": {**host_facts(),
                     "memory_mb": round(memory_kb / 1024) if memory_kb else None,
                     "memory_available_mb": round(available_kb / 1024) if available_kb else None,
                     "temperature_c": millidegrees / 1000 if millidegrees else None,
                     **_throttling()},
            "runtimes": runtimes,
            "runtime_versions": {name: _module_version(module)
                                 for name, module in runtimes.items()}}


def _timed_steps(step: Callable[[int], Any], done: Callable[[list[int], int], bool]) -> list[int]:
    """``step(0)``, ``step(1)``... one after another, each timed with ``perf_counter_ns``,
    until ``done(latencies_ns, total_ns)``; latencies in ns."""
    latencies: list[int] = []
    total_ns = 0
    index = 0
    while not done(latencies, total_ns):
        start = time.perf_counter_ns()
        step(index)
        elapsed = time.perf_counter_ns() - start
        latencies.append(elapsed)
        total_ns += elapsed
        index += 1
    return latencies


def _timed_runs(runner: Runner, inputs: list[np.ndarray],
                done: Callable[[list[int], int], bool]) -> list[int]:
    """Inferences one after another (the inputs round and round), each timed, until
    ``done(latencies_ns, total_ns)``; latencies in ns."""
    return _timed_steps(lambda index: runner.infer(inputs[index % len(inputs)]), done)


def _timed_loop(runner: Runner, inputs: list[np.ndarray], min_runs: int,
                min_seconds: float) -> list[float]:
    """Run until both ``min_runs`` and ``min_seconds`` are reached; latencies in ms."""
    latencies = _timed_runs(runner, inputs, lambda runs, total_ns: len(runs) >= min_runs
                            and total_ns >= min_seconds * 1e9)
    return [elapsed / 1e6 for elapsed in latencies]


# ---------------------------------------------------------------- statistical sizing

CONFIDENCE = 0.95
# The percentiles whose intervals size a run, by name in ``latency_ms``.
SIZED_PERCENTILES = {"p50": 0.5, "p90": 0.9}
# The most runs timed and sent back raw (int64 ns, compressed: well under the 1 MiB a
# result may be): a run stops there whatever its intervals.
MAX_RUNS = 100_000
# Intervals are looked at when the runs have grown by this factor since the last look:
# a look sorts every latency, so looking after every run would cost more than the runs.
LOOK_GROWTH = 1.25


def quantile_interval(ordered: np.ndarray, q: float,
                      confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """The distribution-free ``confidence`` interval of the ``q``-quantile from the sorted
    samples ``ordered``: order statistics X(j) <= X(k) (1-based) with equal tails, where
    P(j <= B <= k-1) >= ``confidence`` for B ~ Binomial(n, q), the number of samples
    below the quantile. None when n is too small for it (fewer than 36 runs for p90 at
    95%)."""
    n = int(ordered.size)
    if n == 0:
        return None
    # log P(B = c) for c = 0..n, by the ratio of consecutive terms (no factorials).
    counts = np.arange(n)
    first = n * np.log1p(-q)
    ratios = np.log((n - counts) / (counts + 1)) + np.log(q) - np.log1p(-q)
    cdf = np.cumsum(np.exp(np.concatenate(([first], first + np.cumsum(ratios)))))
    tail = (1 - confidence) / 2
    j = int(np.searchsorted(cdf, tail, side="right"))  # the largest j: P(B <= j-1) <= tail
    k_minus_1 = int(np.searchsorted(cdf, 1 - tail, side="left"))  # smallest: >= 1 - tail
    if j < 1 or k_minus_1 > n - 1:
        return None
    return float(ordered[j - 1]), float(ordered[k_minus_1])


def percentile_intervals(latencies_ms: np.ndarray) -> dict[str, list[float] | None]:
    """``{"p50": [low, high], "p90": [...]}`` in ms (None where too few runs)."""
    ordered = np.sort(np.asarray(latencies_ms, dtype=float))
    intervals = {name: quantile_interval(ordered, q) for name, q in SIZED_PERCENTILES.items()}
    return {name: list(bounds) if bounds else None for name, bounds in intervals.items()}


def relative_widths(latencies_ms: np.ndarray) -> dict[str, float | None]:
    """Each sized percentile's interval width over the percentile (None: no interval)."""
    latencies = np.asarray(latencies_ms, dtype=float)
    widths: dict[str, float | None] = {}
    for name, bounds in percentile_intervals(latencies).items():
        point = float(np.percentile(latencies, SIZED_PERCENTILES[name] * 100))
        widths[name] = None if bounds is None else (
            (bounds[1] - bounds[0]) / point if point > 0 else 0.0)
    return widths


def sized_runs(runner: Runner, inputs: list[np.ndarray], min_runs: int, min_seconds: float,
               max_seconds: float, relative_width: float) -> tuple[list[int], dict[str, Any]]:
    """:func:`sized_steps` of inferences, the inputs round and round."""
    return sized_steps(lambda index: runner.infer(inputs[index % len(inputs)]), min_runs,
                       min_seconds, max_seconds, relative_width)


def sized_steps(step: Callable[[int], Any], min_runs: int, min_seconds: float,
                max_seconds: float, relative_width: float) -> tuple[list[int], dict[str, Any]]:
    """Time ``step`` at least ``min_runs`` and ``min_seconds``, then on until the 95% intervals of
    p50 and p90 are each at most ``relative_width`` of their percentile (full width),
    ``max_seconds`` of inference have passed, or :data:`MAX_RUNS` (which also caps the
    minimums: a result must stay within the protocol's size). Latencies in ns, and how the run was
    sized: the target, the widths reached, and what stopped it."""
    look_at = [0]
    stopped = ["minimums"]

    def done(runs: list[int], total_ns: int) -> bool:
        if len(runs) >= MAX_RUNS:  # before the minimums: a result must fit the protocol
            stopped[0] = "run cap"
            return True
        if len(runs) < min_runs or total_ns < min_seconds * 1e9:
            return False
        if len(runs) >= look_at[0]:
            look_at[0] = int(len(runs) * LOOK_GROWTH) + 1
            widths = relative_widths(np.asarray(runs) / 1e6)
            if all(width is not None and width <= relative_width for width in widths.values()):
                stopped[0] = "interval width"
                return True
        if total_ns >= max_seconds * 1e9:
            stopped[0] = "time cap"
            return True
        return False

    latencies = _timed_steps(step, done)
    widths = relative_widths(np.asarray(latencies) / 1e6) if latencies else {}
    return latencies, {"relative_width": relative_width, "confidence": CONFIDENCE,
                       "max_seconds": max_seconds, "widths": widths, "stopped_by": stopped[0]}


RAW_ENCODING = "int64-le-ns+zlib+base64"


def encode_latencies(latencies_ns: list[int]) -> dict[str, Any]:
    """The raw latencies as a result carries them: int64 little-endian nanoseconds,
    zlib-compressed, base64 text (any statistic can be recomputed from them)."""
    import base64
    import zlib

    raw = np.asarray(latencies_ns, dtype="<i8").tobytes()
    return {"encoding": RAW_ENCODING, "count": len(latencies_ns),
            "data": base64.b64encode(zlib.compress(raw, 6)).decode("ascii")}


# ------------------------------------------------------------------------ conditions

PROC_STAT = "/proc/stat"
THERMAL_ZONE = "/sys/class/thermal/thermal_zone0/temp"
# What counts as a change during a run worth a warning.
CLOCK_CHANGE = 0.10  # relative
TEMPERATURE_RISE_C = 5.0
OTHER_LOAD_CPUS = 0.5


def _busy_jiffies() -> tuple[float, float] | None:
    """(busy, all) CPU time of the whole machine since boot, in seconds (/proc/stat)."""
    try:
        with open(PROC_STAT, encoding="ascii") as handle:
            fields = [float(value) for value in handle.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    if len(fields) < 5:
        return None
    hertz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / hertz, sum(fields[:8]) / hertz


def _cpu_clock_mhz() -> float | None:
    """The CPU clock now: cpufreq's where the board has it, else /proc/cpuinfo's mean."""
    current = _first_number(f"{CPUFREQ}/scaling_cur_freq")
    if current:
        return round(current / 1000, 1)
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            clocks = [float(line.split(":", 1)[1]) for line in handle
                      if line.lower().startswith("cpu mhz")]
    except (OSError, ValueError):
        return None
    return round(sum(clocks) / len(clocks), 1) if clocks else None


def _governor() -> str | None:
    try:
        with open(f"{CPUFREQ}/scaling_governor", encoding="ascii") as handle:
            return handle.read().strip() or None
    except OSError:
        return None


def conditions() -> dict[str, Any]:
    """What the device was like at one moment: CPU affinity, frequency governor and
    clock, temperature, throttling, load average; None where the board does not say."""
    millidegrees = _first_number(THERMAL_ZONE)
    throttling = _throttling()
    affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {"monotonic": time.monotonic(), "cpu_seconds": sum(os.times()[:2]),
            "machine_busy": _busy_jiffies(), "affinity": affinity, "governor": _governor(),
            "cpu_mhz": _cpu_clock_mhz(),
            "temperature_c": millidegrees / 1000 if millidegrees is not None else None,
            "thermal_throttle_events": throttling.get("thermal_throttle_events"),
            "throttled": throttling.get("throttled"),
            "load_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}


def _other_busy_cpus(before: dict[str, Any], after: dict[str, Any]) -> float | None:
    """CPUs kept busy by other processes between two snapshots, on average: the
    machine's busy time less this process's own CPU time, over the wall time."""
    wall = after["monotonic"] - before["monotonic"]
    if not before["machine_busy"] or not after["machine_busy"] or wall <= 0:
        return None
    machine = after["machine_busy"][0] - before["machine_busy"][0]
    own = after["cpu_seconds"] - before["cpu_seconds"]
    return round(max(0.0, machine - own) / wall, 2)


def condition_changes(before: dict[str, Any], after: dict[str, Any],
                      other_busy_cpus: float | None) -> list[str]:
    """What changed during the run, or disturbed it, each as one line for a warning."""
    changes = []
    if before["governor"] != after["governor"]:
        changes.append(f"frequency governor changed from {before['governor']} "
                       f"to {after['governor']}")
    if before["cpu_mhz"] and after["cpu_mhz"] and \
            abs(after["cpu_mhz"] - before["cpu_mhz"]) > CLOCK_CHANGE * before["cpu_mhz"]:
        changes.append(f"CPU clock changed from {before['cpu_mhz']:g} to "
                       f"{after['cpu_mhz']:g} MHz")
    if before["temperature_c"] is not None and after["temperature_c"] is not None and \
            after["temperature_c"] - before["temperature_c"] >= TEMPERATURE_RISE_C:
        changes.append(f"temperature rose from {before['temperature_c']:g} to "
                       f"{after['temperature_c']:g} C")
    events = before["thermal_throttle_events"], after["thermal_throttle_events"]
    if None not in events and events[1] > events[0]:
        changes.append(f"the CPU was thermally throttled {events[1] - events[0]:g} times")
    if after["throttled"] not in (None, "no"):
        changes.append(f"the board reports {after['throttled']}")
    if before["affinity"] != after["affinity"]:
        changes.append(f"CPU affinity changed from {before['affinity']} to {after['affinity']}")
    if other_busy_cpus is not None and other_busy_cpus >= OTHER_LOAD_CPUS:
        changes.append(f"other processes kept {other_busy_cpus:g} CPUs busy")
    return changes


def run_conditions(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """The conditions of a timed run as a result reports them."""
    other = _other_busy_cpus(before, after)
    shown = ("affinity", "governor", "cpu_mhz", "temperature_c", "thermal_throttle_events",
             "throttled", "load_1m")
    return {"before": {key: before[key] for key in shown},
            "after": {key: after[key] for key in shown},
            "other_busy_cpus": other, "changes": condition_changes(before, after, other)}


def latency_summary(latencies_ms: list[float]) -> dict[str, Any]:
    """The timed runs' statistics as a result reports them: the number of runs, their
    total in seconds, the latency distribution in ms (percentiles by numpy's default
    linear interpolation, population standard deviation), the 95% intervals of p50 and
    p90 (:func:`percentile_intervals`) and the throughput."""
    latencies = np.asarray(latencies_ms)
    return {
        "runs": int(latencies.size),
        "timed_seconds": float(latencies.sum() / 1e3),
        "latency_ms": {
            "p50": float(np.percentile(latencies, 50)),
            "p90": float(np.percentile(latencies, 90)),
            "p99": float(np.percentile(latencies, 99)),
            "mean": float(latencies.mean()),
            "std": float(latencies.std()),
            "min": float(latencies.min()),
            "max": float(latencies.max()),
        },
        # Distribution-free 95% intervals of p50 and p90 (order statistics).
        "latency_ci95_ms": percentile_intervals(latencies),
        # Sequential batch-1 throughput: what one camera stream gets from one process.
        "throughput_fps": float(latencies.size / (latencies.sum() / 1e3)),
    }


# ---------------------------------------------------------------- end to end

# What an application does with each camera frame, timed stage by stage.
STAGES = ("decode", "preprocess", "infer", "postprocess")
FRAMES_META_KEYS = ("height", "width", "encoding", "fit")


def load_frames(path: str) -> tuple[list[bytes], np.ndarray, dict[str, Any]]:
    """Encoded frames from an ``.npz`` (``data``: every frame's bytes end to end,
    ``offsets``: where each starts, and the end; ``y``: labels; ``meta``: JSON with the
    frames' height, width, encoding and how they fit the model's size)."""
    with np.load(path, allow_pickle=False) as data:
        blob, offsets, labels = data["data"], data["offsets"], data["y"]
        meta = json.loads(str(data["meta"]))
    frames = [blob[int(offsets[i]):int(offsets[i + 1])].tobytes()
              for i in range(len(offsets) - 1)]
    if not frames or len(frames) != len(labels):
        raise ValueError(f"{os.path.basename(path)}: {len(frames)} frames for {len(labels)} labels")
    return frames, labels, {key: meta.get(key) for key in FRAMES_META_KEYS}


def _preprocess_module() -> Any:
    """``preprocess.py`` pushed beside this file: the pre-processing a release ships, so
    the frames go through exactly what an application's images go through."""
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "preprocess.py")
    spec = importlib.util.spec_from_file_location("edgeflow_harness_preprocess", path)
    if spec is None or spec.loader is None or not os.path.isfile(path):
        raise FileNotFoundError(f"preprocess.py is not beside the harness ({path})")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def task_kinds() -> Any:
    """The registry of kinds of task (``kinds/__init__.py`` pushed beside this file),
    which says how the model's outputs are checked, decoded and scored. One module per
    file in a process: the one already loaded from that file (by the orchestrator, the
    predictor, a test), else loaded here under a name of its path."""
    import hashlib
    import importlib.util

    path = os.path.realpath(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                         "kinds", "__init__.py"))
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if file and os.path.realpath(file) == path:
            return module
    if not os.path.isfile(path):
        raise FileNotFoundError(f"kinds/__init__.py is not beside the harness ({path})")
    name = "edgeflow_task_kinds_" + hashlib.sha256(path.encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class Pipeline:
    """One frame as an application handles it: decode the bytes, pre-process them (colour,
    resize, scale: ``preprocess.py``), quantise for the runtime, infer, de-quantise, and
    decode the output as the spec's kind of task says (classification: the argmax).
    Each call's stage times are kept in ``stage_ns`` while ``recording``."""

    def __init__(self, runner: Runner, spec: dict[str, Any], preprocess: Any,
                 fit: str = "squash") -> None:
        shape = [int(size) for size in spec["input"]["shape"][-3:]]
        height, width, channels = ((shape[1], shape[2], shape[0])
                                   if spec["input"].get("layout") == "NCHW" else shape)
        self.size, self.color = (height, width), ("grayscale" if channels == 1 else "rgb")
        self.runner, self.spec, self.preprocess, self.fit = runner, spec, preprocess, fit
        self.kind = task_kinds().of_spec(spec)
        self.recording = False
        self.stage_ns: dict[str, list[int]] = {stage: [] for stage in STAGES}

    def __call__(self, frame: bytes) -> Any:
        clock = time.perf_counter_ns
        t0 = clock()
        image = self.preprocess.decode_image(frame)
        t1 = clock()
        x = quantize_input(self.preprocess.to_model_input(image, *self.size, self.color,
                                                          self.fit), self.spec["input"])
        t2 = clock()
        y = self.runner.infer(x)
        t3 = clock()
        prediction = self.kind.decode(dequantize_output(y, self.spec.get("output", {}))
                                      .reshape(-1))
        t4 = clock()
        if self.recording:
            for stage, elapsed in zip(STAGES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                self.stage_ns[stage].append(elapsed)
        return prediction


def end_to_end(runner: Runner, spec: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """The application's view: each frame of ``--frames`` through :class:`Pipeline`,
    warmed up, then timed and sized like the model alone; the median of each stage, and
    the accuracy on the frames (what JPEG and resizing leave of it)."""
    frames, labels, meta = load_frames(args.frames)
    pipeline = Pipeline(runner, spec, _preprocess_module(), meta.get("fit") or "squash")
    _timed_steps(lambda index: pipeline(frames[index % len(frames)]),
                 lambda runs, total_ns: len(runs) >= args.warmup_runs
                 and total_ns >= args.warmup_seconds * 1e9)
    pipeline.recording = True
    latencies_ns, sizing = sized_steps(lambda index: pipeline(frames[index % len(frames)]),
                                       args.runs, args.seconds, args.max_seconds,
                                       args.interval_width)
    pipeline.recording = False
    count = len(frames) if args.accuracy_samples <= 0 else min(args.accuracy_samples,
                                                                len(frames))
    kind = pipeline.kind
    score = kind.metric(kind.per_sample([pipeline(frames[i]) for i in range(count)],
                                        labels[:count]))
    return {**latency_summary([elapsed / 1e6 for elapsed in latencies_ns]), "sizing": sizing,
            "stages_ms": {stage: float(np.median(times)) / 1e6
                          for stage, times in pipeline.stage_ns.items()},
            "accuracy": score, "accuracy_samples": count,
            "frames": {**meta, "count": len(frames),
                       "mean_bytes": float(np.mean([len(frame) for frame in frames]))}}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    spec = json.loads(open(args.spec, encoding="utf-8").read())
    with np.load(args.data, allow_pickle=False) as data:
        images, labels = data["x"], data["y"]
    rss_before_load = _peak_rss_mb()
    options = runtime_options(spec, json.loads(args.accelerators))

    start = time.perf_counter()
    runner = load_runner(args.runtime, args.artifact, args.threads, options)
    load_ms = (time.perf_counter() - start) * 1e3

    inputs = [quantize_input(image, spec["input"]) for image in images]
    start = time.perf_counter()
    first = runner.infer(inputs[0])
    first_inference_ms = (time.perf_counter() - start) * 1e3
    check_shapes(inputs[0], first, spec)

    warmup_start = time.perf_counter()
    warmup = _timed_loop(runner, inputs, args.warmup_runs, args.warmup_seconds)
    warmup_seconds = time.perf_counter() - warmup_start
    before = conditions()
    latencies_ns, sizing = sized_runs(runner, inputs, args.runs, args.seconds, args.max_seconds,
                                      args.interval_width)
    after = conditions()
    latencies = [elapsed / 1e6 for elapsed in latencies_ns]

    count = len(images) if args.accuracy_samples <= 0 else min(args.accuracy_samples, len(images))
    kind = task_kinds().of_spec(spec)
    outputs = predict(runner, images[:count], spec)
    accuracy = kind.metric(kind.per_sample([kind.decode(row) for row in outputs],
                                           labels[:count]))

    return {
        "runtime": {"name": runner.runtime, "version": runner.version, "requested": args.runtime,
                    "accelerator": runner.accelerator,
                    "requested_precision": _requested_precision(options),
                    "execution_precision": runner.execution_precision,
                    "threads": runner.threads},
        "threads": args.threads,
        "load_ms": load_ms,
        "first_inference_ms": first_inference_ms,
        "warmup": {"runs": len(warmup), "seconds": warmup_seconds},
        **latency_summary(latencies),
        "sizing": sizing,
        "latencies": encode_latencies(latencies_ns),
        "conditions": run_conditions(before, after),
        "rss_before_load_mb": rss_before_load,
        "peak_rss_mb": _peak_rss_mb(),
        "accuracy": accuracy,
        "accuracy_samples": count,
        **({"end_to_end": _end_to_end_or_error(runner, spec, args)} if args.frames else {}),
    }


def _end_to_end_or_error(runner: Runner, spec: dict[str, Any],
                         args: argparse.Namespace) -> dict[str, Any]:
    """:func:`end_to_end`, or why it could not run (no Pillow on the device, a frame it
    cannot decode): the model-only numbers stand either way."""
    try:
        return end_to_end(runner, spec, args)
    except Exception as error:  # noqa: BLE001 - reported beside the model-only result
        return {"error": f"{type(error).__name__}: {error}".strip()[:2000]}


def sha256_of(path: str) -> str:
    """The sha256 of a file, read in 1 MiB blocks (the harness and the predictor)."""
    import hashlib

    hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            hasher.update(block)
    return hasher.hexdigest()


def verify_inputs(expected: list[str]) -> None:
    """Check each ``PATH=HEX`` before anything is loaded: a file corrupted on its way to
    the device, or changed since, is never benchmarked."""
    for item in expected:
        path, _, digest = item.rpartition("=")
        actual = sha256_of(path)
        if actual != digest:
            raise RuntimeError(f"sha256 mismatch for {os.path.basename(path)}: the file on the "
                               f"device is not the one deployed ({actual[:16]}... "
                               f"!= {digest[:16]}...)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probe", action="store_true",
                        help="print host facts and available runtimes as JSON, then exit")
    parser.add_argument("--artifact")
    parser.add_argument("--runtime")
    parser.add_argument("--data")
    parser.add_argument("--spec")
    parser.add_argument("--out")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmup-runs", type=int, default=20)
    parser.add_argument("--warmup-seconds", type=float, default=0.5)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--max-seconds", type=float, default=10.0,
                        help="keep timing until the intervals are narrow enough, or this")
    parser.add_argument("--interval-width", type=float, default=0.05,
                        help="the 95%% intervals of p50 and p90, relative to each, at most")
    parser.add_argument("--accuracy-samples", type=int, default=0)
    parser.add_argument("--frames", help="an .npz of encoded frames: time them end to end too "
                        "(decode, pre-process, infer, post-process; needs Pillow)")
    parser.add_argument("--expect-sha256", action="append", default=[], metavar="PATH=HEX",
                        help="refuse to run unless PATH has this sha256 (repeatable)")
    parser.add_argument("--accelerators", default="{}",
                        help="JSON: onnxruntime_providers (list), openvino_device, tflite_delegate")
    args = parser.parse_args(argv)
    missing = [name for name in ("artifact", "runtime", "data", "spec", "out")
               if getattr(args, name) is None]
    if missing and not args.probe:
        parser.error("the following arguments are required: "
                     + ", ".join(f"--{name}" for name in missing))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.probe:
        print(json.dumps(probe()))
        return 0
    result: dict[str, Any] = {"protocol": PROTOCOL_VERSION, "runtime_requested": args.runtime}
    try:
        result["host"] = host_facts()
        verify_inputs(args.expect_sha256)
        result["started_at"] = time.time()
        result.update(measure(args))
        result["finished_at"] = time.time()
        result.update(status="ok", error=None)
        code = 0
    except PrecisionUnavailable as error:
        # Not a failure of the device: it cannot run what the variant's name promises.
        result.update(status="skipped", error=str(error))
        code = 0
    except BaseException as error:  # noqa: BLE001 - every failure becomes a result
        if isinstance(error, KeyboardInterrupt):
            raise
        result.update(status="failed", error=f"{type(error).__name__}: {error}".strip(),
                      traceback=traceback.format_exc(limit=5))
        code = 1
    with open(args.out + ".tmp", "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=2)
    os.replace(args.out + ".tmp", args.out)
    return code


if __name__ == "__main__":
    sys.exit(main())
