"""One error base: every error a user can cause is an EdgeflowError whose class gives the
CLI's exit code; the exception classes that are not such errors are named with why."""

from __future__ import annotations

import ast
import builtins
from pathlib import Path

import pytest

from tasks.core.errors import (ConfigError, ConversionError, DataError, DeviceError,
                               EdgeflowError, StepError, TrainingError, UsageError,
                               device_failure)
from tasks.core.locks import ExperimentBusy, LockTimeout, NotWritable
from tasks.farm.push import DeployError
from tasks.farm.releases import ConnectionLost, ReleaseError
from tasks.farm.setup import SetupError
from flows.exchange import ExchangeFailed
from flows.placement import PlacedStepFailed, PlacementUnready
from flows.retries import BoardFlaky
from tasks.farm.transports import BoardNotAnswering, DeviceUnreachable, HostKeyRefused
from flows.serve import ServeError

ROOT = Path(__file__).resolve().parents[3]

EXIT_CODES: dict[type[EdgeflowError], int] = {
    EdgeflowError: 1,
    ConfigError: 2,
    UsageError: 2,
    DataError: 1,
    ConversionError: 1,
    StepError: 1,
    TrainingError: 1,
    ExperimentBusy: 75,
    LockTimeout: 75,
    NotWritable: 1,
    DeviceError: 1,
    HostKeyRefused: 1,
    DeviceUnreachable: 1,
    BoardNotAnswering: 1,
    BoardFlaky: 1,
    PlacedStepFailed: 1,
    PlacementUnready: 2,
    ExchangeFailed: 1,
    DeployError: 1,
    SetupError: 1,
    ServeError: 1,
    ReleaseError: 1,
    ConnectionLost: 1,
}

# Exception classes defined in tasks/ and flows/ that are deliberately not EdgeflowErrors.
NOT_USER_ERRORS = {
    "Skipped": "a variant's outcome (an exporter that cannot run here), recorded in the "
               "index, never raised to the user",
    "PrecisionUnavailable": "raised on a board by the harness, which imports nothing of edgeflow",
    "ImageError": "raised on a board by the predictor (a bad image an application passed): "
                  "an HTTP 400 or a JSON line, never an edgeflow command's error",
    "DuplicateKeyError": "a yaml.YAMLError inside the loader, reported as a ConfigError",
    "AliasBombError": "a yaml.YAMLError inside the loader, reported as a ConfigError",
    "Stopped": "raised on a board by the release manager (a stop request before the "
               "switch), answered as status 'stopped', never an edgeflow command's error",
    "Interrupted": "a KeyboardInterrupt: Ctrl-C ends the command with 130",
    "_BadLabel": "one bad line of a label file, raised and caught inside the YOLO/COCO "
                 "readers: the file's skip reason in meta.json, never raised to the user",
    "ToolUnavailable": "a converter's own environment that cannot be had here, the skip "
                       "reason of the variants it would convert, never raised to the user",
    "MeterError": "raised on a board by the harness's energy meters (stalled, backwards, "
                  "unreadable): the row's energy reason, never an edgeflow command's error",
    "ModelFileError": "a model file that cannot be used, raised while train reads it and "
                      "reported as a TrainingError with the same line",
}


def _exception_classes(folders: list[Path]) -> set[str]:
    """Names of the classes defined under ``folders`` that derive, by their source, from
    a built-in exception, from a name ending in Error or Exception, or from one another."""
    bases: dict[str, set[str]] = {}
    for source in (path for folder in folders for path in folder.rglob("*.py")):
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                bases[node.name] = {base.attr if isinstance(base, ast.Attribute) else
                                    getattr(base, "id", "") for base in node.bases}

    def is_exception(name: str) -> bool:
        builtin = getattr(builtins, name, None)
        return (isinstance(builtin, type) and issubclass(builtin, BaseException)
                or name.endswith(("Error", "Exception")))

    found = {name for name, names in bases.items() if any(map(is_exception, names))}
    while grown := {name for name, names in bases.items() if names & found} - found:
        found |= grown
    return found


def test_every_exception_class_is_an_edgeflow_error_or_says_why_not() -> None:
    defined = _exception_classes([ROOT / "tasks", ROOT / "flows"])
    assert defined == {cls.__name__ for cls in EXIT_CODES} | set(NOT_USER_ERRORS)


@pytest.mark.parametrize("cls, exit_code", EXIT_CODES.items(),
                         ids=[cls.__name__ for cls in EXIT_CODES])
def test_each_error_class_gives_its_exit_code(cls: type[EdgeflowError], exit_code: int) -> None:
    error = cls("what is wrong, and what is allowed")
    assert isinstance(error, EdgeflowError) and error.exit_code == exit_code
    assert str(error) == "what is wrong, and what is allowed"


@pytest.mark.parametrize("cls", [HostKeyRefused, DeviceUnreachable, DeployError, SetupError])
def test_the_farms_errors_are_device_errors(cls: type[EdgeflowError]) -> None:
    assert issubclass(cls, DeviceError)


@pytest.mark.parametrize("error, failure", [
    (DeviceUnreachable("no route"), DeviceUnreachable),
    (ConfigError("bad key"), ConfigError),
    (ExperimentBusy("held"), ExperimentBusy),
    (ValueError("the board answered nonsense"), DeviceError),
    (OSError("socket closed"), DeviceError),
])
def test_a_device_failure_keeps_its_class_or_is_a_device_error(
        error: Exception, failure: type[EdgeflowError]) -> None:
    assert device_failure(error) is failure


def test_folded_puts_a_message_on_one_line_and_cuts_it_to_its_limit() -> None:
    from tasks.core.errors import folded

    assert folded("export failed:\n  Traceback\t(most recent)  ", 100) == \
        "export failed: Traceback (most recent)"
    assert folded("abcdefghij", 10) == "abcdefghij"  # exactly the limit: whole
    assert folded("abcdefghijk", 10) == "abcdefg..."  # one more: cut to the limit
