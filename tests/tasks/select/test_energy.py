"""tasks/select/energy.py and the energy of select's rows: measured where the harness read
a meter, estimated (and labelled so) from farm.yaml's power x latency elsewhere, exact
numbers; battery hours; a requirement on energy changes the recommendation."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tasks.config import LocalDevice, McuDevice, Requirements
from tasks.select import energy
from tasks.select.ranking import recommend
from tests.tasks.select.summaries import judge
from tests.tasks.test_select import mcu_record, ok_record

NO_LIMITS = Requirements(max_accuracy_drop=None)
PI = LocalDevice(power="raspberry-pi-5", battery={"capacity_mwh": 37_000, "fps": 2})


def test_the_estimate_is_power_above_idle_times_latency_with_its_interval() -> None:
    record = ok_record(p50=12.5, p90=15.0, mean=12.5)
    record["harness"]["latency_ci95_ms"] = {"p50": [12.0, 13.0], "p90": None}
    row = judge(record, NO_LIMITS, 0.9, PI)
    # Pi 5 profile: 8 W active, 4 W idle: (8 - 4) W x 12.5 ms = 50 mJ; [48, 52].
    assert (row.energy_mj, row.energy_interval) == (50.0, [48.0, 52.0])
    assert (row.power_w, row.idle_w, row.energy_source) == (8.0, 4.0, "estimated")
    assert row.energy_meter.startswith("Raspberry Pi 5: 800 mA x 5 V")
    # 37000 mWh / (4 W x 1000 + 50 mJ x 2 fps) = 37000 / 4100 h.
    assert (row.battery_hours, row.battery_fps) == (pytest.approx(37_000 / 4_100), 2)
    assert ("energy ~50 mJ per inference estimated, not measured: (8 - 4 W) x 12.5 ms; "
            "power from Raspberry Pi 5") in "; ".join(row.notes)


def test_a_meter_reading_is_measured_and_wins_over_the_estimate() -> None:
    record = ok_record(p50=12.5)
    record["harness"]["energy"] = {
        "meter": {"name": "pi5-pmic", "update_period_s": 0.1}, "energy_mj": 31.25,
        "energy_interval": [30.0, 32.5], "power_w": 6.5, "baseline_w": 3.75, "windows": 5}
    row = judge(record, NO_LIMITS, 0.9, PI)
    assert (row.energy_mj, row.energy_interval, row.power_w, row.idle_w) == (
        31.25, [30.0, 32.5], 6.5, 3.75)
    assert (row.energy_source, row.energy_meter) == ("measured", "pi5-pmic")
    # The measured idle baseline, not the profile's: 37000 / (3750 + 31.25 x 2) h.
    assert row.battery_hours == pytest.approx(37_000 / 3_812.5)
    assert ("energy 31.25 mJ per inference measured by pi5-pmic (active 6.5 W, idle baseline "
            "3.75 W)") in row.notes


def test_a_stalled_meter_says_why_and_the_estimate_stands_labelled() -> None:
    record = ok_record(p50=12.5)
    record["harness"]["energy"] = {"meter": {"name": "rapl"},
                                   "error": "meter rapl did not change over 1 s: stalled"}
    row = judge(record, NO_LIMITS, 0.9, PI)
    assert "energy not measured: meter rapl did not change over 1 s: stalled" in row.notes
    assert (row.energy_mj, row.energy_source) == (50.0, "estimated")
    bare = judge(record, NO_LIMITS, 0.9, LocalDevice())
    assert bare.energy_mj is None and "energy_mj" not in bare.document()


def test_a_device_without_power_or_meter_has_no_energy_columns() -> None:
    row = judge(ok_record(), NO_LIMITS, 0.9, LocalDevice())
    assert not {"energy_mj", "power_w", "energy_source", "battery_hours"} & set(row.document())


def mcu_on_target(instructions: int = 1_600_000) -> dict[str, Any]:
    record = mcu_record()
    record["mcu"]["target"] = {
        "core": "cortex-m4", "board": "mps2-an386", "accuracy": 0.85, "accuracy_samples": 360,
        "arena_bytes": 6_656, "arena_used_bytes": 6_600, "firmware_text_bytes": 20_000,
        "firmware_data_bytes": 1_000, "instructions_per_inference": instructions,
        "instruction_resolution": 1, "cpi": 1.25, "clock_mhz": 64.0,
        "estimated_latency_ms": instructions * 1.25 / 64_000, "sources_sha256": "0" * 64,
        "compiler": "gcc"}
    return record


def test_an_mcu_estimate_is_current_times_voltage_times_its_estimated_latency() -> None:
    nano = McuDevice(transport="mcu", flash_kb=1024, ram_kb=256, target="cortex-m4",
                     clock_mhz=64, power="nano33-ble",
                     battery={"capacity_mwh": 3_000, "fps": 1})
    row = judge(mcu_on_target(), NO_LIMITS, 0.9, nano)
    # 1.6 M instructions x 1.25 / 64 MHz = 31.25 ms; (3.3 - 0.00316) mA x 3 V = 9.89052 mW.
    assert row.estimated_latency_ms == 31.25
    assert row.energy_mj == pytest.approx((3.3 - 0.00316) * 3.0 / 1000 * 31.25)
    assert (row.energy_interval, row.energy_source) == (None, "estimated")
    # 3000 mWh / (0.00948 mW idle + 0.309079 mJ x 1 fps)
    assert row.battery_hours == pytest.approx(
        3_000 / (0.00316 * 3.0 + (3.3 - 0.00316) * 3.0 / 1000 * 31.25))


def test_battery_hours_formula_and_a_rate_the_variant_cannot_keep() -> None:
    life = energy.battery_hours(10_000, fps=5, idle_w=1.0, energy_mj=20.0)
    assert (life.hours, life.fps, life.capped) == (10_000 / 1_100, 5, False)
    capped = energy.battery_hours(10_000, fps=50, idle_w=1.0, energy_mj=20.0, max_fps=25.0)
    assert (capped.hours, capped.fps, capped.capped) == (10_000 / 1_500, 25.0, True)
    assert energy.battery_text("tflite-int8", capped, 10_000, "estimated") == (
        "tflite-int8 cannot keep 50 fps (at most 25); at that rate it lasts 6.7 h on the "
        "10000 mWh battery (estimated)")
    assert energy.battery_text("tflite-int8", life, 10_000, "measured: rapl") == (
        "at 5 fps tflite-int8 lasts 9.1 h on the 10000 mWh battery (measured: rapl)")


def test_a_requirement_on_energy_changes_the_recommendation() -> None:
    """Two variants: ``fast`` (4 ms, but its meter reads 30 mJ per inference) and
    ``frugal`` (6 ms, 12 mJ). Ranked by latency, fast wins; under max_energy_mj 20 it
    fails and frugal is recommended."""
    def metered(variant: str, p50: float, mj: float) -> dict[str, Any]:
        record = ok_record(variant=variant, p50=p50, p90=p50 * 1.1, mean=p50)
        record["harness"]["energy"] = {"meter": {"name": "rapl"}, "energy_mj": mj,
                                       "energy_interval": [mj * 0.95, mj * 1.05],
                                       "power_w": 9.0, "baseline_w": 2.0}
        return record

    records = [metered("fast-fp32", 4.0, 30.0), metered("frugal-int8", 6.0, 12.0)]
    device = LocalDevice()
    free = [judge(copy.deepcopy(r), NO_LIMITS, 0.9, device) for r in records]
    assert recommend(free, ["latency_p50_ms"]) == {"local": "fast-fp32"}
    bound = Requirements(max_accuracy_drop=None, max_energy_mj=20)
    judged = [judge(copy.deepcopy(r), bound, 0.9, device) for r in records]
    assert [row.status for row in judged] == ["fail", "pass"]
    assert judged[0].reasons == ["energy 30 mJ per inference (measured) > max_energy_mj 20"]
    assert recommend(judged, ["latency_p50_ms"]) == {"local": "frugal-int8"}
    # Ranked by energy without a limit, frugal wins too.
    assert recommend(free, ["energy_mj"]) == {"local": "frugal-int8"}


def test_an_energy_requirement_without_any_figure_is_not_met() -> None:
    row = judge(ok_record(), Requirements(max_accuracy_drop=None, max_energy_mj=5,
                                          min_battery_hours=1), 0.9, LocalDevice())
    assert row.status == "fail"
    assert row.reasons[0].startswith("max_energy_mj needs an energy figure")
    assert row.reasons[1].startswith("min_battery_hours needs the device's battery")


def test_end_to_end_energy_per_frame_is_measured_or_estimated_like_the_models() -> None:
    from tests.tasks.test_select import with_end_to_end

    record = with_end_to_end(ok_record(p50=12.5), p90=6.5)  # its p50: 5.85 ms
    row = judge(copy.deepcopy(record), NO_LIMITS, 0.9, PI)
    assert (row.end_to_end.energy_mj, row.end_to_end.energy_source) == (
        pytest.approx(4.0 * 5.85), "estimated")
    record["harness"]["end_to_end"]["energy"] = {"meter": {"name": "rapl"}, "energy_mj": 61.5,
                                                 "power_w": 7.0, "baseline_w": 3.0}
    row = judge(record, NO_LIMITS, 0.9, PI)
    assert (row.end_to_end.energy_mj, row.end_to_end.energy_source) == (61.5, "measured")
