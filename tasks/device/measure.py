"""One variant measured on this board by the benchmark protocol: load, first inference,
warm-up, sized timed runs between two snapshots of the device's conditions, the score on
the test split as the variant's kind of task scores it (classification: the accuracy),
and (with frames) the same end to end. Returns the result's fields.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np

from . import kinds
from .conditions import conditions, run_conditions
from .metering import energy_meter, energy_of
from .host import peak_rss_mb
from .latency import encode_latencies, latency_summary
from .pipeline import end_to_end_or_error
from .runtimes import load_runner, requested_precision, runtime_options
from .spec import VariantSpec
from .tensors import check_shapes, predict, quantize_input
from .timing import sized_runs, timed_loop


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """The fields of an ok result for the harness's arguments ``args`` (see the harness's
    docstring for the protocol)."""
    spec: VariantSpec = json.loads(open(args.spec, encoding="utf-8").read())
    with np.load(args.data, allow_pickle=False) as data:
        images, labels = data["x"], data["y"]
    rss_before_load = peak_rss_mb()
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
    warmup = timed_loop(runner, inputs, args.warmup_runs, args.warmup_seconds)
    warmup_seconds = time.perf_counter() - warmup_start
    before = conditions()
    latencies_ns, sizing = sized_runs(runner, inputs, args.runs, args.seconds, args.max_seconds,
                                      args.interval_width)
    after = conditions()
    latencies = [elapsed / 1e6 for elapsed in latencies_ns]
    meter, meter_error = energy_meter(args)
    energy = (energy_of(meter, lambda index: runner.infer(inputs[index % len(inputs)]), args)
              if meter else {"error": meter_error} if meter_error else None)

    count = len(images) if args.accuracy_samples <= 0 else min(args.accuracy_samples, len(images))
    kind = kinds.of_spec(spec)
    outputs = predict(runner, images[:count], spec)
    per_sample = kind.per_sample([kind.decode(row, spec) for row in outputs], labels[:count])
    accuracy = kind.metric(per_sample)
    # The kind's own interval (a bootstrap over images for mAP, not a binomial one) and
    # further measures, computed here where the per-image results are.
    interval = [float(bound) for bound in kind.interval(per_sample)] if count else None
    further = kind.scores(per_sample) if count else {}

    return {
        "runtime": {"name": runner.runtime, "version": runner.version, "requested": args.runtime,
                    "accelerator": runner.accelerator,
                    "requested_precision": requested_precision(options),
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
        "peak_rss_mb": peak_rss_mb(),
        "task": kind.name,
        "accuracy": accuracy,
        "accuracy_samples": count,
        "accuracy_interval": interval,
        **({"task_scores": further} if further else {}),
        **({"energy": energy} if energy else {}),
        **({"end_to_end": end_to_end_or_error(runner, spec, args, meter)}
           if args.frames else {}),
    }

