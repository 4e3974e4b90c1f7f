"""Where the harness's LiteRT median differs from ``litert-benchmark``'s, and why.

``benchmarks/fidelity.py`` finds the harness a few percent slower than
``litert-benchmark`` on fp32 LiteRT models and not on int8 ones. The two differ in what
one timed inference is: the harness (``Interpreter``) copies the image into the input
tensor, invokes, and reads the output back, as an application must; the tool
(``CompiledModel``) fills its input buffer once, with random values, and times
``run_by_name`` alone. This script times, alternating, in one process:

  - ``harness``: the harness's own runner (``set_tensor`` + ``invoke`` + ``get_tensor``);
  - ``invoke``: the same Interpreter, input set once, ``invoke`` alone;
  - ``tool``: ``litert-benchmark``'s own timings (CompiledModel, random input);

and prints each median against the tool's. ``invoke``/``tool`` near 1.00 with
``harness``/``tool`` above it says the gap is the copy in and out, which the harness
counts on purpose; an fp32 input is 4 bytes a pixel, an int8 one 1.

    .venv/bin/python benchmarks/litert_api.py [--root experiments/vww96] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from fidelity import litert_median  # noqa: E402

from tasks.core import device_code  # noqa: E402

RUNS = 2000


def _median_ms(step: Callable[[], object], runs: int = RUNS) -> float:
    for _ in range(200):
        step()
    latencies = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        step()
        latencies.append((time.perf_counter_ns() - start) / 1e6)
    return statistics.median(latencies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT / "experiments" / "vww96")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    index = json.loads((args.root / "models" / "variants" / "index.json").read_text())
    with np.load(args.root / "data" / "prepared" / "test.npz") as data:
        image = data["x"][0]
    print(f"{'variant':<14} {'input':<16} {'harness/tool':>12} {'invoke/tool':>12} "
          f"{'harness ms':>11} {'invoke ms':>10} {'tool ms':>8}")
    for variant in index["variants"]:
        if variant.get("status") != "ok" or variant["runtime"] != "tflite":
            continue
        artifact = args.root / "models" / "variants" / variant["file"]
        x = device_code.load("tensors").quantize_input(image, variant["spec"]["input"])
        interpreter_runner = device_code.load("runtimes").load_runner("tflite", str(artifact), 1, {})
        # The same Interpreter API, input written once: invoke alone.
        from ai_edge_litert import interpreter as module

        bare = module.Interpreter(model_path=str(artifact), num_threads=1)
        bare.allocate_tensors()
        bare.set_tensor(bare.get_input_details()[0]["index"], x)
        rounds: dict[str, list[float]] = {"harness": [], "invoke": [], "tool": []}
        for _ in range(args.rounds):
            rounds["harness"].append(_median_ms(lambda: interpreter_runner.infer(x)))
            rounds["invoke"].append(_median_ms(bare.invoke))
            rounds["tool"].append(litert_median(artifact, RUNS).ms)
        medians = {name: statistics.median(values) for name, values in rounds.items()}
        shape = "x".join(map(str, x.shape[1:])) + f" {x.dtype}"
        print(f"{variant['name']:<14} {shape:<16} "
              f"{medians['harness'] / medians['tool']:>12.3f} "
              f"{medians['invoke'] / medians['tool']:>12.3f} {medians['harness']:>11.4f} "
              f"{medians['invoke']:>10.4f} {medians['tool']:>8.4f}")


if __name__ == "__main__":
    main()
