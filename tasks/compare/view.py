"""A comparison as people read it: one table row per (variant, device), each measure as
``before -> after (+x%)`` with the 95% intervals (latencies as a relative half-width),
and the verdict."""

from __future__ import annotations

from typing import Any

from tasks.compare import MEASURES, Change, Comparison, Interval, PairComparison


def _with_interval(value: float, bounds: Interval | None, measure: str) -> str:
    """``0.0175±0.2%`` (a latency, its interval's half-width relative to it) or
    ``0.70 [0.52, 0.83]`` (an accuracy and its interval)."""
    if measure == "accuracy":
        return f"{value:.3f}" + (f" [{bounds[0]:.3f}, {bounds[1]:.3f}]" if bounds else "")
    if bounds and value:
        return f"{value:.3g}±{(bounds[1] - bounds[0]) / 2 / value:.1%}"
    return f"{value:.3g}"


def change_cell(change: Change | None) -> str:
    """``0.0175±0.2% -> 0.021±0.2% (+20.0%)``; red when it is a regression, empty when
    either run did not measure it."""
    if change is None:
        return ""
    if change.measure == "size":
        relative = f" ({change.relative:+.1%})" if change.relative is not None else ""
        text = f"{change.before / 1024:.1f} KB" if change.before == change.after else \
            f"{change.before / 1024:.1f} -> {change.after / 1024:.1f} KB{relative}"
    else:
        text = (f"{_with_interval(change.before, change.before_interval, change.measure)} -> "
                f"{_with_interval(change.after, change.after_interval, change.measure)}")
        text += (f" ({change.after - change.before:+.3f})" if change.measure == "accuracy"
                 else f" ({change.relative:+.1%})" if change.relative is not None else "")
    return f"[bold red]{text}[/]" if change.regression else text


def _verdict(pair: PairComparison) -> str:
    """``ok``, or why the pair is left out of the verdict (with its regressions, if any:
    shown, not counted)."""
    if pair.excluded is None:
        return "ok"
    found = f" ({len(pair.regressions)} regression(s), not counted)" if pair.regressions else ""
    return f"{pair.excluded}{found}"


def _status(pair: PairComparison) -> str:
    return pair.status_after if pair.status_before == pair.status_after \
        else f"{pair.status_before} -> {pair.status_after}"


def comparison_table(comparison: Comparison, before: str, after: str) -> Any:
    """A rich table of ``comparison`` between the runs described by ``before`` and
    ``after``."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"{escape(before)} -> {escape(after)}")
    for column in ("variant", "device", "status", *[f"{name}{' ms' if name[0] == 'p' else ''}"
                                                    for name in MEASURES], "verdict"):
        table.add_column(column)
    for pair in comparison.pairs:
        changes = {change.measure: change for change in pair.changes}
        verdict = "[bold red]REGRESSION[/]" if pair.regressed else escape(_verdict(pair))
        table.add_row(escape(pair.variant), escape(pair.device), escape(_status(pair)),
                      *[change_cell(changes.get(name)) for name in MEASURES], verdict)
    return table


def comparison_markdown(comparison: Comparison, before: str, after: str) -> str:
    """The comparison as a Markdown table (a Prefect artifact, a CI log)."""
    lines = [f"# edgeflow: {before} -> {after}", "",
             "| variant | device | status | accuracy | size | p50 ms | p90 ms | verdict |",
             "|---|---|---|---|---|---|---|---|"]
    for pair in comparison.pairs:
        changes = {change.measure: change for change in pair.changes}
        cells = [_plain(change_cell(changes.get(name))) for name in MEASURES]
        verdict = "**REGRESSION**" if pair.regressed else _verdict(pair)
        lines.append(f"| {pair.variant} | {pair.device} | {_status(pair)} | {' | '.join(cells)} | "
                     f"{verdict} |")
    lines += ["", *[f"- regression: {line}" for line in comparison.regressions],
              *[f"- not gated: {line}" for line in comparison.excluded]]
    return "\n".join(lines) + "\n"


def _plain(cell: str) -> str:
    return cell.removeprefix("[bold red]").removesuffix("[/]")
