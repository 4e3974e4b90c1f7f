"""End-to-end timing (``benchmark.end_to_end``): camera frames made from the test split
(tasks/farm/frames.py), read and timed by the harness the way an application handles
them (decode, pre-process with the release's preprocess.py, infer, post-process:
tasks/device/pipeline.py), and what the protocol accepts of it."""

from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tasks.core import device_code
from tasks.config import EndToEndParams
from tasks.device import pipeline as harness_pipeline
from tasks.farm.frames import write_frames
from tasks.farm.protocol import validate_harness_result
from tests.farm.test_protocol import GOOD_RESULT
from tests.tasks.device.test_harness import harness_args, read_result, run_harness, variant_entry

PNG_AT_MODEL_SIZE = EndToEndParams(frame_size=(16, 16), encoding="png", frames=40)


def test_frames_are_the_test_images_at_the_frame_size_in_the_harness_layout(
        tiny_project: Any, tmp_path: Path) -> None:
    test_data = tiny_project.layout.prepared / "test.npz"
    params = EndToEndParams(frame_size=(48, 64), encoding="jpeg", quality=80, frames=7)
    frames, labels, meta = harness_pipeline.load_frames(
        str(write_frames(test_data, tmp_path / "frames.npz", params)))
    with np.load(test_data) as data:
        assert labels.tolist() == data["y"][:7].tolist()
    assert meta == {"height": 48, "width": 64, "encoding": "jpeg", "fit": "squash"}
    assert len(frames) == 7 and len(set(frames)) > 1
    with Image.open(io.BytesIO(frames[0])) as image:
        assert (image.format, image.size) == ("JPEG", (64, 48))


def test_png_frames_at_the_model_size_decode_to_the_model_inputs(tiny_project: Any,
                                                                  tmp_path: Path) -> None:
    """Lossless frames of the model's own size: the pipeline's pre-processing gives back
    exactly the prepared inputs (one pre-processing for training and application)."""
    test_data = tiny_project.layout.prepared / "test.npz"
    frames, _, _ = harness_pipeline.load_frames(
        str(write_frames(test_data, tmp_path / "frames.npz", PNG_AT_MODEL_SIZE)))
    preprocess = device_code.preprocess()
    with np.load(test_data) as data:
        color = "grayscale" if data["x"].shape[-1] == 1 else "rgb"
        for frame, expected in zip(frames[:5], data["x"][:5]):
            image = preprocess.decode_image(frame)
            np.testing.assert_array_equal(preprocess.to_model_input(image, 16, 16, color),
                                          expected)


def test_letterboxed_frames_keep_the_model_aspect_and_decode_to_the_model_inputs(
        tiny_project: Any, tmp_path: Path) -> None:
    """Under ``fit: letterbox`` a 48x64 camera gives 48x48 frames of a 16x16 model's
    images (letterboxing a 4:3 frame back would add borders the image never had), and
    they pre-process back to the prepared inputs through the letterbox, borderless."""
    test_data = tiny_project.layout.prepared / "test.npz"
    params = EndToEndParams(frame_size=(48, 64), encoding="png", frames=4)
    frames, _, meta = harness_pipeline.load_frames(
        str(write_frames(test_data, tmp_path / "frames.npz", params, "letterbox")))
    assert meta == {"height": 48, "width": 48, "encoding": "png", "fit": "letterbox"}
    preprocess = device_code.preprocess()
    with np.load(test_data) as data:
        for frame, expected in zip(frames, data["x"][:4]):
            image = preprocess.decode_image(frame)
            assert image.size == (48, 48)
            model_input = preprocess.to_model_input(image, 16, 16, "grayscale", "letterbox")
            # No border added: exactly what a plain resize gives, up to resampling.
            np.testing.assert_array_equal(model_input, preprocess.to_model_input(
                image, 16, 16, "grayscale", "squash"))
            np.testing.assert_allclose(model_input, expected, atol=0.08)


class Echo:
    """A runner whose logits are one-hot on the first pixel's grey level (x 10)."""

    runtime, version, accelerator, execution_precision, threads = "echo", "1", None, "f32", 1

    def infer(self, x: np.ndarray) -> np.ndarray:
        logits = np.zeros((1, 10), np.float32)
        logits[0, min(int(x.reshape(-1)[0] * 10), 9)] = 1.0
        return logits


def test_the_pipeline_decodes_preprocesses_infers_and_post_processes_each_frame() -> None:
    preprocess = device_code.preprocess()
    spec = {"input": {"dtype": "float32", "shape": [1, 4, 4, 1], "quantization": None}}
    pipeline = harness_pipeline.Pipeline(Echo(), spec, preprocess)
    frames = []
    for grey in (0, 130, 250):
        buffer = io.BytesIO()
        Image.new("L", (32, 24), grey).save(buffer, format="PNG")
        frames.append(buffer.getvalue())
    assert [pipeline(frame) for frame in frames] == [0, 5, 9]
    assert all(times == [] for times in pipeline.stage_ns.values()), "not recording yet"
    pipeline.recording = True
    pipeline(frames[1])
    assert sorted(pipeline.stage_ns) == sorted(harness_pipeline.STAGES)
    assert all(len(times) == 1 and times[0] > 0 for times in pipeline.stage_ns.values())


def frames_args(tiny_project: Any, tmp_path: Path, script: Path,
                params: EndToEndParams = PNG_AT_MODEL_SIZE) -> tuple[list[str], Path]:
    entry = variant_entry(tiny_project, "onnx-fp32")
    args, out = harness_args(tiny_project, entry, tmp_path)
    frames = write_frames(tiny_project.layout.prepared / "test.npz", tmp_path / "frames.npz",
                          params)
    return [*args, "--frames", str(frames)], out


def test_the_harness_times_the_frames_end_to_end_beside_the_model(tiny_project: Any,
                                                                  tmp_path: Path) -> None:
    folder = tmp_path / "device"
    device_code.ship(folder, ("harness",))
    script = folder / "harness.py"
    args, out = frames_args(tiny_project, tmp_path, script)
    completed = run_harness(script, args)
    assert completed.returncode == 0, completed.stderr
    result = validate_harness_result(read_result(out))
    timed = result["end_to_end"]
    assert sorted(timed["stages_ms"]) == sorted(harness_pipeline.STAGES)
    assert all(ms > 0 for ms in timed["stages_ms"].values())
    # The whole pipeline takes longer than the model alone, and its stages add up to it.
    assert timed["latency_ms"]["p50"] > result["latency_ms"]["p50"]
    assert sum(timed["stages_ms"].values()) == pytest.approx(timed["latency_ms"]["p50"],
                                                             rel=0.5)
    assert timed["runs"] >= 10 and timed["latency_ci95_ms"]["p50"] is not None
    # Lossless frames at the model's size: the same 40 images, the same predictions.
    assert timed["accuracy_samples"] == 40 and timed["frames"]["count"] == 40
    model_only = run_harness(script, [*args[:args.index("--frames")], "--accuracy-samples",
                                      "40"])
    assert model_only.returncode == 0
    assert timed["accuracy"] == read_result(out)["accuracy"]


def test_without_preprocess_in_the_package_the_model_numbers_stand_and_say_why(
        tiny_project: Any, tmp_path: Path) -> None:
    folder = tmp_path / "device"
    device_code.ship(folder, ("harness",))
    package = folder / device_code.SHIPPED_PACKAGE
    (package / "preprocess.py").unlink()
    script = folder / "harness.py"
    args, out = frames_args(tiny_project, tmp_path, script)
    completed = run_harness(script, args)
    assert completed.returncode == 0, completed.stderr
    result = validate_harness_result(read_result(out))
    assert result["status"] == "ok" and result["latency_ms"]["p50"] > 0
    assert result["end_to_end"] == {
        "error": f"FileNotFoundError: the device package has no preprocess.py "
                 f"({package / 'preprocess.py'})"}


GOOD_END_TO_END = {"runs": 12, "latency_ms": GOOD_RESULT["latency_ms"],
                   "latency_ci95_ms": {"p50": [0.9, 1.1], "p90": None},
                   "throughput_fps": 900.0, "accuracy": 0.9, "accuracy_samples": 40,
                   "stages_ms": {"decode": 0.5, "preprocess": 0.3, "infer": 0.2,
                                 "postprocess": 0.01}}


@pytest.mark.parametrize(("part", "message"), [
    ("slow", "harness result field 'end_to_end' is not an object"),
    ({"error": 3}, "harness result field 'end_to_end.error' is not a text"),
    ({**GOOD_END_TO_END, "accuracy": 1.5}, "device returned end_to_end.accuracy 1.5 outside "
                                           "[0, 1]"),
    ({**GOOD_END_TO_END, "runs": 0}, "device returned end_to_end.runs 0 outside [1, 100000]"),
    ({key: value for key, value in GOOD_END_TO_END.items() if key != "stages_ms"},
     "harness result field 'end_to_end.stages_ms' is missing or not a dict"),
    ({**GOOD_END_TO_END, "stages_ms": {"decode": 1.0}},
     "harness result field 'end_to_end.stages_ms' is not the milliseconds of decode, "
     "preprocess, infer, postprocess"),
    ({**GOOD_END_TO_END, "stages_ms": {**GOOD_END_TO_END["stages_ms"], "infer": -1.0}},
     "harness result field 'end_to_end.stages_ms' is not the milliseconds of decode, "
     "preprocess, infer, postprocess"),
    ({**GOOD_END_TO_END, "latency_ci95_ms": {"p50": [2.0, 1.0]}},
     "device returned latency_ci95_ms.p50 [2.0, 1.0]: not [low, high] with 0 <= low <= high"),
])
def test_the_protocol_refuses_an_impossible_end_to_end_part(part: Any, message: str) -> None:
    with pytest.raises(ValueError) as refused:
        validate_harness_result({**GOOD_RESULT, "end_to_end": part})
    assert str(refused.value) == message


def test_the_protocol_accepts_an_end_to_end_part_or_its_error() -> None:
    for part in (GOOD_END_TO_END, {"error": "ModuleNotFoundError: No module named 'PIL'"}):
        assert validate_harness_result(json.loads(json.dumps(
            {**GOOD_RESULT, "end_to_end": part})))["end_to_end"] == part


class StageClock:
    """A ``perf_counter_ns`` that moves only when a stage spends its known cost, so each
    stage's time is exactly its own and any stage that takes in its neighbour's differs.
    With ``scales``, the n-th frame through the pipeline (counted at its decode) costs
    ``scales[n]`` times every stage's cost (1 past the end): which frames were timed,
    recorded or scored then shows in the numbers."""

    def __init__(self, scales: tuple[int, ...] = ()) -> None:
        self.now = 0
        self.scales = scales
        self.frames = 0  # frames decoded so far

    def __call__(self) -> int:
        return self.now

    def spend(self, stage: str) -> None:
        if stage == "decode":
            self.frames += 1
        index = self.frames - 1
        self.now += STAGE_COSTS[stage] * (self.scales[index] if index < len(self.scales) else 1)


# Distinct costs (ns) whose pairwise sums are none of them: a stage timed with its
# neighbour's cost, or without its own, reads as no stage does.
STAGE_COSTS = {"decode": 2_000, "preprocess": 5_000, "infer": 11_000, "postprocess": 3_000}


class CostedLogits:
    """A runner's output whose conversion to an array (the first thing post-processing
    does: tensors.dequantize_output) costs the postprocess stage."""

    def __init__(self, clock: StageClock, label: int) -> None:
        self.clock, self.label = clock, label

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        self.clock.spend("postprocess")
        logits = np.zeros((1, 10), np.float32)
        logits[0, self.label] = 1.0
        return logits


class CostedPreprocess:
    """preprocess.py's two calls, each spending its stage's cost; the frame's first byte
    is carried through as the grey level the runner reads."""

    def __init__(self, clock: StageClock) -> None:
        self.clock = clock

    def decode_image(self, frame: bytes) -> int:
        self.clock.spend("decode")
        return frame[0]

    def to_model_input(self, image: int, height: int, width: int, color: str,
                       fit: str = "squash") -> np.ndarray:
        self.clock.spend("preprocess")
        return np.full((height, width, 1), image / 10, np.float32)


class CostedRunner(Echo):
    def __init__(self, clock: StageClock) -> None:
        self.clock = clock

    def infer(self, x: np.ndarray) -> Any:
        self.clock.spend("infer")
        return CostedLogits(self.clock, int(round(float(x.reshape(-1)[0]) * 10)))


GREY_SPEC = {"input": {"dtype": "float32", "shape": [1, 4, 4, 1], "quantization": None}}


def test_each_stage_is_timed_at_its_own_cost_and_not_its_neighbours(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Stages of known, distinct costs on a clock only they move: each stage reads its
    own cost exactly (a timer started a stage early, or stopped a stage late, adds a
    neighbour's cost), and a frame's stages add up to what the frame cost."""
    clock = StageClock()
    pipeline = harness_pipeline.Pipeline(CostedRunner(clock), GREY_SPEC, CostedPreprocess(clock))
    monkeypatch.setattr(harness_pipeline, "time", SimpleNamespace(perf_counter_ns=clock))
    assert pipeline(bytes([7])) == 7, "not recording: nothing kept"
    assert all(times == [] for times in pipeline.stage_ns.values())
    pipeline.recording = True
    assert [pipeline(bytes([grey])) for grey in (3, 9)] == [3, 9]
    assert pipeline.stage_ns == {stage: [cost, cost] for stage, cost in STAGE_COSTS.items()}
    assert clock.now == 3 * sum(STAGE_COSTS.values())


def costed_pipeline(monkeypatch: pytest.MonkeyPatch, clock: "StageClock") -> "StageClock":
    """The pipeline timed on ``clock`` alone, with pre-processing of known cost, over four
    one-byte frames labelled [1, 4, 0, 2] (the third is scored wrong)."""
    from tasks.device import timing

    fake_time = SimpleNamespace(perf_counter_ns=clock)
    monkeypatch.setattr(harness_pipeline, "time", fake_time)
    monkeypatch.setattr(timing, "time", fake_time)
    monkeypatch.setattr(harness_pipeline, "_preprocess_module", lambda: CostedPreprocess(clock))
    frames = [bytes([grey]) for grey in (1, 4, 8, 2)]
    monkeypatch.setattr(harness_pipeline, "load_frames",
                        lambda path: (frames, np.array([1, 4, 0, 2]),
                                      {"height": 4, "width": 4, "encoding": "png",
                                       "fit": "squash"}))
    return clock


# accuracy_samples: how many frames are scored (0: all; never more than there are).
@pytest.mark.parametrize(("accuracy_samples", "accuracy", "scored"),
                         [(4, 0.75, 4), (2, 1.0, 2), (0, 0.75, 4), (9, 0.75, 4)])
def test_end_to_end_reports_each_stage_at_its_own_cost_and_the_frame_at_their_sum(
        monkeypatch: pytest.MonkeyPatch, accuracy_samples: int, accuracy: float,
        scored: int) -> None:
    """end_to_end over a runner and pre-processing of known stage costs, timed on a clock
    only they move: the median of each stage is its cost, the frame's latency is the sum
    of the four, and the score is on the first ``accuracy_samples`` frames' labels."""
    clock = costed_pipeline(monkeypatch, StageClock())
    args = SimpleNamespace(frames="frames.npz", warmup_runs=3, warmup_seconds=0.0, runs=12,
                           seconds=0.0, max_seconds=0.01, interval_width=0.05,
                           accuracy_samples=accuracy_samples)
    result = harness_pipeline.end_to_end(CostedRunner(clock), GREY_SPEC, args)
    assert result["stages_ms"] == pytest.approx(
        {stage: cost / 1e6 for stage, cost in STAGE_COSTS.items()}, rel=1e-12, abs=0)
    frame_ms = sum(STAGE_COSTS.values()) / 1e6
    assert result["latency_ms"]["p50"] == pytest.approx(frame_ms, rel=1e-12, abs=0)
    assert result["latency_ms"]["p99"] == pytest.approx(frame_ms, rel=1e-12, abs=0)
    assert result["runs"] >= 12
    assert (result["accuracy"], result["accuracy_samples"]) == (accuracy, scored)


# Frame costs, as multiples of every stage's cost, in the order the frames go through:
# three warm-up frames (100x), the five timed ones, in an order where none of the first,
# last, mean or middle-by-position is the median (sorted 1 2 3 4 10: median 3, mean 4,
# p90 7.6, p99 9.76), then the four scored (1000x). One warm-up frame more or less shifts
# which five are timed, and the median of those reads 4.
WARMUP_SCALES, TIMED_SCALES, SCORED_SCALES = (100,) * 3, (1, 4, 10, 3, 2), (1000,) * 4


# The warm-up ends at its run count (3 runs, no seconds) or at its seconds (one run
# asked for, 6.3 ms: two 2.1 ms frames fall short, the third reaches it exactly, and
# "at least" stops there): three frames either way.
@pytest.mark.parametrize(("warmup_runs", "warmup_seconds"), [(3, 0.0), (1, 0.0063)])
def test_end_to_end_times_only_the_timed_frames_and_takes_each_stage_median_from_them(
        monkeypatch: pytest.MonkeyPatch, warmup_runs: int, warmup_seconds: float) -> None:
    """Frames of known, different costs: the warm-up ones and the scored ones are neither
    timed nor recorded (either would move every median), each stage reports the median
    of its own times over the timed frames (not their mean, nor the first or last), and
    the frame's percentiles are those of the timed frames' totals."""
    clock = costed_pipeline(monkeypatch,
                            StageClock(WARMUP_SCALES + TIMED_SCALES + SCORED_SCALES))
    # max_seconds 0: the timed run stops at its minimum of five runs.
    args = SimpleNamespace(frames="frames.npz", warmup_runs=warmup_runs,
                           warmup_seconds=warmup_seconds, runs=len(TIMED_SCALES), seconds=0.0,
                           max_seconds=0.0, interval_width=0.05, accuracy_samples=4)
    result = harness_pipeline.end_to_end(CostedRunner(clock), GREY_SPEC, args)

    assert clock.frames == len(WARMUP_SCALES + TIMED_SCALES + SCORED_SCALES)
    assert (result["runs"], result["sizing"]["stopped_by"]) == (5, "time cap")
    exact = {"rel": 1e-12, "abs": 0}
    assert result["stages_ms"] == pytest.approx(
        {stage: 3 * cost / 1e6 for stage, cost in STAGE_COSTS.items()}, **exact)
    frame_ms = sum(STAGE_COSTS.values()) / 1e6  # a 1x frame: 0.021 ms
    latency = result["latency_ms"]
    assert latency == pytest.approx(
        {"p50": 3 * frame_ms, "p90": 7.6 * frame_ms, "p99": 9.76 * frame_ms,
         "mean": 4 * frame_ms, "min": frame_ms, "max": 10 * frame_ms,
         "std": float(np.std(TIMED_SCALES)) * frame_ms}, **exact)
    # Every frame's stages add up to the frame: here the stages' medians to its median.
    assert sum(result["stages_ms"].values()) == pytest.approx(latency["p50"], **exact)
    assert result["timed_seconds"] == pytest.approx(sum(TIMED_SCALES) * frame_ms / 1e3, **exact)
    assert (result["accuracy"], result["accuracy_samples"]) == (0.75, 4)


def test_with_a_meter_the_frames_energy_is_measured_end_to_end(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """With an energy meter, end_to_end measures energy per frame: each window's step
    is one whole frame through the pipeline (the meter reading goes into ``energy``)."""
    clock = costed_pipeline(monkeypatch, StageClock())
    seen: list[Any] = []

    def energy_of(meter: Any, step: Any, args: Any) -> dict[str, Any]:
        seen.append(step(0))  # one frame, decoded end to end: its prediction
        return {"meter": {"name": meter}, "energy_mj": 4.5}

    monkeypatch.setattr(harness_pipeline, "energy_of", energy_of)
    args = SimpleNamespace(frames="frames.npz", warmup_runs=1, warmup_seconds=0.0, runs=3,
                           seconds=0.0, max_seconds=0.001, interval_width=0.05,
                           accuracy_samples=0)
    result = harness_pipeline.end_to_end(CostedRunner(clock), GREY_SPEC, args, meter="rapl")
    assert result["energy"] == {"meter": {"name": "rapl"}, "energy_mj": 4.5}
    assert seen == [1]  # frame 0 (grey 1) predicted as class 1
    assert "energy" not in harness_pipeline.end_to_end(CostedRunner(clock), GREY_SPEC, args)
