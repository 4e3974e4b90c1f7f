"""The farm commands' tables: what ``farm probe`` found on each device and what ``farm
setup`` did. Rendering only: which devices failed, and the exit, are the commands'."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

PROBE_COLUMNS = ("device", "reachable", "arch", "os", "python", "cpu", "cores", "MHz (max)",
                 "RAM MB (free)", "temp C", "throttled", "runtimes", "energy meters")


def _probe_cells(facts: dict[str, Any]) -> list[str]:
    """A probe's facts as the table's cells, from arch to throttled ("" for an unknown)."""
    def pair(now: str, most: str) -> str:
        return f"{facts[now]} ({facts[most]})" if facts.get(now) and facts.get(most) else ""

    throttled = facts.get("throttled") or (
        f"{facts['thermal_throttle_events']} events" if "thermal_throttle_events" in facts
        else "")
    return [str(facts.get("arch") or ""), str(facts.get("os") or ""),
            str(facts.get("python") or ""), str(facts.get("cpu") or ""),
            str(facts.get("cores") or ""), pair("cpu_mhz", "cpu_max_mhz"),
            pair("memory_mb", "memory_available_mb"), str(facts.get("temperature_c") or ""),
            str(throttled)]


def probe_table(farm: Path, probes: Iterable[Any]) -> Table:
    """One row per probed device (:class:`tasks.farm.probe.DeviceProbe`): reachable or
    why not, its facts, its runtimes with their versions and its energy meters (each
    with its update period; estimates stand in where there is none). The meters' column
    only where a board has one: an 80-column terminal has no width for a column of
    "none"."""
    probes = list(probes)
    metered = any(probe.meters for probe in probes)
    columns = PROBE_COLUMNS if metered else PROBE_COLUMNS[:-1]
    table = Table(title=f"farm: {farm}")
    for column in columns:
        table.add_column(column)
    for probe in probes:
        runtimes = ", ".join(f"{name} {version}" for name, version in probe.runtimes.items())
        meters = [escape(", ".join(probe.meters) or "none")] if metered else []
        table.add_row(escape(probe.device),
                      "yes" if probe.reachable else f"[red]no[/]: {escape(probe.error or '')}",
                      *map(escape, _probe_cells(probe.facts)), escape(runtimes), *meters)
    return table


def setup_table(farm: Path, outcomes: Iterable[Any]) -> Table:
    """One row per device set up (:func:`tasks.targets.farm_commands.setup_farm`'s
    outcomes): failed (why), changed or not, what was done, the runtimes in its
    virtualenv."""
    table = Table(title=f"farm setup: {farm}")
    for column in ("device", "result", "what was done", "runtimes in its virtualenv"):
        table.add_column(column)
    for outcome in outcomes:
        result = ("[red]failed[/]: " + escape(outcome.error) if outcome.error
                  else "changed" if outcome.changed else "nothing changed")
        table.add_row(escape(outcome.device), result, escape("; ".join(outcome.actions)),
                      escape(", ".join(f"{name} {version}"
                                       for name, version in outcome.runtimes.items())))
    return table
