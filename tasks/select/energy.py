"""Energy per inference of a result, and the battery life it gives: *measured* where the
board's harness read a meter (:mod:`tasks.device.energy`), else *estimated* from the
device's declared power (farm.yaml ``power``) and its latency, and labelled so wherever
it appears.

Energy per inference is always the energy an inference costs *above idle*: the meter's
windows subtract an idle baseline of the same length; the estimate is
``(active_w - idle_w) x latency`` (W x ms = mJ), its interval the latency's p50
interval's. On a microcontroller the latency is the estimated one (counted instructions x
cycles per instruction / clock), so the energy is its active current x voltage (above
its idle current) x that time.

Battery life (:func:`battery_hours`): the average power at ``fps`` frames per second is
the idle power plus the energy per inference times the frame rate,
``P_avg [mW] = idle_w x 1000 + energy_mj x fps`` (each inference's active energy above
idle, the board idling in between), and ``hours = capacity_mwh / P_avg``. A variant that
cannot keep ``fps`` (its throughput is lower) is given its throughput instead, and says
so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MEASURED = "measured"
ESTIMATED = "estimated"


@dataclass(frozen=True)
class Energy:
    """One result's energy per inference (mJ, above idle), its 95% interval, the average
    power while inferring (W), the idle power (W), ``source`` (measured or estimated)
    and what it comes from (the meter's name, or the power profile's source)."""

    energy_mj: float
    interval: list[float] | None
    power_w: float | None
    idle_w: float | None
    source: str
    meter: str

    def columns(self) -> dict[str, Any]:
        return {"energy_mj": self.energy_mj, "energy_interval": self.interval,
                "power_w": self.power_w, "idle_w": self.idle_w,
                "energy_source": self.source, "energy_meter": self.meter}


def measured(energy: Any) -> tuple[Energy | None, str | None]:
    """The harness result's ``energy`` part as an :class:`Energy` (None when the board
    read no meter), or why it has no number (a stalled or backwards meter)."""
    if not isinstance(energy, dict):
        return None, None
    if "error" in energy or energy.get("energy_mj") is None:
        return None, f"energy not measured: {energy.get('error') or 'no figure'}"
    meter = energy.get("meter") or {}
    name = str(meter.get("name", "meter")) if isinstance(meter, dict) else "meter"
    interval = energy.get("energy_interval")
    return Energy(float(energy["energy_mj"]),
                  [float(bound) for bound in interval] if interval else None,
                  float(energy["power_w"]) if energy.get("power_w") is not None else None,
                  float(energy["baseline_w"]) if energy.get("baseline_w") is not None else None,
                  MEASURED, name), None


def estimated(power: Any, latency_ms: float,
              latency_interval_ms: list[float] | None = None) -> Energy:
    """The estimate from a power profile (``idle_watts``, ``active_watts``, ``source``)
    and a latency in ms: ``(active - idle) x latency`` mJ, the interval likewise."""
    above = power.active_watts - power.idle_watts
    return Energy(above * latency_ms,
                  [above * bound for bound in latency_interval_ms] if latency_interval_ms
                  else None,
                  power.active_watts, power.idle_watts, ESTIMATED, power.source)


@dataclass(frozen=True)
class BatteryLife:
    """Hours on a battery at a frame rate; ``fps`` the rate used (the throughput where
    the wanted one cannot be kept, ``capped``)."""

    hours: float
    fps: float
    wanted_fps: float
    capped: bool


def battery_hours(capacity_mwh: float, fps: float, idle_w: float, energy_mj: float,
                  max_fps: float | None = None) -> BatteryLife:
    """``capacity_mwh / (idle_w x 1000 + energy_mj x fps)`` hours (see the module's doc),
    ``fps`` capped at ``max_fps`` (the variant's throughput) where it is lower."""
    used = min(fps, max_fps) if max_fps is not None else fps
    average_mw = idle_w * 1000.0 + energy_mj * used
    return BatteryLife(capacity_mwh / average_mw if average_mw > 0 else float("inf"), used,
                       fps, used < fps)


def battery_text(variant: str, life: BatteryLife, capacity_mwh: float, source: str) -> str:
    """``at 2 fps tflite-int8 lasts 412.3 h on the 37000 mWh battery (estimated)``."""
    if life.capped:
        return (f"{variant} cannot keep {life.wanted_fps:g} fps (at most {life.fps:.3g}); at "
                f"that rate it lasts {life.hours:.1f} h on the {capacity_mwh:g} mWh battery "
                f"({source})")
    return (f"at {life.fps:g} fps {variant} lasts {life.hours:.1f} h on the "
            f"{capacity_mwh:g} mWh battery ({source})")
