"""Deployments as a person runs them: a fresh copy of the project, ``edgeflow serve``
(what ``make serve`` calls: a real Prefect server and worker on loopback, a free port, a
PREFECT_HOME of the test's own; ``prefect deploy --all`` from the project folder as
prefect.yaml says), the on-change deployment run on a tiny experiment (its parameters
overridden for the run), then the CLI and the deployment again on the same experiment:
one cache, nothing executes twice, in either order. ``edgeflow stop`` ends it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from flows.serve import _start_time
from tests.helpers import copy_project_files, final_task_runs
from tests.team_readme import run_lines, team_block
from tests.tiny import TINY_FARM, TINY_PARAMS, write_tiny_config

BIN = Path(sys.executable).parent
# What a clone holds that a deployment needs (the code, the declarations), nothing built.
PROJECT_FILES = ("tasks", "flows", "prefect.yaml", "params.yaml", "farm.yaml", "dvc.yaml",
                 "requirements.lock", "pyproject.toml", "automations")
STEPS = ["prepare", "train", "optimize", "convert", "benchmark[local]", "select", "track",
               "release[local]"]
# One format keeps the cold run short; the rest of the lifecycle is the tiny one's. The
# nightly deployment gates on the run before: a 5-microsecond model's p50 on a machine
# that runs other tests moved +45% with the intervals apart (a real gate failure, not
# what these tests are about), so latency is not gated here; accuracy and size are.
PARAMS = TINY_PARAMS.replace("formats: {tflite: [fp32], onnx: [fp32], openvino: [fp32]}",
                             "formats: {tflite: [fp32]}") + "compare: {latency_increase: 100}\n"


@dataclass(frozen=True)
class Served:
    project: Path
    url: str
    env: dict[str, str]
    serve_output: str


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _edgeflow(*args: str, cwd: Path, env: dict[str, str],
              timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "edgeflow"), *args], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("deployment")
    project = root / "clone"
    copy_project_files(PROJECT_FILES, project)
    # No UI: copying its files into a fresh PREFECT_HOME is a third of the server's start.
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
           "PREFECT_HOME": str(root / "prefect-home"), "PREFECT_UI_ENABLED": "false",
           # A run queued behind a deployment's concurrency limit is offered the slot again
           # after this long (Prefect's default: 30 s).
           "PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS": "1"}
    for name in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI"):
        env.pop(name, None)
    port = _free_port()
    started = _edgeflow("serve", "--port", str(port), cwd=project, env=env)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        yield Served(project, f"http://127.0.0.1:{port}/api", env, started.stdout)
    finally:
        pids = [json.loads((project / ".edgeflow" / "serve" / f"{name}.json").read_text())["pid"]
                for name in ("worker", "server")]
        stopped = _edgeflow("stop", cwd=project, env=env, timeout=120)
        assert stopped.returncode == 0, stopped.stderr
        assert stopped.stdout.splitlines() == [f"worker: stopped (pid {pids[0]})",
                                               f"server: stopped (pid {pids[1]})"]
        assert [_start_time(pid) for pid in pids] == [None, None]  # exited
        again = _edgeflow("stop", cwd=project, env=env, timeout=120)
        assert again.stdout.splitlines() == ["worker: not running", "server: not running"]


@pytest.fixture(scope="module")
def experiment(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("deployed-experiment")
    write_tiny_config(root, PARAMS, TINY_FARM)
    return root


def _run_deployment(served: Served, experiment: Path) -> tuple[Any, list[Any], list[Any]]:
    """Trigger on-change for ``experiment`` and wait for it: (flow run, its task runs,
    its artifacts)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: served.url}):
        flow_run = run_deployment(
            "edgeflow-lifecycle/on-change", timeout=600, poll_interval=1,
            parameters={"params_path": str(experiment / "params.yaml"),
                        "farm_path": str(experiment / "farm.yaml")})
        with get_client(sync_client=True) as client:
            tasks = final_task_runs(client, flow_run.id, STEPS)
            artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run.id])))
    return flow_run, tasks, artifacts


def _steps(tasks: list[Any]) -> dict[str, str]:
    """State name per lifecycle step of one flow run."""
    return {task.name.rsplit("-", 1)[0]: task.state.name for task in tasks
            if task.name.rsplit("-", 1)[0] in STEPS}


@pytest.fixture(scope="module")
def first_deployed_run(served: Served, experiment: Path) -> tuple[Any, list[Any], list[Any]]:
    return _run_deployment(served, experiment)


def test_serve_starts_the_server_pool_deployments_and_worker_once(served: Served) -> None:
    folder = served.project / ".edgeflow" / "serve"
    lines = served.serve_output.splitlines()
    assert lines[0].startswith("server: started (pid ") and served.url in lines[0]
    assert lines[1:4] == [
        "device limits: none yet (slots freed)",
        "work pool edgeflow: created (process)",
        "deployments: edgeflow-lifecycle/nightly-rebenchmark, "
        f"edgeflow-lifecycle/on-change (run from {served.project})"]
    assert lines[4].startswith("worker: started (pid ")
    assert {"server.json", "server.log", "worker.json", "worker.log", "deploy.log"} <= {
        path.name for path in folder.iterdir()}
    again = _edgeflow("serve", "--port", served.url.split(":")[-1].split("/")[0],
                      cwd=served.project, env=served.env)
    assert again.returncode == 0, again.stderr
    server_pid = lines[0].split("pid ")[1].split(")")[0]
    worker_pid = lines[4].split("pid ")[1].split(")")[0]
    assert again.stdout.splitlines()[:4] == [
        f"server: already running (pid {server_pid}) at {served.url}",
        "work pool edgeflow: exists (process)",
        lines[3].replace("deployments: ", "deployments: up to date: "),
        f"worker: already running (pid {worker_pid}) on pool edgeflow"]


def test_a_deployed_run_executes_every_step_in_the_experiment(
        first_deployed_run: tuple[Any, list[Any], list[Any]], experiment: Path,
        served: Served) -> None:
    from tasks.core.contracts.summary import read_summary

    flow_run, tasks, _ = first_deployed_run
    assert flow_run.state.is_completed(), flow_run.state.message
    assert _steps(tasks) == {step: "Completed" for step in STEPS}
    summary = read_summary(experiment / "reports" / "summary.json").document()
    assert [(row["variant"], row["status"]) for row in summary["results"]] == [
        ("tflite-fp32", "pass")]
    assert summary["recommendations"] == {"local": "tflite-fp32"}
    assert flow_run.state.message.startswith("1 pass, 0 fail, 0 error, 0 skipped")
    # Everything the run keeps is in the experiment, nothing in the project it ran from.
    assert sorted(path.name for path in (experiment / ".edgeflow" / "prefect" / "results").iterdir()) \
        == sorted(path.name for path in (experiment / ".edgeflow" / "prefect" / "keys").iterdir())
    assert not (served.project / "reports").exists()
    assert not (served.project / ".edgeflow" / "prefect").exists()


def test_each_benchmark_and_release_holds_its_device_tag_under_a_limit_of_one(
        first_deployed_run: tuple[Any, list[Any], list[Any]], served: Served) -> None:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    _, tasks, _ = first_deployed_run
    tags = {task.name.rsplit("-", 1)[0]: set(task.tags) for task in tasks}
    assert tags["benchmark[local]"] == tags["release[local]"] == {"device:local"}
    assert all(not tag.startswith("device:") for name, found in tags.items()
               if name not in {"benchmark[local]", "release[local]"} for tag in found)
    with temporary_settings({PREFECT_API_URL: served.url}), \
            get_client(sync_client=True) as client:
        limit = client.read_concurrency_limit_by_tag("device:local")
    assert limit.concurrency_limit == 1


def test_the_run_page_shows_results_and_recommendations(
        first_deployed_run: tuple[Any, list[Any], list[Any]], experiment: Path) -> None:
    _, _, artifacts = first_deployed_run
    by_key = {artifact.key: artifact for artifact in artifacts}
    assert set(by_key) == {"edgeflow-results", "edgeflow-recommendations"}
    table = by_key["edgeflow-results"]
    assert table.type == "table"
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    assert [(row["device"], row["variant"], row["status"]) for row in rows] == [
        ("local", "tflite-fp32", "pass")]
    # No reason; a note only where other load disturbed the run (the tests run in parallel).
    notes = rows[0]["reasons / notes"]
    assert float(rows[0]["p90 ms"]) > 0
    assert notes == "—" or notes.startswith("conditions changed during the run: "), notes
    markdown = by_key["edgeflow-recommendations"]
    assert markdown.type == "markdown"
    assert "- **local**: `tflite-fp32` (the only variant of 1 that meets every requirement " \
           "(latency_p50_ms " in markdown.data
    assert "Results: 1 pass, 0 fail, 0 error, 0 skipped." in markdown.data
    assert "Releases of this run: local: released: " in markdown.data
    assert str(experiment) in markdown.data


def _mlflow_runs(experiment: Path) -> list[Any]:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{experiment / 'mlflow' / 'mlflow.db'}")
    return client.search_runs([client.get_experiment_by_name("edgeflow").experiment_id])


def test_the_deployed_run_lands_in_the_experiments_mlflow_store(
        first_deployed_run: tuple[Any, list[Any], list[Any]], experiment: Path) -> None:
    runs = _mlflow_runs(experiment)
    parents = [run for run in runs if run.data.tags.get("edgeflow.kind") == "lifecycle"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = [run for run in runs
                if run.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert [(run.data.params["variant"], run.data.params["device"]) for run in children] == [
        ("tflite-fp32", "local")]
    assert children[0].data.metrics["latency_p90_ms"] > 0


def test_cli_and_deployment_share_one_cache_in_either_order(
        first_deployed_run: tuple[Any, list[Any], list[Any]], experiment: Path,
        served: Served) -> None:
    """After the deployed run, the CLI executes nothing; after the CLI, a deployed run
    executes nothing: the same records, results and stamps. The CLI runs on the served
    server as the README says (PREFECT_API_URL); the cache is in the experiment's files,
    whichever server (tests/flows/test_lifecycle.py runs the CLI on temporary ones)."""
    env = {**served.env, "PREFECT_API_URL": served.url}
    cli = _edgeflow("run", "--params", str(experiment / "params.yaml"), cwd=experiment, env=env)
    assert cli.returncode == 0, cli.stdout[-2000:] + cli.stderr[-2000:]
    assert "executed: nothing (every step cached)" in cli.stdout
    assert f"cached:   {', '.join(STEPS)}" in cli.stdout
    assert "Traceback" not in cli.stdout + cli.stderr

    flow_run, tasks, artifacts = _run_deployment(served, experiment)
    assert flow_run.state.is_completed(), flow_run.state.message
    assert _steps(tasks) == {step: "Cached" for step in STEPS}
    # A cached benchmark touches no board: it takes no device slot.
    assert not any(tag.startswith("device:") for task in tasks for tag in task.tags)
    assert {artifact.key for artifact in artifacts} == {"edgeflow-results",
                                                        "edgeflow-recommendations"}
    assert len([run for run in _mlflow_runs(experiment)
                if run.data.tags.get("edgeflow.kind") == "lifecycle"]) == 1  # track cached


def _submit_together(served: Served, experiment: Path, deployments: tuple[str, ...],
                     hold_lock: bool = False, ids: list[Any] | None = None
                     ) -> list[tuple[Any, list[str]]]:
    """Start a run of each deployment (for ``experiment``) at once (or take the runs
    ``ids`` started), wait for every one to end: (final flow run, the names of its
    states in order) each. ``hold_lock``: hold the experiment's lock here (as a CLI run
    would) until every run is Running."""
    import time
    from contextlib import nullcontext

    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tasks.core.locks import experiment_lock

    parameters = {"params_path": str(experiment / "params.yaml"),
                  "farm_path": str(experiment / "farm.yaml")}

    def wait(ids: list[Any], done: Any) -> list[Any]:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            runs = [client.read_flow_run(run_id) for run_id in ids]
            if all(run.state and done(run.state) for run in runs):
                break
            time.sleep(0.5)
        return runs

    with temporary_settings({PREFECT_API_URL: served.url}), \
            get_client(sync_client=True) as client:
        with experiment_lock(experiment / ".edgeflow") if hold_lock else nullcontext():
            ids = ids or [run_deployment(name, timeout=0, parameters=parameters).id
                          for name in deployments]
            if hold_lock:
                wait(ids, lambda state: state.is_running() or state.is_final())
                time.sleep(1)
        runs = wait(ids, lambda state: state.is_final())
        return [(run, [state.name for state in sorted(client.read_flow_run_states(run.id),
                                                      key=lambda state: state.timestamp)])
                for run in runs]

def test_a_second_run_of_a_deployment_waits_for_the_first_then_completes(
        first_deployed_run: tuple[Any, list[Any], list[Any]], experiment: Path,
        served: Served) -> None:
    """prefect.yaml: concurrency_limit 1, collision_strategy ENQUEUE: the second run is
    held Scheduled as AwaitingConcurrencySlot while the first runs, then runs. Started
    as README's "For a team" says."""
    import re

    lines = team_block("prefect deployment run")
    done = run_lines(lines, served.project, {**served.env, "PREFECT_API_URL": served.url,
                                             "EXPERIMENT": str(experiment)})
    print("\n".join(f"$ {line}\n{result.stdout}" for line, result in zip(lines, done)))
    ids = re.findall(r"UUID: ([0-9a-f-]{36})", done[0].stdout)
    assert len(ids) == 2, done[0].stdout
    runs = _submit_together(served, experiment, (), ids=ids)
    for run, history in runs:
        print(run.name, history)
    assert [run.state.name for run, _ in runs] == ["Completed", "Completed"]
    queued = [history for _, history in runs if "AwaitingConcurrencySlot" in history]
    assert len(queued) == 1, [history for _, history in runs]
    # Queued before it ever ran, then run to completion.
    assert queued[0].index("AwaitingConcurrencySlot") < queued[0].index("Running")
    assert queued[0][-1] == "Completed"
    first, second = sorted((run for run, _ in runs), key=lambda run: run.start_time)
    assert second.start_time >= first.end_time  # one at a time


def test_runs_of_one_experiment_from_two_deployments_queue_on_its_lock(
        first_deployed_run: tuple[Any, list[Any], list[Any]], experiment: Path,
        served: Served) -> None:
    """The nightly re-benchmark and an on-change run of one experiment, started together
    while a CLI run holds the experiment: each deployment's own limit lets both run; each
    waits for the experiment's lock (a deployed run waits for it), and neither fails."""
    runs = _submit_together(served, experiment, ("edgeflow-lifecycle/nightly-rebenchmark",
                                                 "edgeflow-lifecycle/on-change"), hold_lock=True)
    for run, history in runs:
        print(run.name, history, run.state.message)
    assert [run.state.name for run, _ in runs] == ["Completed", "Completed"], \
        [run.state.message for run, _ in runs]
    first, second = sorted((run for run, _ in runs), key=lambda run: run.end_time)
    assert second.start_time < first.end_time  # they met: one waited for the other


def test_a_failed_run_sends_the_alert_of_readmes_automation(served: Served) -> None:
    """README's "For a team" lines save a webhook block and create the automation of
    automations/notify-on-failure.yaml; a deployed run that fails (a params file that
    is not there) posts its alert to the webhook (a receiver on loopback)."""
    import json as json_module
    import queue
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    received: queue.Queue[dict[str, Any]] = queue.Queue()

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.put(json_module.loads(body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    receiver = HTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    try:
        env = {**served.env, "PREFECT_API_URL": served.url,
               "ALERT_WEBHOOK": f"http://127.0.0.1:{receiver.server_port}/hook"}
        done = run_lines(team_block("automation create"), served.project, env)
        assert "Created automation 'edgeflow-lifecycle-failed'" in " ".join(
            done[-1].stdout.split()), done[-1].stdout
        with temporary_settings({PREFECT_API_URL: served.url}):
            failed = run_deployment("edgeflow-lifecycle/on-change", timeout=300, poll_interval=1,
                                    parameters={"params_path": "/nowhere/params.yaml"})
        assert failed.state.is_failed()
        deadline = time.monotonic() + 90
        alert = None
        while alert is None and time.monotonic() < deadline:
            try:
                alert = received.get(timeout=1)
            except queue.Empty:
                pass
        assert alert is not None, "no alert reached the webhook"
        print("alert:", alert["text"])
        assert alert["text"].startswith(f"edgeflow: {failed.name} failed: ")
        assert f"Flow run {failed.name} of edgeflow-lifecycle ended Failed" in alert["text"]
    finally:
        receiver.shutdown()
