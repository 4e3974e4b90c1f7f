"""A firmware ELF run in ``qemu-system-arm`` and its results parsed.

The harness (``templates/harness.cc``) reads ``inputs.bin`` and writes ``results.txt`` in
the run folder through semihosting (``-semihosting-config enable=on,target=native``:
paths relative to qemu's working folder). Instructions are counted with ``-icount
shift=0``: the virtual clock advances exactly 1 ns per guest instruction, and the
harness reads SysTick, which qemu clocks from the board's 25 MHz system clock, so one
tick is exactly 40 instructions (measured by the harness on a loop of known length: the
``calibration`` line; a ratio that is not a whole number means icount is off). A count is
therefore deterministic (two runs give the same figures) and exact to one tick (40
instructions). DWT's cycle counter is not modelled by qemu, and a TCG plugin needs
``qemu-plugin.h``, which Debian's qemu packages do not ship.

The harness writes each image's whole output tensor, int8, whatever its shape (a
classifier's class scores, a detector's grid); what the values mean is decided here, on
the host, by the variant's kind of task with the one implementation every runtime's
outputs go through (de-quantising, decoding: a detector's boxes and NMS, scoring: its
mAP), never by code of the firmware's own.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from tasks.core import device_code
from tasks.core.accuracy import own_interval
from tasks.core.errors import StepError
from tasks.targets.firmware.build import Firmware

QEMU = "qemu-system-arm"
INPUTS, RESULTS = "inputs.bin", "results.txt"
RESULTS_VERSION = 1
# Ticks the calibration may be off a whole number of instructions per tick: the
# counter's reads add a few instructions to the loop's millions, so at most a tick.
CALIBRATION_SLACK_TICKS = 2


@dataclass(frozen=True)
class HarnessResults:
    """``results.txt`` as the harness wrote it (raw int8 scores, SysTick ticks)."""

    input_bytes: int
    output_count: int
    output_scale: float
    output_zero_point: int
    declared_arena_bytes: int
    arena_buffer_bytes: int
    arena_needed_bytes: int
    arena_used_bytes: int
    calibration_instructions: int
    calibration_ticks: int
    ticks: tuple[int, ...]
    scores: tuple[tuple[int, ...], ...]

    @property
    def instructions_per_tick(self) -> int:
        ratio = self.calibration_instructions / max(self.calibration_ticks, 1)
        whole = round(ratio)
        if whole < 1 or abs(self.calibration_ticks * whole - self.calibration_instructions) > \
                CALIBRATION_SLACK_TICKS * whole:
            raise StepError(f"firmware: SysTick counted {self.calibration_ticks} ticks for "
                            f"{self.calibration_instructions} instructions ({ratio:.3f} per "
                            f"tick, not a whole number): qemu must run with -icount shift=0")
        return whole


@dataclass(frozen=True)
class FirmwareRun:
    """One run of a firmware on the emulated board: per image, the model's whole output
    tensor (``scores``: int8 as the model wrote them, flattened, whatever its shape),
    its prediction as the variant's kind decodes it (a class index, a detector's boxes:
    :func:`run_firmware`) and instructions per inference; the firmware's sizes; the
    kind's score (``accuracy``: an accuracy, a mAP@0.5) when labels were given, with the
    kind's own interval where it is not the binomial one (``accuracy_interval``, a
    detector's bootstrap over images). The arena on the target: ``arena_needed_bytes``, the smallest
    (to 16 bytes, from a 16-byte aligned buffer) in which the interpreter allocates the
    model, found there by bisection, and in which the images ran; ``arena_used_bytes``,
    what ``arena_used_bytes()`` says of that interpreter (a few bytes less: it leaves out
    the alignment padding at the arena's ends)."""

    core: str
    machine: str
    scores: tuple[tuple[int, ...], ...]
    output_scale: float
    output_zero_point: int
    predictions: tuple[Any, ...]
    accuracy: float | None
    arena_needed_bytes: int
    arena_used_bytes: int
    declared_arena_bytes: int
    instructions: tuple[int, ...]
    instructions_per_tick: int
    text_bytes: int
    data_bytes: int
    bss_bytes: int
    wall_seconds: float
    accuracy_interval: list[float] | None = None

    @property
    def images(self) -> int:
        return len(self.scores)

    def outputs(self, output_spec: Mapping[str, Any]) -> np.ndarray:
        """Each image's output de-quantised by the variant's output spec (its scale and
        zero point, as the host reads them from the model), with the host runtimes' own
        function (``tasks/device/tensors.py``'s ``dequantize_output``): ``(N, K)`` float32,
        bit for bit what the host makes of the same int8 values."""
        tensors = device_code.load("tensors")
        return np.stack([tensors.dequantize_output(np.asarray(row, np.int8), output_spec)
                         for row in self.scores]) if self.scores else np.zeros((0, 0), np.float32)

    @property
    def instructions_per_inference(self) -> int:
        """The median over the images (an int8 model's count varies little by image)."""
        return int(statistics.median(self.instructions))

    @property
    def flash_bytes(self) -> int:
        return self.text_bytes + self.data_bytes

    @property
    def declared_arena_fits(self) -> bool:
        """Whether the bundle's ``kTensorArenaSize`` (measured on the host) allocates the
        model on the target (from a 16-byte aligned buffer)."""
        return self.declared_arena_bytes >= self.arena_needed_bytes


def require_qemu() -> None:
    if shutil.which(QEMU) is None:
        raise StepError(f"firmware: {QEMU} not found: install Debian's qemu-system-arm")


def qemu_command(firmware: Path, machine: str) -> list[str]:
    """The emulator's command line (run in the folder of inputs.bin)."""
    return [QEMU, "-M", machine, "-nographic", "-monitor", "none",
            "-semihosting-config", "enable=on,target=native",
            # One instruction per virtual ns, and idle time skipped, not waited: the
            # counts do not depend on the host's speed or load.
            "-icount", "shift=0,align=off,sleep=off",
            "-kernel", str(firmware)]


def _field(lines: dict[str, list[str]], name: str, count: int = 1) -> list[int]:
    values = lines.get(name)
    if values is None or len(values) != count:
        raise StepError(f"firmware: results.txt has no line '{name}' with {count} value(s)")
    return [int(value) for value in values]


def parse_results(text: str) -> HarnessResults:
    """``results.txt``; a :class:`StepError` with the harness's own words when it failed,
    or naming what is missing when it stopped early."""
    lines: dict[str, list[str]] = {}
    images: list[list[int]] = []
    for line in text.splitlines():
        word, _, rest = line.partition(" ")
        if word == "error":
            raise StepError(f"firmware: the harness failed: {rest}")
        if word == "image":
            images.append([int(value) for value in rest.split()])
        elif word:
            lines[word] = rest.split()
    if _field(lines, "edgeflow-firmware") != [RESULTS_VERSION]:
        raise StepError(f"firmware: results.txt is not version {RESULTS_VERSION} of the harness's")
    done = _field(lines, "done")[0]
    output_count = _field(lines, "output_count")[0]
    if done != len(images) or [image[0] for image in images] != list(range(done)) or any(
            len(image) != 2 + output_count for image in images):
        raise StepError(f"firmware: results.txt holds {len(images)} well-formed image lines "
                        f"for {done} images")
    scale, zero_point = _field(lines, "output_quantization", 2)
    calibration = _field(lines, "calibration", 2)
    return HarnessResults(
        input_bytes=_field(lines, "input_bytes")[0], output_count=output_count,
        output_scale=scale / 1e9, output_zero_point=zero_point,
        declared_arena_bytes=_field(lines, "declared_arena")[0],
        arena_buffer_bytes=_field(lines, "arena_size")[0],
        arena_needed_bytes=_field(lines, "arena_needed")[0],
        arena_used_bytes=_field(lines, "arena_used")[0],
        calibration_instructions=calibration[0], calibration_ticks=calibration[1],
        ticks=tuple(image[1] for image in images),
        scores=tuple(tuple(image[2:]) for image in images))


def check_output_quantization(results: HarnessResults, spec: Mapping[str, Any]) -> None:
    """The output tensor the firmware ran is the one the variant's spec describes: as many
    values as its shape holds (where the spec says it) and the same scale and zero point
    (the harness writes the scale to 1e-9); else a :class:`StepError` naming both."""
    output = spec.get("output") or {}
    shape = output.get("shape")
    if shape and int(np.prod([int(size) for size in shape])) != results.output_count:
        raise StepError(f"firmware: the model's output holds {results.output_count} values; the "
                        f"variant's spec says shape {list(shape)}")
    quantization = output.get("quantization")
    if not quantization:
        return
    scale, zero_point = float(quantization["scale"]), int(quantization["zero_point"])
    if zero_point != results.output_zero_point or abs(scale - results.output_scale) > 1e-9:
        raise StepError(f"firmware: the model's output quantisation on the target is scale "
                        f"{results.output_scale:.9g}, zero point {results.output_zero_point}; "
                        f"the variant's spec says {scale:.9g}, {zero_point}")


def run_firmware(firmware: Firmware, machine: str, inputs: np.ndarray, work: Path,
                 labels: np.ndarray | None = None, timeout: float = 300.0,
                 spec: Mapping[str, Any] | None = None) -> FirmwareRun:
    """Run ``firmware`` on ``machine`` over ``inputs`` (N images, each the model's input
    tensor as int8, already quantised) in the folder ``work``. Each image's output is
    de-quantised by ``spec`` (the variant's: :meth:`FirmwareRun.outputs`, checked
    against the quantisation the firmware reports) and decoded by the spec's kind of
    task, as every host runtime's is (classification: the argmax; a detector: boxes
    after NMS); without a spec, the argmax of the raw values (the same class: de-quantising
    is monotonic). Scored against ``labels`` (the test split's) when given. A
    :class:`StepError` when qemu fails, runs past ``timeout`` seconds, or the harness
    reports an error."""
    require_qemu()
    batch = np.ascontiguousarray(inputs, dtype=np.int8).reshape(len(inputs), -1)
    work.mkdir(parents=True, exist_ok=True)
    (work / INPUTS).write_bytes(batch.tobytes())
    (work / RESULTS).unlink(missing_ok=True)
    started = time.monotonic()
    try:
        ran = subprocess.run(qemu_command(firmware.elf, machine), cwd=work, capture_output=True,
                             text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise StepError(f"firmware: {QEMU} -M {machine} ran past {timeout:g} s on "
                        f"{len(batch)} images") from None
    seconds = time.monotonic() - started
    if not (work / RESULTS).is_file():
        detail = " ".join((ran.stdout + ran.stderr).split())[:300]
        raise StepError(f"firmware: {QEMU} exited {ran.returncode} and the harness wrote no "
                        f"results: {detail or 'no output'}")
    results = parse_results((work / RESULTS).read_text(encoding="utf-8"))
    if ran.returncode != 0:
        raise StepError(f"firmware: {QEMU} exited {ran.returncode}: "
                        f"{' '.join((ran.stdout + ran.stderr).split())[:300]}")
    if results.input_bytes != batch.shape[1] or len(results.scores) != len(batch):
        raise StepError(f"firmware: the model takes {results.input_bytes} bytes per image and "
                        f"ran {len(results.scores)} images; {len(batch)} of {batch.shape[1]} "
                        f"bytes were given")
    kind = device_code.task_kinds().of_spec(spec or {})
    if spec is not None:
        check_output_quantization(results, spec)
    per_tick = results.instructions_per_tick
    run = FirmwareRun(
        core=firmware.core, machine=machine, scores=results.scores,
        output_scale=results.output_scale, output_zero_point=results.output_zero_point,
        predictions=(), accuracy=None,
        arena_needed_bytes=results.arena_needed_bytes, arena_used_bytes=results.arena_used_bytes,
        declared_arena_bytes=results.declared_arena_bytes,
        instructions=tuple(ticks * per_tick for ticks in results.ticks),
        instructions_per_tick=per_tick, text_bytes=firmware.text_bytes,
        data_bytes=firmware.data_bytes, bss_bytes=firmware.bss_bytes, wall_seconds=seconds)
    rows = (run.outputs(spec.get("output") or {}) if spec is not None
            else [np.asarray(row) for row in results.scores])
    predictions = tuple(kind.decode(row, spec) for row in rows)
    if labels is None:
        return replace(run, predictions=predictions)
    per_sample = kind.per_sample(list(predictions), list(labels))
    return replace(run, predictions=predictions, accuracy=float(kind.metric(per_sample)),
                   accuracy_interval=own_interval(kind, per_sample))
