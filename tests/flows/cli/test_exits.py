"""flows/cli/exits.py: every class of input error ends a command with its own exit code
and one line on stderr; an unexpected error with 1 and a line naming the log."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import typer

from flows.cli import exits
from flows.serve import ServeError
from tasks.core.errors import (ConfigError, ConversionError, DataError, DeviceError,
                               EdgeflowError, StepError, TrainingError, UsageError)
from tasks.core.locks import ExperimentBusy, LockTimeout, NotWritable
from tasks.farm.push import DeployError
from tasks.farm.releases import ConnectionLost, ReleaseError
from tasks.farm.setup import SetupError
from flows.exchange import ExchangeFailed
from flows.placement import PlacedStepFailed, PlacementUnready
from flows.retries import BoardFlaky
from tasks.farm.transports import BoardNotAnswering, DeviceUnreachable, HostKeyRefused

# Every class of input error and the exit code the CLI gives it: 2 bad configuration
# or usage, 75 a resource another run holds (try again later), 1 otherwise.
EXIT_CODES: dict[type[EdgeflowError], int] = {
    EdgeflowError: 1, ConfigError: 2, UsageError: 2, DataError: 1, ConversionError: 1,
    StepError: 1, TrainingError: 1, DeviceError: 1, ExperimentBusy: 75, LockTimeout: 75,
    NotWritable: 1, ServeError: 1, SetupError: 1, DeployError: 1, HostKeyRefused: 1,
    DeviceUnreachable: 1, ReleaseError: 1, ConnectionLost: 1, BoardNotAnswering: 1,
    BoardFlaky: 1, PlacedStepFailed: 1, PlacementUnready: 2, ExchangeFailed: 1}
CLASSES = sorted(EXIT_CODES, key=lambda cls: cls.__name__)


def every_subclass(cls: type) -> set[type]:
    return {sub for direct in cls.__subclasses__() for sub in {direct} | every_subclass(direct)}


def test_the_table_names_every_class_of_input_error() -> None:
    """A new class of input error joins the tests below once its exit code is written
    here (test-only subclasses, defined in tests/, are left out)."""
    found = {cls for cls in every_subclass(EdgeflowError) if not cls.__module__.startswith(
        "tests")}
    assert found - set(EXIT_CODES) == set()


def code_and_stderr(action, capfd: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(typer.Exit) as ended:
        action()
    return ended.value.exit_code, capfd.readouterr().err


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
def test_refuse_and_guarded_end_with_the_classes_code_and_one_line(
        cls: type[EdgeflowError], tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    assert cls.exit_code == EXIT_CODES[cls]
    error = cls("farm.yaml: device pi5: threads must be more than 0")
    line = "edgeflow: error: farm.yaml: device pi5: threads must be more than 0"
    assert code_and_stderr(lambda: exits.refuse(error), capfd) == (EXIT_CODES[cls],
                                                                   line + "\n")
    log = tmp_path / "run.log"
    assert code_and_stderr(lambda: exits.refuse(error, log), capfd) == (
        EXIT_CODES[cls], f"{line} (log: {log})\n")

    def failing() -> None:
        raise error

    assert code_and_stderr(lambda: exits.guarded(failing), capfd) == (EXIT_CODES[cls],
                                                                      line + "\n")


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
def test_a_logged_run_ends_an_input_error_with_its_code_and_the_log(
        cls: type[EdgeflowError], tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    def failing() -> None:
        os.write(1, b"chatter of a library\n")  # as C++ code of a library writes it
        raise cls("params.yaml: train.epochs must be more than 0")

    log = tmp_path / "run.log"
    assert code_and_stderr(lambda: exits.logged(log, False, failing), capfd) == (
        EXIT_CODES[cls], f"edgeflow: error: params.yaml: train.epochs must be more than 0 "
                         f"(log: {log})\n")
    text = log.read_text()
    assert "chatter of a library" in text
    assert "edgeflow: error: params.yaml: train.epochs must be more than 0" in text
    assert "Traceback" not in text


def test_guarded_and_logged_give_the_actions_result(tmp_path: Path,
                                                    capfd: pytest.CaptureFixture[str]) -> None:
    assert exits.guarded(lambda: 42) == 42
    assert exits.logged(tmp_path / "run.log", False, lambda: {"ok": 1}) == {"ok": 1}
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize("passed", [typer.Exit(130), KeyboardInterrupt()],
                         ids=["exit", "ctrl-c"])
def test_a_logged_run_lets_an_exit_or_ctrl_c_through_unchanged(
        passed: BaseException, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    def stopping() -> None:
        raise passed

    with pytest.raises(type(passed)) as went:
        exits.logged(tmp_path / "run.log", False, stopping)
    assert went.value is passed
    assert capfd.readouterr().err == ""


def test_verbose_shows_an_unexpected_errors_traceback_then_its_line(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    def bug() -> None:
        raise KeyError("reference_accuracy")

    log = tmp_path / "run.log"
    code, err = code_and_stderr(lambda: exits.logged(log, True, bug), capfd)
    assert code == 1
    lines = err.splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert lines[-2:] == ["KeyError: 'reference_accuracy'",
                          f"edgeflow: error: KeyError: 'reference_accuracy' (unexpected: the "
                          f"traceback is in {log})"]
    code, err = code_and_stderr(lambda: exits.logged(log, False, bug), capfd)
    assert (code, err.count("\n"), "Traceback" in err) == (1, 1, False)


@pytest.mark.parametrize(("in_cli", "verbose", "redirected"), [
    (True, False, True), (True, True, False), (False, False, False)])
def test_the_shutdowns_output_goes_to_the_log_only_for_the_command_and_not_verbose(
        in_cli: bool, verbose: bool, redirected: bool, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import flows.console

    logs: list[Path] = []
    monkeypatch.setattr(exits, "in_cli_process", lambda: in_cli)
    monkeypatch.setattr(flows.console, "log_shutdown_to", logs.append)
    log = tmp_path / "run.log"
    exits.logged(log, verbose, lambda: None)
    with pytest.raises(typer.Exit):
        exits.logged(log, verbose, lambda: exits.refuse(ConfigError("bad")))
    assert logs == ([log, log] if redirected else [])


def test_a_farm_command_exits_with_the_highest_code_of_its_failed_devices(
        capfd: pytest.CaptureFixture[str]) -> None:
    assert code_and_stderr(lambda: exits.exit_for_devices({}, "probe failed"), capfd) == (0, "")
    failures = {"pi5": DeviceUnreachable, "jetson": LockTimeout, "coral": ConfigError}
    assert code_and_stderr(lambda: exits.exit_for_devices(failures, "probe failed"), capfd) == (
        75, "edgeflow: error: pi5, jetson, coral: probe failed (the table says why)\n")
    assert code_and_stderr(lambda: exits.exit_for_devices(
        {"pi5": DeviceUnreachable, "coral": ConfigError}, "setup failed"), capfd)[0] == 2
    assert code_and_stderr(lambda: exits.exit_for_devices(
        {"pi5": DeviceUnreachable}, "setup failed"), capfd)[0] == 1
