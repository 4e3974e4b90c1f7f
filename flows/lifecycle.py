"""The edge lifecycle as a Prefect flow: wiring only, the work lives in ``tasks/``.

    prepare -> train -> optimize -> convert -> benchmark (one task per device, in parallel)
            -> select -> track -> release (one task per device) -> record outputs with DVC
            -> results on the run's page

On a lasting Prefect server each device's benchmark task that will run (not come from
the cache) is tagged with its device and Prefect runs one task per device tag at a time
(:mod:`flows.devices`). The run publishes the results table and the
recommendations as artifacts of the run (:mod:`flows.run_page`).

Every step is a Prefect task cached by :mod:`flows.caching`: a second run with nothing
changed executes no step; changing only ``benchmark`` params re-runs benchmark and what
follows. The flow's final state is Completed when every (variant, device) result
passed or failed requirements cleanly, Failed when any result is an error, a device
has no variant that meets the requirements, or a device's release failed or was refused
(a health check, ``on_release``, a board lost); its message says which.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.futures import wait
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed, Failed, State
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import quote

from flows.caching import (StepContentPolicy, cache_dir, record_run, results_dir, step_result,
                           will_be_cached)
from flows.devices import device_tag, ensure_device_limits, on_lasting_server
from flows.placement import pool_for, run_placed
from flows.retries import raise_if_worth_retrying, step_retry_options
from flows.run_page import publish, publish_comparison
from tasks.core import notices
from tasks.config import check_key_files
from tasks.core.contracts.summary import read_summary
from tasks.core.errors import EdgeflowError
from tasks.core.locks import experiment_lock
from tasks.core.mlflow_store import check_answers, tracking_uri
from tasks.select import verdict
from flows.versioning import record_outputs
from flows.code_deps import library_versions
from flows import approvals
from flows.steps import (STEPS, Context, code_dependencies, known_steps, release_one_device,
                         remove_stale_results, step_label)


@dataclass
class LifecycleOutcome:
    """What the CLI and tests read back from a run."""

    executed: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    summary_path: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    dvc: str = ""
    releases: list[str] = field(default_factory=list)  # this run's, one line per device
    gate: str = ""  # the regression gate's line, when the run was gated


@task(persist_result=True)
def run_step(ctx: Context, step_name: str, device: str | None = None,
             approved: bool | None = None) -> str:
    """Run one registered step (or its work for one device) and stamp its outputs.
    ``approved``: a person's answer for this device's release (policy ``approve``)."""
    step = STEPS[step_name]
    pool = pool_for(ctx.farm, step_name, device)
    if pool is not None:  # farm.yaml's pools: on the machine whose worker serves that pool
        run_placed(ctx, step_name, device, pool)
    elif device is None:
        step.run(ctx)
    elif approved is None:
        # A board that did not answer: another attempt later, while Prefect has one left.
        raise_if_worth_retrying(step.per_device(ctx, device))  # type: ignore[misc]
    else:
        release_one_device(ctx, device, approve=lambda *_: approved)
    record_run(ctx, step_name, device)
    return step_result(step_name, device)


# Neither is cached nor keeps its result: each run asks again, and nothing of theirs is
# written outside the experiment's result folder (the only one a step's task writes to).
@task(cache_policy=NO_CACHE, persist_result=False)
def propose_release(ctx: Context, device: str) -> tuple[str, str] | None:
    """The release the policy would make on ``device``, to put to a person."""
    from tasks.release import proposal
    return proposal(ctx.params, ctx.farm, ctx.layout, device)


@task(cache_policy=NO_CACHE, persist_result=False)
def record_with_dvc(ctx: Context, executed: bool) -> str:
    """``dvc commit`` this run's outputs (see :func:`flows.versioning.record_outputs`)."""
    return record_outputs(ctx, executed)


def _step(ctx: Context, name: str, refresh: list[str], device: str | None = None,
          device_tags: bool = False) -> tuple[Any, str]:
    label = step_label(name, device)
    policy = StepContentPolicy().configure(key_storage=cache_dir(ctx) / "keys")
    # Results in the experiment's own folder whoever runs the flow (the CLI, a deployed
    # run on a worker): one cache, not one per way of running it.
    return run_step.with_options(name=label, cache_policy=policy, result_storage=results_dir(ctx),
                                 refresh_cache=name in refresh,
                                 tags={device_tag(device)} if device and device_tags else None,
                                 **step_retry_options(ctx.farm, name, device)), label


def _note(state: State, label: str, outcome: LifecycleOutcome) -> None:
    (outcome.cached if state.name == "Cached" else outcome.executed).append(label)


def _run_in_order(ctx: Context, names: tuple[str, ...], refresh: list[str],
                  outcome: LifecycleOutcome) -> None:
    for name in names:
        step_task, label = _step(ctx, name, refresh)
        state = step_task(ctx, name, return_state=True)
        state.result()  # re-raises the step's own error
        _note(state, label, outcome)


# How long a deployed run waits for another run of its experiment (from another
# deployment, or a CLI run) before it fails with LockTimeout.
BUSY_WAIT_SECONDS = 6 * 3600.0


@flow(name="edgeflow-lifecycle")
def lifecycle(params_path: str = "params.yaml", farm_path: str = "farm.yaml",
              refresh: list[str] | None = None, gate: bool = False,
              busy_wait_seconds: float = BUSY_WAIT_SECONDS) -> State:
    """Run the whole lifecycle for one experiment and one farm.

    ``refresh`` names steps to run even when cached (``["benchmark"]`` re-measures the
    farm: what the nightly deployment does); steps after them re-run only if their
    inputs changed. ``gate``: compare the results with the previous lifecycle run's
    (:mod:`tasks.compare.gate`) and fail the run on a regression. ``busy_wait_seconds``:
    how long a deployed run waits while another run holds the experiment.
    """
    ctx = preflight(Path(params_path), Path(farm_path), refresh)
    # A deployed run takes the experiment's lock here, waiting its turn; a CLI run
    # already holds it (refused at once there: a person at a terminal is told now).
    with experiment_lock(ctx.layout.state, busy_wait_seconds), _notices_to_run_log():
        try:
            return _lifecycle(ctx, list(refresh or []), gate)
        except Exception as error:  # MLflow gets a FAILED run with it; the flow still fails
            from tasks.track.failure import record_failure
            record_failure(ctx.params_dump(), ctx.layout, error)
            raise


def _is_plain_json(value: object) -> bool:
    if isinstance(value, list):
        return all(_is_plain_json(item) for item in value)
    return value is None or isinstance(value, (str, bool, int, float))


_prefect_serialize_parameters = lifecycle.serialize_parameters


def _serialize_parameters(parameters: dict[str, Any]) -> dict[str, Any]:
    """The lifecycle's parameters as the flow run stores them: plain JSON as it is (what
    Prefect's encoder returns for it), anything else through Prefect. Prefect imports
    fastapi for that encoder: a tenth of a second of a no-op run on a running server."""
    if all(_is_plain_json(value) for value in parameters.values()):
        return dict(parameters)
    return _prefect_serialize_parameters(parameters)


lifecycle.serialize_parameters = _serialize_parameters  # type: ignore[method-assign]


@contextmanager
def _notices_to_run_log() -> Iterator[None]:
    """Where nobody renders the steps' progress and warnings (a deployment's run, in a
    worker: no console), they go to the flow run's log, which the Prefect UI shows: a
    scheduled run reads there as a CLI run does on its console."""
    if notices.listened():
        yield
        return
    logger = get_run_logger()

    def log(notice: notices.Notice) -> None:
        if isinstance(notice, notices.Progress):
            logger.info(notice.line())
        else:
            logger.warning(notice.message)

    with notices.listening(log):
        yield


def _gate(ctx: Context) -> tuple[str, bool]:
    """The regression gate's line and whether it passed; its table on the run's page."""
    from tasks.compare.gate import regression_gate
    from tasks.compare.view import comparison_markdown

    gated = regression_gate(ctx.layout, ctx.params.compare)
    if gated is None:
        return "no earlier lifecycle run to compare with", True
    publish_comparison(comparison_markdown(gated.comparison, gated.against, "this run"),
                       gated.against)
    return gated.line(), not gated.comparison.regressions


def _lifecycle(ctx: Context, refresh: list[str], gate: bool = False) -> State:
    outcome = LifecycleOutcome()
    _run_in_order(ctx, ("prepare", "train", "optimize", "convert"), refresh, outcome)

    _per_device(ctx, "benchmark", refresh, outcome)
    remove_stale_results(ctx)
    _run_in_order(ctx, ("select", "track"), refresh, outcome)
    passed = True
    unreleased: list[str] = []
    if gate:
        # Before any release: a run that regressed never ships its model.
        outcome.gate, passed = _gate(ctx)
    if passed:
        _per_device(ctx, "release", refresh, outcome, _approvals(ctx, refresh))
        outcome.releases = _release_lines(ctx, outcome.executed)
        unreleased = _unsuccessful_releases(ctx, outcome.executed)
    else:
        outcome.releases = [f"{device}: not released: the regression gate failed"
                            for device in ctx.farm.devices]
    outcome.dvc = record_with_dvc(ctx, bool(outcome.executed))

    summary = read_summary(ctx.layout.summary)
    judged = verdict(summary)
    outcome.summary_path = str(ctx.layout.summary)
    outcome.counts = summary.counts.document()
    outcome.problems = list(judged.problems)
    publish(ctx.layout.summary, judged.message, outcome.releases)
    # A deployment that failed or was refused fails the run: CI and schedulers see it.
    message, ok = judged.message, judged.ok and passed and not unreleased
    if gate:
        message += f" | gate: {outcome.gate}"
    if unreleased:
        message += f" | release {', '.join(unreleased)}"
    state = Completed if ok else Failed
    return state(message=message, data=asdict(outcome))


def _release_lines(ctx: Context, executed: list[str]) -> list[str]:
    """The last attempt's line of each device whose release task ran."""
    ran = [device for device in ctx.farm.devices if f"release[{device}]" in executed]
    if not ran:
        return []
    # Imported only then: the release package is a fortieth of a no-op run's start.
    from tasks.release.outcome import last_attempt
    return [last_attempt(ctx.layout, device) for device in ran]


def _unsuccessful_releases(ctx: Context, executed: list[str]) -> list[str]:
    """``failed on pi``/``refused on pi`` for each device whose release task ran and did
    not deploy (a release task that fails so is never cached: it runs every time)."""
    ran = [device for device in ctx.farm.devices if f"release[{device}]" in executed]
    if not ran:
        return []
    from tasks.release.outcome import unsuccessful
    return unsuccessful(ctx.layout, ran)


def _will_run(ctx: Context, name: str, device: str, refresh: list[str]) -> bool:
    return name in refresh or not will_be_cached(ctx, name, device)


def _per_device(ctx: Context, name: str, refresh: list[str], outcome: LifecycleOutcome,
                approvals: dict[str, bool] | None = None) -> None:
    """``name``'s task for every device, in parallel. One per board in Prefect too,
    where a lasting server keeps the limits; a task that will come from the cache
    touches no board and takes no slot (Prefect's slot costs about two seconds of a
    no-op run: its lease thread's join)."""
    tagged = [] if not on_lasting_server() else [
        device for device in ctx.farm.devices if _will_run(ctx, name, device, refresh)]
    if tagged:
        ensure_device_limits(tagged)
    parallelism = ctx.farm.parallelism
    # In the run's log (Prefect's, and the CLI's log file): a bound that depends on the
    # machine is stated, never silent.
    get_run_logger().info(f"{name}: {len(ctx.farm.devices)} devices, {parallelism.line()}")
    futures = {}
    # farm.yaml's max_parallel bounds the boards at work: Prefect's own thread pool
    # runner of that size (the flow's default one has no bound), in CLI and deployed runs.
    with ThreadPoolTaskRunner(max_workers=parallelism.boards) as runner:
        for device in ctx.farm.devices:
            step_task, label = _step(ctx, name, refresh, device, device in tagged)
            # quote: Prefect would walk the whole context (the farm: every device) for
            # futures in each task's parameters, twice: O(devices) per task, and the
            # fleet's largest cost of orchestrator CPU at 100 boards.
            futures[label] = runner.submit(step_task, {
                "ctx": quote(ctx), "step_name": name, "device": device,
                "approved": (approvals or {}).get(device)})
        wait(list(futures.values()))
    for label, future in futures.items():
        future.state.result()
        _note(future.state, label, outcome)


def _approvals(ctx: Context, refresh: list[str]) -> dict[str, bool]:
    """Under ``release.policy: approve``, a person's answer for each device whose
    release task will run and would release something (:mod:`flows.approvals`: the
    terminal of a CLI run, a Prefect pause for a deployed one). Asked here, in the
    flow: only a flow run can pause for input."""
    release = ctx.params.release
    if release.policy != "approve":
        return {}
    approve = approvals.current(release.approval_timeout_seconds)
    answers = {}
    for device in ctx.farm.devices:
        if _will_run(ctx, "release", device, refresh):
            proposed = propose_release(ctx, device)
            if proposed is not None:
                answers[device] = approve(device, *proposed)
    return answers


class _NoTracebackForInputErrors(logging.Filter):
    """Prefect logs a failed task with its traceback; for an error caused by input (a
    bad folder, an artifact that disagrees) the one-line message is the whole story."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], EdgeflowError):
            record.exc_info, record.exc_text = None, None
        return True


_INPUT_ERROR_FILTER = _NoTracebackForInputErrors()


def preflight(params_path: Path, farm_path: Path, refresh: list[str] | None) -> Context:
    """The experiment's context, once its configuration and usage are known good: errors
    surface before Prefect starts (and before training: a key the benchmark cannot use is
    refused now, not after an hour of work)."""
    ctx = Context.load(params_path, farm_path)
    known_steps(refresh)
    check_key_files(ctx.farm)
    check_answers(tracking_uri(ctx.layout.root))  # a dead server would hang track for minutes
    # Every cache key needs its step's code closure (each project source parsed) and the
    # versions of what it imports: found now, they are found once per process, while a
    # temporary Prefect server boots, not on the no-op run's path after it answers.
    for step in STEPS.values():
        library_versions(code_dependencies(step).libraries)
    return ctx


def run_lifecycle(params_path: Path, farm_path: Path, refresh: list[str] | None = None,
                  gate: bool = False) -> tuple[State, LifecycleOutcome]:
    """Run the flow with this experiment's own Prefect result store."""
    ctx = preflight(params_path, farm_path, refresh)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    for name in ("prefect.task_runs", "prefect.flow_runs"):
        logging.getLogger(name).addFilter(_INPUT_ERROR_FILTER)  # once: the same object
    # Taken before Prefect starts its server: a second run is refused in a second, not
    # after a quarter of a minute.
    with experiment_lock(ctx.layout.state):
        state = lifecycle(str(ctx.params_path), str(ctx.farm_path), refresh, gate,
                          return_state=True)
    data = state.result(raise_on_failure=False)
    if isinstance(data, BaseException):
        raise data
    if isinstance(data, State):  # the flow returned a state whose data is the outcome
        data = data.result(raise_on_failure=False)
    return state, LifecycleOutcome(**data)
