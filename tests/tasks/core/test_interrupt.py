"""Stop requests: registered stoppers run once when a stop is requested (also when it
came before they were registered); checkpoints raise an Interrupted no `except
Exception` swallows; a command on a device is stopped there when its time is up."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tasks.core import interrupt
from tasks.farm.transports import LocalConnection


@pytest.fixture(autouse=True)
def fresh() -> Iterator[None]:
    interrupt.reset()
    yield
    interrupt.reset()


def test_a_stop_runs_each_registered_stopper_once_and_checkpoints_raise() -> None:
    stopped = []
    done = threading.Event()

    def stopper() -> None:
        stopped.append("harness")
        done.set()

    interrupt.raise_if_stopped()  # nothing requested: no-op
    with interrupt.stopping_with(stopper):
        interrupt.request_stop()
        assert done.wait(5)
        interrupt.request_stop()  # a second Ctrl-C: the stopper is not run again
    time.sleep(0.1)
    assert stopped == ["harness"]
    with pytest.raises(interrupt.Interrupted):
        try:
            interrupt.raise_if_stopped()
        except Exception:  # noqa: BLE001 - what a step's broad handler would do
            pytest.fail("an Interrupted must not be an Exception")


def test_a_stopper_registered_after_the_request_runs_at_once() -> None:
    interrupt.request_stop()
    done = threading.Event()
    with interrupt.stopping_with(done.set):
        assert done.wait(5)


def test_a_stop_requested_while_a_stopper_is_being_registered_does_not_deadlock() -> None:
    """The CLI's SIGINT handler calls request_stop in the main thread, which may be inside
    stopping_with's registration (holding its guard) when the signal lands."""
    def signal_lands_during_registration() -> None:
        with interrupt._guard:  # where stopping_with is at that moment
            interrupt.request_stop()

    handler = threading.Thread(target=signal_lands_during_registration, daemon=True)
    handler.start()
    handler.join(5)
    assert not handler.is_alive(), "request_stop deadlocked on the registration guard"
    assert interrupt.stop_requested()


def test_every_device_command_is_stopped_on_the_device_when_its_time_is_up(tmp_path: Path) -> None:
    marker = tmp_path / "still-running"
    started = time.monotonic()
    result = LocalConnection().run(f"sleep 30; touch {marker}", timeout=1)
    assert result.exited == 124  # coreutils timeout stopped it, not the orchestrator
    assert time.monotonic() - started < 10
    time.sleep(0.5)
    assert not marker.exists()
