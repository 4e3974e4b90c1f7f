"""The edge lifecycle as a Prefect flow: wiring only, the work lives in ``tasks/``.

    prepare -> train -> convert -> benchmark (one task per device, in parallel)
            -> select -> track -> record outputs with DVC

Every step is a Prefect task cached by :mod:`flows.caching`: a second run with nothing
changed executes no step; changing only ``benchmark`` params re-runs benchmark and what
follows. The flow's final state is Completed when every (variant, device) result
passed or failed requirements cleanly, Failed when any result is an error or a device
has no variant that meets the requirements; its message says which.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from prefect import flow, task
from prefect.futures import wait
from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings
from prefect.states import Completed, Failed, State

from flows.caching import StepContentPolicy, cache_dir, record_run
from tasks.config import Params
from tasks.errors import StepError
from tasks.files import read_json
from tasks.steps import STEPS, Context, benchmark_one_device


@dataclass
class LifecycleOutcome:
    """What the CLI and tests read back from a run."""

    executed: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    summary_path: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    dvc: str = ""


@task(persist_result=True)
def run_step(ctx: Context, step_name: str, device: str | None = None) -> str:
    """Run one registered step (or the benchmark of one device) and stamp its outputs."""
    if device is None:
        STEPS[step_name].run(ctx)
    else:
        benchmark_one_device(ctx, device)
    record_run(ctx, step_name, device)
    return f"{step_name}:{device or 'all'}"


@task
def record_with_dvc(ctx: Context) -> str:
    """``dvc commit`` the outputs so ``dvc status`` agrees with this run.

    Only when the run used the DVC project's own ``params.yaml`` and ``farm.yaml``:
    otherwise dvc.lock would describe params it never read.
    """
    root = ctx.layout.root
    if not (root / "dvc.yaml").is_file() or not (root / ".dvc").is_dir():
        return "not a DVC project: outputs not recorded"
    if ctx.params_path != root / "params.yaml" or ctx.farm_path != root / "farm.yaml":
        return "custom --params/--farm: outputs not recorded in dvc.lock"
    written = set(yaml.safe_load(ctx.params_path.read_text(encoding="utf-8")) or {})
    omitted = [section for section in Params.model_fields if section not in written]
    if omitted:
        # DVC tracks params by key and refuses a stage whose keys are absent.
        return (f"params.yaml omits {', '.join(omitted)} (defaults used): outputs not "
                "recorded in dvc.lock; write every section to track it with DVC")
    result = subprocess.run([sys.executable, "-m", "dvc", "commit", "--force", "--quiet"],
                            cwd=root, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        output = (result.stderr + result.stdout).strip()
        raise RuntimeError(f"dvc commit failed: {output[-500:]}")
    return "recorded in dvc.lock"


def _step(ctx: Context, name: str, refresh: list[str],
          device: str | None = None) -> tuple[Any, str]:
    label = name if device is None else f"{name}[{device}]"
    policy = StepContentPolicy().configure(key_storage=cache_dir(ctx) / "keys")
    return run_step.with_options(name=label, cache_policy=policy,
                                 refresh_cache=name in refresh), label


def _known_steps(names: list[str] | None) -> list[str]:
    unknown = sorted(set(names or []) - set(STEPS))
    if unknown:
        raise StepError(f"rerun: unknown step {unknown[0]!r} (allowed: {', '.join(STEPS)})")
    return list(names or [])


def _note(state: State, label: str, outcome: LifecycleOutcome) -> None:
    (outcome.cached if state.name == "Cached" else outcome.executed).append(label)


@flow(name="edgeflow-lifecycle")
def lifecycle(params_path: str = "params.yaml", farm_path: str = "farm.yaml",
              refresh: list[str] | None = None) -> State:
    """Run the whole lifecycle for one experiment and one farm.

    ``refresh`` names steps to run even when cached (``["benchmark"]`` re-measures the
    farm: what the nightly deployment does); steps after them re-run only if their
    inputs changed.
    """
    ctx = Context.load(Path(params_path), Path(farm_path))
    refresh = _known_steps(refresh)
    outcome = LifecycleOutcome()
    for name in ("prepare", "train", "convert"):
        step_task, label = _step(ctx, name, refresh)
        state = step_task(ctx, name, return_state=True)
        state.result()  # re-raises the step's own error
        _note(state, label, outcome)

    futures = {}
    for device in ctx.farm.devices:
        step_task, label = _step(ctx, "benchmark", refresh, device)
        futures[label] = step_task.submit(ctx, "benchmark", device)
    wait(list(futures.values()))
    for label, future in futures.items():
        future.state.result()
        _note(future.state, label, outcome)

    for name in ("select", "track"):
        step_task, label = _step(ctx, name, refresh)
        state = step_task(ctx, name, return_state=True)
        state.result()
        _note(state, label, outcome)
    outcome.dvc = record_with_dvc(ctx)

    summary = read_json(ctx.layout.summary)
    outcome.summary_path = str(ctx.layout.summary)
    outcome.counts = summary["counts"]
    outcome.problems = [f"{row['variant']}@{row['device']}: {row['status']}: {'; '.join(row['reasons'])}"
                        for row in summary["results"] if row["status"] != "pass"]
    no_choice = [device for device, variant in summary["recommendations"].items() if variant is None]
    counts = outcome.counts
    message = (f"{counts['pass']} pass, {counts['fail']} fail, {counts['error']} error, "
               f"{counts['skipped']} skipped")
    if outcome.problems:
        message += " | " + " | ".join(outcome.problems)
    if counts["error"] or no_choice:
        if no_choice:
            message += f" | no variant meets the requirements on: {', '.join(no_choice)}"
        return Failed(message=message, data=asdict(outcome))
    return Completed(message=message, data=asdict(outcome))


def run_lifecycle(params_path: Path, farm_path: Path,
                  refresh: list[str] | None = None) -> tuple[State, LifecycleOutcome]:
    """Run the flow with this experiment's own Prefect result store."""
    ctx = Context.load(params_path, farm_path)  # config errors surface before Prefect starts
    refresh = _known_steps(refresh)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    with temporary_settings({PREFECT_LOCAL_STORAGE_PATH: cache_dir(ctx) / "results"}):
        state = lifecycle(str(ctx.params_path), str(ctx.farm_path), refresh,
                          return_state=True)
    data = state.result(raise_on_failure=False)
    if isinstance(data, BaseException):
        raise data
    if isinstance(data, State):  # the flow returned a state whose data is the outcome
        data = data.result(raise_on_failure=False)
    return state, LifecycleOutcome(**data)
