"""The release commands: ``release`` and ``rollback`` a device by hand, and ``status``
(what each device runs; exit 1 when a board drifted or could not be reached). A release
that failed or was refused ends ``release`` with exit 1."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from flows.cli.arguments import DeviceArgument, FarmOption, ParamsOption, context
from flows.cli.exits import guarded
from flows.cli.output import console, say
from flows.cli.process import interruptible
from tasks.core.errors import ConfigError, StepError, UsageError


def _ask(device: str, variant: str, change: str) -> bool:
    """Approval of a release by hand, on the terminal."""
    from flows.approvals import ask_on_terminal

    answer = ask_on_terminal(device, variant, change)
    if answer is None:
        raise UsageError(f"releasing {variant} to {device} needs an approval and there is no "
                         "terminal to ask: pass --yes")
    return answer


def _say_release(outcome: Any, layout: Any) -> None:
    from tasks.release.outcome import UNSUCCESSFUL, last_attempt

    say(guarded(lambda: last_attempt(layout, outcome.device)))
    if outcome.status in UNSUCCESSFUL:
        raise typer.Exit(1)


def _known_device(ctx: Any, device: str) -> None:
    """A ConfigError unless ``device`` is in the farm (before anything asks about it)."""
    from tasks.release import require_device

    require_device(ctx.farm, device, ctx.farm_path.name)


def _recommended(ctx: Any, device: str) -> str:
    """The device's recommended variant (a release by hand without ``--variant``)."""
    from tasks.core.contracts.summary import read_summary

    summary = read_summary(ctx.layout.summary)
    if device not in summary.recommendations:
        raise ConfigError(f"device {device!r} has no results in {ctx.layout.summary}: run "
                          "`edgeflow run` first")
    chosen = summary.recommendations[device]
    if chosen is None:
        excluded = summary.excluded_reason(device)
        if excluded:
            raise StepError(f"nothing recommended on {device}: {excluded}, or name a "
                            "variant with --variant")
        raise StepError(f"no variant passed the requirements on {device}: name one with --variant")
    return chosen


def release(device: DeviceArgument, params: ParamsOption = Path("params.yaml"),
            farm: FarmOption = None,
            variant: Annotated[str | None, typer.Option(
                "--variant", help="the variant to release; default: the device's recommended one")] = None,
            yes: Annotated[bool, typer.Option("--yes", help="release without asking")] = False) -> None:
    """Release a variant to a device by hand: health-checked there, then made current."""
    from tasks.core.locks import experiment_lock
    from tasks.release import release_device

    ctx = context(params, farm)
    guarded(lambda: _known_device(ctx, device))

    def released() -> Any:
        with experiment_lock(ctx.layout.state):
            return release_device(ctx.params, ctx.farm, ctx.layout, device,
                                  variant or _recommended(ctx, device),
                                  approve=(lambda *_: True) if yes else _ask)

    _say_release(guarded(lambda: interruptible(released)), ctx.layout)


def rollback(device: DeviceArgument, params: ParamsOption = Path("params.yaml"),
             farm: FarmOption = None) -> None:
    """Switch a device back to its previous healthy release (and its MLflow alias)."""
    from tasks.core.locks import experiment_lock
    from tasks.release import rollback_device

    ctx = context(params, farm)

    def rolled() -> Any:
        with experiment_lock(ctx.layout.state):
            return rollback_device(ctx.farm, ctx.layout, device, ctx.params.release.readable_by)

    _say_release(guarded(lambda: interruptible(rolled)), ctx.layout)


def status(params: ParamsOption = Path("params.yaml"), farm: FarmOption = None) -> None:
    """What each device runs: current and previous release, last health check, drift.
    Exit 1 when a board drifted or could not be reached (a monitor's check)."""
    from tasks.release import device_state
    from tasks.release.view import status_table

    ctx = context(params, farm)
    states = [guarded(lambda: device_state(ctx.farm, ctx.layout, name)) for name in ctx.farm.devices]
    console.print(status_table(states))
    for state in states:
        if state["drift"]:
            say(f"drift on {state['device']}: {state['drift']}", "bold red")
    drifted = [state["device"] for state in states if state["drift"]]
    unreachable = [state["device"] for state in states if state.get("error")]
    problems = ([f"drift on {', '.join(drifted)}"] if drifted else []) + (
        [f"unreachable: {', '.join(unreachable)}"] if unreachable else [])
    if problems:
        typer.echo(f"edgeflow: error: {'; '.join(problems)} (the table says why)", err=True)
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add this group's commands to ``app``."""
    for command in (release, rollback, status):
        app.command()(command)
