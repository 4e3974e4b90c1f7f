"""``edgeflow status``: each device's releases as a terminal table."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any


def _release(entry: dict[str, Any] | None) -> str:
    """``variant (release id, MLflow vN)`` (``missing`` for the variant of a release whose
    folder is gone) or ``-``."""
    if not entry:
        return "-"
    version = (entry.get("mlflow") or {}).get("version")
    return (f"{entry.get('variant') or 'missing'} ({entry.get('release')}"
            + (f", MLflow v{version}" if version else "") + ")")


def _health(entry: dict[str, Any] | None) -> str:
    health = (entry or {}).get("health")
    if not health:
        return "-"
    when = health.get("checked_at")
    at = (datetime.fromtimestamp(float(when), timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
          if isinstance(when, (int, float)) else "")
    verdict = "passed" if health.get("passed") else "FAILED: " + "; ".join(health.get("reasons", []))
    accuracy = health.get("accuracy")
    figures = (f", accuracy {accuracy:.3f}, p90 {health.get('latency_p90_ms', 0):.3f} ms"
               if isinstance(accuracy, (int, float)) else "")
    return f"{verdict}{figures} {at}".strip()


def status_rows(state: dict[str, Any]) -> list[str]:
    """One device's cells: device, current, previous, last health check, drift."""
    board = state.get("board")
    if state.get("error"):
        return [state["device"], "unreachable", "-", "-", state["error"]]
    source = board if board is not None else state["record"]  # no state of its own: the record
    return [state["device"], _release(source.get("current")), _release(source.get("previous")),
            _health(source.get("current")), state.get("drift") or "none"]


def status_table(states: list[dict[str, Any]]) -> Any:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="edgeflow releases")
    for column in ("device", "current", "previous", "last health check", "drift"):
        table.add_column(column)
    for state in states:
        table.add_row(*(escape(cell) for cell in status_rows(state)))
    return table
