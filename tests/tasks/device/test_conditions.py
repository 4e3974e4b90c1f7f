"""tasks/device/conditions.py: the board's clock, temperature and throttling, read from its
files, and what changed during a run."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tasks.device import conditions


def test_throttling_facts_where_the_board_exposes_them(tmp_path, monkeypatch) -> None:
    cpufreq = tmp_path / "cpufreq"
    cpufreq.mkdir()
    (cpufreq / "scaling_cur_freq").write_text("600000\n")
    (cpufreq / "cpuinfo_max_freq").write_text("2400000\n")
    flags = tmp_path / "get_throttled"
    # A Raspberry Pi now capped and throttled, under-voltage earlier since boot.
    flags.write_text(hex((1 << 1) | (1 << 2) | (1 << 16)) + "\n")
    monkeypatch.setattr(conditions, "CPUFREQ", str(cpufreq))
    monkeypatch.setattr(conditions, "PI_THROTTLE_FILE", str(flags))
    facts = conditions.throttling()
    assert facts["cpu_mhz"] == 600 and facts["cpu_max_mhz"] == 2400
    assert facts["throttled"] == "frequency capped, throttled"
    assert facts["throttled_since_boot"] == "under-voltage"
    flags.write_text("0x0\n")
    assert conditions.throttling()["throttled"] == "no"


def test_no_throttling_facts_where_the_board_has_none(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(conditions, "CPUFREQ", str(tmp_path / "absent"))
    monkeypatch.setattr(conditions, "PI_THROTTLE_FILE", str(tmp_path / "absent"))
    assert "throttled" not in conditions.throttling() and "cpu_mhz" not in conditions.throttling()



def _snapshot(**changes: Any) -> dict[str, Any]:
    base = {"monotonic": 100.0, "cpu_seconds": 10.0, "machine_busy": (1000.0, 4000.0),
            "affinity": [0, 1], "governor": "performance", "cpu_mhz": 2000.0,
            "temperature_c": 50.0, "thermal_throttle_events": 3, "throttled": None,
            "load_1m": 0.5}
    return {**base, **changes}


def test_a_quiet_run_reports_its_conditions_and_no_change() -> None:
    # 10 s of wall time, 10 CPU-seconds busy on the machine, 9.9 of them this process's.
    after = _snapshot(monotonic=110.0, cpu_seconds=19.9, machine_busy=(1010.0, 4020.0),
                      cpu_mhz=2100.0, temperature_c=54.0)
    reported = conditions.run_conditions(_snapshot(), after)
    assert reported["other_busy_cpus"] == 0.01
    assert reported["changes"] == []
    assert reported["before"]["cpu_mhz"] == 2000.0 and reported["after"]["cpu_mhz"] == 2100.0
    assert "monotonic" not in reported["after"]


def test_what_changed_during_a_run_is_named_with_its_figures() -> None:
    after = _snapshot(monotonic=110.0, cpu_seconds=20.0, machine_busy=(1025.0, 4020.0),
                      governor="powersave", cpu_mhz=1500.0, temperature_c=61.5,
                      thermal_throttle_events=5, throttled="throttled", affinity=[0])
    assert conditions.run_conditions(_snapshot(), after)["changes"] == [
        "frequency governor changed from performance to powersave",
        "CPU clock changed from 2000 to 1500 MHz",
        "temperature rose from 50 to 61.5 C",
        "the CPU was thermally throttled 2 times",
        "the board reports throttled",
        "CPU affinity changed from [0, 1] to [0]",
        "other processes kept 1.5 CPUs busy"]


def test_conditions_are_read_from_the_boards_files(tmp_path: Path, monkeypatch) -> None:
    stat = tmp_path / "stat"
    # user nice system idle iowait irq softirq steal: busy 100+0+50+0+5+5+0 = 160 ticks.
    stat.write_text("cpu  100 0 50 700 40 5 5 0 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n")
    freq = tmp_path / "cpufreq"
    freq.mkdir()
    (freq / "scaling_cur_freq").write_text("1800000\n")
    (freq / "scaling_governor").write_text("ondemand\n")
    (tmp_path / "temp").write_text("47500\n")
    monkeypatch.setattr(conditions, "PROC_STAT", str(stat))
    monkeypatch.setattr(conditions, "CPUFREQ", str(freq))
    monkeypatch.setattr(conditions, "THERMAL_ZONE", str(tmp_path / "temp"))
    snapshot = conditions.conditions()
    hertz = os.sysconf("SC_CLK_TCK")
    assert snapshot["machine_busy"] == (160 / hertz, 900 / hertz)
    assert (snapshot["governor"], snapshot["cpu_mhz"], snapshot["temperature_c"]) == (
        "ondemand", 1800.0, 47.5)
    assert snapshot["affinity"] == sorted(os.sched_getaffinity(0))


def test_each_change_is_named_from_its_threshold_on_and_not_below_it() -> None:
    """The thresholds are limits met exactly: a 5 C rise and 0.5 other busy CPUs are
    named, 4.9 C and 0.49 are not; a clock change must exceed 10% of the clock before."""
    assert (conditions.TEMPERATURE_RISE_C, conditions.OTHER_LOAD_CPUS,
            conditions.CLOCK_CHANGE) == (5.0, 0.5, 0.10)
    changes = conditions.condition_changes
    assert changes(_snapshot(), _snapshot(temperature_c=55.0), None) == [
        "temperature rose from 50 to 55 C"]
    assert changes(_snapshot(), _snapshot(temperature_c=54.9), None) == []
    assert changes(_snapshot(), _snapshot(temperature_c=40.0), None) == []  # cooled: no rise
    assert changes(_snapshot(), _snapshot(), 0.5) == ["other processes kept 0.5 CPUs busy"]
    assert changes(_snapshot(), _snapshot(), 0.49) == []
    assert changes(_snapshot(), _snapshot(cpu_mhz=2201.0), None) == [
        "CPU clock changed from 2000 to 2201 MHz"]
    assert changes(_snapshot(), _snapshot(cpu_mhz=2200.0), None) == []
    assert changes(_snapshot(), _snapshot(cpu_mhz=1799.0), None) == [
        "CPU clock changed from 2000 to 1799 MHz"]
    assert changes(_snapshot(), _snapshot(thermal_throttle_events=3), None) == []
    assert changes(_snapshot(thermal_throttle_events=None),
                   _snapshot(thermal_throttle_events=9), None) == []
    assert changes(_snapshot(), _snapshot(throttled="no"), None) == []
