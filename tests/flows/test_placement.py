"""Steps on the work pool of the machine that runs them (farm.yaml ``pools``,
:mod:`flows.placement`): which pool each step takes, that ``pools`` is in no cache key,
and, end to end, a real Prefect server (``edgeflow serve`` in an orchestrator's clone)
with two more clones in folders of their own, each with its own ``PREFECT_HOME``, work
pool, ``edgeflow-step`` deployment and worker (README "For a team" lines): a deployed
lifecycle run trains on the trainer's worker and benchmarks on the gateway's.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tasks.config import load_farm
from tasks.core.errors import ConfigError
from tests.flows.test_deployment import (BIN, PARAMS, PROJECT_FILES, _edgeflow, _free_port)
from tests.helpers import copy_project_files
from tests.team_readme import run_lines, team_block
from tests.tiny import write_tiny_config

POOLS = "pools:\n  train: trainer\n  devices: {local: gw-local}\n"
PLACED_FARM = "devices:\n  local: {threads: 1}\n" + POOLS
PROJECT = PROJECT_FILES + ("prefect-pools.yaml",)


def _farm(tmp_path: Path, text: str) -> Any:
    (tmp_path / "farm.yaml").write_text(text, encoding="utf-8")
    return load_farm(tmp_path / "farm.yaml")


def test_train_and_each_devices_benchmark_take_their_pool_the_rest_run_in_place(
        tmp_path: Path) -> None:
    from flows.placement import pool_for

    farm = _farm(tmp_path, "devices:\n  local: {threads: 1}\n  other: {threads: 1, "
                           "workdir: .edgeflow/devices/other}\n" + POOLS)
    placed = {(step, device): pool_for(farm, step, device)
              for step, device in [("prepare", None), ("train", None), ("convert", None),
                                   ("benchmark", "local"), ("benchmark", "other"),
                                   ("release", "local"), ("select", None)]}
    assert placed == {("prepare", None): None, ("train", None): "trainer",
                      ("convert", None): None, ("benchmark", "local"): "gw-local",
                      ("benchmark", "other"): None, ("release", "local"): None,
                      ("select", None): None}
    plain = _farm(tmp_path, "devices:\n  local: {threads: 1}\n")
    assert plain.pools is None
    assert [pool_for(plain, step, device) for step, device in
            [("train", None), ("benchmark", "local")]] == [None, None]


def test_pools_naming_an_unknown_device_or_a_bad_pool_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="pools.devices names ghost, not in devices"):
        _farm(tmp_path, "devices:\n  local: {threads: 1}\npools: {devices: {ghost: gw}}\n")
    with pytest.raises(ConfigError, match="work pool name 'a b' is not allowed"):
        _farm(tmp_path, "devices:\n  local: {threads: 1}\npools: {train: 'a b'}\n")


def test_pools_are_in_no_cache_key(tmp_path: Path) -> None:
    """Which machine does a step changes no result: adding ``pools`` re-runs nothing."""
    from flows.caching import input_key
    from flows.steps import STEPS, Context

    keys = []
    for farm in ("devices:\n  local: {threads: 1}\n", PLACED_FARM):
        write_tiny_config(tmp_path, PARAMS, farm)
        ctx = Context.load(tmp_path / "params.yaml", tmp_path / "farm.yaml")
        keys.append([input_key(ctx, name) for name in STEPS]
                    + [input_key(ctx, "benchmark", "local")])
    assert keys[0] == keys[1]


@dataclass(frozen=True)
class Machine:
    """A clone in a folder of its own, with its own PREFECT_HOME, pool and worker."""

    pool: str
    clone: Path
    worker_log: Path


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("placement")
    orchestrator = root / "orchestrator"
    copy_project_files(PROJECT, orchestrator)
    base = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
            "PREFECT_UI_ENABLED": "false", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    for name in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI"):
        base.pop(name, None)
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    served_env = {**base, "PREFECT_HOME": str(root / "orchestrator-home")}
    started = _edgeflow("serve", "--port", str(port), cwd=orchestrator, env=served_env)
    workers: list[subprocess.Popen[bytes]] = []
    machines: dict[str, Machine] = {}
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        lines = team_block('prefect worker start --pool "$POOL"')
        for pool in ("trainer", "gw-local"):
            clone = root / pool
            copy_project_files(PROJECT, clone)
            env = {**base, "PREFECT_HOME": str(root / f"{pool}-home"), "PREFECT_API_URL": url,
                   "PREFECT_WORKER_QUERY_SECONDS": "1", "POOL": pool}
            run_lines(lines[:-1], clone, env)  # the pool and its deployment
            log = clone / "worker.log"
            with log.open("wb") as out:  # the worker: it runs until stopped
                workers.append(subprocess.Popen(["bash", "-c", lines[-1]], cwd=clone,
                                                env=env, stdout=out, stderr=subprocess.STDOUT,
                                                stdin=subprocess.DEVNULL,
                                                start_new_session=True))
            machines[pool] = Machine(pool, clone, log)
        yield {"url": url, "machines": machines, "orchestrator": orchestrator, "root": root}
    finally:
        for worker in workers:  # its process group: the worker and the flow runs it started
            os.killpg(worker.pid, signal.SIGTERM)
        for worker in workers:
            worker.wait(timeout=60)
        stopped = _edgeflow("stop", cwd=orchestrator, env=served_env, timeout=120)
        assert stopped.returncode == 0, stopped.stderr


def _worker_of(flow_run_id: Any, machines: dict[str, Machine]) -> str:
    """The worker whose log says it submitted this flow run."""
    found = [f"{machine.pool}-1" for machine in machines.values()
             if str(flow_run_id) in machine.worker_log.read_text(errors="replace")]
    return ", ".join(found) or "?"


def test_a_deployed_run_trains_on_the_trainers_worker_and_benchmarks_on_the_gateways(
        team: dict[str, Any]) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tasks.core.contracts.summary import read_summary

    experiment = team["root"] / "experiment"
    write_tiny_config(experiment, PARAMS, PLACED_FARM)
    started = time.monotonic()
    with temporary_settings({PREFECT_API_URL: team["url"]}):
        lifecycle = run_deployment(
            "edgeflow-lifecycle/on-change", timeout=600, poll_interval=1,
            parameters={"params_path": str(experiment / "params.yaml"),
                        "farm_path": str(experiment / "farm.yaml")})
        with get_client(sync_client=True) as client:
            children = client.read_flow_runs(flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[lifecycle.id])))
            deployments = {run.id: client.read_deployment(run.deployment_id).name
                           for run in children}
    took = time.monotonic() - started
    assert lifecycle.state.is_completed(), lifecycle.state.message
    table = sorted((run.parameters["step_name"]
                    + (f"[{run.parameters['device']}]" if run.parameters.get("device") else ""),
                    run.name, run.work_pool_name, deployments[run.id],
                    _worker_of(run.id, team["machines"]), run.state.name) for run in children)
    print(f"\nlifecycle {lifecycle.name} on pool {lifecycle.work_pool_name}: "
          f"{lifecycle.state.name} in {took:.0f} s")
    print(f"{'step':<18} {'flow run':<28} {'work pool':<10} {'deployment':<10} "
          f"{'worker':<12} state")
    for row in table:
        print(f"{row[0]:<18} {row[1]:<28} {row[2]:<10} {row[3]:<10} {row[4]:<12} {row[5]}")
    assert lifecycle.work_pool_name == "edgeflow"
    assert [(step, pool, deployment, worker, state)
            for step, _, pool, deployment, worker, state in table] == [
        ("benchmark[local]", "gw-local", "gw-local", "gw-local-1", "Completed"),
        ("train", "trainer", "trainer", "trainer-1", "Completed")]
    summary = read_summary(experiment / "reports" / "summary.json").document()
    assert [(row["variant"], row["device"], row["status"]) for row in summary["results"]] \
        == [("tflite-fp32", "local", "pass")]
    # Each clone ran its step in the experiment: none of them holds its outputs.
    for folder in (*[machine.clone for machine in team["machines"].values()],
                   team["orchestrator"]):
        assert not (folder / "models").exists() and not (folder / "results").exists()
    worker_lines = {pool: re.findall(r"Worker '([^']+)'", machine.worker_log.read_text(
        errors="replace"))[:1] for pool, machine in team["machines"].items()}
    print("workers:", worker_lines)


def test_each_step_deployment_is_named_after_its_pool_and_runs_the_step_flow() -> None:
    """``run_placed`` starts ``edgeflow-step/<pool>``: prefect-pools.yaml's deployment of
    each pool must bear the pool's name and run the step flow."""
    import yaml

    from flows.placement import STEP_FLOW, deployment_name, step

    repo = Path(__file__).resolve().parents[2]
    document = yaml.safe_load((repo / "prefect-pools.yaml").read_text(encoding="utf-8"))
    assert [(d["name"], d["work_pool"]["name"], d["entrypoint"])
            for d in document["deployments"]] == [
        ("trainer", "trainer", "flows/placement.py:step"),
        ("gw-local", "gw-local", "flows/placement.py:step")]
    assert step.name == STEP_FLOW and deployment_name("trainer") == "edgeflow-step/trainer"


def test_a_placed_benchmark_retries_a_board_that_does_not_answer_on_the_gateway(
        tiny_project: Any, tmp_path: Path) -> None:
    """farm.yaml's ``task_retries`` hold on the gateway's worker too: the step flow's
    device task is retried (its board's sshd down), then keeps the unreachable results
    and completes, as the lifecycle's own task does (tests/flows/test_retries.py)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.placement import step
    from tests.flows.test_retries import _records, dead_board_experiment
    from tests.sshd import sshd_available

    if not sshd_available():
        pytest.skip("OpenSSH server not installed")
    experiment, farm = dead_board_experiment(tiny_project, tmp_path)
    state = step(str(experiment / "params.yaml"), str(farm), "benchmark", "board",
                 return_state=True)
    assert state.is_completed(), state.message
    with get_client(sync_client=True) as client:
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
    assert [(task.name.rsplit("-", 1)[0], task.run_count) for task in tasks] == [
        ("benchmark[board]", 2)]
    assert _records(experiment)["tflite-fp32"]["error"].startswith("device unreachable: ")
