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
