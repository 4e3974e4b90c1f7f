"""Is the harness honest? Its median latency against each runtime's own tool, side by side.

For every fp32 and int8 LiteRT, ONNX Runtime and OpenVINO variant of a finished run
(default: the realistic workload, ``experiments/vww96``: run it first) and, with
``--big``, MobileNetV2 (width 1.0) at 224x224 with random weights (built here once, at
least 2 ms per inference on these CPUs), it measures in one go, alternating, ``--rounds``
times each:

  - edgeflow's harness (``tasks/device/``, run as shipped: batch 1, 1 thread, real test
    images, sized until its 95% intervals are within 1%), its p50 and interval;
  - LiteRT: ``litert-benchmark`` (its CompiledModel API, XNNPACK, random input), whose
    report rounds to 0.01 ms: its own timings are read unrounded in this process;
  - OpenVINO: ``benchmark_app`` (sync API, 1 stream, 1 thread, the variant's execution
    precision, ``-hint none``), its median read from its log in microseconds;
  - ONNX Runtime, whose wheel has no such tool: a bare ``InferenceSession.run`` loop with
    the harness's session options.

and prints harness/native per variant (median of the rounds). A ratio within 1.00 +- 0.02
says the harness adds nothing of its own. These machines are noisy: compare ratios
within one run, never absolute numbers across runs.

    .venv/bin/python benchmarks/fidelity.py [--root experiments/vww96] [--big] [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT))

from tasks.core import device_code  # noqa: E402

TOLERANCE = 0.02
RUNTIMES = ("tflite", "onnxruntime", "openvino")
PRECISIONS = ("fp32", "int8", "int8-qdq")
NATIVE_RUNS = 2000  # per native measurement; the harness sizes its own


@dataclass(frozen=True)
class Median:
    """A median latency in ms with its 95% interval (None where the tool gives none)."""

    ms: float
    interval: tuple[float, float] | None = None

    @classmethod
    def of(cls, latencies_ms: list[float]) -> "Median":
        ordered = np.sort(np.asarray(latencies_ms))
        return cls(float(np.median(ordered)), device_code.load("latency").quantile_interval(ordered, 0.5))

    def text(self) -> str:
        if self.interval is None:
            return f"{self.ms:.4f}"
        return f"{self.ms:.4f} [{self.interval[0]:.4f}, {self.interval[1]:.4f}]"


def harness_median(artifact: Path, runtime: str, spec: dict[str, Any], test_data: Path,
                   work: Path) -> Median:
    spec_path, out = work / "spec.json", work / "result.json"
    spec_path.write_text(json.dumps(spec))
    launcher = work / "harness.py"  # the harness as a board runs it (device_code.shipped)
    device_code.ship(work, ("harness",))
    subprocess.run([sys.executable, str(launcher), "--artifact", str(artifact),
                    "--runtime", runtime, "--data", str(test_data), "--spec", str(spec_path),
                    "--out", str(out), "--threads", "1", "--warmup-runs", "200",
                    "--warmup-seconds", "1", "--runs", "1000", "--seconds", "2",
                    "--max-seconds", "20", "--interval-width", "0.01",
                    "--accuracy-samples", "1"], check=False, capture_output=True)
    result = json.loads(out.read_text()) if out.is_file() else {"status": "none"}
    if result["status"] != "ok":
        raise RuntimeError(result.get("error") or "the harness wrote no result")
    low, high = result["latency_ci95_ms"]["p50"]
    return Median(result["latency_ms"]["p50"], (low, high))


def litert_median(artifact: Path, runs: int = NATIVE_RUNS) -> Median:
    """``litert-benchmark``'s own inference timings, read before it rounds them."""
    import ai_edge_litert.tools.benchmark_litert_model as tool

    captured: list[float] = []

    class Capturing:
        def __getattr__(self, name: str) -> Any:
            return getattr(statistics, name)

        def median(self, data: list[float]) -> float:
            captured[:] = list(data)
            return statistics.median(data)

    tool.statistics = Capturing()  # type: ignore[assignment]
    argv = sys.argv
    sys.argv = ["litert-benchmark", "--model", str(artifact), "--num_threads", "1",
                "--warmup_runs", "200", "--num_runs", str(runs)]
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # its report: read from `captured`
            tool.run_benchmark(tool.parse_args())
    finally:
        sys.argv = argv
    return Median.of(captured)


MEDIAN_LINE = re.compile(r"Median:\s+([0-9.]+)\s+(us|ms)")


def benchmark_app_median(artifact: Path, precision: str, runs: int = NATIVE_RUNS) -> Median:
    done = subprocess.run([str(BIN / "benchmark_app"), "-m", str(artifact), "-d", "CPU",
                           "-api", "sync", "-nstreams", "1", "-nthreads", "1", "-hint", "none",
                           "-infer_precision", precision, "-niter", str(runs)],
                          check=True, capture_output=True, text=True)
    value, unit = MEDIAN_LINE.findall(done.stdout + done.stderr)[-1]
    return Median(float(value) / (1000 if unit == "us" else 1))


def ort_loop_median(artifact: Path, x: np.ndarray, runs: int = NATIVE_RUNS) -> Median:
    """A bare ``InferenceSession.run`` loop, the harness's session options."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.add_session_config_entry(device_code.load("runtimes").ORT_ARM64_BF16_FASTMATH, "0")
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(str(artifact), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x}
    output = [session.get_outputs()[0].name]
    for _ in range(200):
        session.run(output, feed)
    latencies = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        session.run(output, feed)
        latencies.append((time.perf_counter_ns() - start) / 1e6)
    return Median.of(latencies)


@dataclass(frozen=True)
class Case:
    name: str
    runtime: str
    artifact: Path
    spec: dict[str, Any]
    precision: str  # the execution precision benchmark_app is asked for


def native(case: Case, x: np.ndarray) -> tuple[str, Callable[[], Median]]:
    if case.runtime == "tflite":
        return "litert-benchmark", lambda: litert_median(case.artifact)
    if case.runtime == "openvino":
        return "benchmark_app", lambda: benchmark_app_median(case.artifact, case.precision)
    return "ORT run loop", lambda: ort_loop_median(case.artifact, x)


def cases_of_run(root: Path) -> list[Case]:
    index = json.loads((root / "models" / "variants" / "index.json").read_text())
    return [Case(entry["name"], entry["runtime"], root / "models" / "variants" / entry["file"],
                 entry["spec"], entry["spec"].get("execution_precision", "f32"))
            for entry in index["variants"]
            if entry.get("status", "ok") == "ok" and entry["runtime"] in RUNTIMES
            and entry["precision"] in PRECISIONS]


def big_model_cases(cache: Path) -> list[Case]:
    """MobileNetV2 (width 1.0) at 224x224, random weights, fp32 in the three formats;
    built once into ``cache``."""
    tflite, onnx, xml = cache / "model.tflite", cache / "model.onnx", cache / "model.xml"
    if not xml.is_file():
        import keras
        import openvino as ov
        import tensorflow as tf

        cache.mkdir(parents=True, exist_ok=True)
        keras.utils.set_random_seed(0)
        model = keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3))
        model(np.zeros((1, 224, 224, 3), dtype=np.float32))
        tflite.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
        model.export(str(onnx), format="onnx", verbose=False)
        converted = ov.convert_model(str(onnx))
        # Batch 1, as every runtime here runs it: the exported batch is dynamic, and the
        # harness would time an empty batch on it (the bring-your-own-model issue).
        converted.reshape([1, 224, 224, 3])
        ov.save_model(converted, str(xml))
    spec = {"input": {"dtype": "float32", "shape": [1, 224, 224, 3], "quantization": None},
            "output": {"dtype": "float32", "quantization": None}, "execution_precision": "f32"}
    return [Case(f"mobilenet_v2-1.0-224-{fmt}", runtime, path, spec, "f32")
            for fmt, runtime, path in (("tflite", "tflite", tflite), ("onnx", "onnxruntime", onnx),
                                       ("openvino", "openvino", xml))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=ROOT / "experiments" / "vww96")
    parser.add_argument("--big", action="store_true", help="add MobileNetV2 1.0 at 224x224")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default="", help="measure only the cases whose name has this")
    args = parser.parse_args()

    test_data = args.root / "data" / "prepared" / "test.npz"
    cases = cases_of_run(args.root) if test_data.is_file() else []
    with tempfile.TemporaryDirectory(prefix="edgeflow-fidelity-") as scratch:
        work = Path(scratch)
        if args.big:
            cases += big_model_cases(ROOT / ".edgeflow" / "cache" / "fidelity")
        if not cases:
            raise SystemExit(f"nothing to measure: run `edgeflow run --params "
                             f"{args.root / 'params.yaml'}` first, or pass --big")
        rows = []
        for case in (case for case in cases if args.only in case.name):
            data = _data_for(case, test_data, work)
            with np.load(data) as arrays:
                x = arrays["x"][:1].astype(np.float32)
            tool, measure_native = native(case, device_code.load("tensors").quantize_input(x[0], case.spec["input"]))
            ours, theirs = [], []
            try:
                for _ in range(args.rounds):  # alternating: drift hits both sides alike
                    ours.append(harness_median(case.artifact, case.runtime, case.spec, data, work))
                    theirs.append(measure_native())
            except (subprocess.CalledProcessError, RuntimeError) as error:
                print(f"  {case.name}: FAILED ({str(error)[-300:]})", flush=True)
                continue
            mine = statistics.median(m.ms for m in ours)
            native_ms = statistics.median(m.ms for m in theirs)
            ratio = mine / native_ms
            rows.append((case.name, tool, min(ours, key=lambda m: abs(m.ms - mine)).text(),
                         min(theirs, key=lambda m: abs(m.ms - native_ms)).text(), ratio))
            print(f"  {case.name}: harness {mine:.4f} ms, {tool} {native_ms:.4f} ms, "
                  f"ratio {ratio:.3f}", flush=True)
    print(f"\n{'variant':34} {'native tool':17} {'harness p50 ms [95%]':30} "
          f"{'native p50 ms [95%]':30} {'ratio':>6}  within 1.00+-{TOLERANCE:.2f}")
    for name, tool, mine_text, native_text, ratio in rows:
        verdict = "yes" if abs(ratio - 1) <= TOLERANCE else "NO"
        print(f"{name:34} {tool:17} {mine_text:30} {native_text:30} {ratio:6.3f}  {verdict}")


def _data_for(case: Case, test_data: Path, work: Path) -> Path:
    """The run's test images where they fit the case's input, random ones otherwise."""
    shape = case.spec["input"]["shape"]
    if test_data.is_file():
        with np.load(test_data) as arrays:
            if list(arrays["x"].shape[1:]) == list(shape[1:]):
                return test_data
    return _random_data(work, shape)


def _random_data(work: Path, shape: list[int]) -> Path:
    path = work / f"random-{'x'.join(map(str, shape))}.npz"
    if not path.is_file():
        rng = np.random.default_rng(0)
        np.savez(path, x=rng.random((8, *shape[1:]), dtype=np.float32),
                 y=np.zeros(8, dtype=np.int64))
    return path


if __name__ == "__main__":
    main()
