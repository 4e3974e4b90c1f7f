"""flows/approvals.py: a deployed run pauses in Prefect for a person's answer (a real
server, the flow run resumed with input as the UI's form does); the CLI asks the
terminal or approves with --yes."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from flows import approvals


def _paused_run(client: Any, started: float) -> Any:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, \
        FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(state=FlowRunFilterState(
            type=FlowRunFilterStateType(any_=[StateType.PAUSED]))))
        if runs:
            return runs[0]
        time.sleep(0.2)
    raise AssertionError("the flow run never paused")


@pytest.mark.parametrize("answer", [True, False])
def test_a_deployed_run_pauses_until_a_person_answers_the_form(answer: bool) -> None:
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.flow_runs import resume_flow_run
    from prefect.testing.utilities import prefect_test_harness

    @flow
    def asks() -> bool:
        return approvals.in_prefect(timeout_seconds=120)("pi5", "tflite-int8",
                                                         "tflite-fp32 -> tflite-int8")

    results: list[Any] = []
    with prefect_test_harness(server_startup_timeout=180):
        worker = threading.Thread(target=lambda: results.append(asks(return_state=True)))
        worker.start()
        with get_client(sync_client=True) as client:
            paused = _paused_run(client, time.monotonic())
            assert paused.state.state_details.pause_key == "release-pi5"
            resume_flow_run(paused.id, run_input={"approve": answer, "note": "checked"})
        worker.join(timeout=120)
    assert results and results[0].is_completed()
    assert results[0].result() is answer


def test_no_answer_within_the_timeout_is_no_approval() -> None:
    from prefect import flow
    from prefect.testing.utilities import prefect_test_harness

    @flow
    def asks() -> bool:
        return approvals.in_prefect(timeout_seconds=1)("pi5", "tflite-int8", "nothing -> tflite-int8")

    with prefect_test_harness(server_startup_timeout=180):
        assert asks() is False


def test_the_cli_approves_with_yes_and_otherwise_asks_the_terminal(
        monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[tuple[str, str, str]] = []

    def terminal(device: str, variant: str, change: str) -> bool | None:
        asked.append((device, variant, change))
        return None  # no terminal

    monkeypatch.setattr(approvals, "ask_on_terminal", terminal)
    assert approvals.terminal_approver(yes=True)("pi5", "v", "a -> v") is True
    assert asked == []
    assert approvals.terminal_approver(yes=False)("pi5", "v", "a -> v") is False
    assert asked == [("pi5", "v", "a -> v")]
    approvals.install(approvals.terminal_approver(yes=True))
    try:
        assert approvals.current(10)("pi5", "v", "a -> v") is True
    finally:
        approvals.install(None)
    # The function that made it (under mutmut, its copy "x_in_prefect__mutmut_orig").
    assert "in_prefect" in approvals.current(10).__qualname__.split(".<locals>")[0]


class _Tty:
    """/dev/tty with one typed line; what was written to it is kept."""

    def __init__(self, typed: str) -> None:
        self.typed, self.written, self.flushed = typed, [], False

    def __enter__(self) -> "_Tty":
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def write(self, text: str) -> None:
        self.written.append(text)

    def flush(self) -> None:
        self.flushed = True

    def readline(self) -> str:
        return self.typed


@pytest.mark.parametrize(("typed", "approved"), [
    ("y\n", True), ("yes\n", True), ("  Y \n", True), ("YES\n", True), ("n\n", False),
    ("\n", False), ("", False), ("yeah\n", False), ("no\n", False)])
def test_the_terminal_approves_only_y_or_yes_and_asks_in_one_line(
        monkeypatch: pytest.MonkeyPatch, typed: str, approved: bool) -> None:
    ttys: list[_Tty] = []
    opened: list[tuple[str, str, str]] = []

    def tty(path: str, mode: str, encoding: str) -> _Tty:
        opened.append((path, mode, encoding))
        ttys.append(_Tty(typed))
        return ttys[-1]

    monkeypatch.setattr(approvals, "open", tty, raising=False)
    assert approvals.ask_on_terminal("pi5", "tflite-int8", "a -> tflite-int8") is approved
    assert opened == [("/dev/tty", "r+", "utf-8")]
    assert ttys[0].written == ["release tflite-int8 to pi5 (a -> tflite-int8)? [y/N] "]
    assert ttys[0].flushed
    monkeypatch.setattr(approvals, "ask_on_terminal", lambda *_: approved)
    assert approvals.terminal_approver(yes=False)("pi5", "v", "c") is approved


def test_no_terminal_is_no_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_tty(*args: object, **kwargs: object) -> None:
        raise OSError(6, "No such device or address")

    monkeypatch.setattr(approvals, "open", no_tty, raising=False)
    assert approvals.ask_on_terminal("pi5", "v", "c") is None
    assert approvals.terminal_approver(yes=False)("pi5", "v", "c") is False
    assert approvals.terminal_approver(yes=True)("pi5", "v", "c") is True


@pytest.mark.parametrize(("answer", "approved"), [
    ("timeout", False), (None, False), ({"approve": False}, False), ({"approve": True}, True)])
def test_a_pause_asks_with_the_devices_key_and_the_whole_timeout(
        monkeypatch: pytest.MonkeyPatch, answer: Any, approved: bool) -> None:
    """Prefect's pause faked: what it was asked with, and each answer it can give."""
    import prefect.flow_runs
    from prefect.exceptions import FlowPauseTimeout

    asked: list[dict[str, Any]] = []

    def pause(**kwargs: Any) -> Any:
        asked.append(kwargs)
        if answer == "timeout":
            raise FlowPauseTimeout("nobody answered")
        return None if answer is None else approvals.ReleaseApproval(**answer)

    monkeypatch.setattr(prefect.flow_runs, "pause_flow_run", pause)
    assert approvals.in_prefect(90.9)("pi5", "tflite-int8", "a -> tflite-int8") is approved
    (kwargs,) = asked
    assert (kwargs["timeout"], kwargs["key"]) == (90, "release-pi5")
    form = kwargs["wait_for_input"]
    assert form._description == ("Release **tflite-int8** to **pi5** (a -> tflite-int8)? Tick "
                                 "approve and resume; resuming without it keeps the device as "
                                 "it is.")
    assert approvals.ReleaseApproval().approve is False


def test_a_process_without_an_installed_approver_pauses_in_prefect_with_its_timeout(
        monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[float] = []
    monkeypatch.setattr(approvals, "in_prefect", lambda timeout: made.append(timeout) or "pause")
    approvals.install(None)
    assert approvals.current(12.5) == "pause" and made == [12.5]
    first, second = (lambda *_: True), (lambda *_: False)
    approvals.install(first)
    approvals.install(second)
    try:
        assert approvals.current(1) is second and approvals._installed == [second]
    finally:
        approvals.install(None)
    assert approvals._installed == []
