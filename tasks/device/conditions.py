"""The device's conditions around a timed run: CPU affinity, frequency governor and
clock, temperature, throttling (cpufreq, thermal throttle counts, the Raspberry Pi
firmware's flags), load; what changed between two snapshots, each change as one line for
a warning. Standard library only; None where the board does not say.
"""

from __future__ import annotations

import os
import time
from typing import Any

from .host import first_number


# Raspberry Pi firmware's throttling flags (vcgencmd get_throttled): bit -> meaning.
PI_THROTTLE_BITS = {0: "under-voltage", 1: "frequency capped", 2: "throttled",
                    3: "soft temperature limit"}
PI_THROTTLE_FILE = "/sys/devices/platform/soc/soc:firmware/get_throttled"
CPUFREQ = "/sys/devices/system/cpu/cpu0/cpufreq"


def throttling() -> dict[str, Any]:
    """What the board says about its clock and throttling, where it says anything:
    CPU frequency now and at most (cpufreq), Intel/AMD thermal throttle events, and the
    Raspberry Pi firmware's flags (now, and since boot)."""
    facts: dict[str, Any] = {}
    current, highest = first_number(f"{CPUFREQ}/scaling_cur_freq"), first_number(
        f"{CPUFREQ}/cpuinfo_max_freq")
    if current and highest:
        facts.update(cpu_mhz=round(current / 1000), cpu_max_mhz=round(highest / 1000))
    events = first_number("/sys/devices/system/cpu/cpu0/thermal_throttle/core_throttle_count")
    if events is not None:
        facts["thermal_throttle_events"] = int(events)
    try:
        with open(PI_THROTTLE_FILE, encoding="ascii") as handle:
            flags = int(handle.read().strip(), 16)
    except (OSError, ValueError):
        return facts
    now = [name for bit, name in PI_THROTTLE_BITS.items() if flags & (1 << bit)]
    before = [name for bit, name in PI_THROTTLE_BITS.items() if flags & (1 << (bit + 16))]
    facts["throttled"] = ", ".join(now) or "no"
    facts["throttled_since_boot"] = ", ".join(before) or "no"
    return facts


PROC_STAT = "/proc/stat"
THERMAL_ZONE = "/sys/class/thermal/thermal_zone0/temp"
# What counts as a change during a run worth a warning.
CLOCK_CHANGE = 0.10  # relative
TEMPERATURE_RISE_C = 5.0
OTHER_LOAD_CPUS = 0.5


def _busy_jiffies() -> tuple[float, float] | None:
    """(busy, all) CPU time of the whole machine since boot, in seconds (/proc/stat)."""
    try:
        with open(PROC_STAT, encoding="ascii") as handle:
            fields = [float(value) for value in handle.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    if len(fields) < 5:
        return None
    hertz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / hertz, sum(fields[:8]) / hertz


def _cpu_clock_mhz() -> float | None:
    """The CPU clock now: cpufreq's where the board has it, else /proc/cpuinfo's mean."""
    current = first_number(f"{CPUFREQ}/scaling_cur_freq")
    if current:
        return round(current / 1000, 1)
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            clocks = [float(line.split(":", 1)[1]) for line in handle
                      if line.lower().startswith("cpu mhz")]
    except (OSError, ValueError):
        return None
    return round(sum(clocks) / len(clocks), 1) if clocks else None


def _governor() -> str | None:
    try:
        with open(f"{CPUFREQ}/scaling_governor", encoding="ascii") as handle:
            return handle.read().strip() or None
    except OSError:
        return None


def conditions() -> dict[str, Any]:
    """What the device was like at one moment: CPU affinity, frequency governor and
    clock, temperature, throttling, load average; None where the board does not say."""
    millidegrees = first_number(THERMAL_ZONE)
    facts = throttling()
    affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {"monotonic": time.monotonic(), "cpu_seconds": sum(os.times()[:2]),
            "machine_busy": _busy_jiffies(), "affinity": affinity, "governor": _governor(),
            "cpu_mhz": _cpu_clock_mhz(),
            "temperature_c": millidegrees / 1000 if millidegrees is not None else None,
            "thermal_throttle_events": facts.get("thermal_throttle_events"),
            "throttled": facts.get("throttled"),
            "load_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}


def _other_busy_cpus(before: dict[str, Any], after: dict[str, Any]) -> float | None:
    """CPUs kept busy by other processes between two snapshots, on average: the
    machine's busy time less this process's own CPU time, over the wall time."""
    wall = after["monotonic"] - before["monotonic"]
    if not before["machine_busy"] or not after["machine_busy"] or wall <= 0:
        return None
    machine = after["machine_busy"][0] - before["machine_busy"][0]
    own = after["cpu_seconds"] - before["cpu_seconds"]
    return round(max(0.0, machine - own) / wall, 2)


def condition_changes(before: dict[str, Any], after: dict[str, Any],
                      other_busy_cpus: float | None) -> list[str]:
    """What changed during the run, or disturbed it, each as one line for a warning."""
    changes = []
    if before["governor"] != after["governor"]:
        changes.append(f"frequency governor changed from {before['governor']} "
                       f"to {after['governor']}")
    if before["cpu_mhz"] and after["cpu_mhz"] and \
            abs(after["cpu_mhz"] - before["cpu_mhz"]) > CLOCK_CHANGE * before["cpu_mhz"]:
        changes.append(f"CPU clock changed from {before['cpu_mhz']:g} to "
                       f"{after['cpu_mhz']:g} MHz")
    if before["temperature_c"] is not None and after["temperature_c"] is not None and \
            after["temperature_c"] - before["temperature_c"] >= TEMPERATURE_RISE_C:
        changes.append(f"temperature rose from {before['temperature_c']:g} to "
                       f"{after['temperature_c']:g} C")
    events = before["thermal_throttle_events"], after["thermal_throttle_events"]
    if None not in events and events[1] > events[0]:
        changes.append(f"the CPU was thermally throttled {events[1] - events[0]:g} times")
    if after["throttled"] not in (None, "no"):
        changes.append(f"the board reports {after['throttled']}")
    if before["affinity"] != after["affinity"]:
        changes.append(f"CPU affinity changed from {before['affinity']} to {after['affinity']}")
    if other_busy_cpus is not None and other_busy_cpus >= OTHER_LOAD_CPUS:
        changes.append(f"other processes kept {other_busy_cpus:g} CPUs busy")
    return changes


def run_conditions(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """The conditions of a timed run as a result reports them."""
    other = _other_busy_cpus(before, after)
    shown = ("affinity", "governor", "cpu_mhz", "temperature_c", "thermal_throttle_events",
             "throttled", "load_1m")
    return {"before": {key: before[key] for key in shown},
            "after": {key: after[key] for key in shown},
            "other_busy_cpus": other, "changes": condition_changes(before, after, other)}
