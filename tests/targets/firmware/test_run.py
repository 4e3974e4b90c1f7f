"""tasks.targets.firmware.run's reading of the harness's results.txt (no emulator): the
instructions per tick from the calibration, the harness's own error, an early stop; qemu's
command line; and, with a stand-in for qemu, each image's output de-quantised by the
variant's spec, decoded and scored by its kind of task (a detector's boxes and mAP with
its bootstrap interval). Running for real: test_measure.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tasks.core.errors import StepError
from tasks.targets.firmware.run import parse_results, qemu_command

RESULTS = """\
edgeflow-firmware 1
calibration 4000000 100000
input_bytes 256
output_count 3
output_quantization 36534600 11
declared_arena 4672
arena_size 2097152
arena_needed 3856
arena_used 3848
image 0 16080 -52 100 39
image 1 16081 -28 61 45
done 2
"""


def test_results_hold_scores_ticks_arena_and_forty_instructions_per_tick() -> None:
    results = parse_results(RESULTS)
    assert results.scores == ((-52, 100, 39), (-28, 61, 45))
    assert results.ticks == (16080, 16081) and results.instructions_per_tick == 40
    assert (results.arena_needed_bytes, results.arena_used_bytes) == (3856, 3848)
    assert results.declared_arena_bytes == 4672 and results.arena_buffer_bytes == 2097152
    assert results.output_scale == pytest.approx(0.0365346) and results.output_zero_point == 11


def test_the_harness_error_is_reported_in_its_words() -> None:
    with pytest.raises(StepError, match="the harness failed: allocate: the tensors do not fit"):
        parse_results(RESULTS.replace("arena_used 3848\n", "error allocate: the tensors do not "
                                      "fit the arena\n"))


@pytest.mark.parametrize("text, message", [
    (RESULTS.replace("done 2\n", ""), "no line 'done'"),
    (RESULTS.replace("done 2", "done 3"), "2 well-formed image lines for 3 images"),
    (RESULTS.replace("image 1 16081 -28 61 45", "image 1 16081 -28 61"), "well-formed"),
    (RESULTS.replace("edgeflow-firmware 1", "edgeflow-firmware 2"), "not version 1"),
])
def test_a_run_that_stopped_early_or_wrote_another_format_is_refused(text: str,
                                                                     message: str) -> None:
    with pytest.raises(StepError, match=message):
        parse_results(text)


def test_a_clock_that_is_not_a_whole_number_of_instructions_means_icount_is_off() -> None:
    results = parse_results(RESULTS.replace("calibration 4000000 100000",
                                            "calibration 4000000 97000"))
    with pytest.raises(StepError, match=r"97000 ticks for 4000000 instructions \(41.237 per "
                                        r"tick, not a whole number.*-icount shift=0"):
        results.instructions_per_tick


def test_qemu_counts_instructions_and_serves_semihosting() -> None:
    command = qemu_command(Path("/x/firmware.elf"), "mps2-an386")
    assert command[:3] == ["qemu-system-arm", "-M", "mps2-an386"]
    assert "shift=0,align=off,sleep=off" in command and "enable=on,target=native" in command
    assert command[-2:] == ["-kernel", "/x/firmware.elf"]


# ------------------------------------------ the outputs, decoded and scored on the host

# A detector's grid output (3x3 cells of objectness, box and 2 class logits), int8 with
# its quantisation as a variant's spec records it.
GRID_SPEC = {"task": "detection", "detection": {"grid": 3, "classes": 2},
             "input": {"shape": [1, 4, 4, 1], "dtype": "int8",
                       "quantization": {"scale": 0.00392157, "zero_point": -128}},
             "output": {"shape": [1, 3, 3, 7], "dtype": "int8",
                        "quantization": {"scale": 0.0625, "zero_point": -3}}}
CLASS_SPEC = {"input": GRID_SPEC["input"],
              "output": {"shape": [1, 3], "dtype": "int8",
                         "quantization": {"scale": 0.0365346, "zero_point": 11}}}


def fake_firmware(tmp_path: Path) -> Any:
    from tasks.targets.firmware.build import Firmware

    return Firmware(tmp_path / "firmware.elf", "cortex-m4", 70_000, 4, 8, 2_097_152, 4_672)


def results_text(raw: np.ndarray, spec: dict[str, Any], input_bytes: int = 16) -> str:
    """The harness's results.txt for images whose outputs are ``raw`` (N, K) int8."""
    quantization = spec["output"]["quantization"]
    lines = ["edgeflow-firmware 1", "calibration 4000000 100000", f"input_bytes {input_bytes}",
             f"output_count {raw.shape[1]}",
             f"output_quantization {int(quantization['scale'] * 1e9 + 0.5)} "
             f"{quantization['zero_point']}",
             "declared_arena 4672", "arena_size 2097152", "arena_needed 3856", "arena_used 3848"]
    lines += [f"image {index} 16080 " + " ".join(str(int(value)) for value in row)
              for index, row in enumerate(raw)]
    return "\n".join([*lines, f"done {len(raw)}", ""])


def run_on_fake_qemu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, raw: np.ndarray,
                     spec: dict[str, Any] | None, labels: Any, written: dict[str, Any]) -> Any:
    """run_firmware where qemu is a stand-in writing the results of ``raw`` outputs (the
    quantisation of ``written``'s spec)."""
    import subprocess

    from tasks.targets.firmware import run as run_module

    def qemu(command: list[str], cwd: Path, **_: Any) -> Any:
        (Path(cwd) / "results.txt").write_text(results_text(raw, written), encoding="utf-8")
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(run_module, "require_qemu", lambda: None)
    monkeypatch.setattr(run_module.subprocess, "run", qemu)
    return run_module.run_firmware(fake_firmware(tmp_path), "mps2-an386",
                                   np.zeros((len(raw), 16), np.int8), tmp_path / "run",
                                   labels, spec=spec)


def scenes(raw: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Each image's boxes as the detection kind decodes ``raw`` (de-quantised), and
    labels that are those boxes on every other image and moved off them on the rest, padded
    with class -1 rows as a prepared split is."""
    from tasks.device import tensors
    from tasks.device.kinds import detection

    decoded = [detection.KIND.decode(tensors.dequantize_output(row, GRID_SPEC["output"]),
                                     GRID_SPEC) for row in raw]
    labels = np.full((len(raw), 9, 5), -1.0)
    for index, boxes in enumerate(decoded):
        truth = np.column_stack([boxes[:, 0], boxes[:, 2:6]])
        if index % 2:
            truth[:, 1:] = np.clip(truth[:, 1:] + 0.4, 0.0, 1.0)
        labels[index, :len(truth)] = truth
    return decoded, labels


def test_a_detectors_outputs_are_decoded_and_scored_as_the_kind_does_with_its_interval(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The firmware's output tensors de-quantised by the spec (the host's function), decoded
    into boxes and scored by the detection kind: mAP@0.5 and its bootstrap interval over
    the images, exactly those of the same records, not a binomial interval."""
    from tasks.core.accuracy import wilson_interval
    from tasks.device import tensors
    from tasks.device.kinds import detection

    raw = np.random.default_rng(5).integers(-128, 128, (30, 63)).astype(np.int8)
    decoded, labels = scenes(raw)
    run = run_on_fake_qemu(monkeypatch, tmp_path, raw, GRID_SPEC, labels, GRID_SPEC)
    expected = np.stack([tensors.dequantize_output(row, GRID_SPEC["output"]) for row in raw])
    assert run.outputs(GRID_SPEC["output"]).dtype == np.float32
    assert np.array_equal(run.outputs(GRID_SPEC["output"]), expected)
    assert all(np.array_equal(found, boxes) for found, boxes in zip(run.predictions, decoded))
    records = detection.KIND.per_sample(decoded, labels)
    assert run.accuracy == detection.KIND.metric(records)
    assert 0.2 < run.accuracy < 0.9  # half the images' boxes are found
    assert run.accuracy_interval == [float(bound) for bound in detection.KIND.interval(records)]
    binomial = wilson_interval(round(run.accuracy * 30), 30)
    assert run.accuracy_interval != pytest.approx(list(binomial), abs=1e-3)


def test_a_classifiers_outputs_score_its_accuracy_and_record_no_interval_of_their_own(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    raw = np.asarray([[-52, 100, 39], [-28, 61, 45], [90, 1, 2], [0, 0, 5]], np.int8)
    labels = np.asarray([1, 2, 0, 2])
    for spec in (CLASS_SPEC, None):
        run = run_on_fake_qemu(monkeypatch, tmp_path, raw, spec, labels, CLASS_SPEC)
        assert run.predictions == (1, 1, 0, 2) and run.accuracy == 0.75
        assert run.accuracy_interval is None  # the reader's binomial one is the kind's own


@pytest.mark.parametrize(("written", "message"), [
    ({**GRID_SPEC, "output": {**GRID_SPEC["output"], "quantization": {
        "scale": 0.0626, "zero_point": -3}}}, r"scale 0.0626, zero point -3; the variant's spec "
                                             r"says 0.0625, -3"),
    ({**GRID_SPEC, "output": {**GRID_SPEC["output"], "quantization": {
        "scale": 0.0625, "zero_point": -4}}}, r"zero point -4; the variant's spec says 0.0625, -3"),
])
def test_an_output_quantised_otherwise_than_the_spec_says_is_refused(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, written: dict[str, Any],
        message: str) -> None:
    raw = np.zeros((2, 63), np.int8)
    with pytest.raises(StepError, match=message):
        run_on_fake_qemu(monkeypatch, tmp_path, raw, GRID_SPEC, None, written)


def test_an_output_of_another_size_than_the_spec_says_is_refused(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(StepError, match=r"output holds 62 values; the variant's spec says "
                                        r"shape \[1, 3, 3, 7\]"):
        run_on_fake_qemu(monkeypatch, tmp_path, np.zeros((2, 62), np.int8), GRID_SPEC, None,
                         GRID_SPEC)
