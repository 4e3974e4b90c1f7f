"""Energy meters a board exposes, read by the harness (stdlib only): a registry of meter
kinds, each finding its meters under a sysfs root and reading them.

Two shapes of meter:
  * energy counters (cumulative): Linux powercap/RAPL (``intel-rapl:N`` package and its
    ``dram`` subzone, ``energy_uj`` wrapping at ``max_energy_range_uj``), hwmon
    ``energy*_input`` (µJ), and a user command (an external USB or bench meter printing a
    cumulative reading in mJ, J or uJ);
  * power sensors (instantaneous): hwmon ``power*_input`` (µW) or ``in*_input`` (mV) x
    ``curr*_input`` (mA) (INA219/INA226; an INA3221's three rails summed, as on Jetson
    boards), and the Raspberry Pi 5 PMIC (``vcgencmd pmic_read_adc``: V x A summed over
    its rails), sampled every update period and integrated (trapezoids).

Every meter says its resolution (mJ for a counter, W for a sensor) and update period
(seconds; assumed where the hardware does not say, and then marked so). A counter that
goes backwards (not a wrap) or that does not change over a window longer than its update
period raises :class:`MeterError` with the reason: no number is made up from it.

The sysfs root is a parameter (``EDGEFLOW_SYSFS_ROOT`` in the environment, default
``/sys``): tests build fake trees.
"""

from __future__ import annotations

import glob
import os
import re
import shlex
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

SYSFS_ENV = "EDGEFLOW_SYSFS_ROOT"
# RAPL's counters update about every millisecond (Intel SDM vol. 3B, 14.9.1: "updated
# approximately every 1 ms"); sysfs shows them in µJ.
RAPL_PERIOD_S = 0.001
# hwmon without ``update_interval``: INA219/INA226 at their default conversion settings
# average to a new value every ~1-8 ms; 0.1 s covers any driver caching (assumed).
HWMON_DEFAULT_PERIOD_S = 0.1
# The Pi 5 PMIC's ADC as read through the firmware mailbox: a read takes ~10 ms; its
# own refresh is undocumented (assumed).
PMIC_PERIOD_S = 0.1
COMMAND_DEFAULT_PERIOD_S = 1.0
COMMAND_UNITS_MJ = {"mJ": 1.0, "J": 1000.0, "uJ": 0.001}


class MeterError(RuntimeError):
    """A meter that cannot give an energy: stalled, backwards, unreadable."""


def sysfs_root() -> str:
    return os.environ.get(SYSFS_ENV, "/sys")


def _read_int(path: str) -> int:
    with open(path, encoding="ascii") as handle:
        return int(handle.read().strip())


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError:
        return ""


@dataclass
class Meter:
    """One meter: ``name`` (``rapl``, ``hwmon:ina3221``...), its kind, resolution and
    update period; a counter's :meth:`energy_mj` or a sensor's :meth:`power_w`."""

    name: str
    kind: str
    resolution: float
    resolution_unit: str
    update_period_s: float
    period_assumed: bool = False
    counter: bool = True

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "kind": self.kind,
                "resolution": self.resolution, "resolution_unit": self.resolution_unit,
                "update_period_s": self.update_period_s, "period_assumed": self.period_assumed,
                "counter": self.counter}

    def read(self) -> object:  # pragma: no cover - every kind overrides one of the two
        raise NotImplementedError

    def energy_between(self, before: object, after: object) -> float:  # pragma: no cover
        raise NotImplementedError

    def power_w(self) -> float:  # pragma: no cover
        raise NotImplementedError


# --- counters -------------------------------------------------------------------------


@dataclass
class Domain:
    """One cumulative counter file (µJ) and where it wraps (None: it never should)."""

    label: str
    path: str
    max_uj: int | None


def counter_delta_uj(domain: Domain, before: int, after: int) -> int:
    """µJ between two readings of ``domain``. A lower second reading is a wrap only where
    the counter has a range and the wrapped difference is under half of it (a window is
    far shorter than a wrap: RAPL's package counter wraps after minutes at full power);
    otherwise the counter went backwards (reset, another reader) -> MeterError."""
    if after >= before:
        return after - before
    if domain.max_uj:
        wrapped = domain.max_uj - before + after
        if 0 <= wrapped < domain.max_uj // 2:
            return wrapped
    raise MeterError(f"{domain.label} went backwards ({before} -> {after} uJ) and it is not a "
                     "wrap-around: no energy from it")


@dataclass
class CounterMeter(Meter):
    """A sum of cumulative µJ counters (RAPL domains, hwmon ``energy*_input``)."""

    domains: list[Domain] = field(default_factory=list)

    def read(self) -> dict[str, int]:
        return {domain.path: _read_int(domain.path) for domain in self.domains}

    def energy_between(self, before: dict[str, int], after: dict[str, int]) -> float:
        return sum(counter_delta_uj(domain, before[domain.path], after[domain.path])
                   for domain in self.domains) / 1000.0


def _rapl_domains(root: str) -> list[Domain]:
    """Package zones (``intel-rapl:N``) and their ``dram`` subzones: the package covers
    the cores and uncore, dram the memory (not in the package's figure)."""
    base = os.path.join(root, "class", "powercap")
    domains = []
    for zone in sorted(glob.glob(os.path.join(base, "intel-rapl:*"))):
        zone_name = _read_text(os.path.join(zone, "name"))
        depth = os.path.basename(zone).count(":")
        if not (depth == 1 and zone_name.startswith("package")) and not (
                depth == 2 and zone_name == "dram"):
            continue
        path = os.path.join(zone, "energy_uj")
        if not os.access(path, os.R_OK):  # root-only since 5.10 (CVE-2020-8694)
            continue
        max_path = os.path.join(zone, "max_energy_range_uj")
        domains.append(Domain(f"{os.path.basename(zone)} ({zone_name})", path,
                              _read_int(max_path) if os.path.isfile(max_path) else None))
    return domains


def find_rapl(root: str) -> list[Meter]:
    domains = _rapl_domains(root)
    if not domains:
        return []
    return [CounterMeter("rapl", "rapl", 0.001, "mJ", RAPL_PERIOD_S, domains=domains)]


# --- hwmon ----------------------------------------------------------------------------


def _hwmon_period(chip: str) -> tuple[float, bool]:
    text = _read_text(os.path.join(chip, "update_interval"))  # ms, where the driver says
    if text.isdigit() and int(text) > 0:
        return int(text) / 1000.0, False
    return HWMON_DEFAULT_PERIOD_S, True


def _indexed(chip: str, prefix: str) -> dict[int, str]:
    found = {}
    for path in glob.glob(os.path.join(chip, f"{prefix}*_input")):
        match = re.fullmatch(rf"{prefix}(\d+)_input", os.path.basename(path))
        if match:
            found[int(match.group(1))] = path
    return dict(sorted(found.items()))


@dataclass
class HwmonPower(Meter):
    """A hwmon chip's instantaneous power: its ``power*_input`` (µW) summed, else every
    rail's ``in<i>_input`` (mV) x ``curr<i>_input`` (mA) summed (an INA3221's three)."""

    power_files: list[str] = field(default_factory=list)
    rails: list[tuple[str, str]] = field(default_factory=list)

    def power_w(self) -> float:
        if self.power_files:
            return sum(_read_int(path) for path in self.power_files) / 1e6
        return sum(_read_int(volts) * _read_int(amps) for volts, amps in self.rails) / 1e6


def find_hwmon(root: str) -> list[Meter]:
    meters: list[Meter] = []
    for chip in sorted(glob.glob(os.path.join(root, "class", "hwmon", "hwmon*"))):
        chip_name = _read_text(os.path.join(chip, "name")) or os.path.basename(chip)
        name = f"hwmon:{chip_name}"
        period, assumed = _hwmon_period(chip)
        energy = _indexed(chip, "energy")
        power = _indexed(chip, "power")
        volts, amps = _indexed(chip, "in"), _indexed(chip, "curr")
        rails = [(volts[i], amps[i]) for i in volts if i in amps]
        if energy:
            meters.append(CounterMeter(name, "hwmon-energy", 0.001, "mJ", period, assumed,
                                       domains=[Domain(f"{chip_name} {os.path.basename(p)}",
                                                       p, None) for p in energy.values()]))
        elif power:
            meters.append(HwmonPower(name, "hwmon-power", 1e-6, "W", period, assumed,
                                     counter=False, power_files=list(power.values())))
        elif rails:
            meters.append(HwmonPower(name, "hwmon-rails", 1e-6, "W", period, assumed,
                                     counter=False, rails=rails))
    return meters


# --- Raspberry Pi 5 PMIC --------------------------------------------------------------

PMIC_LINE = re.compile(r"^\s*(\S+)_([AV])\s+(?:current|volt)\(\d+\)=([0-9.eE+-]+)[AV]\s*$")


def parse_pmic(text: str) -> float:
    """Watts from ``vcgencmd pmic_read_adc``'s output: each rail's ``<RAIL>_A
    current(n)=xA`` times its ``<RAIL>_V volt(m)=yV``, summed over the rails that have
    both (EXT5V_V has no current: the 5 V input itself is not a rail)."""
    amps: dict[str, float] = {}
    volts: dict[str, float] = {}
    for line in text.splitlines():
        match = PMIC_LINE.match(line)
        if match:
            rail, which, value = match.groups()
            (amps if which == "A" else volts)[rail] = float(value)
    rails = [rail for rail in amps if rail in volts]
    if not rails:
        raise MeterError("vcgencmd pmic_read_adc printed no rail with both a current and a "
                         "voltage")
    return sum(amps[rail] * volts[rail] for rail in rails)


@dataclass
class PmicMeter(Meter):
    command: list[str] = field(default_factory=lambda: ["vcgencmd", "pmic_read_adc"])

    def power_w(self) -> float:
        return parse_pmic(subprocess.run(self.command, capture_output=True, text=True,
                                         timeout=5, check=True).stdout)


def find_pmic(root: str) -> list[Meter]:
    """The Pi 5's PMIC, where ``vcgencmd`` is on the PATH and answers with rails."""
    import shutil

    if shutil.which("vcgencmd") is None:
        return []
    meter = PmicMeter("pi5-pmic", "pi5-pmic", 1e-8, "W", PMIC_PERIOD_S, True, counter=False)
    try:
        meter.power_w()
    except (OSError, subprocess.SubprocessError, MeterError):
        return []  # a Pi 4's vcgencmd has no pmic_read_adc
    return [meter]


# --- a user command -------------------------------------------------------------------


@dataclass
class CommandMeter(Meter):
    """An external meter read by a command printing its cumulative energy (the last
    number it prints) in ``unit``; read before and after."""

    command: str = ""
    unit: str = "mJ"

    def read(self) -> float:
        out = subprocess.run(shlex.split(self.command), capture_output=True, text=True,
                             timeout=30, check=False)
        if out.returncode != 0:
            raise MeterError(f"energy command exited {out.returncode}: "
                             f"{(out.stderr or out.stdout).strip()[-200:]}")
        numbers = re.findall(r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?", out.stdout)
        if not numbers:
            raise MeterError(f"energy command printed no number: {out.stdout.strip()[-200:]!r}")
        return float(numbers[-1]) * COMMAND_UNITS_MJ[self.unit]

    def energy_between(self, before: float, after: float) -> float:
        if after < before:
            raise MeterError(f"{self.name} went backwards ({before:g} -> {after:g} mJ): no "
                             "energy from it")
        return after - before


def command_meter(command: str, unit: str = "mJ",
                  period_s: float = COMMAND_DEFAULT_PERIOD_S) -> Meter:
    if unit not in COMMAND_UNITS_MJ:
        raise ValueError(f"energy unit {unit!r} (allowed: {', '.join(COMMAND_UNITS_MJ)})")
    return CommandMeter("command", "command", COMMAND_UNITS_MJ[unit], "mJ", period_s,
                        period_s == COMMAND_DEFAULT_PERIOD_S, command=command, unit=unit)


# The kinds of meter, in the order ``auto`` prefers them (most direct first).
METER_KINDS: dict[str, Callable[[str], list[Meter]]] = {
    "rapl": find_rapl, "hwmon": find_hwmon, "pi5-pmic": find_pmic}


def find_meters(root: str | None = None) -> list[Meter]:
    """Every meter this board has, in the order ``auto`` prefers them."""
    root = root or sysfs_root()
    return [meter for finder in METER_KINDS.values() for meter in finder(root)]


def choose_meter(choice: str, root: str | None = None, command: str | None = None,
                 unit: str = "mJ") -> Meter | None:
    """The meter ``choice`` names: ``none``; ``auto`` (the first found, None if none);
    ``command`` (``command``/``unit``); or a name (``rapl``, ``hwmon:ina3221``,
    ``pi5-pmic``), MeterError when this board has no such meter."""
    if choice == "none":
        return None
    if choice == "command":
        if not command:
            raise MeterError("energy meter `command` needs its command")
        return command_meter(command, unit)
    meters = find_meters(root)
    if choice == "auto":
        return meters[0] if meters else None
    for meter in meters:
        if meter.name == choice or meter.kind == choice:
            return meter
    raise MeterError(f"no energy meter {choice!r} on this board (found: "
                     f"{', '.join(m.name for m in meters) or 'none'})")


# --- energy over a window -------------------------------------------------------------


class Integrator:
    """A sensor's power sampled every update period on a thread and integrated by
    trapezoids; ``clock`` and ``sleep`` are parameters for tests."""

    def __init__(self, meter: Meter, clock: Callable[[], float] = time.perf_counter,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.meter, self.clock, self.sleep = meter, clock, sleep
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self) -> None:
        self.samples.append((self.clock(), self.meter.power_w()))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sleep(self.meter.update_period_s)
            self.sample()

    def start(self) -> None:
        self.sample()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> float:
        """Stop; the energy in mJ since :meth:`start`."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()
        return integrate_mj(self.samples)


def integrate_mj(samples: list[tuple[float, float]]) -> float:
    """mJ from (seconds, watts) samples, by trapezoids."""
    return 1000.0 * sum((t1 - t0) * (p0 + p1) / 2
                        for (t0, p0), (t1, p1) in zip(samples, samples[1:]))


def energy_over(meter: Meter, work: Callable[[], int],
                clock: Callable[[], float] = time.perf_counter) -> tuple[float, float, int]:
    """(mJ, seconds, what ``work`` returned) for one call of ``work`` on ``meter``. A
    counter that did not move over a window longer than its update period is stalled:
    MeterError."""
    if meter.counter:
        before = meter.read()
        start = clock()
        done = work()
        seconds = clock() - start
        after = meter.read()
        if after == before and seconds > 2 * meter.update_period_s:
            raise MeterError(f"meter {meter.name} did not change over {seconds:.3g} s (it "
                             f"updates every {meter.update_period_s:g} s): stalled, no energy "
                             "from it")
        return meter.energy_between(before, after), seconds, done
    integrator = Integrator(meter, clock=clock)
    start = clock()
    integrator.start()
    done = work()
    energy = integrator.stop()
    return energy, clock() - start, done


# A window is at least this many of the meter's update periods: shorter, a counter's
# step is a large share of what it measures.
MIN_PERIODS = 20
DEFAULT_WINDOWS = 5
DEFAULT_WINDOW_S = 1.0
# Two-sided 95% Student t quantiles by degrees of freedom (windows - 1).
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
       9: 2.262, 10: 2.228, 15: 2.131, 20: 2.086, 30: 2.042}


def t95(dof: int) -> float:
    return T95.get(dof) or T95[max(key for key in T95 if key <= dof)] if dof >= 1 else float("nan")


def window_seconds(meter: Meter, wanted: float) -> tuple[float, bool]:
    """The window's length: ``wanted``, extended to :data:`MIN_PERIODS` update periods
    (True when extended)."""
    least = MIN_PERIODS * meter.update_period_s
    return (least, True) if wanted < least else (wanted, False)


def per_inference(meter: Meter, run_for: Callable[[float], int],
                  windows: int = DEFAULT_WINDOWS, window_s: float = DEFAULT_WINDOW_S,
                  idle: Callable[[float], int] | None = None,
                  clock: Callable[[], float] = time.perf_counter) -> dict[str, object]:
    """Energy per inference on ``meter``: ``windows`` times, an idle baseline of the
    window's length (``idle``, default a sleep) then ``run_for(seconds)`` (inferences one
    after another for that long, returning how many); each window's energy minus the
    baseline's power over the same time, / inferences, in mJ. The mean over windows,
    its 95% interval (Student t), the average active power (W), the baseline power, and
    the meter's facts. A meter that stalls or goes backwards gives ``error`` and no
    number."""
    length, extended = window_seconds(meter, window_s)
    idle = idle or (lambda seconds: (time.sleep(seconds), 0)[1])
    facts: dict[str, object] = {"meter": meter.describe(), "window_s": length,
                                "window_extended": extended, "windows": windows}
    per: list[float] = []
    active_w: list[float] = []
    idle_w: list[float] = []
    inferences = 0
    try:
        for _ in range(windows):
            base_mj, base_s, _ = energy_over(meter, lambda: idle(length), clock)
            run_mj, run_s, count = energy_over(meter, lambda: run_for(length), clock)
            if count <= 0 or run_s <= 0 or base_s <= 0:
                raise MeterError("a window ran no inference")
            baseline_w = base_mj / base_s / 1000.0
            per.append((run_mj - baseline_w * 1000.0 * run_s) / count)
            active_w.append(run_mj / run_s / 1000.0)
            idle_w.append(baseline_w)
            inferences += count
    except MeterError as error:
        return {**facts, "error": str(error)}
    mean = sum(per) / len(per)
    if len(per) > 1:
        spread = (sum((x - mean) ** 2 for x in per) / (len(per) - 1)) ** 0.5
        half = t95(len(per) - 1) * spread / len(per) ** 0.5
        interval: list[float] | None = [mean - half, mean + half]
    else:
        interval = None
    return {**facts, "energy_mj": mean, "energy_interval": interval,
            "per_window_mj": per, "power_w": sum(active_w) / len(active_w),
            "baseline_w": sum(idle_w) / len(idle_w), "inferences": inferences}
