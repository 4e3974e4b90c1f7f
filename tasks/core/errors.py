"""Errors a user can cause and fix: the CLI prints them as one line, never a traceback."""

from __future__ import annotations


class EdgeflowError(Exception):
    """Base of every error caused by input (files, params, data), not by a bug.

    The message is one line that names what is wrong and what is allowed.
    ``exit_code`` is what the CLI returns for it, set by class and never read from the
    message: 2 for bad configuration or usage, 75 for a resource another run holds (try
    again later), 1 otherwise.
    """

    exit_code = 1


class ConfigError(EdgeflowError):
    """``params.yaml`` or ``farm.yaml`` is missing, unreadable or invalid."""

    exit_code = 2


class UsageError(EdgeflowError):
    """A command asked for something that does not exist (an unknown step...)."""

    exit_code = 2


class DataError(EdgeflowError):
    """The input data cannot make a dataset (no classes, an empty class...)."""


class ConversionError(EdgeflowError):
    """An exported artifact disagrees with the trained model, or cannot be exported."""


class StepError(EdgeflowError):
    """A step was asked to run without the files it reads (run the previous step)."""


class TrainingError(EdgeflowError):
    """Training ran but gave no usable model (it did not learn); the previous one is kept."""


class DeviceError(EdgeflowError):
    """A device could not be reached, prepared or used; the farm's errors derive from it
    (:mod:`tasks.farm`). One device's failure is reported per device, never hiding the
    others; a command that ends with a failed device exits with its class's code."""


def device_failure(error: Exception) -> type[EdgeflowError]:
    """The class whose ``exit_code`` a per-device failure gives: the error's own when it
    is an EdgeflowError, else :class:`DeviceError` (a board that answered nonsense, a
    transport error paramiko raised)."""
    return type(error) if isinstance(error, EdgeflowError) else DeviceError


def folded(text: str, limit: int) -> str:
    """``text`` on one line (every run of whitespace one space), cut to ``limit``
    characters with ``...`` where it was longer: an error's message for a console line or
    a table cell, never a whole log."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit - 3] + "..."
