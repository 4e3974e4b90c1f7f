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
    accuracy: float
    accuracy_samples: int | None = None  # absent from results of older harnesses
    finished_at: JsonValue = None
    status: Literal["ok"]
    error: JsonValue = None


class HarnessNotOk(_HarnessStart):
    """A harness that failed, or skipped what the device cannot run as declared."""

    status: Literal["failed", "skipped"]
    error: str
    traceback: JsonValue = None


HarnessResult = Annotated[HarnessOk | HarnessNotOk, Field(discriminator="status")]


class McuFit(Contract):
    """A ``tflm`` variant against a microcontroller's flash and RAM (capacity and the
    budget left by its margins); accuracy is the host TFLite Micro interpreter's."""

    model_bytes: int
    arena_bytes: int
    flash_bytes: int
    ram_bytes: int
    flash_budget_bytes: int
    ram_budget_bytes: int
    accuracy: float
    accuracy_samples: int
    ops: list[str]


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
