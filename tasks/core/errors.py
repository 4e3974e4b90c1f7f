"""Errors a user can cause and fix: the CLI prints them as one line, never a traceback."""

from __future__ import annotations


class EdgeflowError(Exception):
    """Base of every error caused by input (files, params, data), not by a bug.

    The message is one line that names what is wrong and what is allowed.
    ``exit_code`` is what the CLI returns: 2 for bad configuration, 1 otherwise.
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
