"""Is the harness honest? Its latency against each runtime's own benchmark tool.

Runs, in one go on this machine, for every produced variant of a finished run
(``models/variants/index.json``; `make run` first):
  - edgeflow's harness (batch 1, 1 thread, real test images),
  - the native tool shipped with the runtime's wheel: ``litert-benchmark`` (LiteRT) and
    ``benchmark_app`` (OpenVINO, sync API, 1 stream, 1 thread); ONNX Runtime's wheel
    ships no such tool, so its row has no reference,
each at the execution precision the variant declares (``benchmark_app -infer_precision``;
LiteRT computes the float ops of edgeflow's models in f32), and prints that precision,
what the harness's runtime reports it ran in, and the median latencies side by side with
the ratio harness / native. A ratio
near 1 means the harness adds no overhead of its own; these machines are noisy, so
compare ratios within one run, never absolute numbers across runs.

    .venv/bin/python benchmarks/harness_vs_native.py [--root .] [--runs 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def harness_median_ms(variants: Path, variant: dict, test_data: Path, runs: int,
                      work: Path) -> tuple[float | None, str]:
    """The harness's median latency and the precision its runtime reports (None and the
    reason when the harness skipped the variant here)."""
    spec = work / f"{variant['name']}.spec.json"
    spec.write_text(json.dumps(variant["spec"]))
    out = work / f"{variant['name']}.result.json"
    subprocess.run([sys.executable, str(ROOT / "tasks" / "harness.py"),
                    "--artifact", str(variants / variant["file"]), "--runtime", variant["runtime"],
                    "--data", str(test_data), "--spec", str(spec), "--out", str(out),
                    "--threads", "1", "--warmup-runs", "100", "--warmup-seconds", "0",
                    "--runs", str(runs), "--seconds", "0", "--accuracy-samples", "1"],
                   check=True, capture_output=True)
    result = json.loads(out.read_text())
    if result["status"] != "ok":
        return None, result["error"]
    return result["latency_ms"]["p50"], result["runtime"]["execution_precision"]


def litert_median_ms(artifact: Path, precision: str, runs: int, work: Path) -> float:
    out = work / "litert.json"
    subprocess.run([str(BIN / "litert-benchmark"), "--model", str(artifact), "--num_threads", "1",
                    "--warmup_runs", "100", "--num_runs", str(runs), "--result_json", str(out)],
                   check=True, capture_output=True)
    return float(json.loads(out.read_text())["latency"]["median_ms"])


def openvino_median_ms(artifact: Path, precision: str, runs: int, work: Path) -> float:
    report = work / "openvino"
    report.mkdir(exist_ok=True)
    # The precision pinned as the harness pins it: benchmark_app's default is the CPU's
    # (bf16 on AVX512-BF16/AMX, f16 on ARM with fp16).
    subprocess.run([str(BIN / "benchmark_app"), "-m", str(artifact), "-d", "CPU", "-hint", "none",
                    "-infer_precision", precision,
                    "-nstreams", "1", "-nthreads", "1", "-nireq", "1", "-api", "sync",
                    "-niter", str(runs), "-report_type", "no_counters", "-json_stats",
                    "-report_folder", str(report)], check=True, capture_output=True)
    results = json.loads((report / "benchmark_report.json").read_text())["execution_results"]
    return float(results["latency (ms)"])  # benchmark_app reports the median here


NATIVE: dict[str, tuple[str, Callable[[Path, str, int, Path], float]]] = {
    "tflite": ("litert-benchmark", litert_median_ms),
    "openvino": ("benchmark_app", openvino_median_ms),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT)
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians reported")
    args = parser.parse_args()
    variants = args.root / "models" / "variants"
    index = variants / "index.json"
    if not index.is_file():
        print(f"benchmarks: {index} is missing: run `make run` first", file=sys.stderr)
        return 2
    test_data = args.root / "data" / "prepared" / "test.npz"
    print(f"{'variant':<28} {'native tool':<17} {'declared':>8} {'ran':>5} {'harness p50 ms':>15} "
          f"{'native p50 ms':>14} {'harness/native':>15}")
    with tempfile.TemporaryDirectory() as temporary:
        work = Path(temporary)
        for variant in json.loads(index.read_text())["variants"]:
            if variant.get("status", "ok") != "ok" or variant["runtime"] == "tflm":
                continue
            declared = variant["spec"].get("execution_precision", "f32")
            tool, native = NATIVE.get(variant["format"], ("none in wheel", None))
            ours, theirs, ran = [], [], ""
            for _ in range(args.rounds):  # alternate so drift hits both sides alike
                median, ran = harness_median_ms(variants, variant, test_data, args.runs, work)
                if median is None:
                    break
                ours.append(median)
                if native is not None:
                    theirs.append(native(variants / variant["file"], declared, args.runs, work))
            head = f"{variant['name']:<28} {tool:<17} {declared:>8}"
            if not ours:
                print(f"{head} skipped: {ran}")
                continue
            harness_ms = statistics.median(ours)
            if theirs:
                native_ms = statistics.median(theirs)
                print(f"{head} {ran:>5} {harness_ms:>15.4f} {native_ms:>14.4f} "
                      f"{harness_ms / native_ms:>15.2f}")
            else:
                print(f"{head} {ran:>5} {harness_ms:>15.4f} {'—':>14} {'—':>15}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
