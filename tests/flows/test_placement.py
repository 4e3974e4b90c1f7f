"""Steps on the work pool of the machine that runs them (farm.yaml ``pools``,
:mod:`flows.placement`): which pool each step takes, that ``pools`` is in no cache key,
what a placed step's flow run is given and does with it in another DVC project (the
worker's clone), and, end to end, a real Prefect server (``edgeflow serve`` in an
orchestrator's clone) with two more clones in folders of their own, each with its own
``PREFECT_HOME``, work pool, ``edgeflow-step`` deployment and worker (README "For a team"
lines), and no folder they share: a deployed lifecycle run trains on the trainer's worker
and benchmarks on the gateway's, files going through a real SeaweedFS S3 store as the
team's DVC remote.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pytest

from tasks.config import load_farm
from tasks.core.errors import ConfigError
from tests.flows.test_deployment import (BIN, PARAMS, PROJECT_FILES, _edgeflow, _free_port)
from tests.flows.test_exchange import DVC, dvc_project
from tests.helpers import copy_project_files
from tests.seaweed import S3Server, object_keys
from tests.team_readme import run_lines, team_block
from tests.tiny import TINY_PARAMS, write_tiny_config

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


BROUGHT = TINY_PARAMS.replace(
    "model: {architecture: small_cnn, filters: [8, 16], dropout: 0.1}",
    "model: {source: file, path: brought/model.onnx}")
GATEWAY_FARM = """\
devices:
  board: {transport: ssh, host: 10.0.0.5, user: pi, key_file: keys/board,
          known_hosts: keys/known_hosts}
"""


def test_a_placed_step_gets_the_params_text_its_inputs_and_this_clones_own_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On the worker: params.yaml and farm.yaml as the orchestrator wrote them, in a
    scratch experiment; their relative paths mean this clone's files (a gateway's own
    key); a model file you bring arrives through the remote and is named where it arrived;
    no path of the orchestrator's machine is in what the flow run is given."""
    from flows.placement import placed_context, placed_work
    from flows.steps import Context

    remote = tmp_path / "remote"
    orchestrator = dvc_project(tmp_path / "orchestrator", remote)
    worker = dvc_project(tmp_path / "worker", remote)
    experiment = orchestrator / "lab" / "exp"
    write_tiny_config(experiment, BROUGHT, GATEWAY_FARM)
    (experiment / "brought").mkdir()
    (experiment / "brought" / "model.onnx").write_bytes(b"an onnx model")
    ctx = Context.load(experiment / "params.yaml", experiment / "farm.yaml")
    work = placed_work(ctx, "train", None)
    assert (work.params_home, work.farm_home) == ("lab/exp", "lab/exp")
    assert list(work.inputs) == ["params-file/0/model.onnx"]  # data/prepared: not made yet
    assert str(tmp_path) not in json.dumps({**asdict(work), "store": ""})
    assert work.store == f"DVC remote team ({remote})"

    scratch = worker / ".edgeflow" / "placed" / "train-1"
    scratch.mkdir(parents=True)
    placed = placed_context(work, worker, scratch)
    received = scratch / ".inputs" / "params-file" / "0" / "model.onnx"
    assert placed.params.model.path == received  # type: ignore[union-attr]
    assert received.read_bytes() == b"an onnx model"
    assert placed.farm.devices["board"].key_file == worker / "lab" / "exp" / "keys" / "board"
    assert placed.farm.devices["board"].known_hosts == worker / "lab" / "exp" / "keys" / \
        "known_hosts"
    assert placed.layout.root == scratch
    assert placed.params_path.read_text() == BROUGHT
    assert placed.farm_path.read_text() == GATEWAY_FARM
    # An experiment outside the orchestrator's project: its paths resolve in the scratch.
    outside = tmp_path / "elsewhere"
    write_tiny_config(outside, TINY_PARAMS, GATEWAY_FARM)
    monkeypatch.chdir(orchestrator)  # the project a deployed run's process runs in
    work = placed_work(Context.load(outside / "params.yaml", outside / "farm.yaml"),
                       "benchmark", "board")
    assert (work.params_home, work.farm_home, work.inputs) == (None, None, {})
    elsewhere = worker / ".edgeflow" / "placed" / "benchmark-1"
    elsewhere.mkdir()
    assert placed_context(work, worker, elsewhere).farm.devices["board"].key_file == \
        elsewhere / "keys" / "board"


def test_the_outputs_a_placed_run_listed_replace_the_experiments_and_one_it_did_not_goes(
        tmp_path: Path) -> None:
    """The lifecycle's side: the pointers come from the flow run's table artifact, each
    output is replaced whole, and an output of the step the run did not send (a file an
    earlier run left) is removed rather than kept beside the new ones."""
    from prefect import flow
    from prefect.artifacts import create_table_artifact

    from flows.exchange import send
    from flows.placement import receive_outputs
    from flows.steps import Context

    remote = tmp_path / "remote"
    worker = dvc_project(tmp_path / "worker", remote)
    made = worker / "made" / "models" / "base"
    made.mkdir(parents=True)
    (made / "model.keras").write_bytes(b"new weights")
    (worker / "made" / "train_history.json").write_text("[]")
    sent = send(worker, {"models/base": made,
                         "metrics/train_history.json": worker / "made" / "train_history.json"})

    @flow
    def placed_run() -> None:
        create_table_artifact(table=[{"output": name, **pointer}
                                     for name, pointer in sent.pointers.items()])

    state = placed_run(return_state=True)
    experiment = dvc_project(tmp_path / "orchestrator", remote) / "exp"
    write_tiny_config(experiment)
    (experiment / "models" / "base").mkdir(parents=True)
    (experiment / "models" / "base" / "old.bin").write_bytes(b"old")
    (experiment / "metrics").mkdir()
    (experiment / "metrics" / "train.json").write_text('{"accuracy": 0.1}')
    ctx = Context.load(experiment / "params.yaml", experiment / "farm.yaml")
    receive_outputs(ctx, "train", None, state.state_details.flow_run_id)
    assert sorted(path.name for path in (experiment / "models" / "base").iterdir()) == [
        "model.keras"]
    assert (experiment / "models" / "base" / "model.keras").read_bytes() == b"new weights"
    assert (experiment / "metrics" / "train_history.json").read_text() == "[]"
    assert not (experiment / "metrics" / "train.json").exists()


def test_a_worker_whose_remote_is_not_the_orchestrators_names_both(tmp_path: Path) -> None:
    from flows.exchange import ExchangeFailed
    from flows.placement import placed_context, placed_work
    from flows.steps import Context

    orchestrator = dvc_project(tmp_path / "orchestrator", tmp_path / "team-remote")
    worker = dvc_project(tmp_path / "worker", tmp_path / "own-remote")
    experiment = orchestrator / "exp"
    write_tiny_config(experiment, BROUGHT)
    (experiment / "brought").mkdir()
    (experiment / "brought" / "model.onnx").write_bytes(b"an onnx model")
    work = placed_work(Context.load(experiment / "params.yaml", experiment / "farm.yaml"),
                       "train", None)
    scratch = worker / "scratch"
    scratch.mkdir()
    with pytest.raises(ExchangeFailed) as failure:
        placed_context(work, worker, scratch)
    message = str(failure.value)
    assert message.startswith("receiving params-file/0/model.onnx through DVC remote team "
                              f"({tmp_path / 'own-remote'}): ")
    assert message.endswith(f"(the orchestrator sent them to DVC remote team "
                            f"({tmp_path / 'team-remote'}))")
    assert "\n" not in message


@pytest.mark.parametrize("part, name, value", [
    ("files", "tasks/train/__init__.py", "0" * 64), ("libraries", "keras", "0.0.1")])
def test_a_worker_whose_code_is_not_the_orchestrators_refuses_the_step(
        part: str, name: str, value: str) -> None:
    """The outputs would be cached under the orchestrator's code key: refused, naming
    what differs, before anything is received."""
    from flows.code_manifests import code_manifest
    from flows.placement import PlacedWork, PlacementUnready, step
    from flows.steps import STEPS

    code = code_manifest(STEPS["train"])
    assert name in code[part]
    code = {**code, part: {**code[part], name: value}}
    work = PlacedWork("train", None, TINY_PARAMS, "devices: {}\n", None, None, {}, code, "")
    with pytest.raises(PlacementUnready, match=rf"^train: this clone's code differs from the "
                                               rf"orchestrator's \({re.escape(name)}\): bring "
                                               rf"both clones to the same commit"):
        step.fn(asdict(work))


@dataclass(frozen=True)
class Machine:
    """A clone in a folder of its own, with its own PREFECT_HOME, pool and worker."""

    pool: str
    clone: Path
    worker_log: Path


def _dvc_clone(clone: Path, orchestrator: Path) -> None:
    """A DVC project in ``clone`` with the orchestrator's ``.dvc/config``, as ``git pull``
    brings the committed remote to a teammate's clone."""
    subprocess.run([DVC, "init", "--no-scm", "-q"], cwd=clone, check=True)
    shutil.copy(orchestrator / ".dvc" / "config", clone / ".dvc" / "config")


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory,
         s3_remote: S3Server) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("placement")
    orchestrator = root / "orchestrator"
    copy_project_files(PROJECT, orchestrator)
    base = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
            "PREFECT_UI_ENABLED": "false", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            **s3_remote.credentials()}
    for name in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI"):
        base.pop(name, None)
    # The team's DVC remote on the S3 store (README's line), the only thing the clones
    # share besides the Prefect server.
    subprocess.run([DVC, "init", "--no-scm", "-q"], cwd=orchestrator, check=True)
    run_lines(team_block("s3://")[:1], orchestrator, {
        **base, "DVC_BUCKET": s3_remote.bucket, "S3_ENDPOINT": s3_remote.endpoint})
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
            _dvc_clone(clone, orchestrator)
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


def _dvc_key(path: Path) -> str:
    """Where DVC keeps ``path``'s content in a remote: ``files/md5/<2>/<30>``."""
    digest = hashlib.md5(path.read_bytes()).hexdigest()
    return f"files/md5/{digest[:2]}/{digest[2:]}"


def test_a_deployed_run_trains_on_the_trainers_worker_and_benchmarks_on_the_gateways(
        team: dict[str, Any], s3_remote: S3Server) -> None:
    """No disk shared: the experiment is in the orchestrator's clone, the workers get
    what they read from the S3 store and send back what they wrote, and only that."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tasks.core.contracts.summary import read_summary

    experiment = team["orchestrator"] / "experiment"
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
    table = sorted((run.parameters["work"]["step_name"]
                    + (f"[{run.parameters['work']['device']}]"
                       if run.parameters["work"].get("device") else ""),
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
    # What the placed runs were given names no path of the orchestrator's machine.
    for run in children:
        assert str(team["root"]) not in json.dumps(run.parameters)
        assert run.parameters["work"]["params_home"] == "experiment"
    # The trained model and the gateway's results came back through the store: each file
    # here is an object there.
    from flows.placement import listed_outputs

    with temporary_settings({PREFECT_API_URL: team["url"]}):
        for row in table:  # what each placed run sent back, as its artifact lists it
            run = next(run for run in children if run.name == row[1])
            for output, pointer in sorted(listed_outputs(run.id).items()):
                print(f"{row[0]:<18} sent {output:<28} {pointer['md5']} "
                      f"{pointer.get('nfiles', 1)} files {pointer['size']} B")
    keys = object_keys(s3_remote)
    arrived = [path for folder in ("models/base", "results/local", "data/prepared")
               for path in sorted((experiment / folder).rglob("*")) if path.is_file()]
    assert len(arrived) >= 6
    assert [path for path in arrived if f"edgeflow/{_dvc_key(path)}" not in keys] == []
    # No clone but the orchestrator's holds the experiment's files, nor is left with a
    # scratch experiment; the gateway keeps its local device's work folder where its
    # clone's experiment would (farm.yaml's relative workdir, resolved in its clone).
    for machine in team["machines"].values():
        kept = machine.clone / "experiment"
        names = sorted(path.name for path in kept.iterdir()) if kept.exists() else []
        assert names == ([".edgeflow"] if machine.pool == "gw-local" else [])
        assert list((machine.clone / ".edgeflow" / "placed").iterdir()) == []
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
        tiny_project: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """farm.yaml's ``task_retries`` hold on the gateway's worker too: the step flow's
    device task is retried (its board's sshd down), then keeps the unreachable results
    and completes, as the lifecycle's own task does (tests/flows/test_retries.py); the
    results reach the orchestrator's experiment through the remote."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.placement import placed_work, receive_outputs, step
    from flows.steps import Context
    from tests.flows.test_retries import _records, dead_board_experiment
    from tests.sshd import sshd_available

    if not sshd_available():
        pytest.skip("OpenSSH server not installed")
    experiment, farm = dead_board_experiment(tiny_project, tmp_path / "orchestrator")
    dvc_project(tmp_path / "orchestrator", tmp_path / "remote")
    gateway = dvc_project(tmp_path / "gateway", tmp_path / "remote")
    ctx = Context.load(experiment / "params.yaml", farm)
    work = placed_work(ctx, "benchmark", "board")
    assert sorted(work.inputs) == ["data/prepared/test.npz", "models/variants"]
    monkeypatch.chdir(gateway)
    state = step(asdict(work), return_state=True)
    assert state.is_completed(), state.message
    flow_run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(any_=[flow_run_id])))
    assert [(task.name.rsplit("-", 1)[0], task.run_count) for task in tasks] == [
        ("benchmark[board]", 2)]
    assert not (experiment / "results" / "board").exists()  # not written here, but there
    receive_outputs(ctx, "benchmark", "board", flow_run_id)
    assert _records(experiment)["tflite-fp32"]["error"].startswith("device unreachable: ")
    assert list((gateway / ".edgeflow" / "placed").iterdir()) == []
