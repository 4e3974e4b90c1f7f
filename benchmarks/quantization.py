"""What quantisation and pruning buy on this machine, measured in one run.

Converts an experiment's trained model (default: the realistic workload,
``experiments/vww96``; and its pruned models, if any) to the whole precision matrix of
its ``params.yaml`` in a scratch folder, benchmarks
every variant on this machine with the harness protocol, and prints per runtime each
precision against its fp32 counterpart side by side: size ratio, accuracy and its drop
against the fp32 reference, p50 latency and its ratio. Then each pruned source against
the unpruned model in the same runtime and precision. These machines are noisy: read
ratios within one run, and use ``--rounds`` to take the median of several.

    .venv/bin/python benchmarks/quantization.py [--root experiments/vww96] [--rounds 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tasks.benchmark import benchmark_device  # noqa: E402
from tasks.convert import ConvertInputs, convert  # noqa: E402
from tasks.config import LocalDevice, load_params  # noqa: E402
from tasks.core.contracts.results import HarnessOk, read_result  # noqa: E402
from tasks.core.contracts.variants import read_variant_index  # noqa: E402
from tasks.core.files import read_json  # noqa: E402
from tasks.core.layout import Layout  # noqa: E402


def measure(root: Path, rounds: int, seconds: float, work: Path) -> tuple[list[dict], dict[str, list]]:
    params = load_params(root / "params.yaml")
    layout = Layout(root)
    variants_dir = work / "variants"
    convert(params.formats, params.convert, params.quantization,
            params.requirements.max_accuracy_drop,
            ConvertInputs(layout.base_model, layout.pruned, layout.prepared), variants_dir)
    protocol = params.benchmark.model_copy(update={"seconds": seconds})
    device = LocalDevice(workdir=work / "device", threads=1)
    p50: dict[str, list[float]] = defaultdict(list)
    for round_index in range(rounds):
        run = benchmark_device("local", device, protocol, variants_dir, layout.prepared,
                               work / f"results-{round_index}")
        for path in run.results:
            record = read_result(path)
            if isinstance(record.harness, HarnessOk):
                p50[record.variant].append(record.harness.latency_ms.p50)
    return read_variant_index(variants_dir).document()["variants"], p50


def print_precisions(variants: list[dict[str, Any]], p50: dict[str, list[float]]) -> None:
    by_name = {variant["name"]: variant for variant in variants}
    print(f"{'source':<9} {'runtime':<9} {'precision':<13} {'size KB':>9} {'size/fp32':>9} "
          f"{'accuracy':>9} {'drop':>7} {'p50 ms':>8} {'p50/fp32':>9}  note")
    for variant in variants:
        name, fmt = variant["name"], variant["format"]
        if variant["status"] != "ok":
            print(f"{variant['source']:<9} {fmt:<9} {variant['precision']:<13} "
                  f"{variant['status']}: {variant['reason']}")
            continue
        # tflm and edgetpu are built from the tflite int8 path: compare with tflite-fp32.
        base_format = "tflite" if fmt in {"tflm", "edgetpu"} else fmt
        prefix = "" if variant["source"] == "base" else f"{variant['source']}-"
        fp32 = by_name.get(f"{prefix}{base_format}-fp32")
        latency = statistics.median(p50[name]) if p50.get(name) else None
        fp32_latency = statistics.median(p50[fp32["name"]]) if fp32 and p50.get(fp32["name"]) else None
        size_ratio = variant["bytes"] / fp32["bytes"] if fp32 else float("nan")
        latency_ratio = latency / fp32_latency if latency and fp32_latency else None
        note = "SLOWER than fp32" if latency_ratio and latency_ratio > 1.0 else ""
        if fmt == "tflm":
            note = f"arena {variant['details']['arena_bytes'] / 1024:.1f} KB (host TFLM)"
        print(f"{variant['source']:<9} {fmt:<9} {variant['precision']:<13} "
              f"{variant['bytes'] / 1024:>9.1f} {size_ratio:>9.3f} {variant['accuracy']:>9.4f} "
              f"{variant['accuracy_drop']:>7.2%} "
              f"{latency if latency is not None else float('nan'):>8.4f} "
              f"{latency_ratio if latency_ratio is not None else float('nan'):>9.3f}  {note}")


def print_pruning(root: Path, variants: list[dict[str, Any]], p50: dict[str, list[float]]) -> None:
    index = Layout(root).pruned / "index.json"
    if not index.is_file() or not read_json(index)["sources"]:  # no pruning recipe
        return
    print()
    print(f"{'pruned source':<14} {'method':<11} {'params':>14} {'MACs':>18} {'sparsity':>9} "
          f"{'accuracy':>15}")
    for source in read_json(index)["sources"]:
        print(f"{source['name']:<14} {source['method']:<11} "
              f"{source['parameters']['before']:>6}->{source['parameters']['after']:<7} "
              f"{source['macs']['before']:>8}->{source['macs']['after']:<9} "
              f"{source['kernel_sparsity']['after']:>9.2f} "
              f"{source['accuracy']['before']:.4f}->{source['accuracy']['after']:.4f}")
    print()
    print(f"{'variant':<30} {'p50 ms':>8} {'unpruned p50':>13} {'ratio':>7} {'size/unpruned':>14} "
          f"{'gzip/unpruned':>14}")
    by_name = {variant["name"]: variant for variant in variants}
    for variant in variants:
        if variant["source"] == "base" or variant["status"] != "ok" or not p50.get(variant["name"]):
            continue
        twin = by_name.get(variant["name"].split("-", 1)[1])
        if not twin or not p50.get(twin["name"]):
            continue
        mine, theirs = statistics.median(p50[variant["name"]]), statistics.median(p50[twin["name"]])
        print(f"{variant['name']:<30} {mine:>8.4f} {theirs:>13.4f} {mine / theirs:>7.3f} "
              f"{variant['bytes'] / twin['bytes']:>14.3f} "
              f"{variant['gzip_bytes'] / twin['gzip_bytes']:>14.3f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT / "experiments" / "vww96",
                        help="a finished experiment (default: the realistic workload)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=1.0, help="timed seconds per variant")
    args = parser.parse_args()
    if not (Layout(args.root).base_model / "model.keras").is_file():
        print(f"benchmarks: no trained model under {args.root}: run `edgeflow run --params "
              f"{args.root / 'params.yaml'}` first", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as temporary:
        variants, p50 = measure(args.root, args.rounds, args.seconds, Path(temporary))
    print_precisions(variants, p50)
    print_pruning(args.root, variants, p50)
    return 0


if __name__ == "__main__":
    sys.exit(main())
