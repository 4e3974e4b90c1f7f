"""What a run that has nothing to do costs, each way of running the lifecycle, side by side.

In a scratch copy of this project (its code, prefect.yaml, dvc.yaml; the tiny
experiment of ``tests/tiny.py`` as its params.yaml/farm.yaml; ``dvc init``, then the
project's own ``.dvc/config``) it times:

- ``cold``: the first ``edgeflow run`` (every step executes; temporary Prefect server);
- ``no-op run, temporary server``: ``edgeflow run`` again, with no PREFECT_API_URL (the
  CLI starts and stops a server of its own);
- ``no-op run, running server``: the same with PREFECT_API_URL of ``edgeflow serve``;
- ``Prefect floor``: a bare Prefect flow of as many cached tasks on that server, in a
  new process like the CLI: what any Prefect flow costs there, the rest is edgeflow's;
- ``no-op deployment run``: ``on-change`` triggered on the served server until its final
  state (the worker's poll, the flow-run process, the pull step, the flow);
- ``no-op dvc repro``.

Each no-op is run ``--repeats`` times (the median is shown, with the slowest) and checked
to have executed nothing; ``edgeflow serve``'s own start is shown too (not a target).
Prefect's home (its database) is a scratch folder; the server is on a free loopback
port and stopped at the end.

    .venv/bin/python benchmarks/cache.py [--repeats 3] [--keep]
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flows.steps import STEPS  # noqa: E402
from tests.helpers import copy_project_files, final_task_runs  # noqa: E402
from tests.tiny import write_tiny_config  # noqa: E402

BIN = Path(sys.executable).parent
PROJECT_FILES = ("tasks", "flows", "prefect.yaml", "dvc.yaml", "requirements.lock",
                 "pyproject.toml")
TARGETS = {"no-op run, running server": 2.0, "no-op run, temporary server": 6.0,
           "no-op dvc repro": 1.0}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _command(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, cwd=cwd, env=env, text=True, capture_output=True, check=False,
                          timeout=1200)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}):\n"
                         f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


def _timed(action: Callable[[], str]) -> tuple[float, str]:
    start = time.perf_counter()
    note = action()
    return time.perf_counter() - start, note


def make_project(folder: Path) -> Path:
    project = folder / "project"
    copy_project_files(PROJECT_FILES, project)
    write_tiny_config(project)
    return project


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="edgeflow-cache-bench-"))
    project = make_project(scratch)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
           "PREFECT_HOME": str(scratch / "prefect-home"), "TF_CPP_MIN_LOG_LEVEL": "2"}
    for name in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI"):
        env.pop(name, None)
    edgeflow = str(BIN / "edgeflow")
    _command([str(BIN / "dvc"), "init", "--no-scm", "--quiet"], project, env)
    # The project's own DVC settings (no usage analytics: a background report process
    # per command, a fifth of a no-op repro), on a folder without git.
    shutil.copyfile(ROOT / ".dvc" / "config", project / ".dvc" / "config")
    _command([str(BIN / "dvc"), "config", "core.no_scm", "true"], project, env)

    def run(run_env: dict[str, str]) -> Callable[[], str]:
        def action() -> str:
            out = _command([edgeflow, "run"], project, run_env).stdout
            return "executed nothing" if "executed: nothing (every step cached)" in out \
                else "EXECUTED: " + next(line for line in out.splitlines()
                                         if line.startswith("executed:"))
        return action

    figures: dict[str, list[float]] = {}
    notes: dict[str, str] = {}

    def measure(name: str, action: Callable[[], str], repeats: int) -> None:
        for _ in range(repeats):
            seconds, note = _timed(action)
            figures.setdefault(name, []).append(seconds)
            if note != "executed nothing" or name not in notes:
                notes[name] = note
            print(f"  {name}: {seconds:.2f} s ({note})", flush=True)

    measure("cold lifecycle (tiny)", lambda: "every step executed"
            if "executed: prepare, train" in _command([edgeflow, "run"], project, env).stdout
            else "NOT every step executed", 1)
    measure("no-op run, temporary server", run(env), args.repeats)

    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    measure("edgeflow serve (start)", lambda: _command(
        [edgeflow, "serve", "--port", str(port)], project, env).stdout.splitlines()[0][:40], 1)
    try:
        served = {**env, "PREFECT_API_URL": url}
        importlib.import_module("prefect.deployments")  # before the clock starts

        measure("no-op run, running server", run(served), args.repeats)
        floor = _write_prefect_floor(scratch)
        _command([sys.executable, str(floor)], scratch, served)  # fills its cache
        measure("Prefect floor, running server", lambda: _command(
            [sys.executable, str(floor)], scratch, served).stdout.strip(), args.repeats)
        measure("no-op deployment run", lambda: _deployment_run(url), args.repeats)
    finally:
        _command([edgeflow, "stop"], project, env)
    measure("no-op dvc repro", lambda: "executed nothing" if "up to date" in _command(
        [str(BIN / "dvc"), "repro"], project, env).stdout else "RAN STAGES", args.repeats)

    print(f"\n{'what':32} {'median s':>9} {'max s':>7} {'target':>7}  result")
    for name, values in figures.items():
        target = TARGETS.get(name)
        median = statistics.median(values)
        verdict = "" if target is None else ("ok" if median <= target else "MISSED")
        print(f"{name:32} {median:9.2f} {max(values):7.2f} "
              f"{'' if target is None else f'<= {target:.0f}':>7}  {verdict} {notes[name]}")
    if args.keep:
        print(f"scratch folder kept: {scratch}")
    else:
        shutil.rmtree(scratch, ignore_errors=True)


# The task runs of a no-op tiny lifecycle: one per step (one device) and the DVC record.
TASK_RUNS = len(STEPS) + 1
# What any Prefect flow of as many cached tasks costs on the same server, with the
# same settings as `edgeflow run` there (no heartbeats): the part of a no-op that is
# Prefect's own (its import, the flow and task runs), not edgeflow's.
PREFECT_FLOOR = f"""\
from prefect import flow, task
from prefect.cache_policies import INPUTS
from prefect.settings import temporary_settings


@task(cache_policy=INPUTS, persist_result=True)
def step(number: int) -> int:
    return number


@flow
def floor(name: str = "floor") -> int:
    return sum(step(number) for number in range({TASK_RUNS}))


with temporary_settings({{"flows.heartbeat_frequency": None}}):
    state = floor(return_state=True)
print("executed nothing" if state.is_completed() else state.name)
"""


def _write_prefect_floor(scratch: Path) -> Path:
    path = scratch / "prefect_floor.py"
    path.write_text(PREFECT_FLOOR, encoding="utf-8")
    return path


def _deployment_run(url: str) -> str:
    """Trigger on-change and wait for its final state; what its steps did."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: url}):
        flow_run = run_deployment("edgeflow-lifecycle/on-change", timeout=600, poll_interval=0.2)
        if not flow_run.state.is_completed():
            return f"ENDED {flow_run.state.name}: {flow_run.state.message}"
        with get_client(sync_client=True) as client:
            tasks = final_task_runs(client, flow_run.id)
    executed = [f"{task.name} ({task.state.name if task.state else 'no state'})" for task in tasks
                if (task.state is None or task.state.name != "Cached")
                and not task.name.startswith("record_with_dvc")]
    return "executed nothing" if not executed else f"EXECUTED: {', '.join(executed)}"


if __name__ == "__main__":
    main()
