"""How the ``edgeflow`` process stops and ends: Ctrl-C, SIGTERM and SIGHUP (a closed
terminal) stop a command within seconds with exit 130, and the process ends after every
exit handler with the command's status, skipping the interpreter's teardown.

Exit 130 (:data:`INTERRUPTED_EXIT`) when a stop signal stopped the run (what runs on
devices is stopped too)."""

from __future__ import annotations

import atexit
import os
import signal
import sys
from typing import Any, Callable, TypeVar

import typer

T = TypeVar("T")

INTERRUPTED_EXIT = 130  # 128 + SIGINT, as a shell reports a process stopped by Ctrl-C
# The signals that stop a command as Ctrl-C does: Ctrl-C, a polite kill, and the
# terminal closing (SIGHUP; by default it would kill edgeflow at once, without a word,
# and leave what runs on the devices running and holding their locks).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

_in_cli_process = False  # set by take_over(): the process is the `edgeflow` command itself


def in_cli_process() -> bool:
    """Whether this process is the ``edgeflow`` command (not a test calling a command)."""
    return _in_cli_process


def stop_signals() -> tuple[signal.Signals, ...]:
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


def interruptible(action: Callable[[], T]) -> T:
    """Run ``action`` so that Ctrl-C (SIGINT, or SIGTERM, or SIGHUP: a closed terminal)
    stops it within seconds: what runs on devices is stopped (:mod:`tasks.core.interrupt`),
    steps stop at their next checkpoint without writing unfinished outputs, and the exit
    is one line and 130."""
    from tasks.core import interrupt

    numbers = stop_signals()

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
            signal.signal(number, _exit_interrupted if _in_cli_process else handler)


def _exit_interrupted(signum: int, frame: Any) -> None:
    """Before a command's work starts or after it ends: nothing to stop, nothing half
    written; Prefect's server, if any, dies with this process."""
    try:
        os.write(2, b"edgeflow: interrupted\n")
    except OSError:  # the terminal is gone (SIGHUP): exit all the same
        pass
    os._exit(INTERRUPTED_EXIT)


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


def run_as_process(command: Callable[[], object]) -> None:
    """Run ``command`` (the Typer app) as the ``edgeflow`` process: a stop signal before
    or after its work exits at once as interrupted (:func:`interruptible` takes over
    during the work), and the process ends with the command's status once every exit
    handler has run."""
    global _in_cli_process
    _in_cli_process = True
    for number in stop_signals():
        signal.signal(number, _exit_interrupted)
    status = [1]  # an exception that escapes Typer: Python prints it, the status is 1
    atexit.register(lambda: _end_process(status[0]))  # registered first: runs last
    try:
        command()
    except SystemExit as done:
        status[0] = exit_status(done.code)
        raise
