"""MLflow for a team, as README's "For a team" runs it: a real PostgreSQL, two real
tracking servers on it started by the README's ``make mlflow-server`` line (one database
each, artifacts proxied into a folder of each), and the README's
``MLFLOW_TRACKING_URI=... edgeflow run`` of the tiny experiment against the first, then
the second. Each server gets the lifecycle's runs and its logged models; the first, where
the release happened, the registry version and the device's alias; switching servers runs
track again (the tracking URI is in its cache key) instead of "every step cached".

The experiment is the session's tiny project (prepared, trained, converted), its first
three steps stamped as done (what ``edgeflow step`` leaves), so the runs do the rest.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import postgres
from tests.sshd import free_port
from tests.team_readme import run_lines, team_block

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SERVER_WAIT_SECONDS = 180  # schema migrations on a new database: ~20 s here, more when busy


@pytest.fixture(scope="module")
def database() -> Iterator[postgres.Postgres]:
    reason = postgres.unavailable()
    if reason:
        pytest.skip(reason)
    server = postgres.start_postgres(("team_a", "team_b"))
    yield server
    postgres.stop_postgres(server)


def _make_project(folder: Path) -> Path:
    """A folder where the README's ``make`` line runs this installation: the Makefile, a
    ``.venv`` that is this interpreter's environment, and the files its install target
    depends on dated before its stamp (so make installs nothing)."""
    installed = Path(sys.prefix) / ".installed"
    if not installed.is_file():
        pytest.skip(f"{sys.prefix} is not an environment `make install` made (no .installed)")
    folder.mkdir(parents=True)
    for name in ("Makefile", "pyproject.toml", "requirements.lock"):
        shutil.copy(REPO / name, folder / name)
        os.utime(folder / name, (0, 0))
    (folder / ".venv").symlink_to(sys.prefix)
    return folder


def _health(uri: str) -> bool:
    try:
        return urllib.request.urlopen(f"{uri}/health", timeout=2).read() == b"OK"
    except OSError:
        return False


def _stop(processes: list[subprocess.Popen]) -> None:
    """Each server's whole process group (make, mlflow, its uvicorn worker), by its id:
    SIGTERM to all, SIGKILL to what is left after a few seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for process in processes:
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(p.poll() is None for p in processes):
            time.sleep(0.1)
    for process in processes:
        process.wait(timeout=15)


@pytest.fixture(scope="module")
def servers(database: postgres.Postgres, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[dict[str, dict[str, Any]]]:
    """Two tracking servers, ``a`` and ``b``, started at once by README's line."""
    root = tmp_path_factory.mktemp("team-mlflow")
    project = _make_project(root / "project")
    (line,) = team_block("make mlflow-server")
    started: dict[str, dict[str, Any]] = {}
    try:
        for name in ("a", "b"):
            port, artifacts = free_port(), root / f"artifacts-{name}"
            env = {**os.environ, "MLFLOW_DATABASE": database.uri(f"team_{name}"),
                   "MLFLOW_PORT": str(port), "MLFLOW_ARTIFACTS": str(artifacts),
                   "PGPASSWORD": postgres.PASSWORD}
            with open(root / f"server-{name}.log", "w") as log:
                process = subprocess.Popen(["bash", "-c", line], cwd=project, env=env,
                                           stdout=log, stderr=subprocess.STDOUT,
                                           start_new_session=True)
            started[name] = {"uri": f"http://127.0.0.1:{port}", "process": process,
                             "artifacts": artifacts, "log": root / f"server-{name}.log"}
        deadline = time.monotonic() + SERVER_WAIT_SECONDS
        for name, server in started.items():
            while not _health(server["uri"]):
                assert server["process"].poll() is None and time.monotonic() < deadline, (
                    f"server {name} did not come up: {server['log'].read_text()[-1500:]}")
                time.sleep(0.5)
        yield started
    finally:
        _stop([server["process"] for server in started.values()])


@pytest.fixture(scope="module")
def experiment(tiny_project: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny project whose prepare, train, optimize (no pruning: nothing to
    do) and convert are stamped done."""
    from flows.caching import record_step
    from flows.steps import STEPS, Context

    root = tmp_path_factory.mktemp("team-experiment") / "tiny"
    shutil.copytree(tiny_project.layout.root, root, ignore=shutil.ignore_patterns("mlflow"))
    ctx = Context.load(root / "params.yaml", root / "farm.yaml")
    STEPS["optimize"].run(ctx)
    for step in ("prepare", "train", "optimize", "convert"):
        record_step(ctx, step)
    return root


def _run_against(experiment: Path, uri: str) -> str:
    """README's run line against ``uri``: what it printed."""
    (line,) = team_block("edgeflow run")
    env = {"TEAM_MLFLOW": uri, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(REPO)}
    return run_lines([line], experiment, env, timeout=600)[0].stdout


def _executed(said: str) -> list[str]:
    (line,) = [line for line in said.splitlines() if line.startswith("executed: ")]
    return line.removeprefix("executed: ").split(", ")


def _store(uri: str, experiment: Path) -> dict[str, Any]:
    """What a teammate's MlflowClient sees on the server: the lifecycle runs and their
    nested runs, the logged models, and the registered model's device alias."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from tasks.release.registry import alias, registered_model_name
    from tasks.core.layout import Layout

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    found = client.get_experiment_by_name("edgeflow")
    if found is None:
        return {"parents": [], "nested": [], "models": [], "alias": None}
    runs = client.search_runs([found.experiment_id])
    parents = [run for run in runs if run.data.tags.get("edgeflow.kind") == "lifecycle"]
    nested = [run for run in runs if "mlflow.parentRunId" in run.data.tags]
    models = client.search_logged_models(experiment_ids=[found.experiment_id])
    try:
        version = client.get_model_version_by_alias(
            registered_model_name(Layout(experiment)), alias("local"))
    except MlflowException:
        version = None
    return {"parents": parents, "nested": nested, "models": models, "alias": version}


def test_readme_team_server_gets_the_runs_then_a_second_server_gets_them_too(
        servers: dict[str, dict[str, Any]], experiment: Path) -> None:
    first = _run_against(experiment, servers["a"]["uri"])
    assert _executed(first) == ["benchmark[local]", "select", "track", "release[local]"]
    a = _store(servers["a"]["uri"], experiment)
    assert len(a["parents"]) == 1 and a["parents"][0].info.status == "FINISHED"
    assert {run.data.params["variant"] for run in a["nested"]} == {
        "tflite-fp32", "onnx-fp32", "openvino-fp32"}
    assert {model.name for model in a["models"]} == {"tflite-fp32", "onnx-fp32", "openvino-fp32"}
    assert a["alias"] is not None  # the release registered its version and moved the alias
    # Artifacts went through the server into its destination, not to a client's path.
    assert any(path.is_file() for path in servers["a"]["artifacts"].rglob("*"))
    assert all(model.artifact_location.startswith("mlflow-artifacts:") for model in a["models"])
    record = json.loads((experiment / "metrics" / "mlflow_run.json").read_text())
    assert record["tracking_uri"] == servers["a"]["uri"]
    release = (experiment / "releases" / "local" / "release.json").read_text()
    assert json.loads(release)["current"]["mlflow"]["tracking_uri"] == servers["a"]["uri"]
    assert str(experiment) not in release.split('"attempts"')[0]

    # The second server named with a login in its URI (as a server behind basic auth
    # is): it reaches the server, and is recorded without it.
    second = _run_against(experiment, servers["b"]["uri"].replace("http://", "http://alice:s3cret@"))
    assert _executed(second) == ["track", "release[local]"], second  # not "every step cached"
    b = _store(servers["b"]["uri"], experiment)
    assert len(b["parents"]) == 1 and b["parents"][0].info.status == "FINISHED"
    assert len(b["nested"]) == 3 and len(b["models"]) == 3
    assert b["parents"][0].info.run_id != a["parents"][0].info.run_id
    assert len(_store(servers["a"]["uri"], experiment)["parents"]) == 1  # A got nothing more
    record = json.loads((experiment / "metrics" / "mlflow_run.json").read_text())
    assert record["tracking_uri"] == servers["b"]["uri"]
    assert record["parent_run_id"] == b["parents"][0].info.run_id
    for committed in ("metrics/mlflow_run.json", "releases/local/release.json"):
        assert "s3cret" not in (experiment / committed).read_text(), committed
    for name, store in (("a", a), ("b", b)):
        print(f"server {name} ({servers[name]['uri']}): lifecycle runs "
              f"{[run.info.run_name for run in store['parents']]}, nested "
              f"{sorted(run.info.run_name for run in store['nested'])}, logged models "
              f"{sorted(model.name for model in store['models'])}, alias device-local -> "
              f"{'version ' + str(store['alias'].version) if store['alias'] else 'none'}")
    print(f"run against a: {[line for line in first.splitlines() if line.startswith('executed')]}")
    print(f"run against b: {[line for line in second.splitlines() if line.startswith('executed')]}")
