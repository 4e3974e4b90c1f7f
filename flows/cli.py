"""``edgeflow``: the command line.

    edgeflow run [--params P] [--farm F] [--gate]   the whole lifecycle as a Prefect flow
    edgeflow step NAME [--params P] [--farm F]   one step, no Prefect (what dvc.yaml runs)
    edgeflow report [--params P]           the results table of the last run
    edgeflow compare A B                   two runs per (variant, device); exit 1 on a regression
    edgeflow farm probe|setup|trust        look at, prepare and trust the devices
    edgeflow serve [--port 4200] | stop    a local Prefect server, deployments and worker

Errors caused by input are one line on stderr, never a traceback, and the exit code is
the error's class's (:mod:`tasks.core.errors`), never read from its message: 2 for bad
configuration or usage (an unknown step, a folder given as a file), 1 otherwise (a
missing or damaged output of an earlier step, a device that failed, a failed run);
nothing already produced is deleted. Exit 75 when another run of the same experiment
holds its lock (try again later), 130 when Ctrl-C, SIGTERM or SIGHUP (the terminal
closed) stopped the run (what runs on devices is stopped too). `farm probe` and `farm
setup` print every device's row, then one line naming the devices that failed and exit
with their failures' class's code. A release that failed or was refused ends `run`,
`release` and `step release` with exit 1; `status` exits 1 when a board drifted or could
not be reached.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Any, Callable, NoReturn, TypeVar

# Quiet TensorFlow's C++ start-up chatter before anything imports it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# The temporary Prefect server needs more than the default 20 s on a busy 2-core box.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

import typer  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.markup import escape  # noqa: E402

from tasks.core.errors import ConfigError, EdgeflowError, StepError, UsageError  # noqa: E402
from flows.steps import STEPS, known_steps  # noqa: E402

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Train, convert, deploy and benchmark CV models on edge devices.")
console = Console()
if not console.is_terminal:  # logs and pipes: rich would squeeze the table into 80 columns
    console = Console(width=160)
T = TypeVar("T")

ParamsOption = Annotated[Path, typer.Option("--params", help="experiment file (params.yaml)")]
FarmOption = Annotated[Path | None, typer.Option(
    "--farm", help="device inventory; default: farm.yaml beside the params file")]


def _results_width() -> int:
    """The columns the results table is laid out in: the terminal's; off a terminal (a
    pipe, a CI log) ``COLUMNS``, else 80. At 120 or fewer it is the compact table with
    the reasons listed under it (:func:`tasks.select.report.terminal_summary`)."""
    if console.is_terminal:
        return console.width
    columns = os.environ.get("COLUMNS", "")
    return int(columns) if columns.isdigit() and int(columns) > 0 else 80


def _print_results(renderables: list[Any]) -> None:
    width = _results_width()
    for renderable in renderables:
        console.print(renderable, width=width)


def say(text: str, style: str | None = None) -> None:
    """One line of output; its text is never read as rich markup ("benchmark[pi]")."""
    # soft_wrap: a long line (a path) stays one line, whatever the terminal width.
    console.print(text, markup=False, highlight=False, style=style, soft_wrap=True)


VerboseOption = Annotated[bool, typer.Option(
    "--verbose", "-v", help="also show what the libraries print (TensorFlow, Prefect, NNCF...); "
                            "by default it goes only to the run's log in .edgeflow/logs/")]


def _refuse(error: EdgeflowError, log: Path | None = None) -> NoReturn:
    """End the command with ``error`` as one line on stderr and its class's exit code;
    the line names the run's ``log`` when there is one."""
    typer.echo(f"edgeflow: error: {error}" + (f" (log: {log})" if log else ""), err=True)
    raise typer.Exit(error.exit_code) from None


def _logged(log: Path, verbose: bool, action: Callable[[], T]) -> T:
    """Run ``action`` (steps) with the run's console (:mod:`flows.console`): the
    libraries' output goes to ``log``, progress and warnings to the console. An error is
    then one line naming the log, which records it (Prefect's reports of it too): an
    input error with its class's exit code, anything else with 1 and its traceback in
    the log. Ctrl-C goes on to :func:`_interruptible`."""
    import traceback

    from flows.console import captured, log_shutdown_to, one_line

    try:
        with captured(log, verbose=verbose) as run_log:
            try:
                return action()
            except BaseException as error:
                run_log.error(error)
                raise
        # Past the block the console is the terminal again: the one line goes there.
    except (typer.Exit, KeyboardInterrupt):
        raise
    except EdgeflowError as error:
        _refuse(error, log)
    except Exception as error:  # noqa: BLE001 - a bug: one line, the traceback is logged
        if verbose:
            typer.echo("".join(traceback.format_exception(error)).rstrip(), err=True)
        typer.echo(f"edgeflow: error: {one_line(error)} (unexpected: the traceback is in "
                   f"{log})", err=True)
        raise typer.Exit(1) from None
    finally:
        if _IN_CLI_PROCESS and not verbose:
            log_shutdown_to(log)


def _guarded(action: Callable[[], T]) -> T:
    try:
        return action()
    except EdgeflowError as error:
        _refuse(error)


def _exit_for_devices(failures: dict[str, type[EdgeflowError]], what: str) -> NoReturn:
    """End a farm command once its table is printed: exit 0 when no device failed, else
    one line on stderr naming the failed devices, and the highest exit code of their
    failures' classes (the table says why each failed)."""
    if failures:
        typer.echo(f"edgeflow: error: {', '.join(failures)}: {what} (the table says why)",
                   err=True)
    raise typer.Exit(max((failure.exit_code for failure in failures.values()), default=0))


INTERRUPTED_EXIT = 130  # 128 + SIGINT, as a shell reports a process stopped by Ctrl-C
# The signals that stop a command as Ctrl-C does: Ctrl-C, a polite kill, and the
# terminal closing (SIGHUP; by default it would kill edgeflow at once, without a word,
# and leave what runs on the devices running and holding their locks).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _stop_signals() -> tuple[signal.Signals, ...]:
    """:data:`STOP_SIGNALS` less SIGHUP where it is ignored: ``nohup edgeflow run`` asks
    the run to outlive its terminal."""
    return tuple(number for number in STOP_SIGNALS
                 if number != signal.SIGHUP or signal.getsignal(number) is not signal.SIG_IGN)


def _tell(line: str) -> None:
    """``line`` on stderr, if stderr is still there: after SIGHUP the terminal is gone
    and writing to it fails (EIO), which must not turn a clean stop into a traceback."""
    try:
        typer.echo(line, err=True)
    except (OSError, ValueError):
        pass


def _interruptible(action: Callable[[], T]) -> T:
    """Run ``action`` so that Ctrl-C (SIGINT, or SIGTERM, or SIGHUP: a closed terminal)
    stops it within seconds: what runs on devices is stopped (:mod:`tasks.core.interrupt`),
    steps stop at their next checkpoint without writing unfinished outputs, and the exit
    is one line and 130."""
    from tasks.core import interrupt

    numbers = _stop_signals()

    def on_signal(signum: int, frame: Any) -> None:
        interrupt.request_stop()
        # A second Ctrl-C while the first stops things must not break the unwinding.
        for number in numbers:
            signal.signal(number, lambda *_: interrupt.request_stop())
        raise interrupt.Interrupted(signal.Signals(signum).name)

    previous = {number: signal.signal(number, on_signal) for number in numbers}
    try:
        return action()
    except KeyboardInterrupt:
        interrupt.request_stop()  # a KeyboardInterrupt raised elsewhere than our handler
        _tell("edgeflow: interrupted: what ran on devices (benchmarks, a release before its "
              "switch) was stopped there; unfinished steps wrote nothing, the next run "
              "redoes them")
        raise typer.Exit(INTERRUPTED_EXIT) from None
    finally:
        # In the CLI process, the command is over once its action is: a signal while it
        # unwinds and tears down ends it at once, as interrupted (a KeyboardInterrupt
        # raised there would escape Typer and kill the process with a traceback).
        for number, handler in previous.items():
            signal.signal(number, _exit_interrupted if _IN_CLI_PROCESS else handler)


_IN_CLI_PROCESS = False  # set by main(): the process is the `edgeflow` command itself


def _exit_interrupted(signum: int, frame: Any) -> None:
    """Before a command's work starts or after it ends: nothing to stop, nothing half
    written; Prefect's server, if any, dies with this process."""
    try:
        os.write(2, b"edgeflow: interrupted\n")
    except OSError:  # the terminal is gone (SIGHUP): exit all the same
        pass
    os._exit(INTERRUPTED_EXIT)


def _farm(params: Path, farm: Path | None) -> Path:
    return farm if farm is not None else params.resolve().parent / "farm.yaml"


def _context(params: Path, farm: Path | None) -> Any:
    """The experiment's validated configuration; a bad file is a one-line error."""
    from flows.steps import Context

    return _guarded(lambda: Context.load(params, _farm(params, farm)))


def _not_a_folder(path: Path, option: str) -> Path:
    """``path``, unless it names a folder where a file is meant (a ConfigError)."""
    if path.is_dir():
        raise ConfigError(f"{option} {path} is a folder, not a file")
    return path


def _summary(path: Path, render: Callable[[dict[str, Any]], T]) -> T:
    """``render`` applied to the summary in ``path`` (its document). A summary that is
    missing, not JSON, or not of the shape select writes
    (:mod:`tasks.core.contracts.summary`) is a StepError naming it."""
    from tasks.core.contracts.summary import read_summary

    if not path.is_file():
        raise StepError(f"{path} is missing: run `edgeflow run` first")
    return render(read_summary(path).document())


@app.command()
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
            return run_lifecycle(params, _farm(params, farm), rerun, gate)

    def run_it() -> Any:
        ctx = preflight(params, _farm(params, farm), rerun)
        with experiment_lock(ctx.layout.state):
            log = new_log(ctx.layout.logs, "run")
            return *_logged(log, verbose, run_flow), log

    def run_and_report() -> None:
        state, outcome, log = run_it()
        _report_run(state, outcome, log)

    _guarded(lambda: _interruptible(run_and_report))


def _report_run(state: Any, outcome: Any, log: Path) -> None:
    """Print a finished run's table, recommendations and state; exit 0 or 1."""
    from tasks.select.report import recommendation_lines, terminal_summary

    summary, shown, lines = _summary(
        Path(outcome.summary_path),
        lambda summary: (summary, terminal_summary(summary, _results_width()),
                         recommendation_lines(summary)))
    _print_results(shown)
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
    say(f"report: {Path(outcome.summary_path).with_name('report.html')} (and report.md)")
    if summary["counts"]["skipped"]:
        say(f"{summary['counts']['skipped']} skipped results (a device that cannot run "
                      "a runtime, a tool missing here) are listed with reasons in report.md; "
                      "`edgeflow report --all` shows them")
    say(f"log: {log}")
    say(f"flow state: {state.name}: {state.message}")
    raise typer.Exit(0 if state.is_completed() else 1)


@app.command()
def step(name: Annotated[str, typer.Argument(help=f"one of: {', '.join(STEPS)}")],
         params: ParamsOption = Path("params.yaml"), farm: FarmOption = None,
         verbose: VerboseOption = False) -> None:
    """Run one step without Prefect (``dvc repro`` calls this); ``edgeflow run`` reuses
    its outputs."""
    from flows.console import new_log
    from tasks.core.locks import experiment_lock

    _guarded(lambda: known_steps([name]))
    ctx = _context(params, farm)
    if name == "track":  # a dead tracking server would hang it for minutes: refused now
        from tasks.core.mlflow_store import check_answers, tracking_uri

        _guarded(lambda: check_answers(tracking_uri(ctx.layout.root)))

    def run_locked() -> Any:
        from flows.caching import record_step

        with experiment_lock(ctx.layout.state):
            log = new_log(ctx.layout.logs, f"step-{name}")
            result = _logged(log, verbose, lambda: STEPS[name].run(ctx))
            # Stamped as the flow stamps its tasks: `edgeflow run` then finds this work
            # done (after `dvc repro` or `dvc exp run`) instead of doing it again.
            record_step(ctx, name)
            return result

    result = _guarded(lambda: _interruptible(run_locked))
    describe = getattr(result, "describe", None)  # a step's one-line figures, if it has them
    say(f"step {name}: done" + (f": {describe()}" if callable(describe) else ""))
    for line in getattr(result, "lines", list)():  # per device (release): what happened
        say(line)
    problem = getattr(result, "problem", lambda: None)()  # work done that did not succeed
    if problem:
        typer.echo(f"edgeflow: error: {problem}", err=True)
        raise typer.Exit(1)


@app.command()
def report(params: ParamsOption = Path("params.yaml"),
           show_all: Annotated[bool, typer.Option("--all", help="include skipped results")] = False,
           ) -> None:
    """Print the results table and recommendations of the last run."""
    from tasks.core.layout import Layout
    from tasks.select.report import recommendation_lines, terminal_summary

    layout = Layout(_guarded(lambda: _not_a_folder(params, "--params")).resolve().parent)
    shown, lines = _guarded(lambda: _summary(layout.summary, lambda summary: (
        terminal_summary(summary, _results_width(), include_skipped=show_all),
        recommendation_lines(summary))))
    _print_results(shown)
    for line in lines:
        say(line.replace("**", "").replace("`", ""))
    say(f"report: {layout.reports / 'report.html'} (and report.md)")


DeviceArgument = Annotated[str, typer.Argument(help="device name in farm.yaml")]


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

    say(last_attempt(layout, outcome.device))
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
        raise StepError(f"no variant passed the requirements on {device}: name one with --variant")
    return chosen


@app.command()
def release(device: DeviceArgument, params: ParamsOption = Path("params.yaml"),
            farm: FarmOption = None,
            variant: Annotated[str | None, typer.Option(
                "--variant", help="the variant to release; default: the device's recommended one")] = None,
            yes: Annotated[bool, typer.Option("--yes", help="release without asking")] = False) -> None:
    """Release a variant to a device by hand: health-checked there, then made current."""
    from tasks.core.locks import experiment_lock
    from tasks.release import release_device

    ctx = _context(params, farm)
    _guarded(lambda: _known_device(ctx, device))

    def released() -> Any:
        with experiment_lock(ctx.layout.state):
            return release_device(ctx.params, ctx.farm, ctx.layout, device,
                                  variant or _recommended(ctx, device),
                                  approve=(lambda *_: True) if yes else _ask)

    _say_release(_guarded(lambda: _interruptible(released)), ctx.layout)


@app.command()
def rollback(device: DeviceArgument, params: ParamsOption = Path("params.yaml"),
             farm: FarmOption = None) -> None:
    """Switch a device back to its previous healthy release (and its MLflow alias)."""
    from tasks.core.locks import experiment_lock
    from tasks.release import rollback_device

    ctx = _context(params, farm)

    def rolled() -> Any:
        with experiment_lock(ctx.layout.state):
            return rollback_device(ctx.farm, ctx.layout, device, ctx.params.release.readable_by)

    _say_release(_guarded(lambda: _interruptible(rolled)), ctx.layout)


@app.command()
def status(params: ParamsOption = Path("params.yaml"), farm: FarmOption = None) -> None:
    """What each device runs: current and previous release, last health check, drift.
    Exit 1 when a board drifted or could not be reached (a monitor's check)."""
    from tasks.release import device_state
    from tasks.release.view import status_table

    ctx = _context(params, farm)
    states = [_guarded(lambda: device_state(ctx.farm, ctx.layout, name)) for name in ctx.farm.devices]
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


RunReference = Annotated[str, typer.Argument(
    help="a summary file, a project folder, an MLflow run id, 'latest' or 'previous'")]


@app.command()
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
        configured = _guarded(lambda: load_params(params).compare)
    else:
        configured = CompareParams()
    layout = Layout(params.resolve().parent)
    overrides = {"latency_increase": latency_increase, "accuracy_drop": accuracy_drop,
                 "size_increase": size_increase}
    limits = _guarded(lambda: _validated(CompareParams, {
        **configured.model_dump(),
        **{key: value for key, value in overrides.items() if value is not None}}))
    (earlier, named_before), (later, named_after) = (
        _guarded(lambda: load_summary(reference, layout)) for reference in (before, after))
    comparison = compare_runs(earlier, later, limits)
    console.print(comparison_table(comparison, named_before, named_after))
    for label, pairs in (("only in the first run", comparison.only_before),
                         ("only in the second run", comparison.only_after)):
        if pairs:
            say(f"{label}: {', '.join(pairs)}")
    if comparison.regressions:
        for line in comparison.regressions:
            say(f"regression: {line}", "bold red")
        typer.echo(f"edgeflow: {len(comparison.regressions)} regression"
                   f"{'s' if len(comparison.regressions) != 1 else ''} "
                   f"(thresholds: {_thresholds(limits)})", err=True)
        raise typer.Exit(1)
    say(f"no regression in {len(comparison.pairs)} pairs (thresholds: {_thresholds(limits)})")


def _thresholds(limits: Any) -> str:
    return ", ".join(f"{key} {value:g}" for key, value in limits.model_dump().items())


def _validated(model: Any, values: dict[str, Any]) -> Any:
    """``model`` of ``values``; out-of-range options are a one-line UsageError."""
    from pydantic import ValidationError

    try:
        return model.model_validate(values)
    except ValidationError as error:
        first = error.errors()[0]
        raise UsageError(f"--{str(first['loc'][0]).replace('_', '-')}: {first['msg']}") from None


farm_app = typer.Typer(no_args_is_help=True, help="Look at and prepare the device farm.")
app.add_typer(farm_app, name="farm")


FarmFileOption = Annotated[Path, typer.Option("--farm", help="device inventory")]


@farm_app.command("probe")
def farm_probe(farm: FarmFileOption = Path("farm.yaml")) -> None:
    """Connect to every device and show what it is and which runtimes it can run."""
    from rich.table import Table

    from tasks.config import load_farm
    from tasks.targets import probe_farm

    probes = _guarded(lambda: probe_farm(load_farm(farm)))
    table = Table(title=f"farm: {farm}")
    for column in ("device", "reachable", "arch", "os", "python", "cpu", "cores", "MHz (max)",
                   "RAM MB (free)", "temp C", "throttled", "runtimes"):
        table.add_column(column)
    for probe in probes:
        facts = probe.facts
        runtimes = ", ".join(f"{name} {version}" for name, version in probe.runtimes.items())

        def pair(now: str, most: str) -> str:
            return f"{facts[now]} ({facts[most]})" if facts.get(now) and facts.get(most) else ""

        throttled = facts.get("throttled") or (
            f"{facts['thermal_throttle_events']} events" if "thermal_throttle_events" in facts
            else "")
        cells = [str(facts.get("arch") or ""), str(facts.get("os") or ""),
                 str(facts.get("python") or ""), str(facts.get("cpu") or ""),
                 str(facts.get("cores") or ""), pair("cpu_mhz", "cpu_max_mhz"),
                 pair("memory_mb", "memory_available_mb"), str(facts.get("temperature_c") or ""),
                 str(throttled)]
        table.add_row(escape(probe.device),
                      "yes" if probe.reachable else f"[red]no[/]: {escape(probe.error or '')}",
                      *map(escape, cells), escape(runtimes))
    console.print(table)
    _exit_for_devices({probe.device: probe.failure for probe in probes if probe.failure},
                      "could not be probed")


@farm_app.command("setup")
def farm_setup(devices: Annotated[list[str] | None, typer.Argument(
                   help="devices to set up; default: every device with a `setup` section")] = None,
               farm: FarmFileOption = Path("farm.yaml"),
               params: Annotated[Path | None, typer.Option(
                   "--params", help="experiment whose formats say which runtimes a device "
                                    "without `runtimes` needs; default: beside farm.yaml")] = None,
               ) -> None:
    """Make devices ready: a virtualenv in each device's workdir with numpy and its
    runtimes, pinned to this project's versions; for devices without internet the wheels
    are downloaded here for the device's platform and pushed. A second run changes
    nothing and says so."""
    from rich.table import Table

    from tasks.config import load_farm, load_params
    from tasks.models.formats import FORMATS
    from tasks.core.layout import Layout
    from tasks.targets import setup_farm

    def run_setup() -> list[Any]:
        inventory = load_farm(farm)
        # An experiment named with --params must exist; the default one beside farm.yaml
        # may not (a farm set up before any experiment).
        experiment = params or farm.resolve().parent / "params.yaml"
        runtimes = (sorted({FORMATS[name].runtime for name in load_params(experiment).formats})
                    if params is not None or experiment.is_file() else None)
        cache = Layout(farm.resolve().parent).state / "wheelhouse"
        return setup_farm(inventory, list(devices or []), runtimes, cache)

    outcomes = _guarded(run_setup)
    if not outcomes:
        say(f"{farm}: no device has a `setup` section: nothing to set up")
        raise typer.Exit(0)
    table = Table(title=f"farm setup: {farm}")
    for column in ("device", "result", "what was done", "runtimes in its virtualenv"):
        table.add_column(column)
    for outcome in outcomes:
        result = ("[red]failed[/]: " + escape(outcome.error) if outcome.error
                  else "changed" if outcome.changed else "nothing changed")
        table.add_row(escape(outcome.device), result, escape("; ".join(outcome.actions)),
                      escape(", ".join(f"{name} {version}"
                                       for name, version in outcome.runtimes.items())))
    console.print(table)
    _exit_for_devices({outcome.device: outcome.failure for outcome in outcomes
                       if outcome.failure}, "could not be set up")


def _ssh_device(farm: Path, name: str) -> Any:
    from tasks.config import SshDevice, load_farm

    devices = load_farm(farm).devices
    if name not in devices:
        raise ConfigError(f"{farm}: no device {name!r} (devices: {', '.join(devices)})")
    if not isinstance(devices[name], SshDevice):
        raise ConfigError(f"{farm}: {name!r} is a {devices[name].transport} device: only ssh "
                          "devices have host keys to trust")
    return devices[name]


@farm_app.command("trust")
def farm_trust(device: Annotated[str, typer.Argument(help="device name in farm.yaml")],
               farm: FarmFileOption = Path("farm.yaml"),
               yes: Annotated[bool, typer.Option("--yes", help="record without asking")] = False,
               replace: Annotated[bool, typer.Option(
                   "--replace", help="replace a recorded key that differs (a re-imaged "
                                     "device)")] = False) -> None:
    """Show a device's SSH host key fingerprint; record it in the farm's known_hosts
    once you confirm it is the device's (compare with `ssh-keygen -lf` on the device)."""
    from tasks.farm.transports import HostKeyRefused
    from tasks.farm.trust import examine, record

    target = _guarded(lambda: _ssh_device(farm, device))
    offer = _guarded(lambda: examine(target))
    say(f"{device} ({offer.host_pattern}) offers {offer.key.get_name()} key "
                  f"{offer.fingerprint}")
    if offer.standing == "trusted":
        say(f"already trusted in {target.known_hosts}: nothing changed")
        raise typer.Exit(0)
    if offer.standing == "changed":
        say(f"this differs from the key recorded in {target.known_hosts} "
            f"({offer.recorded_fingerprint}): the device was re-imaged, or someone is "
            "impersonating it", style="bold red")
        if not replace:
            _refuse(HostKeyRefused("host key changed; not replaced (check it on the device, "
                                   "then run again with --replace)"))
    if not yes and not typer.confirm("Is this the device's key? Record it", default=False):
        typer.echo("edgeflow: not trusted: nothing recorded", err=True)
        raise typer.Exit(1)
    record(target, offer)
    say(f"recorded in {target.known_hosts}")


ProjectOption = Annotated[Path, typer.Option(
    "--project", help="the project folder (prefect.yaml); its .edgeflow/serve/ keeps pids and logs")]


@app.command()
def serve(port: Annotated[int, typer.Option("--port", help="the server's port on 127.0.0.1")] = 4200,
          project: ProjectOption = Path(".")) -> None:
    """Start a local Prefect server, the work pool, this project's deployments and a worker
    in the background (`make serve`); what is already running is reused."""
    from flows.serve import serve as start

    _guarded(lambda: start(project, port, say=say))


@app.command()
def stop(project: ProjectOption = Path(".")) -> None:
    """Stop the worker and the server `edgeflow serve` started (by their recorded pids)."""
    from flows.serve import stop as stop_all

    _guarded(lambda: stop_all(project, say=say))


@app.command("code-manifests")
def code_manifests(params: ParamsOption = Path("params.yaml")) -> None:
    """Write each step's code manifest into the experiment (dvc.yaml's code stage runs
    this): DVC then re-runs a step only when its own code changed."""
    from tasks.core.layout import Layout
    from flows.steps import write_code_manifests

    root = _guarded(lambda: _not_a_folder(params, "--params")).resolve().parent
    written = write_code_manifests(Layout(root))
    say(f"code manifests: {', '.join(written) if written else 'none changed'}")


@app.command("dvc-yaml", hidden=True)
def dvc_yaml(params: ParamsOption = Path("params.yaml")) -> None:
    """Print the dvc.yaml the step registry implies for this experiment (its params
    name the image folder prepare reads)."""
    from tasks.config import load_params
    from tasks.core.layout import Layout
    from flows.steps import render_dvc_yaml

    loaded = _guarded(lambda: load_params(params))
    sys.stdout.write(render_dvc_yaml(Layout(params.resolve().parent), loaded))


def exit_status(code: object) -> int:
    """The status Python exits with for ``SystemExit(code)``: None is 0, an int itself,
    anything else (a message, which Python prints) 1."""
    if code is None:
        return 0
    return code if isinstance(code, int) else 1


def _end_process(status: int) -> None:
    """The last exit handler: every other one has run (Prefect's log and event workers
    delivered, the temporary server stopped, the shutdown's output sent to the log), and
    so has the wait for non-daemon threads. Ignore a late Ctrl-C (Python would restore
    the default handlers and kill the finished process by signal), flush, and end now:
    the interpreter's teardown of the ~1,400 modules a run imports is half a second of a
    no-op run and writes nothing."""
    for number in STOP_SIGNALS:
        signal.signal(number, signal.SIG_IGN)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more to say
            pass
    os._exit(status)


def main() -> None:
    import atexit

    global _IN_CLI_PROCESS
    _IN_CLI_PROCESS = True
    for number in _stop_signals():
        signal.signal(number, _exit_interrupted)  # _interruptible takes over during work
    status = [1]  # an exception that escapes Typer: Python prints it, the status is 1
    atexit.register(lambda: _end_process(status[0]))  # registered first: runs last
    try:
        app()
    except SystemExit as done:
        status[0] = exit_status(done.code)
        raise
