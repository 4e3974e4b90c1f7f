"""Steps placed on the work pool of the machine that must run them (farm.yaml ``pools``):
``train`` on the trainer's pool, ``benchmark[<device>]`` on the pool of the gateway that
reaches the device. Prefect runs a task in its flow run's process, so a placed step is
a flow run of its own: :func:`step`, deployed once per pool as ``edgeflow-step/<pool>``
(prefect-pools.yaml), started by the lifecycle's task for that step with
``run_deployment`` and waited for. Every other step, and every step of a farm without
``pools``, runs in place, as before.

Contract: the lifecycle's task keeps its cache key and stamps; the placed flow run only
does the step's work, in the experiment that ``params_path`` names as seen by the
worker's machine (today: the same path, a disk both reach). A device's work there is a
task with the device's retries (a board that does not answer is retried on the gateway
that reaches it); a placed flow run that fails fails the lifecycle's task.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.utilities.annotations import quote

from flows.retries import raise_if_worth_retrying, step_retry_options
from flows.steps import STEPS, Context, step_label
from tasks.config import Farm
from tasks.core.errors import EdgeflowError

STEP_FLOW = "edgeflow-step"
# The steps that may be placed, and the pool each takes from farm.yaml's ``pools``.
PLACED = {
    "train": lambda pools, device: pools.train,
    "benchmark": lambda pools, device: pools.devices.get(device) if device else None,
}


class PlacedStepFailed(EdgeflowError):
    """A step's flow run on another work pool did not complete."""


def pool_for(farm: Farm, step_name: str, device: str | None = None) -> str | None:
    """The work pool that runs ``step_name`` (for ``device``), or None: run in place."""
    if farm.pools is None or step_name not in PLACED:
        return None
    return PLACED[step_name](farm.pools, device)


def deployment_name(pool: str) -> str:
    """The step flow's deployment on ``pool`` (one per pool, named after it)."""
    return f"{STEP_FLOW}/{pool}"


@task(cache_policy=NO_CACHE, persist_result=False)
def device_work(ctx: Context, step_name: str, device: str) -> None:
    """One device's work, in a task: a board that did not answer is retried here, on the
    gateway, with the device's farm.yaml retries (:mod:`flows.retries`), as in place."""
    raise_if_worth_retrying(STEPS[step_name].per_device(ctx, device))  # type: ignore[misc]


@flow(name=STEP_FLOW)
def step(params_path: str, farm_path: str, step_name: str, device: str | None = None) -> str:
    """Do ``step_name``'s work (for ``device``) in this worker's process; its label."""
    ctx = Context.load(params_path, farm_path)  # type: ignore[arg-type]
    if device is None:
        STEPS[step_name].run(ctx)
        return step_name
    label = step_label(step_name, device)
    device_work.with_options(name=label, **step_retry_options(ctx.farm, step_name, device))(
        quote(ctx), step_name, device)
    return label


def run_placed(ctx: Context, step_name: str, device: str | None, pool: str) -> Any:
    """Run ``step_name`` as a flow run of ``edgeflow-step/<pool>`` and wait for it (a
    child of the calling task's run); :class:`PlacedStepFailed` unless it completed."""
    from prefect.deployments import run_deployment

    flow_run = run_deployment(
        deployment_name(pool), poll_interval=1,
        parameters={"params_path": str(ctx.params_path), "farm_path": str(ctx.farm_path),
                    "step_name": step_name, "device": device})
    if flow_run.state is None or not flow_run.state.is_completed():
        label = step_label(step_name, device)
        state = flow_run.state.name if flow_run.state else "no state"
        message = flow_run.state.message if flow_run.state else ""
        raise PlacedStepFailed(f"{label} on work pool {pool} (flow run {flow_run.name}) "
                               f"ended {state}: {message}")
    return flow_run
