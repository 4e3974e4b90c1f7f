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
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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
    """One run of a firmware on the emulated board: per image, the output scores (int8 as
    the model wrote them) and instructions per inference; the firmware's sizes; accuracy
    when labels were given. The arena on the target: ``arena_needed_bytes``, the smallest
    (to 16 bytes, from a 16-byte aligned buffer) in which the interpreter allocates the
    model, found there by bisection, and in which the images ran; ``arena_used_bytes``,
    what ``arena_used_bytes()`` says of that interpreter (a few bytes less: it leaves out
    the alignment padding at the arena's ends)."""

    core: str
    machine: str
    scores: tuple[tuple[int, ...], ...]
    output_scale: float
    output_zero_point: int
    predictions: tuple[int, ...]
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

    @property
    def images(self) -> int:
        return len(self.scores)

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


def run_firmware(firmware: Firmware, machine: str, inputs: np.ndarray, work: Path,
                 labels: np.ndarray | None = None, timeout: float = 300.0) -> FirmwareRun:
    """Run ``firmware`` on ``machine`` over ``inputs`` (N images, each the model's input
    tensor as int8, already quantised) in the folder ``work``; accuracy against
    ``labels`` (class indices) when given. A :class:`StepError` when qemu fails, runs
    past ``timeout`` seconds, or the harness reports an error."""
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
    predictions = tuple(int(np.argmax(row)) for row in results.scores)
    accuracy = None if labels is None else float(np.mean(np.asarray(predictions) ==
                                                         np.asarray(labels)))
    per_tick = results.instructions_per_tick
    return FirmwareRun(
        core=firmware.core, machine=machine, scores=results.scores,
        output_scale=results.output_scale, output_zero_point=results.output_zero_point,
        predictions=predictions, accuracy=accuracy,
        arena_needed_bytes=results.arena_needed_bytes, arena_used_bytes=results.arena_used_bytes,
        declared_arena_bytes=results.declared_arena_bytes,
        instructions=tuple(ticks * per_tick for ticks in results.ticks),
        instructions_per_tick=per_tick, text_bytes=firmware.text_bytes,
        data_bytes=firmware.data_bytes, bss_bytes=firmware.bss_bytes, wall_seconds=seconds)
