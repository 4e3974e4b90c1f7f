"""How a command's errors end it: an error caused by input is one line on stderr, never a
traceback, and the exit code is the error's class's (:mod:`tasks.core.errors`), never
read from its message; an unexpected error is one line naming the run's log, which has
the traceback."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, NoReturn, TypeVar

import typer

from flows.cli.process import in_cli_process
from tasks.core.errors import EdgeflowError

T = TypeVar("T")


def refuse(error: EdgeflowError, log: Path | None = None) -> NoReturn:
    """End the command with ``error`` as one line on stderr and its class's exit code;
    the line names the run's ``log`` when there is one."""
    typer.echo(f"edgeflow: error: {error}" + (f" (log: {log})" if log else ""), err=True)
    raise typer.Exit(error.exit_code) from None


def logged(log: Path, verbose: bool, action: Callable[[], T]) -> T:
    """Run ``action`` (steps) with the run's console (:mod:`flows.console`): the
    libraries' output goes to ``log``, progress and warnings to the console. An error is
    then one line naming the log, which records it (Prefect's reports of it too): an
    input error with its class's exit code, anything else with 1 and its traceback in
    the log. Ctrl-C goes on to :func:`flows.cli.process.interruptible`."""
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
        refuse(error, log)
    except Exception as error:  # noqa: BLE001 - a bug: one line, the traceback is logged
        if verbose:
            typer.echo("".join(traceback.format_exception(error)).rstrip(), err=True)
        typer.echo(f"edgeflow: error: {one_line(error)} (unexpected: the traceback is in "
                   f"{log})", err=True)
        raise typer.Exit(1) from None
    finally:
        if in_cli_process() and not verbose:
            log_shutdown_to(log)


def guarded(action: Callable[[], T]) -> T:
    """``action``'s result; an :class:`EdgeflowError` it raises ends the command
    (:func:`refuse`)."""
    try:
        return action()
    except EdgeflowError as error:
        refuse(error)


def exit_for_devices(failures: dict[str, type[EdgeflowError]], what: str) -> NoReturn:
    """End a farm command once its table is printed: exit 0 when no device failed, else
    one line on stderr naming the failed devices, and the highest exit code of their
    failures' classes (the table says why each failed)."""
    if failures:
        typer.echo(f"edgeflow: error: {', '.join(failures)}: {what} (the table says why)",
                   err=True)
    raise typer.Exit(max((failure.exit_code for failure in failures.values()), default=0))
