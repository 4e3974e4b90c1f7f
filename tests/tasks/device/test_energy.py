"""tasks/device/energy.py on fake sysfs trees: RAPL with a wrap-around during a window,
an INA3221's three rails, a Pi 5 PMIC's captured output, a meter command; a stalled and a
backwards meter give the reason and no number."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tasks.device import energy

RAPL_MAX = 262143328850  # a real package zone's max_energy_range_uj


def write(path: Path, text: str | int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{text}\n")


def rapl_tree(root: Path, package_uj: int, dram_uj: int) -> tuple[Path, Path]:
    base = root / "class" / "powercap"
    write(base / "intel-rapl:0" / "name", "package-0")
    write(base / "intel-rapl:0" / "energy_uj", package_uj)
    write(base / "intel-rapl:0" / "max_energy_range_uj", RAPL_MAX)
    write(base / "intel-rapl:0:0" / "name", "core")  # inside the package's figure: not summed
    write(base / "intel-rapl:0:0" / "energy_uj", 7)
    write(base / "intel-rapl:0:1" / "name", "dram")
    write(base / "intel-rapl:0:1" / "energy_uj", dram_uj)
    write(base / "intel-rapl:0:1" / "max_energy_range_uj", 65532610987)
    return base / "intel-rapl:0" / "energy_uj", base / "intel-rapl:0:1" / "energy_uj"


class FakeBoard:
    """A clock that moves only when the board idles or infers, and counters that grow by
    the board's power meanwhile: idle 2 W package + 0.5 W dram; inferring 5 W + 1 W at
    100 inferences per second."""

    def __init__(self, package: Path, dram: Path) -> None:
        self.now = 0.0
        self.package, self.dram = package, dram

    def clock(self) -> float:
        return self.now

    def _spend(self, seconds: float, package_w: float, dram_w: float) -> None:
        self.now += seconds
        for path, watts in ((self.package, package_w), (self.dram, dram_w)):
            value = int(path.read_text()) + round(watts * seconds * 1e6)
            write(path, value % RAPL_MAX if path == self.package else value)

    def idle(self, seconds: float) -> int:
        self._spend(seconds, 2.0, 0.5)
        return 0

    def run_for(self, seconds: float) -> int:
        self._spend(seconds, 5.0, 1.0)
        return round(100 * seconds)


def test_rapl_per_inference_exact_across_a_wrap(tmp_path: Path) -> None:
    # The package counter wraps during the first window's inferences.
    package, dram = rapl_tree(tmp_path, RAPL_MAX - 3_000_000, 1_000)
    meter = energy.choose_meter("auto", str(tmp_path))
    assert meter is not None and meter.name == "rapl"
    assert [d.label for d in meter.domains] == ["intel-rapl:0 (package-0)",
                                                "intel-rapl:0:1 (dram)"]
    board = FakeBoard(package, dram)
    result = energy.per_inference(meter, board.run_for, windows=3, window_s=1.0,
                                  idle=board.idle, clock=board.clock)
    assert "error" not in result
    # (6 W x 1 s - 2.5 W x 1 s) / 100 inferences = 35 mJ each, in every window.
    assert result["per_window_mj"] == pytest.approx([35.0, 35.0, 35.0], abs=1e-9)
    assert result["energy_mj"] == pytest.approx(35.0)
    assert result["energy_interval"] == pytest.approx([35.0, 35.0])
    assert result["power_w"] == pytest.approx(6.0)
    assert result["baseline_w"] == pytest.approx(2.5)
    assert result["inferences"] == 300
    assert result["meter"]["update_period_s"] == energy.RAPL_PERIOD_S
    assert int(package.read_text()) < 20_000_000  # it did wrap


def test_a_wrap_is_told_from_a_counter_going_backwards() -> None:
    domain = energy.Domain("package", "p", RAPL_MAX)
    assert energy.counter_delta_uj(domain, RAPL_MAX - 10, 5) == 15
    with pytest.raises(energy.MeterError, match="went backwards .* not a wrap-around"):
        energy.counter_delta_uj(domain, 5_000_000, 4_000_000)
    with pytest.raises(energy.MeterError, match="went backwards"):
        energy.counter_delta_uj(energy.Domain("energy1", "e", None), 10, 9)


def test_backwards_meter_gives_the_reason_and_no_number(tmp_path: Path) -> None:
    package, dram = rapl_tree(tmp_path, 5_000_000, 1_000)
    meter = energy.choose_meter("rapl", str(tmp_path))
    board = FakeBoard(package, dram)

    def reset_while_running(seconds: float) -> int:
        board.now += seconds
        write(package, 4_000_000)  # reset by another reader, not a wrap
        return 100

    result = energy.per_inference(meter, reset_while_running, windows=2, idle=board.idle,
                                  clock=board.clock)
    assert "energy_mj" not in result and "power_w" not in result
    assert "went backwards (7000000 -> 4000000 uJ)" in result["error"]


def test_stalled_meter_gives_the_reason_and_no_number(tmp_path: Path) -> None:
    package, dram = rapl_tree(tmp_path, 5_000_000, 1_000)
    meter = energy.choose_meter("rapl", str(tmp_path))
    clock = [0.0]

    def frozen(seconds: float) -> int:  # time passes, the counters do not move
        clock[0] += seconds
        return 100

    result = energy.per_inference(meter, frozen, windows=2, idle=frozen,
                                  clock=lambda: clock[0])
    assert "energy_mj" not in result
    assert result["error"].startswith("meter rapl did not change over 1 s")
    assert "stalled" in result["error"]


def ina3221_tree(root: Path) -> None:
    chip = root / "class" / "hwmon" / "hwmon1"
    write(chip / "name", "ina3221")
    for rail, (mv, ma) in enumerate([(5000, 1000), (3300, 500), (1800, 200)], start=1):
        write(chip / f"in{rail}_input", mv)
        write(chip / f"curr{rail}_input", ma)
    for shunt in (4, 5, 6):  # shunt voltages: no current beside them, not rails
        write(chip / f"in{shunt}_input", 40)
    write(chip / "update_interval", 50)  # ms
    other = root / "class" / "hwmon" / "hwmon0"
    write(other / "name", "cpu_thermal")
    write(other / "temp1_input", 45000)
    write(other / "in0_input", 900)  # a voltage without a current: no meter


def test_ina3221_sums_its_three_rails(tmp_path: Path) -> None:
    ina3221_tree(tmp_path)
    meters = energy.find_meters(str(tmp_path))
    assert [m.name for m in meters] == ["hwmon:ina3221"]
    meter = meters[0]
    # 5 V x 1 A + 3.3 V x 0.5 A + 1.8 V x 0.2 A
    assert meter.power_w() == pytest.approx(7.01)
    assert meter.update_period_s == 0.05 and not meter.period_assumed
    # Integrated over 2 s of a clock that moves only while working: exactly 7.01 W x 2 s.
    now = [0.0]

    def work() -> int:
        now[0] += 2.0
        return 10

    mj, seconds, count = energy.energy_over(meter, work, clock=lambda: now[0])
    assert (mj, seconds, count) == (pytest.approx(14020.0), 2.0, 10)


def test_hwmon_power_and_energy_files(tmp_path: Path) -> None:
    chip = tmp_path / "class" / "hwmon" / "hwmon0"
    write(chip / "name", "ina226")
    write(chip / "power1_input", 2_500_000)  # µW
    write(tmp_path / "class" / "hwmon" / "hwmon2" / "name", "acpi_meter")
    write(tmp_path / "class" / "hwmon" / "hwmon2" / "energy1_input", 1_000_000)  # µJ
    power, counter = energy.find_meters(str(tmp_path))
    assert (power.name, power.power_w(), power.period_assumed) == ("hwmon:ina226", 2.5, True)
    before = counter.read()
    write(tmp_path / "class" / "hwmon" / "hwmon2" / "energy1_input", 1_750_000)
    assert counter.energy_between(before, counter.read()) == 750.0


# Captured from `vcgencmd pmic_read_adc` in its documented format (rails trimmed).
PMIC_OUTPUT = """\
     3V7_WL_SW_A current(0)=0.00000000A
       3V3_SYS_A current(1)=0.05000000A
     VDD_CORE_A current(7)=1.23456789A
     3V7_WL_SW_V volt(8)=3.71440400V
       3V3_SYS_V volt(9)=3.31000000V
     VDD_CORE_V volt(15)=0.91234567V
        EXT5V_V volt(24)=5.15096000V
      BATT_V volt(25)=0.00000000V
"""


def test_pi5_pmic_sums_volts_times_amps_per_rail() -> None:
    expected = 0.0 * 3.714404 + 0.05 * 3.31 + 1.23456789 * 0.91234567
    assert energy.parse_pmic(PMIC_OUTPUT) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(energy.MeterError, match="no rail"):
        energy.parse_pmic("error=1 error_msg=\"Command not registered\"\n")


def test_pi5_pmic_meter_runs_vcgencmd(tmp_path: Path) -> None:
    captured = tmp_path / "pmic.txt"
    captured.write_text(PMIC_OUTPUT)
    meter = energy.PmicMeter("pi5-pmic", "pi5-pmic", 1e-8, "W", 0.1, True, counter=False,
                             command=[sys.executable, "-c",
                                      f"print(open({str(captured)!r}).read())"])
    assert meter.power_w() == pytest.approx(0.05 * 3.31 + 1.23456789 * 0.91234567)


def test_meter_command_read_before_and_after(tmp_path: Path) -> None:
    reading = tmp_path / "meter.txt"
    reading.write_text("USB meter: 1.5 J\n")
    meter = energy.choose_meter("command", command=f"cat {reading}", unit="J")
    assert meter is not None and meter.update_period_s == 1.0 and meter.period_assumed
    now = [0.0]

    def work() -> int:
        now[0] += 3.0
        reading.write_text("USB meter: 2.25 J\n")
        return 30

    assert energy.energy_over(meter, work, clock=lambda: now[0]) == (750.0, 3.0, 30)

    def meter_reset() -> int:
        reading.write_text("USB meter: 2.0 J\n")
        return 30

    with pytest.raises(energy.MeterError, match=r"command went backwards \(2250 -> 2000 mJ\)"):
        energy.energy_over(meter, meter_reset, clock=lambda: now[0])


def test_short_window_is_extended_not_reported() -> None:
    meter = energy.command_meter("true", "mJ", period_s=0.5)
    assert energy.window_seconds(meter, 1.0) == (10.0, True)
    assert energy.window_seconds(meter, 12.0) == (12.0, False)


def test_unknown_meter_names_those_found(tmp_path: Path) -> None:
    ina3221_tree(tmp_path)
    with pytest.raises(energy.MeterError, match=r"no energy meter 'rapl' .*found: hwmon:ina3221"):
        energy.choose_meter("rapl", str(tmp_path))
    assert energy.choose_meter("none", str(tmp_path)) is None
