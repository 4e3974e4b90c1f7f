"""The console of a command that runs steps (``edgeflow run``, ``edgeflow step NAME``).

While steps run, everything the libraries print goes to the run's log file,
``.edgeflow/logs/<UTC time>-<command>.log`` in the experiment's state folder, not to
the console: Python loggers (Prefect's INFO lines, MLflow's, NNCF's), ``warnings``, and
what C++ code writes straight to file descriptors 1 and 2 (the TFLite converter,
XNNPACK, oneDNN, absl). Python-level redirection cannot catch the latter, so
:func:`captured` saves the terminal (``os.dup``) and points descriptors 1 and 2 at the
log file for the block; that holds in every thread (Prefect's task workers) and in
child processes started meanwhile (Prefect's server). The terminal is given back at the
end of the block.

What the console shows meanwhile is edgeflow's own: the progress and warnings steps
report through :mod:`tasks.core.notices`, rendered on the saved terminal as one bar per
step on a TTY, else one line per notice (``convert: 2/8 onnx-fp32 (ok)``). Each notice
is also written to the log, so the log is the run's whole story. With ``verbose`` the
descriptors are left alone: the chatter shows on the console, as before.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from tasks.core import notices
from tasks.core.errors import EdgeflowError, folded

LOGS_KEPT = 20  # per experiment: older run logs are removed when a new one starts


def new_log(logs: Path, command: str) -> Path:
    """A fresh log file's path in ``logs`` for ``command`` (``run``, ``step-train``),
    named by UTC time and process id so that runs sort by time and never share one; the
    oldest logs beyond :data:`LOGS_KEPT` are removed."""
    logs.mkdir(parents=True, exist_ok=True)
    old = sorted(logs.glob("*.log"))
    for stale in old[:max(0, len(old) - LOGS_KEPT + 1)]:
        stale.unlink(missing_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return logs / f"{stamp}-{os.getpid()}-{command}.log"


def _flush_everything() -> None:
    """Write out what Python and the C library still buffer for descriptors 1 and 2, so
    it lands where they point now (libc buffers stdout when it is not a terminal)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):  # closed or replaced by a caller
            pass
    try:
        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):  # no C library to ask (not a glibc/musl system)
        pass


@dataclass
class Terminal:
    """The console as it was before :func:`captured`: edgeflow's own output goes here."""

    out: TextIO
    err: TextIO
    is_tty: bool


class RunLog:
    """The run's log file: the libraries' output (through descriptors 1 and 2) and
    edgeflow's own lines, each stamped with the time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def write(self, text: str) -> None:
        stamp = time.strftime("%H:%M:%S", time.localtime())
        lines = "".join(f"{stamp} edgeflow: {line}\n" for line in text.splitlines() or [""])
        os.write(self.fd, lines.encode("utf-8", "replace"))

    def error(self, error: BaseException) -> None:
        """The error that ended the run: an input error (:class:`EdgeflowError`) by its
        message, which is the whole story; anything else with its traceback."""
        if isinstance(error, EdgeflowError):
            self.write(f"error: {error}")
        else:
            self.write("".join(traceback.format_exception(error)).rstrip())

    def close(self) -> None:
        os.close(self.fd)


# A step of more items than this prints about one line in ten (CI logs stay readable:
# 3 devices x 43 variants would otherwise be 129 lines); the log file has every one.
LINE_PER_ITEM_UP_TO = 20
ALWAYS_SHOWN = frozenset({"failed", "rejected", "error"})


def shown_as_a_line(notice: notices.Progress) -> bool:
    """Whether a progress notice gets its own line when not on a terminal: every item of
    a small step; of a larger one the start, every tenth or so, any failure, the end."""
    if notice.total <= LINE_PER_ITEM_UP_TO or notice.stopped:
        return True
    stride = -(-notice.total // 10)  # ceil: at most 10 lines besides failures
    return (notice.done in (0, notice.total) or notice.done % stride == 0
            or notice.detail in ALWAYS_SHOWN)


class LineRenderer:
    """Not a terminal (a CI log, a pipe): one line per notice (thinned for large steps,
    :func:`shown_as_a_line`), progress on stdout and warnings on stderr."""

    def __init__(self, terminal: Terminal) -> None:
        self.terminal = terminal
        self._lock = threading.Lock()

    def __call__(self, notice: notices.Notice) -> None:
        with self._lock:
            if isinstance(notice, notices.WarningNotice):
                self.terminal.err.write(f"edgeflow: warning: {notice.message}\n")
                self.terminal.err.flush()
            elif shown_as_a_line(notice):
                self.terminal.out.write(notice.line() + "\n")
                self.terminal.out.flush()

    def close(self) -> None:
        pass


class BarRenderer:
    """A terminal: one bar per step (per device for benchmark) that fills as its items
    finish, with the item just finished; warnings print above the bars."""

    def __init__(self, terminal: Terminal) -> None:
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn)

        self.console = Console(file=terminal.out, force_terminal=True)
        # rich would otherwise swap sys.stdout/sys.stderr for proxies: what libraries
        # print must keep going to descriptors 1 and 2, the log file.
        # Plain text columns: "benchmark[pi5]" is not rich markup.
        self.progress = Progress(TextColumn("{task.fields[step]}", markup=False), BarColumn(),
                                 MofNCompleteColumn(),
                                 TextColumn("{task.description}", markup=False),
                                 TimeElapsedColumn(), console=self.console,
                                 redirect_stdout=False, redirect_stderr=False)
        self.tasks: dict[str, Any] = {}
        self.progress.start()

    def __call__(self, notice: notices.Notice) -> None:
        if isinstance(notice, notices.WarningNotice):
            self.progress.console.print(f"edgeflow: warning: {notice.message}", markup=False,
                                        highlight=False, style="yellow")
            return
        description = " ".join(part for part in (notice.item, notice.detail and
                                                 f"({notice.detail})") if part)
        if notice.step not in self.tasks:
            self.tasks[notice.step] = self.progress.add_task(
                description, total=notice.total, step=notice.step)
        self.progress.update(self.tasks[notice.step], completed=notice.done,
                             total=notice.total, description=description)
        if notice.stopped:  # its clock stops; the bar stays short of the total
            self.progress.stop_task(self.tasks[notice.step])

    def close(self) -> None:
        self.progress.stop()


@contextmanager
def captured(log_path: Path, *, verbose: bool = False) -> Iterator[RunLog]:
    """Run the block with descriptors 1 and 2 on ``log_path`` (unless ``verbose``) and
    the notices of :mod:`tasks.core.notices` rendered on the terminal and logged.

    Yields the :class:`RunLog`. On the way out, whatever way, the buffers are flushed
    into the log and descriptors 1 and 2 point at the terminal again.
    """
    log = RunLog(log_path)
    _flush_everything()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    terminal = Terminal(os.fdopen(os.dup(saved[1]), "w", buffering=1, encoding="utf-8"),
                        os.fdopen(os.dup(saved[2]), "w", buffering=1, encoding="utf-8"),
                        os.isatty(saved[1]))
    renderer = BarRenderer(terminal) if terminal.is_tty else LineRenderer(terminal)

    def render(notice: notices.Notice) -> None:
        log.write(notice.line() if isinstance(notice, notices.Progress)
                  else f"warning: {notice.message}")
        renderer(notice)

    log.write(f"{' '.join(sys.argv)} (pid {os.getpid()})")
    try:
        if not verbose:
            for fd in (1, 2):
                os.dup2(log.fd, fd)
        with notices.listening(render):
            yield log
    finally:
        _flush_everything()
        renderer.close()
        for fd, original in saved.items():
            os.dup2(original, fd)
            os.close(original)
        terminal.out.close()
        terminal.err.close()
        log.close()


def log_shutdown_to(log_path: Path) -> None:
    """Once the command's output is printed, send what libraries print while the process
    shuts down (Prefect stopping its temporary server, at exit) to the log as well.
    Registered with ``atexit``, so it runs before exit handlers registered earlier
    (Prefect registers its server's stop when it starts it, inside the run)."""

    def redirect() -> None:
        _flush_everything()
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        for target in (1, 2):
            os.dup2(fd, target)
        os.close(fd)

    atexit.register(redirect)


def one_line(error: BaseException) -> str:
    """An unexpected error's text as one line: its type and message, whitespace folded,
    at most 300 characters (the log has the whole of it)."""
    return folded(f"{type(error).__name__}: {error}", 300)
