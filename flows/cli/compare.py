"""``edgeflow compare A B``: two runs per (variant, device); exit 1 on a regression (a CI
gate)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from flows.cli.arguments import ParamsOption
from flows.cli.exits import guarded
from flows.cli.output import console, say
from tasks.core.errors import UsageError

RunReference = Annotated[str, typer.Argument(
    help="a summary file, a project folder, an MLflow run id, 'latest' or 'previous'")]


def compare(before: RunReference, after: RunReference,
            params: ParamsOption = Path("params.yaml"),
            latency_increase: Annotated[float | None, typer.Option(
                help="p50/p90 slower by more than this fraction is a regression "
                     "(default: compare.latency_increase)")] = None,
            accuracy_drop: Annotated[float | None, typer.Option(
                help="accuracy lower by more than this (default: compare.accuracy_drop)")] = None,
            size_increase: Annotated[float | None, typer.Option(
                help="artifact larger by more than this fraction "
                     "(default: compare.size_increase)")] = None) -> None:
    """Compare two runs per (variant, device); exit 1 on a regression (a CI gate)."""
    from tasks.compare import compare as compare_runs
    from tasks.compare.sources import load_summary
    from tasks.compare.view import comparison_table
    from tasks.config import CompareParams, load_params
    from tasks.core.layout import Layout

    # Two summary files need no project: without one, the default thresholds.
    if params.exists() or params != Path("params.yaml"):
        configured = guarded(lambda: load_params(params).compare)
    else:
        configured = CompareParams()
    layout = Layout(params.resolve().parent)
    overrides = {"latency_increase": latency_increase, "accuracy_drop": accuracy_drop,
                 "size_increase": size_increase}
    limits = guarded(lambda: _validated(CompareParams, {
        **configured.model_dump(),
        **{key: value for key, value in overrides.items() if value is not None}}))
    (earlier, named_before), (later, named_after) = (
        guarded(lambda: load_summary(reference, layout)) for reference in (before, after))
    comparison = compare_runs(earlier, later, limits)
    console.print(comparison_table(comparison, named_before, named_after))
    for label, pairs in (("only in the first run", comparison.only_before),
                         ("only in the second run", comparison.only_after)):
        if pairs:
            say(f"{label}: {', '.join(pairs)}")
    for line in comparison.excluded:
        say(f"not gated: {line}")
    if comparison.regressions:
        for line in comparison.regressions:
            say(f"regression: {line}", "bold red")
        typer.echo(f"edgeflow: {len(comparison.regressions)} regression"
                   f"{'s' if len(comparison.regressions) != 1 else ''} "
                   f"(thresholds: {_thresholds(limits)})", err=True)
        raise typer.Exit(1)
    gated = len(comparison.pairs) - len(comparison.excluded)
    say(f"no regression in {gated} pairs (thresholds: {_thresholds(limits)})")


def _thresholds(limits: Any) -> str:
    # The thresholds only: include_emulated is not one (the "not gated" lines show it).
    return ", ".join(f"{key} {value:g}" for key, value in limits.model_dump().items()
                     if not isinstance(value, bool))


def _validated(model: Any, values: dict[str, Any]) -> Any:
    """``model`` of ``values``; out-of-range options are a one-line UsageError."""
    from pydantic import ValidationError

    try:
        return model.model_validate(values)
    except ValidationError as error:
        first = error.errors()[0]
        raise UsageError(f"--{str(first['loc'][0]).replace('_', '-')}: {first['msg']}") from None


def register(app: typer.Typer) -> None:
    """Add this command to ``app``."""
    app.command()(compare)
