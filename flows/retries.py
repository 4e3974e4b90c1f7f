"""Prefect task retries for boards that do not answer (a board rebooting, its sshd not up
yet, a lab link down): the benchmark task of such a device runs again, later, with
Prefect's own ``retries``, exponential ``retry_delay_seconds`` and ``retry_condition_fn``.

Contract: a device's benchmark task raises :class:`BoardFlaky` only when its board was
never reached for a reason that may pass (:class:`tasks.farm.transports.BoardNotAnswering`,
carried as ``DeviceRun.not_answering``) and Prefect has a retry left; on the last attempt
it does not raise, so the device's variants keep their ``device unreachable`` results and
the run goes on with the other devices, as without retries. Any other error (a refused
key, a missing file, a bug) is not retried: :func:`retry_on_board_flake` says no.

The counts come from farm.yaml, per device: ``task_retries`` (default 0: none) and
``task_retry_delay_seconds`` (the first wait; it doubles each retry).
"""

from __future__ import annotations

from typing import Any

from prefect.tasks import exponential_backoff

from tasks.targets.base import DeviceRun
from tasks.farm.transports import DeviceUnreachable


class BoardFlaky(DeviceUnreachable):
    """A board that did not answer this attempt: Prefect runs the task again."""


def retry_on_board_flake(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect's ``retry_condition_fn``: retry only a board that did not answer."""
    try:
        state.result()
    except BoardFlaky:
        return True
    except BaseException:  # noqa: BLE001 - anything else is final: no retry
        return False
    return False


# The steps whose per-device task is retried: those that only measure. A release is not
# (it changes what a board runs; its own outcome records a lost board).
RETRIED_STEPS = frozenset({"benchmark"})


def step_retry_options(farm: Any, step: str, device: str | None) -> dict[str, Any]:
    """The Prefect task options that retry ``step``'s task for ``device`` (none for other
    steps, nor for a device with no ``task_retries``: one not reached over a network)."""
    if device is None or step not in RETRIED_STEPS:
        return {}
    retries = getattr(farm.devices[device], "task_retries", 0)
    if not retries:
        return {}
    return {"retries": retries,
            "retry_delay_seconds": exponential_backoff(
                farm.devices[device].task_retry_delay_seconds)(retries),
            "retry_condition_fn": retry_on_board_flake}


def raise_if_worth_retrying(run: object) -> None:
    """Ask Prefect for another attempt (:class:`BoardFlaky`) when ``run`` is a device run
    whose board did not answer and the current task has a retry left."""
    from prefect.context import TaskRunContext

    if not isinstance(run, DeviceRun) or run.not_answering is None:
        return
    context = TaskRunContext.get()
    if context is None or context.task_run.run_count > context.task.retries:
        return  # the last attempt (or no Prefect task): keep the unreachable results
    raise BoardFlaky(f"{run.device}: {run.not_answering}; retrying "
                     f"(attempt {context.task_run.run_count} of {context.task.retries + 1})")
