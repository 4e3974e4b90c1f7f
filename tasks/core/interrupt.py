"""Stopping a run on request (Ctrl-C): what is running on devices is stopped, and steps
stop at their next checkpoint without writing what they had not finished.

The CLI turns SIGINT into :func:`request_stop`. Work that cannot notice a flag by
itself (a harness running on a device) registers a way to stop it with
:func:`stopping_with` for as long as it runs; steps call :func:`raise_if_stopped`
between units of work (variants). :class:`Interrupted` is a ``KeyboardInterrupt``: no
``except Exception`` swallows it, and output folders staged by
:func:`tasks.core.files.atomic_output_dir` are discarded on the way out.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

_stop = threading.Event()
_stoppers: dict[int, Callable[[], None]] = {}
# Re-entrant: the CLI's SIGINT handler calls request_stop in the main thread, which may
# hold the guard at that moment (registering a stopper); a plain Lock would deadlock.
_guard = threading.RLock()


class Interrupted(KeyboardInterrupt):
    """The run was asked to stop; unfinished outputs are discarded."""


def stop_requested() -> bool:
    return _stop.is_set()


def raise_if_stopped() -> None:
    if _stop.is_set():
        raise Interrupted("stop requested")


def request_stop() -> None:
    """Ask every running step to stop; each registered stopper runs once, in a thread of
    its own (one may wait on a slow device without holding the others back)."""
    _stop.set()
    with _guard:
        stoppers = list(_stoppers.values())
        _stoppers.clear()
    for stopper in stoppers:
        threading.Thread(target=_quietly, args=(stopper,), daemon=True).start()


def _quietly(stopper: Callable[[], None]) -> None:
    try:
        stopper()
    except Exception:  # noqa: BLE001 - best effort: the device's own time limit still applies
        pass


@contextmanager
def stopping_with(stopper: Callable[[], None]) -> Iterator[None]:
    """Run ``stopper`` if a stop is requested while the block runs (at once if one
    already was)."""
    token = id(stopper)
    with _guard:
        _stoppers[token] = stopper
    if _stop.is_set():
        request_stop()
    try:
        yield
    finally:
        with _guard:
            _stoppers.pop(token, None)


def reset() -> None:
    """Forget a stop request (a new run in the same process: tests, a long-lived worker)."""
    _stop.clear()
