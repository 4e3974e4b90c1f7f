"""Device commands that a stop request (Ctrl-C) stops on the device, in whichever state
they are: waiting for the device lock, or running under it.

A stoppable command keeps three control files in a folder of its own on the device: the
pid of ``flock`` while it waits for the lock, the pid of the command once it holds the
lock (``sh`` execs into it, keeping its pid), and the stop request. :func:`stop` writes
the request, then signals whichever stage runs (SIGTERM); the request also catches the
moment between the two stages: the command then never starts. The benchmark's harness
(:mod:`tasks.farm.session`) and a release's activation (:mod:`tasks.farm.releases`) are
both stopped this way.
"""

from __future__ import annotations

from collections.abc import Sequence

from tasks.farm.protocol import LOCK_BUSY_EXIT
from tasks.farm.transports import Connection, quote_command

STOP_TIMEOUT_SECONDS = 10.0
STOPPED_EXIT = 143  # 128 + SIGTERM: what a stopped stage (or a refused start) exits with


def control_files(folder: str) -> tuple[str, str, str]:
    """The command's pid, the lock wait's pid and the stop request, in ``folder``."""
    return (f"{folder}/harness.pid", f"{folder}/wait.pid", f"{folder}/stop")


def locked_argv(folder: str, lock: str, lock_wait: float | str,
                argv: Sequence[str]) -> list[str]:
    """``argv`` run under the device lock ``lock`` (waiting at most ``lock_wait`` s,
    exit LOCK_BUSY_EXIT when it stays taken), each stage recording its pid in
    ``folder`` for :func:`stop`."""
    pid_file, wait_pid_file, stop_file = control_files(folder)
    return ["sh", "-c", 'echo $$ > "$0"; exec "$@"', wait_pid_file,
            "flock", "-w", str(lock_wait), "-E", str(LOCK_BUSY_EXIT), lock,
            "sh", "-c", f'test -e "$1" && exit {STOPPED_EXIT}; echo $$ > "$0"; shift; exec "$@"',
            pid_file, stop_file, *argv]


def stop(connection: Connection, folder: str) -> None:
    """Stop the command whose control files are in ``folder``: the stop request is
    written, then the running stage is signalled (the command once it holds the lock,
    else ``flock`` waiting for it)."""
    connection.run(quote_command([
        "sh", "-c", 'touch "$2"; kill -TERM "$(cat "$0" 2>/dev/null)" 2>/dev/null '
                    '|| kill -TERM "$(cat "$1" 2>/dev/null)" 2>/dev/null; true',
        *control_files(folder)]), timeout=STOP_TIMEOUT_SECONDS)
