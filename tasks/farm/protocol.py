"""The device protocol: what edgeflow and the harness on a board agree on, and the checks
of what a board sends back.

Agreed: the largest document read from a device (:data:`MAX_RESULT_BYTES`), the lock file
that lets one benchmark (or setup) at a time use a device (:data:`LOCK_NAME`, waited for
with ``flock -E`` :data:`LOCK_BUSY_EXIT`), and the exit statuses of a harness stopped by
its time limit (:data:`HARNESS_TIMED_OUT`).

Checked: a device is not trusted. Its JSON is size-limited and must be an object of
finite numbers (:func:`parse_untrusted_json`); a probe must be flat named facts
(:func:`validate_probe`); a harness result must have the fields the report relies on,
of their types, and an ``ok`` one possible numbers that its own raw data give: the
latency statistics recomputed from its raw latencies, each accuracy a whole number of
correct images out of its sample count (:func:`validate_harness_result`).
Each check raises ValueError naming the first problem, which becomes the reason the
device or the variant failed. What a stored result then guarantees to the steps after
benchmark is :mod:`tasks.core.contracts.results`.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from tasks.core import device_code
from tasks.farm.transports import ON_DEVICE_TIMEOUT_EXITS
from tasks.farm.untrusted import contained_strings

MAX_RESULT_BYTES = 1 << 20
LOCK_NAME = ".benchmark.lock"
LOCK_BUSY_EXIT = 75  # EX_TEMPFAIL: flock's exit status when the lock was not taken in time
HARNESS_TIMED_OUT = ON_DEVICE_TIMEOUT_EXITS
REQUIRED_OK_FIELDS = {"latency_ms": dict, "throughput_fps": float, "accuracy": float,
                      "peak_rss_mb": float, "load_ms": float, "first_inference_ms": float,
                      "runs": int, "accuracy_samples": int, "runtime": dict}
FACT_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")  # facts become MLflow tag names
# skipped: the device cannot run the variant's execution precision natively.
HARNESS_STATUSES = ("ok", "failed", "skipped")
LATENCY_FIELDS = ("p50", "p90", "p99", "mean", "std", "min", "max")
MAX_RUNS = 100_000  # the harness's own cap (tasks/device/timing.py)
INTERVAL_FIELDS = ("p50", "p90")  # the percentiles a harness gives 95% intervals of
MAX_CONDITION_CHANGES = 20
LATENCY_ORDER = ("min", "p50", "p90", "p99", "max")
# How far a stated statistic may be from the one recomputed here from the raw latencies:
# the board's NumPy may sum in another order (a last-digit difference), never more.
RECOMPUTED_TOLERANCE = 1e-6
# How far accuracy x samples may be from a whole count (float rounding of correct / n).
WHOLE_COUNT_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Range:
    """The values a measurement can take: from ``low`` (excluded when ``low_open``) to
    ``high`` (included)."""

    low: float
    high: float = math.inf
    low_open: bool = False

    def __contains__(self, value: float) -> bool:
        return (value > self.low if self.low_open else value >= self.low) and value <= self.high

    def __str__(self) -> str:
        high = "inf)" if self.high == math.inf else f"{self.high:g}]"
        return f"{'(' if self.low_open else '['}{self.low:g}, {high}"


NOT_NEGATIVE = Range(0.0)
# A device is checked for what its numbers can be, not just their type: a board that
# claims accuracy 7.5 or -5 ms must not be recommended. Keys name nested fields by dots.
OK_RANGES: dict[str, Range] = {
    "accuracy": Range(0.0, 1.0), "throughput_fps": Range(0.0, low_open=True),
    "peak_rss_mb": NOT_NEGATIVE, "load_ms": NOT_NEGATIVE, "first_inference_ms": NOT_NEGATIVE,
    # The harness times at most MAX_RUNS runs (their raw latencies must fit the result).
    "runs": Range(1, MAX_RUNS), "accuracy_samples": Range(1),  # no image, no accuracy
    **{f"latency_ms.{key}": NOT_NEGATIVE for key in LATENCY_FIELDS}}
# The end-to-end part of an ok result (tasks/device/pipeline.py's end_to_end).
END_TO_END_STAGES = ("decode", "preprocess", "infer", "postprocess")
END_TO_END_FIELDS = {"latency_ms": dict, "throughput_fps": float, "accuracy": float,
                     "runs": int, "accuracy_samples": int, "stages_ms": dict}
END_TO_END_RANGES = {name: OK_RANGES[name] for name in (
    "accuracy", "throughput_fps", "runs", "accuracy_samples",
    *(f"latency_ms.{key}" for key in LATENCY_FIELDS))}


def _reject_constant(name: str) -> Any:
    raise ValueError(f"device returned a non-finite number ({name})")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 parses to inf
        raise ValueError(f"device returned a non-finite number ({text[:20]})")
    return value


def parse_untrusted_json(raw: bytes) -> dict[str, Any]:
    """A JSON object from a device, refused when too large or not an object."""
    if len(raw) > MAX_RESULT_BYTES:
        raise ValueError(f"device returned {len(raw)} bytes, more than {MAX_RESULT_BYTES}")
    document = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant,
                          parse_float=_finite_float)
    if not isinstance(document, dict):
        raise ValueError("device returned JSON that is not an object")
    return document


def validate_probe(document: dict[str, Any]) -> dict[str, Any]:
    """The probe's shape, as the orchestrator uses it; ValueError names what is wrong.
    Facts are flat (name -> text or number): they become MLflow tags. Returns a copy whose
    texts are :func:`~tasks.farm.untrusted.contained` (visible, capped)."""
    host = document.get("host")
    if not isinstance(host, dict) or not all(
            FACT_NAME.match(key) and isinstance(value, (str, int, float, type(None)))
            for key, value in host.items()):
        raise ValueError("probe field 'host' is not a flat object of named facts")
    for field_name in ("runtimes", "runtime_versions"):
        value = document.get(field_name)
        if not isinstance(value, dict) or not all(
                FACT_NAME.match(key) and isinstance(text, str) for key, text in value.items()):
            raise ValueError(f"probe field {field_name!r} is not an object of texts")
    return contained_strings(document)


def _a(kind: type) -> str:
    return f"{'an' if kind.__name__[0] in 'aeiou' else 'a'} {kind.__name__}"


def _dotted(document: dict[str, Any], name: str) -> Any:
    for key in name.split("."):
        document = document[key]
    return document


def _check_ok_types(document: dict[str, Any], fields: dict[str, type] = REQUIRED_OK_FIELDS,
                    within: str = "") -> None:
    """The ``fields`` of an ``ok`` result (or of its part ``within``) are there, of their
    types (a whole number is a float measurement; a bool is never a number)."""
    for key, kind in fields.items():
        value = document.get(key)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            continue
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ValueError(f"harness result field {within + key!r} is missing or not {_a(kind)}")
    for key in LATENCY_FIELDS:
        value = document["latency_ms"].get(key)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ValueError(f"harness result field {within}latency_ms.{key} is missing")


def _check_ok_numbers(document: dict[str, Any], ranges: dict[str, Range] = OK_RANGES,
                      within: str = "") -> None:
    """The measurements of an ``ok`` result or of its part ``within`` (types already
    checked) are possible ones."""
    for name, allowed in ranges.items():
        value = _dotted(document, name)
        try:
            finite = math.isfinite(float(value))
        except OverflowError:  # a 400-digit JSON integer: no float holds it
            finite = False
        if not finite:
            raise ValueError(f"device returned {within}{name} {str(value)[:20]}... "
                             f"outside {allowed}")
        if value not in allowed:
            raise ValueError(f"device returned {within}{name} {value!r} outside {allowed}")
    latency = document["latency_ms"]
    ordered = [latency[key] for key in LATENCY_ORDER]
    if ordered != sorted(ordered):
        shown = ", ".join(f"{key} {latency[key]!r}" for key in LATENCY_ORDER)
        raise ValueError(f"device returned {within}latency_ms out of order ({shown}): "
                         f"{' <= '.join(LATENCY_ORDER)} must hold")


RAW_LATENCY_ENCODING = "int64-le-ns+zlib+base64"


def decode_latencies(document: dict[str, Any]) -> Any:
    """The raw latencies (int64 ns, a NumPy array) an ``ok`` result carries under
    ``latencies``, checked: the known encoding, one per timed run (``runs``), none
    negative; None when the result carries none (an older harness). ValueError names
    what is wrong."""
    import base64
    import binascii
    import zlib

    import numpy as np

    blob = document.get("latencies")
    if blob is None:
        return None
    if not isinstance(blob, dict) or blob.get("encoding") != RAW_LATENCY_ENCODING \
            or not isinstance(blob.get("data"), str):
        raise ValueError(f"harness result field 'latencies' is not {RAW_LATENCY_ENCODING} data")
    runs = document["runs"]
    try:
        # At most 8 bytes per run: a bomb that inflates past it is cut there.
        raw = zlib.decompressobj().decompress(base64.b64decode(blob["data"], validate=True),
                                              8 * runs + 8)
    except (binascii.Error, zlib.error) as error:
        raise ValueError(f"harness result field 'latencies' does not decode ({error})") from None
    if len(raw) != 8 * runs:
        raise ValueError(f"harness result has {len(raw) // 8} raw latencies for {runs} runs")
    latencies = np.frombuffer(raw, dtype="<i8")
    if latencies.min() < 0:
        raise ValueError("harness result has a negative raw latency")
    return latencies


def _check_intervals(document: dict[str, Any]) -> None:
    """``latency_ci95_ms`` (absent from older harnesses): each sized percentile's
    interval null or [low, high] with 0 <= low <= high."""
    intervals = document.get("latency_ci95_ms")
    if intervals is None:
        return
    if not isinstance(intervals, dict):
        raise ValueError("harness result field 'latency_ci95_ms' is not an object")
    unknown = sorted(set(intervals) - set(INTERVAL_FIELDS))
    if unknown:
        raise ValueError(f"harness result field 'latency_ci95_ms' has {str(unknown)[:60]} "
                         f"(allowed: {', '.join(INTERVAL_FIELDS)})")
    for name, bounds in intervals.items():
        if bounds is None:
            continue
        if not (isinstance(bounds, list) and len(bounds) == 2 and all(
                isinstance(value, (int, float)) and not isinstance(value, bool)
                for value in bounds) and 0 <= bounds[0] <= bounds[1]):
            raise ValueError(f"device returned latency_ci95_ms.{name} {str(bounds)[:40]}: "
                             f"not [low, high] with 0 <= low <= high")


def _check_conditions(document: dict[str, Any]) -> None:
    """``conditions`` (absent from older harnesses): an object whose ``changes`` is a
    short list of texts (select shows them as a note)."""
    conditions = document.get("conditions")
    if conditions is None:
        return
    changes = conditions.get("changes") if isinstance(conditions, dict) else None
    if not isinstance(changes, list) or len(changes) > MAX_CONDITION_CHANGES or not all(
            isinstance(change, str) for change in changes):
        raise ValueError("harness result field 'conditions' has no 'changes' list of at most "
                         f"{MAX_CONDITION_CHANGES} texts")


def _check_whole_count(document: dict[str, Any], within: str = "",
                       task: str | None = None) -> None:
    """An accuracy is a count of correct images over ``accuracy_samples``: 0.999 on 360
    images (359.64 correct) is no measurement. Only where the kind of ``task`` (the
    result's, classification for older harnesses) scores a share of samples: a mAP is
    none."""
    kinds = device_code.task_kinds()
    if task is not None and task in kinds.names() and not kinds.get(task).share_of_samples:
        return
    accuracy, samples = document["accuracy"], document["accuracy_samples"]
    correct = accuracy * samples
    if abs(correct - round(correct)) > WHOLE_COUNT_TOLERANCE:
        raise ValueError(f"device returned {within}accuracy {accuracy!r} on {samples} images: "
                         f"{correct:.6g} correct is not a whole number of images")


def _stated_and_recomputed(document: dict[str, Any],
                           recomputed: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(name, stated, recomputed) of every statistic the result states that its raw
    latencies give: ``latency_ms``'s, the throughput, the timed seconds and the 95%
    intervals (the last two where stated: older harnesses had none)."""
    pairs = [(f"latency_ms.{key}", document["latency_ms"][key], recomputed["latency_ms"][key])
             for key in LATENCY_FIELDS]
    pairs.append(("throughput_fps", document["throughput_fps"], recomputed["throughput_fps"]))
    if "timed_seconds" in document:
        pairs.append(("timed_seconds", document["timed_seconds"], recomputed["timed_seconds"]))
    for name, bounds in (document.get("latency_ci95_ms") or {}).items():
        pairs.append((f"latency_ci95_ms.{name}", bounds, recomputed["latency_ci95_ms"][name]))
    return pairs


def _agrees(stated: Any, recomputed: Any) -> bool:
    if stated is None or recomputed is None:
        return stated is recomputed
    if isinstance(recomputed, list):
        return isinstance(stated, list) and len(stated) == len(recomputed) and all(
            _agrees(one, other) for one, other in zip(stated, recomputed))
    if not isinstance(stated, (int, float)) or isinstance(stated, bool):
        return False
    return math.isclose(stated, recomputed, rel_tol=RECOMPUTED_TOLERANCE, abs_tol=1e-9)


def _shown(value: Any, exact: bool) -> str:
    """A stated value as the device sent it (``exact``), a recomputed one to 6 digits."""
    if isinstance(value, list):
        return "[" + ", ".join(_shown(item, exact) for item in value) + "]"
    if isinstance(value, float) and not exact:
        return f"{value:.6g}"
    return repr(value)[:40]


def _check_statistics(document: dict[str, Any], latencies_ns: Any) -> None:
    """The statistics an ``ok`` result states are the ones its raw latencies give,
    recomputed with the harness's own :func:`latency_summary` (so both sides compute
    them the same way): a board that rewrites its result's numbers is refused."""
    if latencies_ns is None:
        raise ValueError("harness result has no raw latencies ('latencies'): its statistics "
                         "cannot be checked")
    recomputed = device_code.load("latency").latency_summary(latencies_ns / 1e6)
    for name, stated, expected in _stated_and_recomputed(document, recomputed):
        if not _agrees(stated, expected):
            raise ValueError(f"device returned {name} {_shown(stated, True)}, but its "
                             f"{len(latencies_ns)} raw latencies give {_shown(expected, False)}")


def _check_end_to_end(document: dict[str, Any]) -> None:
    """``end_to_end`` (only when frames were given): either ``{"error": text}`` (the
    model-only numbers stand), or the timed pipeline's numbers, checked like the
    model's, with each stage's median (:data:`END_TO_END_STAGES`) a possible one."""
    part = document.get("end_to_end")
    if part is None:
        return
    if not isinstance(part, dict):
        raise ValueError("harness result field 'end_to_end' is not an object")
    if "error" in part:
        if not isinstance(part["error"], str):
            raise ValueError("harness result field 'end_to_end.error' is not a text")
        return
    _check_ok_types(part, END_TO_END_FIELDS, "end_to_end.")
    _check_ok_numbers(part, END_TO_END_RANGES, "end_to_end.")
    _check_whole_count(part, "end_to_end.", document.get("task"))
    _check_intervals(part)
    stages = part["stages_ms"]
    if sorted(stages) != sorted(END_TO_END_STAGES) or not all(
            isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and value >= 0 for value in stages.values()):
        raise ValueError(f"harness result field 'end_to_end.stages_ms' is not the "
                         f"milliseconds of {', '.join(END_TO_END_STAGES)}")


def validate_harness_result(document: dict[str, Any]) -> dict[str, Any]:
    """Check the fields the report relies on, their types and, for an ``ok`` result,
    their ranges (:data:`OK_RANGES`, latencies ordered min <= p50 <= p90 <= p99 <= max),
    each accuracy a whole count of correct images, the percentiles' intervals, the raw
    latencies (:func:`decode_latencies`, required) and every statistic stated against
    the raw latencies (:func:`_check_statistics`); raise ValueError naming the first bad
    one. Returns ``document``."""
    status = document.get("status")
    if status not in HARNESS_STATUSES:
        raise ValueError(f"harness result has status {status!r} "
                         f"(expected {', '.join(map(repr, HARNESS_STATUSES))})")
    if status == "ok":
        _check_ok_types(document)
        _check_ok_numbers(document)
        _check_whole_count(document, task=document.get("task"))
        _check_intervals(document)
        _check_conditions(document)
        _check_end_to_end(document)
        _check_statistics(document, decode_latencies(document))
    elif not isinstance(document.get("error"), str):
        raise ValueError(f"a {status} harness result has no 'error' text")
    return document
