"""flows/cli/process.py in process: which signals stop a command, what a stop does while
the work runs, before and after it, and the status the process ends with. Signal
handlers and os._exit are replaced by recorders: nothing here ends the test process."""

from __future__ import annotations

import signal
from typing import Any

import pytest
import typer

from flows.cli import process
from tasks.core import interrupt


@pytest.fixture
def handlers(monkeypatch: pytest.MonkeyPatch) -> dict[int, Any]:
    """signal.signal and getsignal over a dict: the process's own handlers untouched."""
    installed: dict[int, Any] = {number: f"previous {signal.Signals(number).name}"
                                 for number in process.STOP_SIGNALS}

    def set_handler(number: int, handler: Any) -> Any:
        previous, installed[number] = installed[number], handler
        return previous

    monkeypatch.setattr(process.signal, "signal", set_handler)
    monkeypatch.setattr(process.signal, "getsignal", lambda number: installed[number])
    return installed


def test_ctrl_c_a_polite_kill_and_a_closed_terminal_stop_a_command_unless_under_nohup(
        handlers: dict[int, Any]) -> None:
    assert process.STOP_SIGNALS == (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    assert process.stop_signals() == (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    handlers[signal.SIGHUP] = signal.SIG_IGN
    assert process.stop_signals() == (signal.SIGINT, signal.SIGTERM)
    handlers[signal.SIGTERM] = signal.SIG_IGN  # only SIGHUP is given up when ignored
    assert process.stop_signals() == (signal.SIGINT, signal.SIGTERM)


@pytest.mark.parametrize("in_cli", [False, True])
def test_a_stop_signal_during_the_work_stops_it_and_exits_130_in_one_line(
        handlers: dict[int, Any], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], in_cli: bool) -> None:
    monkeypatch.setattr(process, "_in_cli_process", in_cli)
    seen: list[Any] = []

    def work() -> None:
        seen.append({number: handlers[number] for number in process.STOP_SIGNALS})
        handler = handlers[signal.SIGTERM]
        try:
            handler(signal.SIGTERM, None)
        except interrupt.Interrupted as stopped:
            # Stopping is asked by the handler itself, before anything unwinds.
            seen.append((str(stopped), interrupt.stop_requested()))
            # A second signal while unwinding only asks again: it raises nothing.
            try:
                seen.append(handlers[signal.SIGINT](signal.SIGINT, None))
            except BaseException as again:  # noqa: BLE001 - what the test looks for
                seen.append(again)
            raise

    interrupt.reset()
    try:
        with pytest.raises(typer.Exit) as ended:
            process.interruptible(work)
        assert interrupt.stop_requested()
    finally:
        interrupt.reset()
    assert ended.value.exit_code == process.INTERRUPTED_EXIT == 130
    assert len(set(map(id, seen[0].values()))) == 1, "one handler for every stop signal"
    assert seen[1:] == [("SIGTERM", True), None]
    assert capsys.readouterr().err == (
        "edgeflow: interrupted: what ran on devices (benchmarks, a release before its "
        "switch) was stopped there; unfinished steps wrote nothing, the next run redoes them\n")
    after = process._exit_interrupted if in_cli else None
    assert handlers == {number: after or f"previous {signal.Signals(number).name}"
                        for number in process.STOP_SIGNALS}


def test_work_that_ends_returns_its_value_and_gives_the_handlers_back(
        handlers: dict[int, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(process, "_in_cli_process", False)
    before = dict(handlers)
    assert process.interruptible(lambda: 42) == 42
    assert handlers == before
    with pytest.raises(ValueError):
        process.interruptible(lambda: int("x"))
    assert handlers == before


def test_a_signal_outside_the_work_exits_130_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    written: list[tuple[int, bytes]] = []
    exits: list[int] = []
    monkeypatch.setattr(process.os, "write", lambda fd, data: written.append((fd, data)))
    monkeypatch.setattr(process.os, "_exit", exits.append)
    process._exit_interrupted(signal.SIGINT, None)
    assert (written, exits) == ([(2, b"edgeflow: interrupted\n")], [130])

    def gone(fd: int, data: bytes) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(process.os, "write", gone)
    process._exit_interrupted(signal.SIGHUP, None)
    assert exits == [130, 130]


@pytest.mark.parametrize(("ending", "status"), [
    (lambda: None, 1), (lambda: (_ for _ in ()).throw(SystemExit(0)), 0),
    (lambda: (_ for _ in ()).throw(SystemExit(4)), 4),
    (lambda: (_ for _ in ()).throw(SystemExit("a message")), 1)])
def test_the_process_ends_last_with_the_commands_status_ignoring_late_signals(
        handlers: dict[int, Any], monkeypatch: pytest.MonkeyPatch, ending: Any,
        status: int) -> None:
    registered: list[Any] = []
    exits: list[int] = []
    monkeypatch.setattr(process.atexit, "register", registered.append)
    monkeypatch.setattr(process.os, "_exit", exits.append)
    monkeypatch.setattr(process, "_in_cli_process", False)
    try:
        process.run_as_process(ending)
    except SystemExit:
        pass
    assert process.in_cli_process() is True
    assert [handlers[number] for number in process.STOP_SIGNALS] == \
        [process._exit_interrupted] * 3
    (end,) = registered
    end()
    assert exits == [status]
    assert [handlers[number] for number in process.STOP_SIGNALS] == [signal.SIG_IGN] * 3


@pytest.mark.parametrize(("code", "status"), [(None, 0), (0, 0), (5, 5), (True, True),
                                               ("why", 1), (2.0, 1)])
def test_the_exit_status_of_every_kind_of_code(code: object, status: int) -> None:
    assert process.exit_status(code) == status
