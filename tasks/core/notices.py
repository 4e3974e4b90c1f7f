"""What a step tells the person running it, without printing: progress and warnings.

Steps never write to the console: what third-party libraries print there is sent to a
log file while steps run (:mod:`flows.console`), and a step's own ``print`` would go
with it. Instead a step reports through this module and whoever runs it renders:

- :func:`progress` / :class:`Counter`: ``done`` of ``total`` items of a step (epochs,
  variants, variants on a device), each with the item just finished;
- :func:`warn`: something a user should read but that stops nothing (a split too small
  to measure accuracy well). The step also keeps it in its output, so it is not lost
  with the console.

Notices go to every listener registered with :func:`listening` (the CLI's renderer). A
listener is process-wide, not per thread: Prefect runs tasks in worker threads. With no
listener (a step called from a test or a notebook) progress is dropped and a warning is
one line on stderr, ``edgeflow: warning: ...``.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

LOGGER = logging.getLogger("edgeflow")


@dataclass(frozen=True)
class Progress:
    """``done`` of ``total`` items of ``step`` are finished; ``item`` is the one just
    finished (empty when the step announces its start with ``done`` 0). ``stopped``: the
    step ended before ``total`` (training stopped early), ``detail`` says why."""

    step: str
    done: int
    total: int
    item: str = ""
    detail: str = ""
    stopped: bool = False

    def line(self) -> str:
        """``convert: 2/8 onnx-fp32 (ok)``: how the notice reads as one line."""
        if self.total == 0:
            return f"{self.step}: nothing to do"
        text = f"{self.step}: {self.done}/{self.total}"
        if self.item:
            text += f" {self.item}"
        return f"{text} ({self.detail})" if self.detail else text


@dataclass(frozen=True)
class WarningNotice:
    """A warning: one line a user should read."""

    message: str


Notice = Progress | WarningNotice
Listener = Callable[[Notice], None]

_listeners: list[Listener] = []
_lock = threading.Lock()


@contextmanager
def listening(listener: Listener) -> Iterator[None]:
    """Send every notice to ``listener`` while the block runs (from any thread)."""
    with _lock:
        _listeners.append(listener)
    try:
        yield
    finally:
        with _lock:
            _listeners.remove(listener)


def listened() -> bool:
    """Whether anyone renders notices now (the CLI's console does)."""
    with _lock:
        return bool(_listeners)


def _send(notice: Notice) -> bool:
    """Deliver ``notice``; False when nobody listens."""
    with _lock:
        listeners = list(_listeners)
    for listener in listeners:
        listener(notice)
    return bool(listeners)


def progress(step: str, done: int, total: int, item: str = "", detail: str = "") -> None:
    """Report that ``done`` of ``total`` items of ``step`` are finished."""
    _send(Progress(step, done, total, item, detail))


class Counter:
    """Counts a step's items as they finish: announces ``0/total`` when made, then
    ``advance`` reports each finished item with the running count."""

    def __init__(self, step: str, total: int) -> None:
        self.step, self.total, self.done = step, total, 0
        progress(step, 0, total)

    def advance(self, item: str, detail: str = "") -> None:
        self.done += 1
        progress(self.step, self.done, self.total, item, detail)

    def stop(self, why: str) -> None:
        """The step ends here, short of ``total``, for the reason ``why``."""
        _send(Progress(self.step, self.done, self.total, "", why, stopped=True))


class _CurrentStderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is now (a captured or redirected one too)."""

    @property  # type: ignore[override]
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


def _configure() -> None:
    if not LOGGER.handlers:
        handler = _CurrentStderr()
        handler.setFormatter(logging.Formatter("edgeflow: warning: %(message)s"))
        LOGGER.addHandler(handler)
        # Prefect and pytest configure the root logger: one line, printed once.
        LOGGER.propagate = False


def warn(message: str) -> str:
    """Show ``message`` as one warning line (to the listeners, else on stderr); returns
    it, to be recorded by the caller."""
    if not _send(WarningNotice(message)):
        _configure()
        LOGGER.warning(message)
    return message
