"""Contract of ``results/<device>/<variant>.json``: written by benchmark, read by select
and track (and the benchmarks/ scripts).

One :class:`ResultRecord` per (variant, device): the variant's identity, the device's
facts, the outcome (``status``, ``error``) and what was measured: the harness result a
device returned (:data:`HarnessResult`) or, for a microcontroller, the fit check
(:class:`McuFit`).

A harness result was checked by the device protocol before it was written
(:func:`tasks.farm.protocol.validate_harness_result`: types, ranges, exact messages for
untrusted input); this contract says what the steps after benchmark rely on in a stored
one. What the protocol leaves unchecked (host facts, the runtime's own strings, newer
fields) is typed as any JSON value: the contract is never stricter than the protocol.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, JsonValue, Strict

from tasks.core.contracts import Contract, OpenContract, read_contract, write_contract

class ResultStatus(StrEnum):
    """How one (variant, device) result ended (a :class:`ResultRecord`'s ``status``)."""

    OK = "ok"              # measured
    FAILED = "failed"      # the harness or the device failed: ``error`` says why
    SKIPPED = "skipped"    # the device cannot run it, or convert could not produce it
    REJECTED = "rejected"  # convert rejected it: too far from its model


# A status read from a file is a string: the enum is checked by value (strict elsewhere).
Status = Annotated[ResultStatus, Strict(False)]

# A device fact (a host fact from the probe, ``runtime.<name>`` versions, MCU tags):
# flat, because facts become MLflow tags.
Fact = str | int | float | bool | None


class Latency(OpenContract):
    """Milliseconds per batch-1 inference over the timed runs."""

    p50: float
    p90: float
    p99: float
    mean: float
    std: float
    min: float
    max: float


class _HarnessStart(OpenContract):
    """What the harness writes first in every result (its protocol version, what was
    asked, the host), in its order."""

    protocol: JsonValue = None
    runtime_requested: JsonValue = None
    host: JsonValue = None
    started_at: JsonValue = None


class HarnessOk(_HarnessStart):
    """A measurement: load and first-inference time, the latency distribution,
    throughput, memory, and accuracy on ``accuracy_samples`` test images."""

    runtime: dict[str, JsonValue]  # name, version, requested, accelerator, precisions
    threads: JsonValue = None
    load_ms: float
    first_inference_ms: float
    warmup: JsonValue = None
    runs: int
    timed_seconds: JsonValue = None
    latency_ms: Latency
    # Distribution-free 95% intervals of p50 and p90, [low, high] ms (null: too few runs);
    # how the run was sized; the raw latencies' file beside the result and their count;
    # the device's conditions before and after, and what changed. Absent from results
    # of older harnesses.
    latency_ci95_ms: dict[str, list[float] | None] | None = None
    sizing: JsonValue = None
    latencies: dict[str, JsonValue] | None = None
    conditions: JsonValue = None
    throughput_fps: float
    rss_before_load_mb: JsonValue = None
    peak_rss_mb: float
    # The kind of task that scored it (absent from older harnesses: classification).
    task: str | None = None
    accuracy: float
    accuracy_samples: int | None = None  # absent from results of older harnesses
    # The kind of task's 95% interval of ``accuracy`` and its further measures (mAP@0.5:
    # 0.95, per-class AP), from the per-sample results on the device; absent from results
    # of older harnesses (the interval is then the binomial one of the samples).
    accuracy_interval: list[float] | None = None
    task_scores: dict[str, JsonValue] | None = None
    finished_at: JsonValue = None
    status: Literal["ok"]
    error: JsonValue = None


class HarnessNotOk(_HarnessStart):
    """A harness that failed, or skipped what the device cannot run as declared."""

    status: Literal["failed", "skipped"]
    error: str
    traceback: JsonValue = None


HarnessResult = Annotated[HarnessOk | HarnessNotOk, Field(discriminator="status")]


class McuOnTarget(Contract):
    """A ``tflm`` variant's firmware run on the device's core under emulation (farm.yaml
    ``target``): accuracy over the test images on the target build, the arena it needs
    there (the smallest that allocates, to 16 bytes) and what ``arena_used_bytes()``
    says, the firmware's flash (text + data), instructions per inference (the median,
    exact to ``instruction_resolution``), and the latency *estimated* from them:
    ``instructions_per_inference * cpi / (clock_mhz * 1000)`` ms. Never a measured
    latency: no caches, wait states or flash latency are modelled. ``sources_sha256``
    and ``compiler`` say what the firmware was built from."""

    core: str
    board: str
    accuracy: float
    accuracy_samples: int
    arena_bytes: int
    arena_used_bytes: int
    firmware_text_bytes: int
    firmware_data_bytes: int
    instructions_per_inference: int
    instruction_resolution: int
    cpi: float
    clock_mhz: float
    estimated_latency_ms: float
    sources_sha256: str
    compiler: str
    # The kind's own 95% interval of ``accuracy`` over the images the target ran, where it
    # is not the binomial one (a detector's bootstrap over images); absent otherwise.
    accuracy_interval: list[float] | None = None

    @property
    def firmware_flash_bytes(self) -> int:
        return self.firmware_text_bytes + self.firmware_data_bytes


class McuFit(Contract):
    """A ``tflm`` variant against a microcontroller's flash and RAM (capacity and the
    budget left by its margins). ``model_bytes``, ``arena_bytes`` and ``accuracy`` are
    the host TFLite Micro interpreter's; ``target``, where the device's core is emulated,
    the firmware's on that core, and then what the fit check and the accuracy use
    (:attr:`checked_flash_bytes`, :attr:`checked_arena_bytes`); ``not_emulated`` says
    why a device has none (absent from older records)."""

    model_bytes: int
    arena_bytes: int
    flash_bytes: int
    ram_bytes: int
    flash_budget_bytes: int
    ram_budget_bytes: int
    accuracy: float
    accuracy_samples: int
    ops: list[str]
    target: McuOnTarget | None = None
    not_emulated: str | None = None
    # The host run's interval of ``accuracy``, as :attr:`McuOnTarget.accuracy_interval`.
    accuracy_interval: list[float] | None = None

    @property
    def checked_flash_bytes(self) -> int:
        """What must fit the flash budget: the target's firmware (text + data), else the
        model alone (the margin stands for the firmware)."""
        return self.target.firmware_flash_bytes if self.target else self.model_bytes

    @property
    def checked_arena_bytes(self) -> int:
        """What must fit the RAM budget: the arena the target needs, else the host's."""
        return self.target.arena_bytes if self.target else self.arena_bytes

    @property
    def measured_accuracy(self) -> tuple[float, int]:
        """(accuracy, test images): the target's, else the host interpreter's."""
        if self.target:
            return self.target.accuracy, self.target.accuracy_samples
        return self.accuracy, self.accuracy_samples

    @property
    def measured_interval(self) -> list[float] | None:
        """The kind's own interval of :attr:`measured_accuracy` where one was recorded
        (a detector's bootstrap), else None: the reader's binomial one applies."""
        return self.target.accuracy_interval if self.target else self.accuracy_interval


class ResultRecord(Contract):
    """One (variant, device) result; ``status`` is a :class:`ResultStatus` (``error`` says
    why a result is not ``ok``)."""

    variant: str
    device: str
    format: str
    precision: str
    source: str
    runtime: str
    size_bytes: int | None
    sha256: str | None
    declared_execution_precision: str | None = None  # absent from older records
    threads: int | None  # None on a microcontroller
    device_facts: dict[str, Fact]
    device_run_dir: str | None = None  # where the run's files stay; absent for an MCU
    # A board farm.yaml says is emulated (its ``emulation``): true, and how. Absent on a
    # physical board (and in older records): its timings are not the hardware's.
    emulated: bool | None = None
    emulation: str | None = None
    status: Status
    error: str | None
    harness: HarnessResult | None = None
    mcu: McuFit | None = None

    @property
    def measured(self) -> HarnessOk | McuFit | None:
        """What was measured: the fit check of a microcontroller, else the harness result
        when it measured (None for a result that is not ``ok``)."""
        if self.mcu is not None:
            return self.mcu
        return self.harness if isinstance(self.harness, HarnessOk) else None


def write_result(path: Path, record: ResultRecord) -> Path:
    return write_contract(path, record)


def read_result(path: Path) -> ResultRecord:
    return read_contract(path, ResultRecord, keys=("variant", "device", "status"),
                         written_by="benchmark")
