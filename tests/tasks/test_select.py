"""The select step: requirement checks on hand-written records (pure), device overrides,
the per-image fp32 reference, the recommendation, then the whole step on real benchmark
results of the tiny project: summary, Markdown report, plots, points and DVC metrics; and
a variant convert really rejects, through benchmark and select."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tasks.core.accuracy import accuracy_interval, format_accuracy
from tasks.benchmark import benchmark_device
from tasks.convert import ConvertInputs, convert
from tasks.config import (BenchmarkParams, ConvertParams, Farm, LocalDevice,
                               QuantizationParams, RequirementParams, Requirements,
                               effective_requirements, load_farm)
from tasks.core.errors import StepError
from tasks.core.files import read_json, write_json
from tasks.core.contracts.results import ResultStatus
from tasks.core.contracts.summary import RowStatus, Summary, SummaryRow
from tasks.select.report.cells import COLUMNS, row_cells
from tasks.select.report.markdown import markdown_text
from tasks.select.report.terminal import summary_table
from tasks.select import (MB, flag_long_tails, flag_slow_quantized,
                          reference_on_first, relative_drop, select, summarise, verdict)
from tasks.select.ranking import pareto_front, rank_value, recommend, why_recommended
from tests.helpers import fork_safe, index_entries, records
from tests.tasks.select.summaries import judge as evaluate
from tests.tasks.select.summaries import summary_of, summary_row

NO_LIMITS = Requirements(max_accuracy_drop=None)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ROW_KEYS = {"variant", "format", "precision", "device", "status", "reasons", "accuracy",
            "size_bytes", "latency_ms", "throughput_fps", "peak_rss_mb"}


def ok_record(variant: str = "onnx-fp32", device: str = "local", accuracy: float = 0.9,
              p50: float = 1.0, p90: float = 2.0, p99: float = 3.0, mean: float = 1.2,
              size: int = 10_000, rss: float = 50.0, ran: str = "f32") -> dict[str, Any]:
    """A benchmark record as ``benchmark`` writes it, with a harness result."""
    return {
        "variant": variant, "device": device, "format": variant.split("-")[0],
        "precision": "fp32", "source": "base", "runtime": "onnxruntime", "size_bytes": size,
        "sha256": "0" * 64, "threads": 1, "device_facts": {"arch": "x86_64"},
        "declared_execution_precision": "f32", "status": "ok", "error": None,
        "harness": {
            "status": "ok", "error": None,
            "runtime": {"name": "onnxruntime", "version": "1.32.0", "requested": "onnxruntime",
                        "execution_precision": ran},
            "latency_ms": {"p50": p50, "p90": p90, "p99": p99, "mean": mean, "std": 0.1,
                           "min": p50 / 2, "max": p99 * 2},
            "throughput_fps": 1000.0 / mean, "accuracy": accuracy, "peak_rss_mb": rss,
            "load_ms": 12.5, "first_inference_ms": 1.5, "runs": 100},
    }


def not_ok_record(status: str, error: str | None, variant: str = "tflite-fp32",
                  device: str = "local") -> dict[str, Any]:
    record = ok_record(variant=variant, device=device)
    del record["harness"]
    return {**record, "status": status, "error": error}


# --------------------------------------------------------------------------- evaluate


def test_ok_record_meeting_every_requirement_passes() -> None:
    requirements = Requirements(min_accuracy=0.5, max_accuracy_drop=0.05, max_latency_p90_ms=10,
                                max_size_mb=1, max_peak_rss_mb=100)
    row = evaluate(ok_record(), requirements, reference_accuracy=0.9)
    assert row.status == "pass" and row.reasons == []
    assert row.variant == "onnx-fp32" and row.device == "local"
    assert row.format == "onnx" and row.precision == "fp32" and row.runtime == "onnxruntime"
    assert row.accuracy == 0.9 and row.accuracy_drop == 0.0
    assert row.latency_ms.document() == {"p50": 1.0, "p90": 2.0, "p99": 3.0, "mean": 1.2}
    assert row.throughput_fps == pytest.approx(1000 / 1.2)
    assert row.peak_rss_mb == 50.0 and row.load_ms == 12.5
    assert row.size_bytes == 10_000 and row.threads == 1
    assert row.runtime_version == "1.32.0" and row.execution_precision == "f32"
    assert row.notes == []
    # A harness that did not say on how many images: no interval can be given.
    assert row.accuracy_samples == 0 and row.accuracy_interval is None
    record = ok_record()
    record["harness"]["accuracy_samples"] = 50
    row = evaluate(record, requirements, reference_accuracy=0.9)
    assert row.accuracy_samples == 50
    assert row.accuracy_interval == list(accuracy_interval(0.9, 50))


def test_a_rows_intervals_and_changed_conditions_come_from_its_harness_result() -> None:
    record = ok_record()
    record["harness"]["latency_ci95_ms"] = {"p50": [0.9, 1.1], "p90": [1.8, 2.3]}
    record["harness"]["conditions"] = {"changes": ["CPU clock changed from 2000 to 1500 MHz",
                                                   "other processes kept 1.5 CPUs busy"]}
    row = evaluate(record, Requirements(), reference_accuracy=0.9)
    assert row.latency_ci95_ms == {"p50": [0.9, 1.1], "p90": [1.8, 2.3]}
    assert row.notes == ["conditions changed during the run: CPU clock changed from 2000 "
                            "to 1500 MHz; other processes kept 1.5 CPUs busy"]
    assert row.status == "pass", "a note, not a verdict"
    # An older harness's result: no intervals, no conditions.
    assert evaluate(ok_record(), Requirements(), 0.9).latency_ci95_ms is None


@pytest.mark.parametrize(("declared", "ran", "reason"), [
    ("f32", "bf16", "ran in bf16, not the f32 its variant declares"),
    ("f32", "f16", "ran in f16, not the f32 its variant declares"),
    ("bf16", "f32", "ran in f32, not the bf16 its variant declares"),
    ("f32", None, "ran in an unreported precision, not the f32 its variant declares"),
])
def test_a_result_run_in_another_precision_fails_with_the_reason(declared: str, ran: str | None,
                                                                 reason: str) -> None:
    record = {**ok_record(ran=ran), "declared_execution_precision": declared}
    row = evaluate(record, Requirements(max_accuracy_drop=None), reference_accuracy=0.9)
    assert row.status == "fail" and row.reasons == [reason]
    assert row.execution_precision == ran
    assert recommend([row], "latency_p50_ms") == {"local": None}


def test_precision_checks_pass_what_ran_as_declared_and_note_the_unverified() -> None:
    requirements = Requirements(max_accuracy_drop=None)
    bf16 = evaluate({**ok_record(ran="bf16"), "declared_execution_precision": "bf16"},
                    requirements, 0.9)
    assert bf16.status == "pass" and bf16.execution_precision == "bf16"
    # A record without a declaration (written before variants declared one) means f32.
    legacy = {key: value for key, value in ok_record(ran="bf16").items()
              if key != "declared_execution_precision"}
    assert evaluate(legacy, requirements, 0.9).reasons == [
        "ran in bf16, not the f32 its variant declares"]
    delegated = evaluate(ok_record(ran="unverified (delegate libgpu.so)"), requirements, 0.9)
    assert delegated.status == "pass"
    assert delegated.notes == ["execution precision unverified (delegate libgpu.so): "
                                  "the runtime does not report it"]


@pytest.mark.parametrize(("status", "error", "expected_status", "expected_reason"), [
    ("failed", "harness did not finish: CommandTimedOut", "error",
     "harness did not finish: CommandTimedOut"),
    ("failed", None, "error", "unknown failure"),
    ("skipped", "runtime 'tflite' is not installed on local", "skipped",
     "runtime 'tflite' is not installed on local"),
])
def test_failed_and_skipped_records_carry_their_reason(status: str, error: str | None,
                                                       expected_status: str,
                                                       expected_reason: str) -> None:
    row = evaluate(not_ok_record(status, error), Requirements(), reference_accuracy=0.9)
    assert row.status == expected_status
    assert row.reasons == [expected_reason]
    for key in ("accuracy", "accuracy_drop", "latency_ms", "throughput_fps", "peak_rss_mb",
                "load_ms", "runtime_version"):
        assert getattr(row, key) is None
    # Identity survives, so the report still lists the variant and its size.
    assert row.variant == "tflite-fp32" and row.size_bytes == 10_000


@pytest.mark.parametrize(("limits", "record", "reference", "reason"), [
    ({"min_accuracy": 0.95}, {}, 0.9, "accuracy 0.9000 < min_accuracy 0.95"),
    ({"max_accuracy_drop": 0.01}, {"accuracy": 0.88}, 0.9,
     "accuracy drop 2.22% vs fp32 reference > max_accuracy_drop 1.00%"),
    ({"max_latency_p90_ms": 1.5}, {"p90": 2.0}, 0.9, "p90 latency 2.000 ms > max_latency_p90_ms 1.5"),
    ({"max_size_mb": 0.005}, {"size": 10_000}, 0.9, "size 0.010 MB > max_size_mb 0.005"),
    ({"max_peak_rss_mb": 40}, {"rss": 50.0}, 0.9, "peak RSS 50.0 MB > max_peak_rss_mb 40.0"),
], ids=["min_accuracy", "max_accuracy_drop", "max_latency_p90_ms", "max_size_mb",
        "max_peak_rss_mb"])
def test_each_requirement_fails_with_its_numbers(limits: dict[str, float], record: dict[str, Any],
                                                 reference: float, reason: str) -> None:
    requirements = Requirements(**{"max_accuracy_drop": None, **limits})
    row = evaluate(ok_record(**record), requirements, reference_accuracy=reference)
    assert row.status == "fail"
    assert row.reasons == [reason]
    # The measurements are still reported for a failing variant.
    assert row.latency_ms.p90 == record.get("p90", 2.0)


def mcu_record(model_bytes: int = 20_992, arena_bytes: int = 6_656,
               accuracy: float = 0.85, flash_budget: int = 25_600,
               ram_budget: int = 8_192) -> dict[str, Any]:
    """A ``tflm`` record as the MCU fit check writes it: by default budgets of 25 KB
    flash, 8 KB RAM."""
    return {
        "variant": "tflm-int8", "device": "esp32", "format": "tflm", "precision": "int8",
        "source": "base", "runtime": "tflm", "size_bytes": model_bytes, "sha256": "0" * 64,
        "threads": None, "device_facts": {"class": "mcu"}, "status": "ok", "error": None,
        "mcu": {"model_bytes": model_bytes, "arena_bytes": arena_bytes, "flash_bytes": 32_768,
                "ram_bytes": 12_288, "flash_budget_bytes": flash_budget, "ram_budget_bytes": ram_budget,
                "accuracy": accuracy, "accuracy_samples": 360, "ops": ["CONV_2D"]}}


def test_an_mcu_fit_is_judged_on_its_budgets_and_host_accuracy() -> None:
    """Latency and memory limits do not apply where nothing could measure them (no
    board): the fit and the host interpreter's accuracy do."""
    requirements = Requirements(min_accuracy=0.8, max_accuracy_drop=0.1, max_latency_p90_ms=0.001,
                                max_peak_rss_mb=0.001)
    record = mcu_record()
    row = evaluate(record, requirements, reference_accuracy=0.9)
    assert row.status == "pass" and row.reasons == []
    assert row.accuracy == 0.85 and row.accuracy_samples == 360
    assert row.accuracy_interval == list(accuracy_interval(0.85, 360))
    assert row.accuracy_drop == pytest.approx(0.05 / 0.9)
    assert row.mcu.document() == record["mcu"]
    assert row.runtime_version == "tflite-micro (host)"
    for key in ("latency_ms", "throughput_fps", "peak_rss_mb", "load_ms", "execution_precision"):
        assert getattr(row, key) is None, key
    assert row.notes == ["fits check: model 20.5 of 25 KB flash budget, arena 6.5 of 8 KB RAM "
                            "budget; accuracy from TFLite Micro on the host; latency needs the board"]
    # The accuracy requirements hold it to the host interpreter's accuracy.
    assert evaluate(record, Requirements(min_accuracy=0.86, max_accuracy_drop=None),
                    0.9).reasons == [
        "accuracy 0.8500 < min_accuracy 0.86"]


def test_an_mcu_variant_fits_its_budgets_exactly_and_not_a_byte_more() -> None:
    exact = evaluate(mcu_record(model_bytes=25_600, arena_bytes=8_192), NO_LIMITS, 0.85)
    assert exact.status == "pass" and exact.reasons == []
    over = evaluate(mcu_record(model_bytes=25_601, arena_bytes=8_193), NO_LIMITS, 0.85)
    assert over.status == "fail"
    assert over.reasons == ["model 25.0 KB > flash budget 25.0 KB",
                               "tensor arena 8.0 KB > RAM budget 8.0 KB"]
    far_over = evaluate(mcu_record(model_bytes=102_400, arena_bytes=81_920), NO_LIMITS, 0.85)
    assert far_over.reasons == ["model 100.0 KB > flash budget 25.0 KB",
                                   "tensor arena 80.0 KB > RAM budget 8.0 KB"]
    arena_only = evaluate(mcu_record(arena_bytes=10_240), NO_LIMITS, 0.85)
    assert arena_only.reasons == ["tensor arena 10.0 KB > RAM budget 8.0 KB"]


def test_a_large_boards_figures_are_in_kb_of_1024_bytes() -> None:
    """Budgets of 2048 KB flash and 1024 KB RAM: at this size a KB of 1000 or 1025 bytes
    would show (small budgets round it away)."""
    fits = evaluate(mcu_record(model_bytes=1_536_000, arena_bytes=614_400,
                               flash_budget=2_097_152, ram_budget=1_048_576), NO_LIMITS, 0.85)
    assert fits.notes[0] == ("fits check: model 1500.0 of 2048 KB flash budget, arena "
                                "600.0 of 1024 KB RAM budget; accuracy from TFLite Micro on "
                                "the host; latency needs the board")
    over = evaluate(mcu_record(model_bytes=2_150_400, arena_bytes=1_126_400,
                               flash_budget=2_097_152, ram_budget=1_048_576), NO_LIMITS, 0.85)
    assert over.reasons == ["model 2100.0 KB > flash budget 2048.0 KB",
                               "tensor arena 1100.0 KB > RAM budget 1024.0 KB"]


def test_an_mcu_variant_is_held_to_the_size_limit_too() -> None:
    row = evaluate(mcu_record(model_bytes=20_992), Requirements(max_size_mb=0.01,
                                                                max_accuracy_drop=None), 0.85)
    assert row.status == "fail"
    assert row.reasons == ["size 0.020 MB > max_size_mb 0.01"]


def test_relative_accuracy_drop() -> None:
    assert relative_drop(0.88, 0.9) == pytest.approx(0.02 / 0.9)
    assert relative_drop(0.95, 0.9) == 0.0, "a better variant has no drop"
    assert relative_drop(0.5, 0.0) == 0.0
    # 2.2% lost fails a 1% limit and passes a 3% limit.
    record = ok_record(accuracy=0.88)
    assert evaluate(record, Requirements(max_accuracy_drop=0.01), 0.9).status == "fail"
    row = evaluate(record, Requirements(max_accuracy_drop=0.03), 0.9)
    assert row.status == "pass"
    assert row.accuracy_drop == pytest.approx(0.0222, abs=1e-4)
    # Relative, not absolute: 0.02 absolute on a 0.5 reference is a 4% drop.
    assert evaluate(ok_record(accuracy=0.48), Requirements(max_accuracy_drop=0.03),
                    0.5).status == "fail"


def test_reference_is_taken_on_the_images_the_device_evaluated(tmp_path: Path) -> None:
    assert reference_on_first([1, 1, 0, 0], 2) == 1.0
    assert reference_on_first([1, 1, 0, 0], 0) == 0.5, "0 samples = the whole split"
    assert reference_on_first([1, 1, 0, 0], 99) == 0.5
    assert reference_on_first([], 0) == 0.0
    # The fp32 model got the first 10 images all right (and only half overall): a device
    # at 0.9 on those 10 lost 10%, not nothing.
    reference = write_reference(tmp_path, [1] * 10 + [0] * 10)
    record = ok_record(accuracy=0.9)
    record["harness"]["accuracy_samples"] = 10
    write_results(tmp_path / "results", {"local": [record]})
    (tmp_path / "farm.yaml").write_text("devices:\n  local: {}\n", encoding="utf-8")
    summary = summarise(RequirementParams(max_accuracy_drop=0.05), load_farm(tmp_path / "farm.yaml"),
                        tmp_path / "results", reference)
    assert summary.reference_accuracy == 0.5
    [row] = summary.results
    assert row.accuracy_drop == pytest.approx(0.1)
    assert row.status == "fail"
    assert row.reasons == ["accuracy drop 10.00% vs fp32 reference > max_accuracy_drop 5.00%"]


def test_limits_are_inclusive_and_every_miss_is_listed() -> None:
    exact = Requirements(min_accuracy=0.9, max_accuracy_drop=0.0, max_latency_p90_ms=2.0,
                         max_size_mb=10_000 / MB, max_peak_rss_mb=50.0)
    assert evaluate(ok_record(), exact, 0.9).status == "pass"
    strict = Requirements(min_accuracy=0.99, max_accuracy_drop=0.01, max_latency_p90_ms=1.0,
                          max_size_mb=0.001, max_peak_rss_mb=10)
    row = evaluate(ok_record(), strict, 1.0)
    assert row.status == "fail"
    assert [reason.split()[0] for reason in row.reasons] == ["accuracy", "accuracy", "p90",
                                                                "size", "peak"]
    assert "min_accuracy" in row.reasons[0] and "max_accuracy_drop" in row.reasons[1]


# A record whose neighbouring fields all differ: p50 1, p90 2, p99 3 ms; 800 fps (mean
# 1.25 ms, not 1000 / p50); accuracy 0.85 on a 0.9 reference (5.56% relative drop, 0.05
# absolute); 10,000 bytes; 50 MB peak RSS; end to end p50 5.85, p90 6.5, p99 7.8 ms at
# 167 fps and accuracy 0.88. A check reading the wrong field, or judging the limit the
# wrong way round, turns a verdict below.
SPREAD = {"accuracy": 0.85, "p50": 1.0, "p90": 2.0, "p99": 3.0, "mean": 1.25, "size": 10_000,
          "rss": 50.0}
SPREAD_E2E_P90 = 6.5
DROP = (0.9 - 0.85) / 0.9

# Every numeric requirement: (met at this limit, missed at this one, the reason).
LIMIT_CASES: dict[str, tuple[float, float, str]] = {
    "min_accuracy": (0.85, 0.8501, "accuracy 0.8500 < min_accuracy 0.8501"),
    # 0.05 would pass an absolute drop; the relative one is 5.56%.
    "max_accuracy_drop": (DROP, 0.05,
                          "accuracy drop 5.56% vs fp32 reference > max_accuracy_drop 5.00%"),
    # A detector's names for the same two checks, in its terms (its score is mAP@0.5).
    "min_map50": (0.85, 0.8501, "mAP50 0.8500 < min_map50 0.8501"),
    "max_map_drop": (DROP, 0.05, "mAP50 drop 5.56% vs fp32 reference > max_map_drop 5.00%"),
    # p50 (1.0) would pass 1.999, p99 (3.0) would fail 2.0; so would the end-to-end p90.
    "max_latency_p90_ms": (2.0, 1.999, "p90 latency 2.000 ms > max_latency_p90_ms 1.999"),
    # The model's p90 (2.0) or the end-to-end p50 (5.85) would pass 6.499, its p99 (7.8)
    # would fail 6.5.
    "max_end_to_end_p90_ms": (SPREAD_E2E_P90, 6.499,
                              "end-to-end p90 6.500 ms > max_end_to_end_p90_ms 6.499"),
    # 1000 / p50 = 1000 fps would pass 800.1; the end-to-end 167 fps would fail 800.
    "min_fps": (800.0, 800.1, "throughput 800.0 fps < min_fps 800.1"),
    "max_size_mb": (10_000 / MB, 9_999 / MB, f"size 0.010 MB > max_size_mb {9_999 / MB}"),
    "max_peak_rss_mb": (50.0, 49.9, "peak RSS 50.0 MB > max_peak_rss_mb 49.9"),
    # LIMIT_DEVICE's estimate: (3 - 1 W) x p50 1.0 ms = 2 mJ above idle per inference; the
    # p90 (4 mJ) or the active 3 W x 1 ms would fail 2.0.
    "max_energy_mj": (2.0, 1.999,
                      "energy 2 mJ per inference (estimated) > max_energy_mj 1.999"),
    # 10000 mWh / (1 W idle x 1000 + 2 mJ x 10 fps) = 9.804 h.
    "min_battery_hours": (10_000 / 1020, 9.81,
                          "battery life 9.8 h at 10 fps (estimated) < min_battery_hours 9.81"),
}
# The device every limit case runs on: a declared power and battery, for the energy ones.
LIMIT_DEVICE = LocalDevice(power={"idle_w": 1.0, "active_w": 3.0},
                           battery={"capacity_mwh": 10_000, "fps": 10})
# What is not a limit on one measurement: how the passing variants are ranked.
NOT_LIMITS = {"rank_by"}
REQUIREMENT_LIMITS = [name for name in Requirements.model_fields if name not in NOT_LIMITS]


@pytest.mark.parametrize("field", REQUIREMENT_LIMITS)
def test_each_requirement_alone_is_met_at_its_limit_and_missed_just_beyond(field: str) -> None:
    """Every requirement of the params model (a new one joins here and needs its case)
    binds alone on a record whose other measures differ from the one it names: equal to
    the limit passes (limits are inclusive), a step beyond fails with the measured figure
    and the limit in the reason, and no other requirement speaks."""
    assert field in LIMIT_CASES, f"requirement {field} has no case in LIMIT_CASES: add one"
    met, missed, reason = LIMIT_CASES[field]
    record = with_end_to_end(ok_record(**SPREAD), p90=SPREAD_E2E_P90)
    unset = {name: None for name in REQUIREMENT_LIMITS}
    passing = evaluate(record, Requirements(**{**unset, field: met}), 0.9, LIMIT_DEVICE)
    assert (passing.status, passing.reasons) == ("pass", [])
    failing = evaluate(record, Requirements(**{**unset, field: missed}), 0.9, LIMIT_DEVICE)
    assert (failing.status, failing.reasons) == ("fail", [reason])
    # With every limit unset the record passes: the case above is that limit's alone.
    assert evaluate(record, Requirements(**unset), 0.9, LIMIT_DEVICE).status == "pass"


# One value of each requirement for the experiment and another for a device's override.
EXPERIMENT_VALUES: dict[str, Any] = {
    "min_accuracy": 0.5, "max_accuracy_drop": 0.05, "min_map50": 0.4, "max_map_drop": 0.1,
    "max_latency_p90_ms": 10.0,
    "max_end_to_end_p90_ms": 20.0, "min_fps": 30.0, "max_size_mb": 4.0,
    "max_peak_rss_mb": 256.0, "max_energy_mj": 50.0, "min_battery_hours": 24.0,
    "rank_by": ["latency_p90_ms", "accuracy"]}
DEVICE_VALUES: dict[str, Any] = {
    "min_accuracy": 0.7, "max_accuracy_drop": 0.02, "min_map50": 0.6, "max_map_drop": 0.03,
    "max_latency_p90_ms": 2.5,
    "max_end_to_end_p90_ms": 8.0, "min_fps": 60.0, "max_size_mb": 0.5,
    "max_peak_rss_mb": 64.0, "max_energy_mj": 5.0, "min_battery_hours": 72.0,
    "rank_by": ["size_bytes"]}


@pytest.mark.parametrize("field", list(Requirements.model_fields))
def test_a_device_override_replaces_that_requirement_only(field: str) -> None:
    """A device's ``requirements`` in farm.yaml that state one field change that field, and
    every other one stays the experiment's (not the field's default), for every field of
    the params model; stated as null, the device has no such limit."""
    assert field in EXPERIMENT_VALUES and field in DEVICE_VALUES, f"add {field}'s values"
    params = RequirementParams(**EXPERIMENT_VALUES)
    device = LocalDevice(requirements=Requirements(**{field: DEVICE_VALUES[field]}))
    merged = effective_requirements(params, device).model_dump()
    assert merged == {**EXPERIMENT_VALUES, field: DEVICE_VALUES[field]}
    assert effective_requirements(params, LocalDevice()).model_dump() == EXPERIMENT_VALUES
    if field != "rank_by":
        cleared = LocalDevice(requirements=Requirements(**{field: None}))
        assert effective_requirements(params, cleared).model_dump() == {
            **EXPERIMENT_VALUES, field: None}


# --------------------------------------------------------------------------- device overrides


OVERRIDE_FARM = """\
devices:
  slow-board: {threads: 1}
  fast-board:
    threads: 1
    requirements: {max_latency_p90_ms: 1.5}
  lenient-board:
    requirements: {max_accuracy_drop: null}
"""


def write_results(results_dir: Path, device_records: dict[str, list[dict[str, Any]]]) -> None:
    for device, device_rows in device_records.items():
        for record in device_rows:
            write_json(results_dir / device / f"{record['variant']}.json", record)


def write_reference(folder: Path, test_correct: list[int]) -> Path:
    """``models/base/reference.json`` as ``train`` writes it."""
    return write_json(folder / "reference.json", {"test_correct": test_correct})


def test_device_overrides_change_the_verdict_for_that_device_only(tmp_path: Path) -> None:
    (tmp_path / "farm.yaml").write_text(OVERRIDE_FARM, encoding="utf-8")
    farm = load_farm(tmp_path / "farm.yaml")
    params = RequirementParams(max_accuracy_drop=0.05, max_latency_p90_ms=10.0)
    # The override replaces only what it states: the experiment's drop limit stays.
    fast = effective_requirements(params, farm.devices["fast-board"])
    assert fast.max_latency_p90_ms == 1.5 and fast.max_accuracy_drop == 0.05
    lenient = effective_requirements(params, farm.devices["lenient-board"])
    assert lenient.max_accuracy_drop is None and lenient.max_latency_p90_ms == 10.0

    # Same measurement everywhere: p90 2 ms, 3.3% below a 0.9 reference.
    write_results(tmp_path / "results", {
        device: [ok_record(device=device, accuracy=0.87)]
        for device in ("slow-board", "fast-board", "lenient-board")})
    reference = write_reference(tmp_path, [1] * 9 + [0])  # 0.9
    summary = summarise(params, farm, tmp_path / "results", reference)
    verdicts = {row.device: (row.status, row.reasons) for row in summary.results}
    assert verdicts["slow-board"] == ("pass", [])
    assert verdicts["fast-board"] == ("fail", ["p90 latency 2.000 ms > max_latency_p90_ms 1.5"])
    assert verdicts["lenient-board"] == ("pass", [])
    assert summary.requirements["fast-board"]["max_latency_p90_ms"] == 1.5
    assert summary.requirements["slow-board"]["max_latency_p90_ms"] == 10.0
    assert summary.recommendations == {"slow-board": "onnx-fp32", "fast-board": None,
                                          "lenient-board": "onnx-fp32"}
    assert summary.counts.document() == {"pass": 2, "fail": 1, "error": 0, "skipped": 0}

    # A stricter drop limit fails every device but the one that switched it off.
    strict = RequirementParams(max_accuracy_drop=0.01, max_latency_p90_ms=10.0)
    statuses = {row.device: row.status
                for row in summarise(strict, farm, tmp_path / "results", reference).results}
    assert statuses == {"slow-board": "fail", "fast-board": "fail", "lenient-board": "pass"}


# --------------------------------------------------------------------------- recommend


def ranked_rows() -> list[dict[str, Any]]:
    limits = Requirements(max_accuracy_drop=None, max_size_mb=0.05)
    records = [
        ok_record("tflite-fp32", p50=2.0, p90=3.0, accuracy=0.95, size=30_000),
        ok_record("onnx-fp32", p50=1.0, p90=1.5, accuracy=0.90, size=20_000),
        ok_record("openvino-fp32", p50=0.5, p90=0.6, accuracy=0.99, size=10 * MB),  # too big
        not_ok_record("failed", "boom", variant="onnx-int8"),
        ok_record("tflite-fp32", device="board", size=10 * MB),
        not_ok_record("skipped", "no runtime", device="board"),
    ]
    return [evaluate(record, limits, 0.9) for record in records]


def test_recommend_lowest_p50_among_passing_per_device() -> None:
    rows = ranked_rows()
    assert [row.status for row in rows] == ["pass", "pass", "fail", "error", "fail", "skipped"]
    assert recommend(rows, "latency_p50_ms") == {"local": "onnx-fp32", "board": None}
    assert recommend(rows, "latency_p90_ms") == {"local": "onnx-fp32", "board": None}


def test_recommend_by_accuracy_and_size() -> None:
    rows = ranked_rows()
    assert recommend(rows, "accuracy") == {"local": "tflite-fp32", "board": None}
    assert recommend(rows, "size_bytes") == {"local": "onnx-fp32", "board": None}
    assert recommend([], "accuracy") == {}


def test_recommend_ranks_by_the_percentile_asked_for() -> None:
    """A fast but jittery variant (lower p50, higher p90) and a steady one: ranking by
    p90 picks the steady one, by p50 the other, in whichever order the rows come."""
    jittery = evaluate(ok_record("onnx-fp32", p50=1.0, p90=5.0, p99=6.0), NO_LIMITS, 0.9)
    steady = evaluate(ok_record("tflite-fp32", p50=2.0, p90=3.0, p99=4.0), NO_LIMITS, 0.9)
    assert rank_value(jittery, "latency_p50_ms") == (1.0, 10_000.0)
    assert rank_value(jittery, "latency_p90_ms") == (5.0, 10_000.0)
    for rows in ([jittery, steady], [steady, jittery]):
        assert recommend(rows, "latency_p50_ms") == {"local": "onnx-fp32"}
        assert recommend(rows, "latency_p90_ms") == {"local": "tflite-fp32"}


def test_recommend_breaks_ties_by_size_and_ranks_the_unmeasured_last() -> None:
    """Equal latencies: the smaller variant. A passing variant whose latency nothing
    measured (an MCU fit) ranks after every measured one by latency, but by its size
    when size is what ranks."""
    small = evaluate(ok_record("onnx-fp32", p50=2.0, size=10_000), NO_LIMITS, 0.9)
    large = evaluate(ok_record("tflite-fp32", p50=2.0, size=20_000), NO_LIMITS, 0.9)
    unmeasured = evaluate(mcu_record(), NO_LIMITS, 0.85).model_copy(
        update={"device": "local", "size_bytes": 1_000})
    assert rank_value(unmeasured, "latency_p50_ms") == (float("inf"), 1_000.0)
    assert rank_value(small, "accuracy") == (-0.9, 10_000.0)
    assert rank_value(small, "peak_rss_mb") == (50.0, 10_000.0)
    for rows in ([small, large, unmeasured], [unmeasured, large, small]):
        assert recommend(rows, "latency_p50_ms") == {"local": "onnx-fp32"}
        assert recommend(rows, "size_bytes") == {"local": "tflm-int8"}


def latency_row(device: str, source: str, fmt: str, precision: str,
                p50: float | None) -> SummaryRow:
    return summary_row(f"{fmt}-{precision}", device, source=source, latency_ms=None if p50 is None
                       else {"p50": p50, "p90": p50, "p99": p50, "mean": p50})


def test_slower_quantised_variants_are_flagged_against_their_own_fp32() -> None:
    """Against the fp32 of the same source and format on the same device: another
    device's, source's or format's fp32 is not its baseline."""
    rows = [latency_row("pi", "base", "onnx", "fp32", 1.0),
            latency_row("pi", "base", "onnx", "int8-qdq", 1.5),  # slower: noted
            latency_row("pi", "base", "onnx", "int8-acc", 1.0),  # as fast: not slower
            # Last of its group: a baseline taken from another row than the fp32 one (the
            # last such row, as a dict comprehension keeps) would change the notes above.
            latency_row("pi", "base", "onnx", "int8-dynamic", 0.5),
            latency_row("board", "base", "onnx", "fp32", 3.0),
            latency_row("board", "base", "onnx", "int8-qdq", 2.0),
            latency_row("pi", "slim50", "onnx", "fp32", 2.5),
            latency_row("pi", "slim50", "onnx", "int8-qdq", 2.0),
            latency_row("pi", "base", "tflite", "int8", 9.0),  # no tflite-fp32 measured
            latency_row("pi", "base", "openvino", "fp32", None),  # failed: no baseline
            latency_row("pi", "base", "openvino", "int8", 9.0),
            latency_row("pi", "base", "onnx", "int8", None)]  # failed: nothing to compare
    flag_slow_quantized(rows)
    assert [row.notes for row in rows] == [
        [], ["slower than onnx-fp32 on this device (p50 x1.50): use onnx-fp32 here, or a "
             "quantisation this device runs natively"], [], [], [], [], [], [], [], [], [], []]


def test_verdict_message_states_counts_recommendations_unserved_devices_and_errors() -> None:
    rows = [summary_row("a", "pi", "pass"),
            summary_row("b", "pi", "error", reasons=["lost"]),
            summary_row("c", "board", "fail", reasons=["slow", "big"]),
            summary_row("d", "board", "skipped", reasons=["no runtime"])]
    summary = summary_of(rows, {"pi": "a", "board": None})
    result = verdict(summary)
    assert not result.ok
    assert result.problems == ("b@pi: error: lost", "c@board: fail: slow; big")
    assert result.message == (
        "partial: errors on 1 of 2 device(s) (pi); every other result is complete | "
        "1 pass, 1 fail, 1 error, 1 skipped | recommended: pi: a | no variant meets the "
        "requirements on: board | errors: b@pi: error: lost")
    served = verdict(summary_of(rows[:1], {"pi": "a", "x": "e"},
                                counts={"pass": 2, "fail": 0, "error": 0, "skipped": 0}))
    assert served.ok and served.problems == ()
    assert served.message == "2 pass, 0 fail, 0 error, 0 skipped | recommended: pi: a, x: e"



def test_verdict_message_lists_several_faulty_devices_unserved_devices_and_errors() -> None:
    rows = [summary_row("a", "pi", "pass"),
            summary_row("b", "pi", "error", reasons=["lost"]),
            summary_row("c", "board", "error", reasons=["gone"])]
    summary = summary_of(rows, {"pi": "a", "board": None, "mcu": None})
    assert verdict(summary).message == (
        "partial: errors on 2 of 2 device(s) (pi, board); every other result is complete | "
        "1 pass, 0 fail, 2 error, 0 skipped | recommended: pi: a | no variant meets the "
        "requirements on: board, mcu | errors: b@pi: error: lost | c@board: error: gone")


# Each status's verdict beside a served device's recommended pass (written out per
# RowStatus member: a new status fails the walk until it is added here).
VERDICT_OF = {
    RowStatus.PASS: (True, (), "2 pass, 0 fail, 0 error, 0 skipped | recommended: local: a"),
    RowStatus.FAIL: (True, ("v@local: fail: why",),
                     "1 pass, 1 fail, 0 error, 0 skipped | recommended: local: a"),
    RowStatus.ERROR: (False, ("v@local: error: why",),
                      "partial: errors on 1 of 1 device(s) (local); every other result is "
                      "complete | 1 pass, 0 fail, 1 error, 0 skipped | recommended: local: a | "
                      "errors: v@local: error: why"),
    RowStatus.SKIPPED: (True, (), "1 pass, 0 fail, 0 error, 1 skipped | recommended: local: a"),
}


@pytest.mark.parametrize("status", list(RowStatus))
def test_every_status_reaches_the_verdict_and_the_counts(status: RowStatus) -> None:
    """Beside a served device's recommended pass, one row of each status: only an error
    fails the run, a fail and an error are its problems, and each status is counted in
    its own field (the flow's outcome counts are this document)."""
    ok, problems, message = VERDICT_OF[status]
    rows = [summary_row("a", status="pass"), summary_row("v", status=status, reasons=["why"])]
    summary = summary_of(rows, {"local": "a"})
    assert summary.counts.document() == {
        "pass": 1 + (status == "pass"), "fail": int(status == "fail"),
        "error": int(status == "error"), "skipped": int(status == "skipped")}
    result = verdict(summary)
    assert (result.ok, result.problems, result.message) == (ok, problems, message)


def test_each_status_is_counted_and_named_apart_when_their_numbers_differ() -> None:
    """1 pass, 2 fail, 3 error and 4 skipped over two devices: each count in its own
    field and place, each problem named in row order, the faulty devices counted apart
    from the devices."""
    statuses = ["pass", "fail", "fail", "error", "error", "error", *["skipped"] * 4]
    rows = [summary_row(f"v{i}", "pi" if i % 2 else "board", status, reasons=[f"why {i}"])
            for i, status in enumerate(statuses)]
    summary = summary_of(rows, {"board": "v0", "pi": None})
    assert summary.counts.document() == {"pass": 1, "fail": 2, "error": 3, "skipped": 4}
    result = verdict(summary)
    assert result.problems == ("v1@pi: fail: why 1", "v2@board: fail: why 2",
                               "v3@pi: error: why 3", "v4@board: error: why 4",
                               "v5@pi: error: why 5")
    assert not result.ok and result.message == (
        "partial: errors on 2 of 2 device(s) (pi, board); every other result is complete | "
        "1 pass, 2 fail, 3 error, 4 skipped | recommended: board: v0 | no variant meets the "
        "requirements on: pi | errors: v3@pi: error: why 3 | v4@board: error: why 4 | "
        "v5@pi: error: why 5")


# What each result status becomes in the summary (written out per ResultStatus member: a
# new one fails the walk until it is added here): an ok result is judged, a pass when it
# meets its requirements and a fail when it misses one; the others are never measured.
ROW_OF_RESULT = {ResultStatus.OK: ("pass", "fail"), ResultStatus.FAILED: ("error", "error"),
                 ResultStatus.SKIPPED: ("skipped", "skipped"),
                 ResultStatus.REJECTED: ("fail", "fail")}


@pytest.mark.parametrize("status", list(ResultStatus))
def test_every_result_status_becomes_its_row_status_with_its_reason(
        status: ResultStatus) -> None:
    met, missed = ROW_OF_RESULT[status]
    record = (ok_record() if status is ResultStatus.OK
              else not_ok_record(status.value, f"{status.value} here"))
    strict = Requirements(min_accuracy=0.95, max_accuracy_drop=None)
    judged_rows = [evaluate(record, NO_LIMITS, 0.9), evaluate(record, strict, 0.9)]
    assert [(row.status, row.reasons) for row in judged_rows] == (
        [("pass", []), ("fail", ["accuracy 0.9000 < min_accuracy 0.95"])]
        if status is ResultStatus.OK else [(met, [f"{status.value} here"])] * 2)
    assert [row.status for row in judged_rows] == [met, missed]
    assert all(isinstance(row.status, RowStatus) for row in judged_rows)
    assert [row.latency_ms is None for row in judged_rows] == [status is not ResultStatus.OK] * 2


# --------------------------------------------------------------------------- the whole step


E2E_FARM = """\
devices:
  local:
    threads: 1
    workdir: dev/local
    power: {idle_w: 5.0, active_w: 15.0, source: test host figures}
    battery: {capacity_mwh: 50000, fps: 2}
  onnx-only:
    threads: 1
    workdir: dev/onnx-only
    runtimes: [onnxruntime]
    requirements: {max_latency_p90_ms: 0.000001}
"""

# Accuracy over the whole test split, so it matches the fp32 reference.
E2E_BENCHMARK = BenchmarkParams(warmup_runs=2, warmup_seconds=0.0, runs=10, seconds=0.01,
                                max_seconds=0.05, accuracy_samples=0, timeout_seconds=60)


def reference_json(tiny_project: Any) -> Path:
    return tiny_project.layout.base_model / "reference.json"


@pytest.fixture(scope="module")
def selected(tiny_project: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("select")
    (root / "farm.yaml").write_text(E2E_FARM, encoding="utf-8")
    farm = load_farm(root / "farm.yaml")
    for name, device in farm.devices.items():
        benchmark_device(name, device, E2E_BENCHMARK, tiny_project.layout.variants,
                         tiny_project.layout.prepared, root / "results" / name)
    params = tiny_project.params.requirements
    summary_path = select(params, farm, root / "results", reference_json(tiny_project),
                          root / "reports", root / "metrics")
    return {"root": root, "farm": farm, "params": params, "summary_path": summary_path,
            "summary": read_json(summary_path)}


def test_select_summary_rows(tiny_project: Any, selected: dict[str, Any]) -> None:
    root, summary = selected["root"], selected["summary"]
    assert selected["summary_path"] == root / "reports" / "summary.json"
    # The fp32 reference over the whole split is the Keras test accuracy of train.
    assert summary["reference_accuracy"] == pytest.approx(
        read_json(tiny_project.layout.train_metrics)["test_accuracy"])
    assert summary["rank_by"] == ["latency_p50_ms"]
    assert summary["reference_samples"] == 360  # digits' test split: 20% of 1797
    assert summary["reference_interval"] == list(accuracy_interval(summary["reference_accuracy"], 360))
    rows = summary["results"]
    index = {entry["name"]: entry for entry in index_entries(tiny_project.layout.variants)}
    assert sorted((row["device"], row["variant"]) for row in rows) == sorted(
        (device, name) for device in ("local", "onnx-only") for name in index)
    for row in rows:
        assert ROW_KEYS <= set(row)
        assert row["size_bytes"] == index[row["variant"]]["bytes"]
        assert row["format"] == index[row["variant"]]["format"]
        if row["status"] == "skipped":
            assert row["latency_ms"] is None and row["accuracy"] is None
            continue
        assert set(row["latency_ms"]) == {"p50", "p90", "p99", "mean"}
        record = read_json(root / "results" / row["device"] / f"{row['variant']}.json")
        assert row["accuracy"] == record["harness"]["accuracy"]
        samples = record["harness"]["accuracy_samples"]
        assert row["accuracy_samples"] == samples > 0
        assert row["accuracy_interval"] == list(accuracy_interval(row["accuracy"], samples))
        assert row["latency_ms"]["p50"] == record["harness"]["latency_ms"]["p50"]
        assert row["throughput_fps"] > 0 and row["peak_rss_mb"] > 0

    by_key = {(row["device"], row["variant"]): row for row in rows}
    for name in index:
        assert by_key[("local", name)]["status"] == "pass", by_key[("local", name)]["reasons"]
    assert by_key[("onnx-only", "onnx-fp32")]["status"] == "fail"
    assert by_key[("onnx-only", "onnx-fp32")]["reasons"][0].startswith("p90 latency")
    assert by_key[("onnx-only", "tflite-fp32")]["status"] == "skipped"
    assert summary["counts"] == {"pass": 3, "fail": 1, "error": 0, "skipped": 2}

    local_rows = [row for row in rows if row["device"] == "local"]
    fastest = min(local_rows, key=lambda row: row["latency_ms"]["p50"])["variant"]
    assert summary["recommendations"] == {"local": fastest, "onnx-only": None}
    assert summary["requirements"]["onnx-only"]["max_latency_p90_ms"] == 1e-6
    assert summary["requirements"]["onnx-only"]["max_accuracy_drop"] == 0.05


def test_select_report_markdown(selected: dict[str, Any]) -> None:
    summary = selected["summary"]
    report = (selected["root"] / "reports" / "report.md").read_text(encoding="utf-8")
    # Whole lines, not substrings: a line with an extra name or device on it is wrong.
    lines = report.splitlines()
    assert report.startswith("# edgeflow report\n")
    assert "| " + " | ".join(COLUMNS) + " | reasons / notes |" in lines
    reference = format_accuracy(summary["reference_accuracy"], 360)
    assert (f"fp32 reference accuracy (source model, test split, 95% interval): "
            f"**{reference} on 360 test images**") in lines
    for row in summary["results"]:
        if row["accuracy"] is not None:  # the cell after exec: the accuracy and its interval
            cell = format_accuracy(row["accuracy"], row["accuracy_samples"])
            assert f"| {row['execution_precision']} | {markdown_text(cell)} |" in report
    table = [line for line in report.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(table) == 1 + len(summary["results"])
    for row in summary["results"]:
        assert any(line.startswith(f"| {row['device']} | {row['variant']} | {row['status']} |")
                   for line in table)
    recommended = summary["recommendations"]["local"]
    why = summary["why_recommended"]["local"]
    assert why.startswith("best latency_p50_ms among 3 passing variants: ")
    assert f"- **local**: `{recommended}` ({why})" in lines
    front = ", ".join(f"`{name}`" for name in summary["pareto"]["local"])
    assert f"  - Pareto frontier (accuracy, p90, size): {front}" in lines
    assert recommended in summary["pareto"]["local"], "the fastest passing one is on it"
    assert "- **onnx-only**: no variant meets the requirements" in lines
    # The reverse view: each variant and the devices it passes on (openvino-fp32 is
    # skipped on onnx-only and onnx-fp32 fails there: local only, both).
    assert "## Devices each variant meets the requirements on" in lines
    for variant in dict.fromkeys(row["variant"] for row in summary["results"]):
        devices = [row["device"] for row in summary["results"]
                   if row["variant"] == variant and row["status"] == "pass"]
        assert f"- `{variant}`: {', '.join(devices) or 'no device'}" in lines
    assert "Results: 3 pass, 1 fail, 0 error, 2 skipped." in lines
    requirements = lines[lines.index("## Requirements per device") + 2:]
    [onnx_only] = [line for line in requirements if line.startswith("- **onnx-only**: ")]
    assert "max_latency_p90_ms=1e-06" in onnx_only.removeprefix("- **onnx-only**: ").split(", ")
    assert "![local: accuracy against p90 latency](plots/devices/local/pareto.png)" in lines
    assert "![p90 latency per device and variant](plots/p90_heatmap.png)" in lines
    # Energy (issue 31): no meter on this machine, so local's is estimated from its
    # declared power, (15 - 5 W) x p50, marked in its column; onnx-only declares none.
    for row in summary["results"]:
        line = next(line for line in table
                    if line.startswith(f"| {row['device']} | {row['variant']} |"))
        if row["device"] == "local" and row["latency_ms"]:
            assert row["energy_source"] == "estimated"
            assert row["energy_mj"] == pytest.approx(10.0 * row["latency_ms"]["p50"])
            assert f" | ~{row['energy_mj']:.4g} est | " in line
        else:
            assert "energy_mj" not in row and line.split(" | ")[COLUMNS.index("energy mJ")] == "—"
    energies = {row["variant"]: row["energy_mj"] for row in summary["results"]
                if row["device"] == "local"}
    runner_up = min((row for row in summary["results"] if row["device"] == "local"
                     and row["variant"] != recommended), key=lambda row: row["latency_ms"]["p50"])
    assert summary["battery"] == {"local": [
        f"recommended: at 2 fps {recommended} lasts "
        f"{50_000 / (5_000 + 2 * energies[recommended]):.1f} h on the 50000 mWh battery "
        "(estimated: test host figures)",
        f"runner-up: at 2 fps {runner_up['variant']} lasts "
        f"{50_000 / (5_000 + 2 * energies[runner_up['variant']]):.1f} h on the 50000 mWh "
        "battery (estimated: test host figures)"]}
    for told in summary["battery"]["local"]:
        assert f"  - battery: {markdown_text(told)}" in lines
    assert ("![local: accuracy against energy per inference (estimated)]"
            "(plots/devices/local/energy.png)") in lines


def test_the_html_report_renders_offline_in_a_real_browser(selected: dict[str, Any],
                                                          tmp_path: Path) -> None:
    from tests.browser import open_offline

    seen = open_offline(selected["root"] / "reports" / "report.html", tmp_path)
    # Every plot select wrote is an image the browser decoded, at the PNG's own width.
    plots = sorted((selected["root"] / "reports" / "plots").rglob("*.png"))
    assert seen["images"] == seen["loaded"] == len(plots) == 7
    with Image.open(plots[0]) as image:
        assert image.size[0] in seen["widths"]
    assert seen["fetched"] == [], "self-contained: nothing fetched"
    assert seen["headings"][:2] == ["local", "onnx-only"]
    assert seen["height"] > 2000


PLOT_FILES = ["devices/local/pareto.png", "devices/local/latency.png",
              "devices/onnx-only/pareto.png", "devices/onnx-only/latency.png",
              "p90_heatmap.png", "accuracy_vs_size.png", "devices/local/energy.png"]


def test_select_writes_every_plot_and_nothing_else(selected: dict[str, Any]) -> None:
    plots = selected["root"] / "reports" / "plots"
    assert sorted(path.relative_to(plots).as_posix() for path in plots.rglob("*.png")) == sorted(
        PLOT_FILES)


@pytest.mark.parametrize("name", PLOT_FILES)
def test_select_plots_are_png(selected: dict[str, Any], name: str) -> None:
    path = selected["root"] / "reports" / "plots" / name
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    assert path.stat().st_size > 5_000
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        width, height = image.size
        assert width >= 600 and height >= 200
        # Not blank: a rendered plot (text, markers, antialiasing) has many colours.
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colours is None or len(colours) > 10


def test_select_points_and_dvc_metrics(selected: dict[str, Any]) -> None:
    root, summary = selected["root"], selected["summary"]
    measured = [row for row in summary["results"] if row["latency_ms"]]
    points = read_json(root / "reports" / "points.json")
    assert len(points) == len(measured) == 4
    assert {(p["device"], p["variant"]) for p in points} == {(r["device"], r["variant"])
                                                             for r in measured}
    for point in points:
        assert set(point) == {"device", "variant", "accuracy", "latency_p50_ms", "size_bytes"}
        assert point["latency_p50_ms"] > 0

    metrics = read_json(root / "metrics" / "benchmark.json")
    assert set(metrics) == {"local", "onnx-only"}
    assert set(metrics["local"]) == {"tflite-fp32", "onnx-fp32", "openvino-fp32"}
    assert set(metrics["onnx-only"]) == {"onnx-fp32"}
    row = next(r for r in measured if (r["device"], r["variant"]) == ("local", "onnx-fp32"))
    assert metrics["local"]["onnx-fp32"] == {
        "accuracy": row["accuracy"], "latency_p50_ms": row["latency_ms"]["p50"],
        "latency_p90_ms": row["latency_ms"]["p90"], "size_bytes": row["size_bytes"],
        "throughput_fps": row["throughput_fps"]}
    assert sorted(p.name for p in (root / "reports").iterdir()) == [
        "plots", "points.json", "report.html", "report.md", "summary.json"]
    # Valid JSON for dvc metrics: no NaN or Infinity.
    json.loads((root / "metrics" / "benchmark.json").read_text(), parse_constant=pytest.fail)


def test_summary_table_lists_every_row_or_every_measured_one(selected: dict[str, Any]) -> None:
    from rich.console import Console

    rows = selected["summary"]["results"]
    measured = [row for row in rows if row["status"] != "skipped"]
    assert len(measured) < len(rows), "the fixture has skipped rows"
    summary = Summary.model_validate(selected["summary"])
    assert summary_table(summary).row_count == len(measured)
    console = Console(record=True, width=300, color_system=None)
    table = summary_table(summary, include_skipped=True)
    assert table.row_count == len(rows)
    console.print(table)
    text = console.export_text()
    for row in selected["summary"]["results"]:
        assert row["variant"] in text
    assert "skipped" in text and "pass" in text and "fail" in text


# --------------------------------------------------------------------------- a rejected variant


def permute_saved_model_classes(model_dir: Path) -> None:
    """Rewrite ``model_dir/saved_model`` (what the TFLite and OpenVINO converters read)
    from its Keras model with the output classes rolled by one, as a converter that mixed
    up the output order would: an artifact that disagrees with its Keras model on every
    image. ``model.keras`` (what the check and the ONNX exporter read) stays as it was."""
    import keras

    model = keras.models.load_model(model_dir / "model.keras", compile=False)
    logits = model.get_layer("logits")
    kernel, bias = logits.get_weights()
    logits.set_weights([np.roll(kernel, 1, axis=1), np.roll(bias, 1)])
    shutil.rmtree(model_dir / "saved_model")
    model.export(str(model_dir / "saved_model"), format="tf_saved_model", verbose=False)


@pytest.fixture(scope="module")
def with_rejected(tiny_project: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """convert, benchmark and select for real with a variant convert rejects:
    ``tflite-dynamic`` (quantised, so kept as ``rejected`` rather than failing the step)
    converted from a SavedModel whose classes were permuted, beside ``onnx-fp32``, which
    agrees."""
    root = tmp_path_factory.mktemp("rejected")
    layout = tiny_project.layout
    model_dir = root / "models" / "base"
    shutil.copytree(layout.base_model, model_dir)
    permute_saved_model_classes(model_dir)
    fork_safe(convert, {"onnx": ["fp32"], "tflite": ["dynamic"]}, ConvertParams(),
              QuantizationParams(calibration_samples=16), 0.05,
              ConvertInputs(model_dir, None, layout.prepared), root / "variants")
    device = LocalDevice(workdir=root / "dev", threads=1)
    run = benchmark_device("local", device, E2E_BENCHMARK, root / "variants", layout.prepared,
                           root / "results" / "local")
    return {"variants": {entry["name"]: entry for entry in index_entries(root / "variants")},
            "run": run, "records": records(run), "farm": Farm(devices={"local": device}),
            "results": root / "results", "reference": model_dir / "reference.json"}


def test_convert_keeps_a_disagreeing_quantised_variant_as_rejected(with_rejected) -> None:
    variants = with_rejected["variants"]
    assert variants["onnx-fp32"]["status"] == "ok"
    rejected = variants["tflite-dynamic"]
    assert rejected["status"] == "rejected"
    assert rejected["check"]["passed"] is False and rejected["check"]["agreement"] < 0.2
    assert rejected["reason"] == "; ".join(rejected["check"]["failures"])
    assert rejected["reason"].startswith("argmax agreement ")


def test_a_rejected_variant_is_never_run_on_the_device(with_rejected) -> None:
    reason = with_rejected["variants"]["tflite-dynamic"]["reason"]
    record = with_rejected["records"]["tflite-dynamic"]
    assert record["status"] == "rejected"
    assert record["error"] == f"rejected by convert: {reason}"
    assert record.get("harness") is None
    # Not even deployed: the device's run folder holds the variant that ran, only.
    run_dir = Path(with_rejected["run"].remote_run_dir)
    assert (run_dir / "onnx-fp32" / "result.json").is_file()
    assert not (run_dir / "tflite-dynamic").exists()
    assert with_rejected["records"]["onnx-fp32"]["status"] == "ok"


def test_a_rejected_variant_fails_select_with_its_reason_and_is_never_recommended(
        tiny_project: Any, with_rejected) -> None:
    params = tiny_project.params.requirements.model_copy(update={"rank_by": "size_bytes"})
    summary = summarise(params, with_rejected["farm"], with_rejected["results"],
                        with_rejected["reference"])
    variants = with_rejected["variants"]
    rows = {row.variant: row for row in summary.results}
    assert rows["tflite-dynamic"].status == "fail"
    assert rows["tflite-dynamic"].reasons == [with_rejected["records"]["tflite-dynamic"]["error"]]
    assert rows["tflite-dynamic"].latency_ms is None and rows["tflite-dynamic"].accuracy is None
    assert rows["onnx-fp32"].status == "pass", rows["onnx-fp32"].reasons
    # By size the rejected variant would rank first: it must not be the recommendation.
    assert variants["tflite-dynamic"]["bytes"] < variants["onnx-fp32"]["bytes"]
    assert summary.recommendations == {"local": "onnx-fp32"}
    assert summary.counts.document() == {"pass": 1, "fail": 1, "error": 0, "skipped": 0}


# --------------------------------------------------------------------------- failures


def test_missing_results_dir_raises_step_error(selected: dict[str, Any], tmp_path: Path,
                                               tiny_project: Any) -> None:
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "earlier.md").write_text("earlier", encoding="utf-8")
    # Only the "local" device has results here.
    write_results(tmp_path / "results", {"local": [ok_record()]})
    with pytest.raises(StepError, match=r"results/onnx-only is missing: run the benchmark step"):
        select(selected["params"], selected["farm"], tmp_path / "results",
               reference_json(tiny_project), reports, tmp_path / "metrics")
    assert [path.name for path in reports.iterdir()] == ["earlier.md"]
    assert not (tmp_path / "metrics").exists()


def test_missing_reference_raises_step_error(selected: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(StepError, match="reference.json is missing: run the train step first"):
        select(selected["params"], selected["farm"], selected["root"] / "results",
               tmp_path / "base" / "reference.json", tmp_path / "reports", tmp_path / "metrics")
    assert not (tmp_path / "reports").exists()


def test_verdict_fails_on_errors_or_unserved_devices_and_names_each_problem() -> None:
    def summary(statuses: dict[str, str], recommendations: dict[str, str | None]) -> Summary:
        return summary_of([summary_row(v, "pi", s, reasons=[f"why {v}"])
                           for v, s in statuses.items()], recommendations)

    clean = verdict(summary({"a": "pass", "b": "fail"}, {"pi": "a"}))
    assert clean.ok and clean.problems == ("b@pi: fail: why b",)
    assert clean.message.startswith("1 pass, 1 fail, 0 error, 0 skipped")
    errored = verdict(summary({"a": "pass", "b": "error"}, {"pi": "a"}))
    assert not errored.ok and "b@pi: error: why b" in errored.message
    assert errored.message.startswith("partial: errors on 1 of 1 device(s) (pi)")
    unserved = verdict(summary({"a": "fail"}, {"pi": None}))
    assert not unserved.ok and "no variant meets the requirements on: pi" in unserved.message


def test_rows_never_share_their_notes() -> None:
    skipped = not_ok_record("skipped", "x", variant="a", device="pi")
    first = evaluate(skipped, RequirementParams(), 0.9)
    second = evaluate({**skipped, "variant": "b"}, RequirementParams(), 0.9)
    first.notes.append("only mine")
    assert second.notes == []


# ------------------------------------------------------------------ why, frontier, flags


def judged(variant: str, device: str = "local", status: str = "pass", accuracy: float = 0.95,
           p50: float = 1.0, p90: float = 2.0, p99: float = 2.5, size: int = 100_000,
           reasons: list[str] | None = None) -> SummaryRow:
    return summary_row(variant, device, status, accuracy=accuracy,
                       latency_ms={"p50": p50, "p90": p90, "p99": p99, "mean": p50},
                       size_bytes=size, reasons=reasons or [])


def test_the_pareto_frontier_keeps_every_passing_variant_nothing_beats_on_all_three() -> None:
    rows = [judged("accurate", accuracy=0.96, p90=2.0, size=100_000),
            judged("fast", accuracy=0.94, p90=1.0, size=100_000),
            judged("small", accuracy=0.94, p90=2.5, size=30_000),
            judged("dominated", accuracy=0.95, p90=2.5, size=120_000),  # "accurate" beats it
            judged("twin", accuracy=0.96, p90=2.0, size=100_000),  # equal: neither dominates
            judged("failing", status="fail", accuracy=0.99, p90=0.1, size=1),
            judged("elsewhere", device="pi", accuracy=0.5, p90=9.0)]
    assert pareto_front(rows) == {"local": ["accurate", "fast", "small", "twin"],
                                  "pi": ["elsewhere"]}


def test_why_a_variant_won_names_the_measure_the_runner_up_and_the_margin() -> None:
    rows = [judged("slow", p50=1.5, size=90_000), judged("quick", p50=1.2),
            judged("fastest", p50=1.0),
            judged("rejected", status="fail", p50=0.1)]
    assert why_recommended(rows, "latency_p50_ms") == {
        "local": "best latency_p50_ms among 3 passing variants: 1 ms against 1.2 ms for quick, "
                 "the runner-up (16.7% better)"}
    assert why_recommended(rows, "accuracy")["local"].startswith(
        "ties with quick on accuracy (0.9500) and is smaller (87.9 vs 97.7 KB)")
    # A runner-up with no latency measured (a microcontroller's fit check) has no margin.
    unmeasured = [judged("timed", p50=1.0), judged("mcu").model_copy(update={"latency_ms": None})]
    assert why_recommended(unmeasured, "latency_p50_ms") == {
        "local": "best latency_p50_ms among 2 passing variants: 1 ms; the others have no "
                 "latency_p50_ms here"}
    # Nothing timed at all (a microcontroller): the tie-break, size, decided.
    boards = [judged("big", size=200_000).model_copy(update={"latency_ms": None}),
              judged("small", size=100_000).model_copy(update={"latency_ms": None})]
    assert why_recommended(boards, "latency_p50_ms") == {
        "local": "the smallest of 2 passing variants (97.7 KB): none has latency_p50_ms "
                 "measured here"}
    only = [judged("one"), judged("other", status="fail", reasons=["p90 9 > 5"])]
    assert why_recommended(only, "size_bytes") == {
        "local": "the only variant of 2 that meets every requirement (size_bytes 97.7 KB)"}
    none = [judged("a", status="fail", reasons=["accuracy 0.5 < min_accuracy 0.9"]),
            judged("b", status="error", reasons=["device unreachable"])]
    assert why_recommended(none, "latency_p50_ms") == {
        "local": "none of 2 variants meets the requirements; closest misses: accuracy 0.5 < "
                 "min_accuracy 0.9"}


def test_a_long_latency_tail_is_noted_past_three_times_the_median() -> None:
    rows = [judged("tail", p50=1.0, p99=3.5), judged("even", p50=1.0, p99=3.0)]
    flag_long_tails(rows)
    assert [row.notes for row in rows] == [["long tail: p99 is 3.5x p50"], []]


def with_end_to_end(record: dict[str, Any], p90: float) -> dict[str, Any]:
    record["harness"]["end_to_end"] = {
        "runs": 50, "latency_ms": {"p50": p90 * 0.9, "p90": p90, "p99": p90 * 1.2,
                                   "mean": p90 * 0.92, "std": 0.1, "min": 1, "max": p90 * 2},
        "latency_ci95_ms": {"p50": None, "p90": None}, "throughput_fps": 1000 / (p90 * 0.92),
        "accuracy": 0.88, "accuracy_samples": 40,
        "stages_ms": {"decode": 3.0, "preprocess": 1.5, "infer": 1.2, "postprocess": 0.3},
        "frames": {"height": 480, "width": 640, "encoding": "jpeg", "count": 40}}
    return record


def test_an_end_to_end_timing_is_a_column_a_note_and_a_requirement() -> None:
    record = with_end_to_end(ok_record(p50=1.0, p90=1.2), p90=6.5)
    row = evaluate(record, Requirements(max_accuracy_drop=None, max_end_to_end_p90_ms=10), 0.9)
    assert row.status == "pass"
    assert row.end_to_end.latency_ms.document() == {"p50": 6.5 * 0.9, "p90": 6.5, "p99": 6.5 * 1.2,
                                               "mean": 6.5 * 0.92}
    assert row.end_to_end.stages_ms["decode"] == 3.0
    assert ("end to end (640x480 jpeg): p90 6.5 ms, 167 fps, accuracy 0.8800; decode 50%, "
            "preprocess 25%, infer 20%, postprocess 5%") in row.notes
    assert row_cells(row)[COLUMNS.index("e2e p90 ms")] == "6.500"
    # A detector's end-to-end score is its mAP, named so.
    detector = with_end_to_end(ok_record(p50=1.0, p90=1.2), p90=6.5)
    detector["harness"]["task"] = "detection"
    notes = evaluate(detector, Requirements(max_accuracy_drop=None), 0.9).notes
    assert "167 fps, mAP@0.5 0.8800; decode 50%" in " ".join(notes)
    slow = evaluate(record, Requirements(max_accuracy_drop=None, max_end_to_end_p90_ms=5), 0.9)
    assert slow.reasons == ["end-to-end p90 6.500 ms > max_end_to_end_p90_ms 5.0"]
    # Nothing timed end to end: a limit on it cannot be met; a device that could not run
    # the pipeline says why, and its model-only numbers stand.
    plain = evaluate(ok_record(), Requirements(max_accuracy_drop=None, max_end_to_end_p90_ms=5),
                     0.9)
    assert plain.reasons == ["max_end_to_end_p90_ms needs an end-to-end timing "
                                "(benchmark.end_to_end), and this result has none"]
    failed = ok_record()
    failed["harness"]["end_to_end"] = {"error": "ModuleNotFoundError: No module named 'PIL'"}
    row = evaluate(failed, Requirements(max_accuracy_drop=None), 0.9)
    assert row.status == "pass" and row.end_to_end is None
    assert "end to end not measured: ModuleNotFoundError: No module named 'PIL'" in row.notes


def test_points_hold_each_timed_rows_plotted_fields_by_the_names_dvc_yaml_plots() -> None:
    """reports/points.json: one point per row with a latency (an untimed row has none),
    each holding the fields dvc.yaml's plots name (x: latency_p50_ms, size_bytes; y:
    accuracy) with that row's values."""
    from tasks.select import _points
    from tests.tasks.select.summaries import summary_of, summary_row

    timing = {"p50": 2.5, "p90": 3.0, "p99": 3.5, "mean": 2.6}
    rows = [summary_row("onnx-fp32", "pi", accuracy=0.91, size_bytes=4096, latency_ms=timing),
            summary_row("tflm-int8", "mcu", accuracy=0.88, size_bytes=2048)]
    points = _points(summary_of(rows, {}))
    assert points == [{"device": "pi", "variant": "onnx-fp32", "accuracy": 0.91,
                       "latency_p50_ms": 2.5, "size_bytes": 4096}]
    import yaml

    plotted = [plot for entry in yaml.safe_load(
        (Path(__file__).resolve().parents[2] / "dvc.yaml").read_text())["plots"]
        if isinstance(entry, dict) for plot in entry.values()
        if isinstance(plot.get("y"), dict) and "reports/points.json" in plot["y"]]
    assert {plot["x"] for plot in plotted} == {"latency_p50_ms", "size_bytes"}
    assert {plot["x"] for plot in plotted} | {plot["y"]["reports/points.json"]
                                              for plot in plotted} <= set(points[0])


def test_a_detectors_reference_is_its_map_and_the_summary_names_its_task(tmp_path: Path) -> None:
    """reference.json of a detector (train writes its task and each image's matches):
    the reference is its mAP@0.5 with the kind's interval, each row's drop is against
    it, and the summary says the task its scores are of."""
    from tasks.core import device_code

    kind = device_code.task_kinds().get("detection")
    truth = [np.array([[0, 0.1, 0.1, 0.4, 0.4]]), np.array([[1, 0.5, 0.5, 0.9, 0.9]])]
    found = [np.array([[0, 0.9, 0.1, 0.1, 0.4, 0.4]]), np.zeros((0, 6))]
    records = [record.as_json() for record in kind.per_sample(found, truth)]
    reference = write_json(tmp_path / "reference.json", {"task": "detection",
                                                          "test_correct": records})
    (tmp_path / "farm.yaml").write_text("devices:\n  local: {threads: 1}\n", encoding="utf-8")
    write_results(tmp_path / "results", {"local": [ok_record(accuracy=0.25)]})
    summary = summarise(RequirementParams(max_accuracy_drop=None), load_farm(
        tmp_path / "farm.yaml"), tmp_path / "results", reference)
    assert summary.task == "detection"
    assert summary.reference_accuracy == 0.5  # class 0 found (AP 1), class 1 not (AP 0)
    low, high = summary.reference_interval
    assert low <= 0.5 <= high
    [row] = summary.results
    assert row.accuracy_drop == pytest.approx(0.5)  # 0.25 against 0.5
