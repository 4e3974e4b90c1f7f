"""Device-side benchmark harness: stdlib + numpy + the one runtime it measures.

The command line of the harness, wiring the modules of its package (runtimes, tensors,
timing, latency, host facts, conditions, end-to-end pipeline, measure). It never imports
the rest of edgeflow: its package is shipped to a device (``edgeflow_device/``) and run
there through the launcher beside it as
``python harness.py --artifact A --runtime R --data D --spec S --out O [options]``
(here: ``python -m tasks.device.harness ...``).

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
     of task says (``kinds/``: classification's top-1 accuracy);
  5. with ``--frames``, the same again end to end, as the application sees it: each
     encoded camera frame decoded, pre-processed by ``preprocess.py`` (of this
     package: the release's own), quantised, inferred, post-processed, with the
     median of each stage and the accuracy on the frames (``end_to_end``);
  6. where the board has an energy meter (``--energy-meter``, :mod:`energy`): windows
     of an idle baseline then inferences, each as long, giving mJ per inference above
     idle with a 95% interval, the average active power and the meter's facts
     (``energy``; ``end_to_end.energy`` for the frames). A meter that stalls or goes
     backwards gives its reason and no number.

Inputs: ``--data`` is an ``.npz`` with ``x`` (float32, NHWC, normalised) and ``y``
(int labels); ``--spec`` is the variant's JSON spec (:class:`spec.VariantSpec`:
``{"input": {"dtype", "shape", "quantization": {"scale", "zero_point"} | null}, "output":
{...}, "execution_precision": "f32" | "bf16" | "f16"}``). Quantised inputs are fed as the
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
import json
import os
import sys
import time
import traceback
from typing import Any

from .conditions import throttling
from .energy import find_meters
from .host import first_number, host_facts, module_version
from .runtimes import PrecisionUnavailable, available

PROTOCOL_VERSION = 1


def probe() -> dict[str, Any]:
    """Host facts, memory, temperature where the board exposes it, and the runtimes
    importable here with their versions (found, not imported: cheap)."""
    runtimes = available()
    memory_kb = first_number("/proc/meminfo", "MemTotal:")
    available_kb = first_number("/proc/meminfo", "MemAvailable:")
    millidegrees = first_number("/sys/class/thermal/thermal_zone0/temp")
    return {"protocol": PROTOCOL_VERSION,
            "host": {**host_facts(),
                     "memory_mb": round(memory_kb / 1024) if memory_kb else None,
                     "memory_available_mb": round(available_kb / 1024) if available_kb else None,
                     "temperature_c": millidegrees / 1000 if millidegrees else None,
                     **throttling()},
            "runtimes": runtimes,
            "runtime_versions": {name: module_version(module)
                                 for name, module in runtimes.items()},
            "energy_meters": [meter.describe() for meter in find_meters()]}


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
    parser.add_argument("--energy-meter", default="auto",
                        help="auto (the first meter found, none if none), none, command, or a "
                        "meter's name (rapl, hwmon:<chip>, pi5-pmic): energy per inference")
    parser.add_argument("--energy-command", help="with --energy-meter command: prints the "
                        "external meter's cumulative energy")
    parser.add_argument("--energy-unit", default="mJ", choices=("mJ", "J", "uJ"))
    parser.add_argument("--energy-windows", type=int, default=5,
                        help="idle baseline + inference windows (the interval's samples)")
    parser.add_argument("--energy-window-seconds", type=float, default=1.0,
                        help="each window's length (extended to 20 of the meter's periods)")
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
        from .measure import measure  # NumPy and the runtime: not for --probe

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
