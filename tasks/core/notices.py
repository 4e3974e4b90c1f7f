"""Warnings a user should read but that stop nothing (a split too small to measure
accuracy well): one line on stderr, ``edgeflow: warning: ...``, and the step also keeps
them in its output so they are not lost with the console."""

from __future__ import annotations

import logging
import sys

LOGGER = logging.getLogger("edgeflow")


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
    """Print ``message`` as one warning line; returns it, to be recorded by the caller."""
    _configure()
    LOGGER.warning(message)
    return message
