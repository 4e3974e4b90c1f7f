"""The lifecycle's commands: ``run`` (the whole lifecycle as a Prefect flow), ``step``
(one step, no Prefect: what dvc.yaml runs) and ``report`` (the last run's results)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Callable, TypeVar

import typer

from flows.cli.arguments import (FarmOption, ParamsOption, VerboseOption, context, farm_path,
                                 not_a_folder)
from flows.cli.exits import guarded, logged
from flows.cli.output import print_results, results_width, say
from flows.cli.process import interruptible
from flows.steps import STEPS, known_steps
from tasks.core.errors import StepError

if TYPE_CHECKING:
    from tasks.core.contracts.summary import Summary

T = TypeVar("T")


def _summary(path: Path, render: Callable[[Summary], T]) -> T:
    """``render`` applied to the summary in ``path``. A summary that is
    missing, not JSON, or not of the shape select writes
    (:mod:`tasks.core.contracts.summary`) is a StepError naming it."""
    from tasks.core.contracts.summary import read_summary

    if not path.is_file():
        raise StepError(f"{path} is missing: run `edgeflow run` first")
    return render(read_summary(path))


def run(params: ParamsOption = Path("params.yaml"), farm: FarmOption = None,
        rerun: Annotated[list[str] | None, typer.Option(
            "--rerun", help="run this step even if cached (repeatable), e.g. benchmark")] = None,
        yes: Annotated[bool, typer.Option(
            "--yes", help="approve every release (release.policy: approve)")] = False,
        gate: Annotated[bool, typer.Option(
            "--gate", help="compare with the previous lifecycle run (edgeflow compare) and "
                           "exit 1 on a regression")] = False,
        verbose: VerboseOption = False) -> None:
    """Run the whole lifecycle (Prefect flow); cached steps are not executed again."""
    from flows.server import launch, prefect_server

    # The temporary Prefect server (if one is needed) boots while this process imports
    # Prefect and checks the configuration and the lock: seconds of a no-op run. A bad
    # file or a second run is still refused in a second (the server dies with us).
    server = launch()
    from flows import approvals
    from flows.console import new_log
    from flows.lifecycle import preflight, run_lifecycle
    from tasks.core.locks import experiment_lock

    approvals.install(approvals.terminal_approver(yes))

    def run_flow() -> Any:
        with prefect_server(server):
            return run_lifecycle(params, farm_path(params, farm), rerun, gate)

    def run_it() -> Any:
        ctx = preflight(params, farm_path(params, farm), rerun)
        with experiment_lock(ctx.layout.state):
            log = new_log(ctx.layout.logs, "run")
            return *logged(log, verbose, run_flow), log

    def run_and_report() -> None:
        state, outcome, log = run_it()
        _report_run(state, outcome, log)

    guarded(lambda: interruptible(run_and_report))


def _report_run(state: Any, outcome: Any, log: Path) -> None:
    """Print a finished run's table, recommendations and state; exit 0 or 1."""
    from flows.remotes import private_remote_note
    from flows.versioning import dvc_project
    from tasks.select.report.markdown import recommendation_lines
    from tasks.select.report.terminal import terminal_summary

    summary, shown, lines = _summary(
        Path(outcome.summary_path),
        lambda summary: (summary, terminal_summary(summary, results_width()),
                         recommendation_lines(summary)))
    print_results(shown)
    for line in lines:
        say(line.replace("**", "").replace("`", ""))
    say(f"executed: {', '.join(outcome.executed) or 'nothing (every step cached)'}")
    if outcome.cached:
        say(f"cached:   {', '.join(outcome.cached)}")
    for line in outcome.releases:
        say(f"release: {line}")
    if outcome.gate:
        say(f"gate: {outcome.gate}")
    say(f"dvc: {outcome.dvc}")
    if note := private_remote_note(dvc_project(Path(outcome.summary_path).parent)):
        say(note)
    say(f"report: {Path(outcome.summary_path).with_name('report.html')} (and report.md)")
    if summary.counts.skipped:
        say(f"{summary.counts.skipped} skipped results (a device that cannot run "
                      "a runtime, a tool missing here) are listed with reasons in report.md; "
                      "`edgeflow report --all` shows them")
    say(f"log: {log}")
    say(f"flow state: {state.name}: {state.message}")
    raise typer.Exit(0 if state.is_completed() else 1)


def step(name: Annotated[str, typer.Argument(help=f"one of: {', '.join(STEPS)}")],
         params: ParamsOption = Path("params.yaml"), farm: FarmOption = None,
         verbose: VerboseOption = False) -> None:
    """Run one step without Prefect (``dvc repro`` calls this); ``edgeflow run`` reuses
    its outputs."""
    from flows.console import new_log
    from tasks.core.locks import experiment_lock

    guarded(lambda: known_steps([name]))
    ctx = context(params, farm)
    if name == "track":  # a dead tracking server would hang it for minutes: refused now
        from tasks.core.mlflow_store import check_answers, tracking_uri

        guarded(lambda: check_answers(tracking_uri(ctx.layout.root)))

    def run_locked() -> Any:
        from flows.caching import record_step

        with experiment_lock(ctx.layout.state):
            log = new_log(ctx.layout.logs, f"step-{name}")
            result = logged(log, verbose, lambda: STEPS[name].run(ctx))
            # Stamped as the flow stamps its tasks: `edgeflow run` then finds this work
            # done (after `dvc repro` or `dvc exp run`) instead of doing it again.
            record_step(ctx, name)
            return result

    result = guarded(lambda: interruptible(run_locked))
    describe = getattr(result, "describe", None)  # a step's one-line figures, if it has them
    say(f"step {name}: done" + (f": {describe()}" if callable(describe) else ""))
    for line in getattr(result, "lines", list)():  # per device (release): what happened
        say(line)
    problem = getattr(result, "problem", lambda: None)()  # work done that did not succeed
    if problem:
        typer.echo(f"edgeflow: error: {problem}", err=True)
        raise typer.Exit(1)


def report(params: ParamsOption = Path("params.yaml"),
           show_all: Annotated[bool, typer.Option("--all", help="include skipped results")] = False,
           ) -> None:
    """Print the results table and recommendations of the last run."""
    from tasks.core.layout import Layout
    from tasks.select.report.markdown import recommendation_lines
    from tasks.select.report.terminal import terminal_summary

    layout = Layout(guarded(lambda: not_a_folder(params, "--params")).resolve().parent)
    shown, lines = guarded(lambda: _summary(layout.summary, lambda summary: (
        terminal_summary(summary, results_width(), include_skipped=show_all),
        recommendation_lines(summary))))
    print_results(shown)
    for line in lines:
        say(line.replace("**", "").replace("`", ""))
    say(f"report: {layout.reports / 'report.html'} (and report.md)")


def register(app: typer.Typer) -> None:
    """Add this group's commands to ``app``."""
    for command in (run, step, report):
        app.command()(command)
