"""tasks/device/conditions.py: the board's clock, temperature and throttling, read from its
files, and what changed during a run."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

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


def cpufreq_of(folder: Path, **files: int) -> Path:
    """A cpufreq folder holding ``files`` (name: kHz)."""
    folder.mkdir()
    for name, khz in files.items():
        (folder / name).write_text(f"{khz}\n")
    return folder


# Every clock of a CPU capped by its governor: now, least and most of the hardware, and
# the governor's own bounds, each different, so that reading the wrong one shows.
CLOCKS_KHZ = {"scaling_cur_freq": 1499400, "cpuinfo_min_freq": 600000,
              "cpuinfo_max_freq": 2400000, "scaling_max_freq": 1500000,
              "scaling_min_freq": 700000}


def test_throttling_reads_the_clock_now_and_the_hardwares_most_in_mhz(
        tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(conditions, "CPUFREQ", str(cpufreq_of(tmp_path / "cpufreq",
                                                              **CLOCKS_KHZ)))
    monkeypatch.setattr(conditions, "PI_THROTTLE_FILE", str(tmp_path / "absent"))
    assert conditions.throttling() == {"cpu_mhz": 1499, "cpu_max_mhz": 2400}


@pytest.mark.parametrize("absent", ["scaling_cur_freq", "cpuinfo_max_freq"])
def test_throttling_gives_no_clock_without_both_now_and_most(
        tmp_path: Path, monkeypatch, absent: str) -> None:
    clocks = {name: khz for name, khz in CLOCKS_KHZ.items() if name != absent}
    monkeypatch.setattr(conditions, "CPUFREQ", str(cpufreq_of(tmp_path / "cpufreq", **clocks)))
    monkeypatch.setattr(conditions, "PI_THROTTLE_FILE", str(tmp_path / "absent"))
    assert conditions.throttling() == {}


def test_the_pi_firmwares_flags_are_the_documented_bits() -> None:
    """vcgencmd get_throttled: bits 0-3 now, the same 16 bits higher since boot."""
    assert conditions.PI_THROTTLE_BITS == {0: "under-voltage", 1: "frequency capped",
                                           2: "throttled", 3: "soft temperature limit"}


@pytest.mark.parametrize("bit", sorted(conditions.PI_THROTTLE_BITS))
def test_each_pi_throttle_flag_is_named_now_or_since_boot_alone(
        tmp_path: Path, monkeypatch, bit: int) -> None:
    flags = tmp_path / "get_throttled"
    monkeypatch.setattr(conditions, "CPUFREQ", str(tmp_path / "absent"))
    monkeypatch.setattr(conditions, "PI_THROTTLE_FILE", str(flags))
    name = conditions.PI_THROTTLE_BITS[bit]
    flags.write_text(f"0x{1 << bit:x}\n")
    assert conditions.throttling() == {"throttled": name, "throttled_since_boot": "no"}
    flags.write_text(f"0x{1 << (bit + 16):x}\n")
    assert conditions.throttling() == {"throttled": "no", "throttled_since_boot": name}
    # Unknown bits (4-15, 20-) name nothing.
    flags.write_text(f"0x{(1 << bit) | 0xfff0 | (0xf << 20):x}\n")
    assert conditions.throttling() == {"throttled": name, "throttled_since_boot": "no"}


def test_an_unreadable_pi_flag_file_keeps_the_other_facts(tmp_path: Path, monkeypatch) -> None:
    flags = tmp_path / "get_throttled"
    flags.write_text("not hex\n")
    monkeypatch.setattr(conditions, "CPUFREQ", str(cpufreq_of(tmp_path / "cpufreq",
                                                              **CLOCKS_KHZ)))
    monkeypatch.setattr(conditions, "PI_THROTTLE_FILE", str(flags))
    assert conditions.throttling() == {"cpu_mhz": 1499, "cpu_max_mhz": 2400}


def test_thermal_throttle_events_are_the_cores_count(monkeypatch) -> None:
    """Read from cpu0's core_throttle_count only (not the package's), as a whole number."""
    base = "/sys/devices/system/cpu/cpu0/thermal_throttle/"
    counts = {base + "core_throttle_count": 7.0, base + "package_throttle_count": 40.0}
    monkeypatch.setattr(conditions, "first_number", lambda path, prefix="": counts.get(path))
    monkeypatch.setattr(conditions, "PI_THROTTLE_FILE", "/nonexistent/get_throttled")
    facts = conditions.throttling()
    assert facts == {"thermal_throttle_events": 7} and type(facts["thermal_throttle_events"]) is int
    counts[base + "core_throttle_count"] = 0.0  # none yet is still a count
    assert conditions.throttling() == {"thermal_throttle_events": 0}


CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model name\t: Intel(R) Core(TM) i7 CPU @ 2.40GHz
cpu MHz\t\t: 1200.000
cpu cores\t: 4

processor\t: 1
cpu family\t: 6
cpu MHz\t\t: 3400.600
cpu cores\t: 4

processor\t: 2
cpu MHz\t\t: 2000.000
"""


def reading_cpuinfo(monkeypatch, text: str | None) -> None:
    """/proc/cpuinfo as ``text`` (None: unreadable) for conditions.py's ``open``."""
    import builtins
    import io

    def opened(path: str, *args: Any, **kwargs: Any) -> Any:
        if path == "/proc/cpuinfo":
            if text is None:
                raise PermissionError(13, "Permission denied", path)
            return io.StringIO(text)
        return builtins.open(path, *args, **kwargs)

    monkeypatch.setattr(conditions, "open", opened, raising=False)


def test_the_clock_is_cpufreqs_in_mhz_to_a_tenth_where_the_board_has_it(
        tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(conditions, "CPUFREQ", str(cpufreq_of(
        tmp_path / "cpufreq", **{**CLOCKS_KHZ, "scaling_cur_freq": 1834567})))
    reading_cpuinfo(monkeypatch, CPUINFO)
    assert conditions._cpu_clock_mhz() == 1834.6


@pytest.mark.parametrize("cur_freq", [None, 0], ids=["no-cpufreq", "cpufreq-says-0"])
def test_without_cpufreq_the_clock_is_the_mean_of_proc_cpuinfos_cpu_mhz(
        tmp_path: Path, monkeypatch, cur_freq: int | None) -> None:
    """The mean of the "cpu MHz" lines only (not "cpu family" or "cpu cores"), to 0.1."""
    clocks = {} if cur_freq is None else {"scaling_cur_freq": cur_freq}
    monkeypatch.setattr(conditions, "CPUFREQ", str(cpufreq_of(tmp_path / "cpufreq", **clocks)))
    reading_cpuinfo(monkeypatch, CPUINFO)
    assert conditions._cpu_clock_mhz() == 2200.2  # (1200 + 3400.6 + 2000) / 3
    reading_cpuinfo(monkeypatch, "processor\t: 0\nBogoMIPS\t: 108.00\n")  # an Arm board
    assert conditions._cpu_clock_mhz() is None
    reading_cpuinfo(monkeypatch, "cpu MHz\t\t: unknown\n")
    assert conditions._cpu_clock_mhz() is None
    reading_cpuinfo(monkeypatch, None)
    assert conditions._cpu_clock_mhz() is None


@pytest.mark.parametrize(("line", "expected"), [
    # user nice system idle iowait irq softirq steal guest guest_nice: the first eight
    # count (guest time is in user's already); idle and iowait are not busy.
    ("cpu  100 20 50 700 40 5 5 30 11 13", (210, 950)),
    ("cpu  100 20 50 700 40", (170, 910)),  # an old kernel's five fields
    ("cpu  100 20 50 700", None),
    ("cpu  100 20 fifty 700 40", None),
])
def test_the_machines_busy_time_counts_the_right_fields(
        tmp_path: Path, monkeypatch, line: str, expected: tuple[int, int] | None) -> None:
    stat = tmp_path / "stat"
    stat.write_text(line + "\ncpu0 1 2 3 4 5 6 7 8 9 10\n")
    monkeypatch.setattr(conditions, "PROC_STAT", str(stat))
    hertz = os.sysconf("SC_CLK_TCK")
    assert conditions._busy_jiffies() == (None if expected is None else
                                          (expected[0] / hertz, expected[1] / hertz))


def test_a_board_that_says_nothing_gives_none_for_each_fact(tmp_path: Path, monkeypatch) -> None:
    absent = str(tmp_path / "absent")
    for name in ("PROC_STAT", "CPUFREQ", "THERMAL_ZONE", "PI_THROTTLE_FILE"):
        monkeypatch.setattr(conditions, name, absent)
    monkeypatch.setattr(conditions, "first_number", lambda path, prefix="": None)
    reading_cpuinfo(monkeypatch, None)
    snapshot = conditions.conditions()
    assert {key: snapshot[key] for key in ("machine_busy", "governor", "cpu_mhz",
                                           "temperature_c", "thermal_throttle_events",
                                           "throttled")} == dict.fromkeys(
        ("machine_busy", "governor", "cpu_mhz", "temperature_c", "thermal_throttle_events",
         "throttled"))
    freq = cpufreq_of(tmp_path / "cpufreq")
    (freq / "scaling_governor").write_text("\n")  # an empty governor is none
    monkeypatch.setattr(conditions, "CPUFREQ", str(freq))
    assert conditions._governor() is None


def test_a_snapshot_carries_the_throttling_facts_and_the_temperature_in_c(
        tmp_path: Path, monkeypatch) -> None:
    flags = tmp_path / "get_throttled"
    flags.write_text("0x50004\n")  # throttled now; capped since boot
    (tmp_path / "temp").write_text("0\n")  # 0 C is a reading, not none
    events = "/sys/devices/system/cpu/cpu0/thermal_throttle/core_throttle_count"
    from tasks.device import host
    monkeypatch.setattr(conditions, "first_number", lambda path, prefix="": 4.0
                        if path == events else host.first_number(path, prefix))
    monkeypatch.setattr(conditions, "PI_THROTTLE_FILE", str(flags))
    monkeypatch.setattr(conditions, "THERMAL_ZONE", str(tmp_path / "temp"))
    snapshot = conditions.conditions()
    assert (snapshot["throttled"], snapshot["thermal_throttle_events"],
            snapshot["temperature_c"]) == ("throttled", 4, 0.0)


def test_other_processes_load_is_the_machines_busy_time_less_this_ones_over_the_wall() -> None:
    other = conditions._other_busy_cpus
    # 4 s of wall; the machine 9 CPU-seconds busy, 1 of them this process's: 2 CPUs.
    after = _snapshot(monotonic=104.0, cpu_seconds=11.0, machine_busy=(1009.0, 4016.0))
    assert other(_snapshot(), after) == 2.0
    # This process busier than the machine saw (clock granularity): none, not negative.
    assert other(_snapshot(), {**after, "cpu_seconds": 30.0}) == 0.0
    assert other(_snapshot(), {**after, "machine_busy": None}) is None
    assert other(_snapshot(machine_busy=None), after) is None
    assert other(_snapshot(), {**after, "monotonic": 100.0}) is None  # no wall time
    # Rounded to hundredths: 1/3 CPU.
    assert other(_snapshot(), {**after, "monotonic": 103.0, "cpu_seconds": 10.0,
                               "machine_busy": (1001.0, 4003.0)}) == 0.33


def test_a_run_reports_every_shown_condition_before_and_after() -> None:
    after = _snapshot(monotonic=110.0, load_1m=2.25, throttled="no")
    reported = conditions.run_conditions(_snapshot(), after)
    shown = {"affinity": [0, 1], "governor": "performance", "cpu_mhz": 2000.0,
             "temperature_c": 50.0, "thermal_throttle_events": 3, "load_1m": 0.5}
    assert reported == {"before": {**shown, "throttled": None},
                        "after": {**shown, "throttled": "no", "load_1m": 2.25},
                        "other_busy_cpus": 0.0, "changes": []}


def test_fewer_throttle_events_or_no_clock_before_name_no_change() -> None:
    changes = conditions.condition_changes
    # A counter that went down (the board rebooted) is no throttling during the run.
    assert changes(_snapshot(), _snapshot(thermal_throttle_events=2), None) == []
    assert changes(_snapshot(cpu_mhz=None), _snapshot(cpu_mhz=900.0), None) == []
    assert changes(_snapshot(), _snapshot(cpu_mhz=None), None) == []
    assert changes(_snapshot(temperature_c=None), _snapshot(temperature_c=90.0), None) == []
    assert changes(_snapshot(), _snapshot(temperature_c=None), None) == []
    assert changes(_snapshot(), _snapshot(thermal_throttle_events=None), None) == []
    assert changes(_snapshot(), _snapshot(throttled="under-voltage, throttled"), None) == [
        "the board reports under-voltage, throttled"]
