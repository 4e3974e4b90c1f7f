"""Step ``select``: every (variant, device) result against the requirements; the best
passing variant per device; the report.

Reads params ``requirements`` and ``select`` (``include_emulated``: recommend on emulated
boards too, :mod:`.emulated`), device overrides from ``farm.yaml``, ``results/``
(:mod:`tasks.core.contracts.results`), ``models/base/reference.json`` (the fp32 model's
per-image test correctness). Writes ``reports/summary.json`` (every result with status
and reasons: :mod:`tasks.core.contracts.summary`), ``reports/report.md``,
``reports/report.html``, ``reports/plots/``, ``metrics/benchmark.json`` (flat, for ``dvc metrics``) and
``reports/points.json`` (for ``dvc plots``).

The requirement checks work on the contracts' objects: a
:class:`~tasks.core.contracts.results.ResultRecord` in (each result file read through its
contract), a :class:`~tasks.core.contracts.summary.SummaryRow` out; the
:class:`~tasks.core.contracts.summary.Summary` is what the report, the verdict and the
file are made of.

Statuses (:class:`~tasks.core.contracts.summary.RowStatus`): ``pass`` (meets every
requirement), ``fail`` (misses one; reasons say which, by how much), ``error`` (the
harness or the device failed; the reason says why) and ``skipped`` (the device cannot run
that runtime, or the variant could not be produced here). A quantised variant that convert rejected (too far from its model) is ``fail``.
Among the passing ones, each device's preference order chooses (:mod:`.ranking`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.core import device_code
from tasks.core.accuracy import (accuracy_interval, reference_interval, reference_on_first,
                                 relative_drop)
from tasks.config import (Farm, RequirementParams, Requirements, SelectParams,
                          effective_requirements)
from tasks.core.contracts.prepared import DEFAULT_TASK
from tasks.core.contracts.results import (HarnessOk, McuFit, ResultRecord, ResultStatus,
                                          read_result)
from tasks.core.contracts.summary import (ESTIMATED_MARK, Counts, Reference, RowStatus, Summary,
                                          SummaryRow, write_summary)
from tasks.core.errors import StepError
from tasks.core.files import atomic_output_dir, read_json, write_json
from tasks.select import energy as energy_of
from tasks.select.emulated import emulated_note, excluded_devices, row_marks
from tasks.select.ranking import choices, pareto_front, recommend, why_recommended
from tasks.select.report import write_report
from tasks.select.report.cells import metric_name

if TYPE_CHECKING:  # numpy is imported where it is used: every command reads this module
    import numpy as np

MB = 1024 * 1024


@dataclass(frozen=True)
class Measured:
    """The numbers one requirement check looks at; None where the device could not
    measure it (an MCU has no latency without its board)."""

    accuracy: float
    accuracy_drop: float
    size_bytes: int
    latency_p90_ms: float | None = None
    end_to_end_p90_ms: float | None = None
    throughput_fps: float | None = None
    peak_rss_mb: float | None = None
    mcu: McuFit | None = None
    # What the float arithmetic ran in against what the variant declares (harness runs).
    execution_precision: str | None = None
    declared_precision: str | None = None
    # Energy per inference above idle (mJ), measured or estimated (``energy_source``),
    # and the hours on the device's battery at its fps (None: no battery declared).
    energy_mj: float | None = None
    energy_source: str | None = None
    battery_hours: float | None = None
    battery_fps: float | None = None


Check = Callable[[Requirements, Measured], str | None]


def _min_accuracy(req: Requirements, m: Measured) -> str | None:
    if req.min_accuracy is not None and m.accuracy < req.min_accuracy:
        return f"accuracy {m.accuracy:.4f} < min_accuracy {req.min_accuracy}"
    return None


def _max_accuracy_drop(req: Requirements, m: Measured) -> str | None:
    if req.max_accuracy_drop is not None and m.accuracy_drop > req.max_accuracy_drop:
        return (f"accuracy drop {m.accuracy_drop:.2%} vs fp32 reference > "
                f"max_accuracy_drop {req.max_accuracy_drop:.2%}")
    return None


def _min_map50(req: Requirements, m: Measured) -> str | None:
    if req.min_map50 is not None and m.accuracy < req.min_map50:
        return f"mAP50 {m.accuracy:.4f} < min_map50 {req.min_map50}"
    return None


def _max_map_drop(req: Requirements, m: Measured) -> str | None:
    if req.max_map_drop is not None and m.accuracy_drop > req.max_map_drop:
        return (f"mAP50 drop {m.accuracy_drop:.2%} vs fp32 reference > "
                f"max_map_drop {req.max_map_drop:.2%}")
    return None


def _max_latency(req: Requirements, m: Measured) -> str | None:
    if (req.max_latency_p90_ms is not None and m.latency_p90_ms is not None
            and m.latency_p90_ms > req.max_latency_p90_ms):
        return f"p90 latency {m.latency_p90_ms:.3f} ms > max_latency_p90_ms {req.max_latency_p90_ms}"
    return None


def _max_end_to_end(req: Requirements, m: Measured) -> str | None:
    limit = req.max_end_to_end_p90_ms
    if limit is None:
        return None
    if m.end_to_end_p90_ms is None:
        # A limit nothing measured is not met: the frames never went through the device.
        return ("max_end_to_end_p90_ms needs an end-to-end timing (benchmark.end_to_end), "
                "and this result has none") if m.latency_p90_ms is not None else None
    if m.end_to_end_p90_ms > limit:
        return f"end-to-end p90 {m.end_to_end_p90_ms:.3f} ms > max_end_to_end_p90_ms {limit}"
    return None


def _min_frame_rate(req: Requirements, m: Measured) -> str | None:
    if req.min_fps is not None and m.throughput_fps is not None and m.throughput_fps < req.min_fps:
        return f"throughput {m.throughput_fps:.1f} fps < min_fps {req.min_fps}"
    return None


def _max_size(req: Requirements, m: Measured) -> str | None:
    if req.max_size_mb is not None and m.size_bytes > req.max_size_mb * MB:
        return f"size {m.size_bytes / MB:.3f} MB > max_size_mb {req.max_size_mb}"
    return None


def _max_memory(req: Requirements, m: Measured) -> str | None:
    if (req.max_peak_rss_mb is not None and m.peak_rss_mb is not None
            and m.peak_rss_mb > req.max_peak_rss_mb):
        return f"peak RSS {m.peak_rss_mb:.1f} MB > max_peak_rss_mb {req.max_peak_rss_mb}"
    return None


def _fits_flash(req: Requirements, m: Measured) -> str | None:
    """The target's firmware (text + data) where the core is emulated, else the model."""
    if m.mcu and m.mcu.checked_flash_bytes > m.mcu.flash_budget_bytes:
        what = (f"firmware {m.mcu.checked_flash_bytes / 1024:.1f} KB (text + data on "
                f"{m.mcu.target.core})" if m.mcu.target
                else f"model {m.mcu.model_bytes / 1024:.1f} KB")
        return f"{what} > flash budget {m.mcu.flash_budget_bytes / 1024:.1f} KB"
    return None


def _fits_ram(req: Requirements, m: Measured) -> str | None:
    """The arena the target needs where the core is emulated, else the host's."""
    if m.mcu and m.mcu.checked_arena_bytes > m.mcu.ram_budget_bytes:
        where = f" on {m.mcu.target.core}" if m.mcu.target else ""
        return (f"tensor arena {m.mcu.checked_arena_bytes / 1024:.1f} KB{where} > RAM budget "
                f"{m.mcu.ram_budget_bytes / 1024:.1f} KB")
    return None


def _ran_as_declared(req: Requirements, m: Measured) -> str | None:
    """Not a requirement but a precondition: numbers measured in another precision than
    the variant's name says (an fp32 variant run in bf16) are not that variant's.
    An "unverified" precision (a delegate or provider that does not say) is a note."""
    ran, declared = m.execution_precision, m.declared_precision
    if declared is None or (ran or "").startswith(device_code.load("runtimes").UNVERIFIED):
        return None
    if ran != declared:
        return (f"ran in {ran or 'an unreported precision'}, not the {declared} "
                "its variant declares")
    return None


def _max_energy(req: Requirements, m: Measured) -> str | None:
    limit = req.max_energy_mj
    if limit is None:
        return None
    if m.energy_mj is None:
        # A limit nothing measured or estimated is not met.
        return ("max_energy_mj needs an energy figure: the device has no meter and farm.yaml "
                "declares no power for it (or its latency is unknown)")
    if m.energy_mj > limit:
        return (f"energy {m.energy_mj:.4g} mJ per inference ({m.energy_source}) > "
                f"max_energy_mj {limit:g}")
    return None


def _min_battery(req: Requirements, m: Measured) -> str | None:
    least = req.min_battery_hours
    if least is None:
        return None
    if m.battery_hours is None:
        return ("min_battery_hours needs the device's battery: {capacity_mwh, fps} in farm.yaml "
                "and an energy figure (a meter, or farm.yaml power)")
    if m.battery_hours < least:
        return (f"battery life {m.battery_hours:.1f} h at {m.battery_fps:g} fps "
                f"({m.energy_source}) < min_battery_hours {least:g}")
    return None


CHECKS: tuple[Check, ...] = (_ran_as_declared, _min_accuracy, _max_accuracy_drop, _min_map50,
                             _max_map_drop, _max_latency,
                             _max_end_to_end, _min_frame_rate, _max_size, _max_memory, _fits_flash, _fits_ram,
                             _max_energy, _min_battery)


def _empty_measures() -> dict[str, Any]:
    """The columns of a row that measured nothing (a fresh ``notes`` list each time)."""
    return {"accuracy": None, "accuracy_samples": None, "accuracy_interval": None,
            "accuracy_drop": None, "latency_ms": None, "latency_ci95_ms": None,
            "throughput_fps": None, "end_to_end": None,
            "peak_rss_mb": None, "load_ms": None, "runtime_version": None,
            "execution_precision": None, "mcu": None, "estimated_latency_ms": None,
            "notes": []}


def _accuracy_columns(accuracy: float, samples: int | None,
                      interval: list[float] | None = None) -> dict[str, Any]:
    """The accuracy, the number of test images it was measured on, and its 95% interval:
    ``interval`` where the device computed its kind's own, else the binomial one."""
    samples = int(samples or 0)
    if interval is None and samples:
        interval = list(accuracy_interval(accuracy, samples))
    return {"accuracy": accuracy, "accuracy_samples": samples,
            "accuracy_interval": interval if samples else None}


def _mcu_notes(mcu: McuFit) -> list[str]:
    """What a microcontroller's row says of where its figures come from."""
    target = mcu.target
    if target is None:
        return [f"fits check: model {mcu.model_bytes / 1024:.1f} of "
                f"{mcu.flash_budget_bytes / 1024:.0f} KB flash budget, arena "
                f"{mcu.arena_bytes / 1024:.1f} of {mcu.ram_budget_bytes / 1024:.0f} KB "
                "RAM budget; accuracy from TFLite Micro on the host; latency needs the board"
                + (f"; {mcu.not_emulated}" if mcu.not_emulated else "")]
    return [f"on the emulated {target.core} (qemu {target.board}, TFLite Micro + CMSIS-NN): "
            f"firmware {target.firmware_flash_bytes / 1024:.1f} of "
            f"{mcu.flash_budget_bytes / 1024:.0f} KB flash budget (text + data), arena "
            f"{target.arena_bytes / 1024:.1f} of {mcu.ram_budget_bytes / 1024:.0f} KB RAM "
            f"budget (the host measured {mcu.arena_bytes / 1024:.1f})",
            f"latency {ESTIMATED_MARK}{target.estimated_latency_ms:.3f} ms estimated, not "
            f"measured: {target.instructions_per_inference:,} instructions per inference "
            f"(counted in qemu) x {target.cpi:g} cycles per instruction / "
            f"{target.clock_mhz:g} MHz; no caches, wait states or flash latency modelled"]


def _mcu_measures(mcu: McuFit, size: int,
                  reference_accuracy: float) -> tuple[Measured, dict[str, Any]]:
    """A microcontroller's fit check (with the target's figures where its core is
    emulated), as requirement inputs and as summary columns. An estimated latency is
    shown, never checked against a latency requirement nor ranked on."""
    accuracy, samples = mcu.measured_accuracy
    measured = Measured(float(accuracy), relative_drop(float(accuracy), reference_accuracy),
                        size, mcu=mcu)
    target = mcu.target
    return measured, {**_empty_measures(), **_accuracy_columns(float(accuracy), samples,
                                                               mcu.measured_interval),
                      "accuracy_drop": measured.accuracy_drop, "mcu": mcu,
                      "notes": _mcu_notes(mcu),
                      "estimated_latency_ms": target.estimated_latency_ms if target else None,
                      "runtime_version": (f"tflite-micro ({target.core}, emulated)" if target
                                          else "tflite-micro (host)")}


def _harness_measures(harness: HarnessOk, size: int, reference_accuracy: float,
                      declared_precision: str | None) -> tuple[Measured, dict[str, Any]]:
    """A harness result, as requirement inputs and as summary columns."""
    latency = harness.latency_ms
    accuracy = float(harness.accuracy)
    ran = harness.runtime.get("execution_precision")
    # The end-to-end timing is a newer harness field the contract keeps as it came.
    end_to_end, e2e_notes = _end_to_end((harness.model_extra or {}).get("end_to_end"),
                                        metric_name(harness.task))
    measured = Measured(accuracy, relative_drop(accuracy, reference_accuracy), size,
                        latency_p90_ms=float(latency.p90),
                        end_to_end_p90_ms=end_to_end["latency_ms"]["p90"] if end_to_end else None,
                        throughput_fps=float(harness.throughput_fps),
                        peak_rss_mb=float(harness.peak_rss_mb),
                        execution_precision=str(ran) if ran is not None else None,
                        declared_precision=declared_precision)
    notes = ([f"execution precision {ran}: the runtime does not report it"]
             if str(ran).startswith(device_code.load("runtimes").UNVERIFIED) else [])
    conditions = harness.conditions if isinstance(harness.conditions, dict) else {}
    changes = conditions.get("changes") or []
    if changes:
        notes.append(f"conditions changed during the run: {'; '.join(changes)}")
    notes += e2e_notes
    return measured, {**_empty_measures(),
                      **_accuracy_columns(accuracy, harness.accuracy_samples,
                                          harness.accuracy_interval), "notes": notes,
                      "end_to_end": end_to_end,
                      "execution_precision": ran,
                      "accuracy_drop": measured.accuracy_drop,
                      "latency_ms": {key: float(getattr(latency, key))
                                     for key in ("p50", "p90", "p99", "mean")},
                      "latency_ci95_ms": harness.latency_ci95_ms,
                      "throughput_fps": float(harness.throughput_fps),
                      "peak_rss_mb": measured.peak_rss_mb, "load_ms": float(harness.load_ms),
                      "runtime_version": harness.runtime.get("version")}


def _end_to_end(timed: Any, metric_name: str = "accuracy"
                ) -> tuple[dict[str, Any] | None, list[str]]:
    """A harness result's end-to-end part (JSON, as the harness wrote it) as the summary
    row's, and the note that reads it (where the time goes, the score under the name
    its kind gives it), or the note saying why it was not measured."""
    if not timed:
        return None, []
    if "error" in timed:
        return None, [f"end to end not measured: {timed['error']}"]
    latency = timed["latency_ms"]
    row = {"latency_ms": {key: float(latency[key]) for key in ("p50", "p90", "p99", "mean")},
           "latency_ci95_ms": timed.get("latency_ci95_ms"),
           "throughput_fps": float(timed["throughput_fps"]),
           "stages_ms": {stage: float(ms) for stage, ms in timed["stages_ms"].items()},
           "accuracy": float(timed["accuracy"]), "frames": timed.get("frames")}
    total = sum(row["stages_ms"].values()) or 1.0
    frames = timed.get("frames") or {}
    shape = (f" ({frames.get('width')}x{frames.get('height')} {frames.get('encoding')})"
             if frames.get("width") else "")
    shares = ", ".join(f"{stage} {ms / total:.0%}" for stage, ms in row["stages_ms"].items())
    return row, [f"end to end{shape}: p90 {latency['p90']:.3g} ms, "
                 f"{row['throughput_fps']:.0f} fps, {metric_name} {row['accuracy']:.4f}; {shares}"]


# What a result that measured nothing is in the summary (any other status: ``error``).
UNMEASURED_STATUS = {ResultStatus.SKIPPED: RowStatus.SKIPPED, ResultStatus.REJECTED: RowStatus.FAIL}


def evaluate(record: ResultRecord, requirements: Requirements,
             reference_accuracy: float, device: Any = None) -> SummaryRow:
    """One summary row from one benchmark record; ``reference_accuracy`` is the fp32
    model's accuracy on the same test images the device evaluated. The record's
    ``declared_execution_precision`` is what its variant declares (absent: f32).
    ``device`` (its farm.yaml entry) gives the power and battery its energy is estimated
    and judged with (:func:`with_energy`)."""
    identity = {"variant": record.variant, "format": record.format,
                "precision": record.precision, "source": record.source,
                "device": record.device, "runtime": record.runtime,
                "size_bytes": record.size_bytes, "threads": record.threads,
                **row_marks(record)}
    if record.status is not ResultStatus.OK:
        return SummaryRow.model_validate({
            **identity, **_empty_measures(),
            "status": UNMEASURED_STATUS.get(record.status, RowStatus.ERROR),
            "reasons": [record.error or "unknown failure"]})
    measured = record.measured
    size = int(record.size_bytes or 0)
    if isinstance(measured, McuFit):
        judged, columns = _mcu_measures(measured, size, reference_accuracy)
    elif measured is not None:
        judged, columns = _harness_measures(measured, size, reference_accuracy,
                                            record.declared_execution_precision or "f32")
    else:
        raise StepError(f"the result of {record.variant} on {record.device} is ok but has "
                        "no measurement: run `edgeflow step benchmark` again")
    judged, columns = with_energy(judged, columns, measured, device)
    reasons = [reason for check in CHECKS if (reason := check(requirements, judged))]
    return SummaryRow.model_validate({
        **identity, **columns, "status": RowStatus.FAIL if reasons else RowStatus.PASS,
        "reasons": reasons})


def with_energy(judged: Measured, columns: dict[str, Any], measured: HarnessOk | McuFit,
                device: Any) -> tuple[Measured, dict[str, Any]]:
    """The row's energy per inference (:mod:`tasks.select.energy`): the harness's meter
    reading where it has one, else an estimate from the device's farm.yaml ``power`` and
    the latency (p50; an MCU's estimated latency), labelled so; then its battery life at
    the device's ``battery`` fps. End to end likewise, per frame. Columns and notes are
    added only where there is an energy (older summaries' rows stay as they were)."""
    power = getattr(device, "power", None)
    battery = getattr(device, "battery", None)
    notes = list(columns["notes"])
    energy = None
    max_fps = judged.throughput_fps
    latency_ms: float | None = None
    interval: list[float] | None = None
    if isinstance(measured, HarnessOk):
        extra = measured.model_extra or {}
        energy, why_not = energy_of.measured(extra.get("energy"))
        if why_not:
            notes.append(why_not)
        latency_ms = float(measured.latency_ms.p50)
        interval = (measured.latency_ci95_ms or {}).get("p50")
    elif measured.target is not None:
        latency_ms = measured.target.estimated_latency_ms
        interval = None
        max_fps = 1000.0 / latency_ms if latency_ms > 0 else None
    if energy is None and power is not None and latency_ms is not None:
        energy = energy_of.estimated(power, latency_ms, interval)
    if energy is None:
        return judged, columns
    if energy.source == energy_of.ESTIMATED:
        notes.append(f"energy {ESTIMATED_MARK}{energy.energy_mj:.4g} mJ per inference "
                     f"estimated, not measured: ({energy.power_w:g} - {energy.idle_w:g} W) x "
                     f"{latency_ms:.4g} ms; power from {energy.meter}")
    else:
        notes.append(f"energy {energy.energy_mj:.4g} mJ per inference measured by "
                     f"{energy.meter} (active {energy.power_w:.3g} W, idle baseline "
                     f"{energy.idle_w:.3g} W)")
    added: dict[str, Any] = {**energy.columns(), "notes": notes}
    life = None
    if battery is not None:
        idle = energy.idle_w if energy.idle_w is not None else (
            power.idle_watts if power is not None else 0.0)
        life = energy_of.battery_hours(battery.capacity_mwh, battery.fps, idle,
                                       energy.energy_mj, max_fps)
        added.update(battery_hours=life.hours, battery_fps=life.fps)
    end_to_end = columns.get("end_to_end")
    if end_to_end and isinstance(measured, HarnessOk):
        timed = (measured.model_extra or {}).get("end_to_end") or {}
        frame, _ = energy_of.measured(timed.get("energy"))
        if frame is None and power is not None:
            frame = energy_of.estimated(power, end_to_end["latency_ms"]["p50"])
        if frame is not None:
            added["end_to_end"] = {**end_to_end, "energy_mj": frame.energy_mj,
                                   "energy_source": frame.source}
    judged = replace(judged, energy_mj=energy.energy_mj, energy_source=energy.source,
                     battery_hours=life.hours if life else None,
                     battery_fps=life.fps if life else None)
    return judged, {**columns, **added}


def flag_slow_quantized(rows: list[SummaryRow]) -> None:
    """Note, on each quantised row, when it is slower than its fp32 counterpart (same
    source and format) on the same device: quantisation is not always a speed-up."""
    fp32 = {(row.device, row.source, row.format): row.latency_ms.p50
            for row in rows if row.precision == "fp32" and row.latency_ms}
    for row in rows:
        baseline = fp32.get((row.device, row.source, row.format))
        if row.precision != "fp32" and row.latency_ms and baseline:
            ratio = row.latency_ms.p50 / baseline
            if ratio > 1.0:
                row.notes.append(f"slower than {row.format}-fp32 on this device "
                                 f"(p50 x{ratio:.2f}): use {row.format}-fp32 here, or "
                                 "a quantisation this device runs natively")


def _sample_count(record: ResultRecord) -> int:
    measured = record.measured
    if isinstance(measured, McuFit):
        return measured.measured_accuracy[1]
    return int(measured.accuracy_samples or 0) if measured is not None else 0


# A latency distribution whose p99 is this many times its p50 has a long tail: an
# application with a frame deadline sees it, whatever the median says.
LONG_TAIL_RATIO = 3.0


def flag_emulated(rows: list[SummaryRow]) -> None:
    """Note, on each row of an emulated board, that its timings are the emulator's."""
    for row in rows:
        note = emulated_note(row)
        if note:
            row.notes.append(note)


def flag_long_tails(rows: list[SummaryRow]) -> None:
    """Note, on each timed row, a p99 more than :data:`LONG_TAIL_RATIO` times its p50."""
    for row in rows:
        latency = row.latency_ms
        if latency and latency.p50 > 0 and latency.p99 / latency.p50 > LONG_TAIL_RATIO:
            row.notes.append(f"long tail: p99 is {latency.p99 / latency.p50:.1f}x p50")


@dataclass(frozen=True)
class Verdict:
    """A run's outcome: ``ok`` unless a result errored or a device has no passing
    variant. ``message`` is one line (counts, recommendations, errors); ``problems``
    names every failed or errored result with its reasons."""

    ok: bool
    message: str
    problems: tuple[str, ...]


def verdict(summary: Summary) -> Verdict:
    def described(rows: list[SummaryRow]) -> tuple[str, ...]:
        return tuple(f"{row.variant}@{row.device}: {row.status}: {'; '.join(row.reasons)}"
                     for row in rows)

    problems = described([row for row in summary.results
                          if row.status in {RowStatus.FAIL, RowStatus.ERROR}])
    erred = [row for row in summary.results if row.status is RowStatus.ERROR]
    errors = described(erred)
    excluded = summary.excluded or {}
    unserved = [device for device, variant in summary.recommendations.items()
                if variant is None and device not in excluded]
    recommended = [f"{device}: {variant}" for device, variant in summary.recommendations.items()
                   if variant is not None]
    message = summary.counts.text()
    if errors:
        faulty = list(dict.fromkeys(row.device for row in erred))
        message = (f"partial: errors on {len(faulty)} of {len(summary.devices)} device(s) "
                   f"({', '.join(faulty)}); every other result is complete | {message}")
    if recommended:
        message += f" | recommended: {', '.join(recommended)}"
    if unserved:
        message += f" | no variant meets the requirements on: {', '.join(unserved)}"
    if excluded:
        # Not a failure: the experiment did not ask for recommendations there.
        message += (f" | not recommended (emulated): {', '.join(excluded)}; set "
                    "select.include_emulated to recommend on them")
    if errors:
        message += " | errors: " + " | ".join(errors)
    return Verdict(ok=not summary.counts.error and not unserved, message=message,
                   problems=problems)


def collect_results(results_dir: Path, devices: list[str]) -> list[ResultRecord]:
    """Every device's result records, each read through its contract."""
    records = []
    for device in devices:
        device_dir = results_dir / device
        if not device_dir.is_dir():
            raise StepError(f"{device_dir} is missing: run the benchmark step first")
        records.extend(read_result(path) for path in sorted(device_dir.glob("*.json")))
    return records


def raw_latencies(records: list[ResultRecord],
                  results_dir: Path) -> dict[tuple[str, str], np.ndarray]:
    """Each (device, variant)'s raw latencies in ms, from the file its result record
    names (benchmark's ``<variant>.latencies.npz``); results without one are left out."""
    import numpy as np
    kept: dict[tuple[str, str], np.ndarray] = {}
    for record in records:
        harness = record.harness if isinstance(record.harness, HarnessOk) else None
        named = ((harness.latencies if harness else None) or {}).get("file")
        path = results_dir / record.device / Path(str(named)).name
        if named and path.is_file():
            with np.load(path) as archive:
                kept[(record.device, record.variant)] = archive["latency_ns"] / 1e6
    return kept


def read_reference(reference_path: Path) -> list[int]:
    """Which test images the fp32 model gets right, in order (``models/base/reference.json``,
    written by train)."""
    if not reference_path.is_file():
        raise StepError(f"{reference_path} is missing: run the train step first")
    return list(read_json(reference_path)["test_correct"])


def summarise(params: RequirementParams, farm: Farm, results_dir: Path,
              reference_path: Path, records: list[ResultRecord] | None = None,
              select_params: SelectParams = SelectParams()) -> Summary:
    """The summary (not written): rows, recommendations, counts; ``records`` are the
    results' records when the caller has read them already. An emulated board's device
    gets no recommendation unless ``select_params.include_emulated``
    (:mod:`tasks.select.emulated`): the summary's ``excluded`` says why."""
    test_correct = read_reference(reference_path)
    # Train records the kind of task its per-image results are for (classification
    # before kinds existed).
    task = read_json(reference_path).get("task", DEFAULT_TASK)
    accuracy = reference_on_first(test_correct, 0, task)
    reference = Reference(accuracy=accuracy, samples=len(test_correct),
                          interval=reference_interval(test_correct, task))
    requirements = {name: effective_requirements(params, device)
                    for name, device in farm.devices.items()}
    rows = [evaluate(record, requirements[record.device],
                     reference_on_first(test_correct, _sample_count(record), task),
                     farm.devices.get(record.device))
            for record in (records if records is not None
                           else collect_results(results_dir, list(farm.devices)))]
    flag_slow_quantized(rows)
    flag_long_tails(rows)
    flag_emulated(rows)
    # Each device ranks by its own preference order (farm.yaml may override it).
    orders = {name: device.rank_by for name, device in requirements.items()}
    excluded = excluded_devices(rows, select_params)
    recommendations = {device: None if device in excluded else variant
                       for device, variant in recommend(rows, orders).items()}
    why = {device: excluded.get(device, line)
           for device, line in why_recommended(rows, orders).items()}
    battery = battery_lines(rows, farm, orders, recommendations)
    return Summary(reference_accuracy=reference.accuracy, reference_samples=reference.samples,
                   reference_interval=reference.interval, rank_by=params.rank_by,
                   requirements={name: device.model_dump()
                                 for name, device in requirements.items()},
                   counts=Counts.of(rows), recommendations=recommendations,
                   why_recommended=why, pareto=pareto_front(rows),
                   **({"excluded": excluded} if excluded else {}),
                   **({"task": task} if task != DEFAULT_TASK else {}),
                   **({"battery": battery} if battery else {}), results=rows)


def battery_lines(rows: list[SummaryRow], farm: Farm, orders: dict[str, list[str]],
                  recommendations: dict[str, str | None]) -> dict[str, list[str]]:
    """Per device with a battery in farm.yaml: "at N fps this variant lasts H hours on the
    battery" for its recommended variant and the runner-up (or why there is no figure)."""
    lines: dict[str, list[str]] = {}
    for device, choice in choices(rows, orders).items():
        battery = getattr(farm.devices.get(device), "battery", None)
        if battery is None or choice is None or recommendations.get(device) is None:
            continue
        told = []
        for label, row in (("recommended", choice.winner), ("runner-up", choice.runner_up)):
            if row is None:
                continue
            if row.battery_hours is None:
                told.append(f"{label} {row.variant}: no energy figure (no meter, no farm.yaml "
                            "power)")
                continue
            life = energy_of.BatteryLife(row.battery_hours, float(row.battery_fps or 0),
                                         battery.fps, (row.battery_fps or 0) < battery.fps)
            told.append(f"{label}: " + energy_of.battery_text(
                row.variant, life, battery.capacity_mwh,
                f"{row.energy_source}: {row.energy_meter}"))
        lines[device] = told
    return lines


def _points(summary: Summary) -> list[dict[str, Any]]:
    """``reports/points.json``: one point per timed result, for ``dvc plots``."""
    return [{"device": row.device, "variant": row.variant, "accuracy": row.accuracy,
             "latency_p50_ms": row.latency_ms.p50, "size_bytes": row.size_bytes}
            for row in summary.results if row.latency_ms]


def _benchmark_metrics(summary: Summary, devices: list[str]) -> dict[str, Any]:
    """``metrics/benchmark.json``: per device and timed variant, flat, for ``dvc metrics``."""
    return {device: {row.variant: {
        "accuracy": row.accuracy, "latency_p50_ms": row.latency_ms.p50,
        "latency_p90_ms": row.latency_ms.p90, "size_bytes": row.size_bytes,
        "throughput_fps": row.throughput_fps,
        **({"end_to_end_p90_ms": row.end_to_end.latency_ms.p90} if row.end_to_end else {})}
        for row in summary.results if row.device == device and row.latency_ms}
        for device in devices}


def select(params: RequirementParams, farm: Farm, results_dir: Path, reference_path: Path,
           reports_dir: Path, metrics_dir: Path,
           select_params: SelectParams = SelectParams()) -> Path:
    """Run the step; returns the path of ``summary.json``."""
    records = collect_results(results_dir, list(farm.devices))  # read once, used twice
    summary = summarise(params, farm, results_dir, reference_path, records, select_params)
    with atomic_output_dir(reports_dir) as staging:
        write_report(summary, staging, raw_latencies(records, results_dir))
        write_json(staging / "points.json", _points(summary))
        write_summary(staging / "summary.json", summary)
    write_json(metrics_dir / "benchmark.json", _benchmark_metrics(summary, list(farm.devices)))
    return reports_dir / "summary.json"
