"""End to end, as the application sees it: each encoded camera frame decoded,
pre-processed by ``preprocess.py`` (the release's own), quantised, inferred,
post-processed (decoded as the spec's kind of task says), with the median of each stage
and the score on the frames.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import numpy as np

from . import kinds
from .latency import latency_summary
from .metering import energy_of
from .runtimes import Runner
from .spec import VariantSpec
from .tensors import dequantize_output, quantize_input
from .timing import sized_steps, timed_steps

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
    """``preprocess.py`` of this package: the pre-processing a release ships, so the
    frames go through exactly what an application's images go through. Imported when
    the frames are timed: without it (a package shipped without it) the model-only
    numbers still stand, and the end-to-end part says why."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "preprocess.py")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"the device package has no preprocess.py ({path})")
    from . import preprocess

    return preprocess


class Pipeline:
    """One frame as an application handles it: decode the bytes, pre-process them (colour,
    resize, scale: ``preprocess.py``), quantise for the runtime, infer, de-quantise, and
    decode the output as the spec's kind of task says (classification: the argmax).
    Each call's stage times are kept in ``stage_ns`` while ``recording``."""

    def __init__(self, runner: Runner, spec: VariantSpec, preprocess: Any,
                 fit: str = "squash") -> None:
        shape = [int(size) for size in spec["input"]["shape"][-3:]]
        height, width, channels = ((shape[1], shape[2], shape[0])
                                   if spec["input"].get("layout") == "NCHW" else shape)
        self.size, self.color = (height, width), ("grayscale" if channels == 1 else "rgb")
        self.runner, self.spec, self.preprocess, self.fit = runner, spec, preprocess, fit
        self.kind = kinds.of_spec(spec)
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
                                      .reshape(-1), self.spec)
        t4 = clock()
        if self.recording:
            for stage, elapsed in zip(STAGES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                self.stage_ns[stage].append(elapsed)
        return prediction


def end_to_end(runner: Runner, spec: VariantSpec, args: argparse.Namespace,
               meter: Any = None) -> dict[str, Any]:
    """The application's view: each frame of ``--frames`` through :class:`Pipeline`,
    warmed up, then timed and sized like the model alone; the median of each stage, and
    the score on the frames as the kind of task scores it (classification: the accuracy;
    what JPEG and resizing leave of it); with an energy ``meter``, the energy per frame
    end to end (``energy``: as the model's, :func:`energy.per_inference`)."""
    frames, labels, meta = load_frames(args.frames)
    pipeline = Pipeline(runner, spec, _preprocess_module(), meta.get("fit") or "squash")
    timed_steps(lambda index: pipeline(frames[index % len(frames)]),
                lambda runs, total_ns: len(runs) >= args.warmup_runs
                and total_ns >= args.warmup_seconds * 1e9)
    pipeline.recording = True
    latencies_ns, sizing = sized_steps(lambda index: pipeline(frames[index % len(frames)]),
                                       args.runs, args.seconds, args.max_seconds,
                                       args.interval_width)
    pipeline.recording = False
    energy = None
    if meter is not None:
        energy = energy_of(meter, lambda index: pipeline(frames[index % len(frames)]), args)
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
                       "mean_bytes": float(np.mean([len(frame) for frame in frames]))},
            **({"energy": energy} if energy else {})}


def end_to_end_or_error(runner: Runner, spec: VariantSpec, args: argparse.Namespace,
                        meter: Any = None) -> dict[str, Any]:
    """:func:`end_to_end`, or why it could not run (no Pillow on the device, a frame it
    cannot decode): the model-only numbers stand either way."""
    try:
        return end_to_end(runner, spec, args, meter)
    except Exception as error:  # noqa: BLE001 - reported beside the model-only result
        return {"error": f"{type(error).__name__}: {error}".strip()[:2000]}
