"""Soak: concurrent and interrupted runs of a tiny experiment, in a loop, then a check
that nothing was lost and nothing is stuck.

Each round starts two `edgeflow run` of one experiment at once (the second must be
refused while the first holds the experiment's lock), stops the first at a random moment
with Ctrl-C (SIGINT) or SIGKILL, then runs it once more to recover, and checks:
  - the recovery run exits 0 and its summary is newer than every result file;
  - no staging folder (`.results.*`, `.variants.*`...) is left, no harness or Prefect
    server of the experiment is still running;
  - `dvc status` reports nothing changed;
  - the MLflow store opens, holds a FINISHED parent run for every run whose track step
    completed, the latest one with one nested run per result of the summary, and no run
    of the experiment is still RUNNING (a killed run's are closed as KILLED).
The last round also checks that one more run executes nothing (the cache is intact).

Bounded in rounds (`--rounds`, default 20) and time (`--max-minutes`, default 25); only
processes on this machine are started. Prints one line per round and the totals:
runs attempted, refused, interrupted, recovered, and anything lost or stuck (target 0).

    .venv/bin/python benchmarks/soak.py [--rounds 20] [--seed 1] [--max-minutes 25]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BIN = Path(sys.executable).parent
BUSY_EXIT, INTERRUPTED_EXIT = 75, 130


def _env() -> dict[str, str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    for name in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI"):
        env.pop(name, None)
    return env


def _start(root: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([str(BIN / "edgeflow"), *args], cwd=root, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _make_experiment(root: Path) -> None:
    """A DVC project with the tiny config and this repo's code (as dvc.yaml expects)."""
    from tests.tiny import TINY_PARAMS, write_tiny_config

    for name in ("tasks", "flows"):
        shutil.copytree(ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", "requirements.lock"):  # the lock file: a dep of every stage
        shutil.copy(ROOT / name, root / name)
    write_tiny_config(root, TINY_PARAMS.replace("seconds: 0.05", "seconds: 1"))
    subprocess.run([str(BIN / "dvc"), "init", "--no-scm", "--quiet"], cwd=root, check=True)


def _tracked(stdout: str) -> int:
    """1 when the run's track step executed (a new MLflow parent run), else 0."""
    executed = next((line for line in stdout.splitlines() if line.startswith("executed:")), "")
    return int("track" in executed.split(", ") or executed.endswith(" track"))


def _leftovers(root: Path) -> list[str]:
    """Staging folders and processes of the experiment that should not exist now."""
    found = [str(path.relative_to(root)) for parent in (root / "results", root / "models",
                                                        root / "reports")
             if parent.is_dir() for path in parent.iterdir()
             if path.name.startswith(".") and path.is_dir()]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(root) in command and ("harness.py" in command or "edgeflow" in command):
            found.append(f"process {entry.name}: {command[:80]}")
        elif PREFECT_SERVER in command and _parent(entry) == 1:  # its run is gone
            found.append(f"orphaned Prefect server {entry.name}")
    return found


PREFECT_SERVER = "prefect.server.api.server:create_app"


def _parent(entry: Path) -> int:
    try:
        return int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def _check(root: Path, completed_runs: int) -> tuple[list[str], list[str]]:
    """What was lost (outputs or records that disagree) and what is stuck (leftover
    folders, processes, runs) after a recovery run; both empty when all is well."""
    from mlflow import MlflowClient

    stuck = _leftovers(root)
    problems: list[str] = []
    summary = root / "reports" / "summary.json"
    newest_result = max(path.stat().st_mtime for path in (root / "results").rglob("*.json"))
    if summary.stat().st_mtime < newest_result:
        problems.append("a result is newer than the summary")
    status = subprocess.run([str(BIN / "dvc"), "status", "--json"], cwd=root, env=_env(),
                            capture_output=True, text=True)
    if status.returncode != 0 or json.loads(status.stdout or "{}"):
        problems.append(f"dvc status: {status.stdout.strip()[:200]} {status.stderr.strip()[:200]}")
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("edgeflow")
    runs = client.search_runs([experiment.experiment_id], max_results=5000)
    parents = [run for run in runs if run.data.tags.get("edgeflow.kind") == "lifecycle"]
    finished = sum(run.info.status == "FINISHED" for run in parents)
    # A run stopped after its track step (while DVC records it) is tracked too: at least
    # one finished parent run per run that reported tracking, and the latest one whole.
    if finished < completed_runs:
        problems.append(f"MLflow holds {finished} finished parent runs, expected at least "
                        f"{completed_runs}")
    latest = json.loads((root / "metrics" / "mlflow_run.json").read_text())
    parent = client.get_run(latest["parent_run_id"])
    results = json.loads(summary.read_text())["results"]
    nested = [run for run in runs if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    if parent.info.status != "FINISHED" or len(nested) != len(results):
        problems.append(f"the latest run's MLflow record is {parent.info.status} with "
                        f"{len(nested)} of {len(results)} results")
    running = [run.info.run_id for run in runs if run.info.status == "RUNNING"]
    if running:
        stuck.append(f"{len(running)} MLflow run(s) stuck RUNNING")
    return problems, stuck


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-minutes", type=float, default=25.0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    deadline = time.monotonic() + args.max_minutes * 60
    totals = {"attempted": 0, "refused": 0, "interrupted": 0, "killed": 0, "recovered": 0,
              "lost": 0, "stuck": 0}
    with tempfile.TemporaryDirectory(prefix="edgeflow-soak-") as scratch:
        root = Path(scratch) / "experiment"
        _make_experiment(root)
        first = subprocess.run([str(BIN / "edgeflow"), "run"], cwd=root, env=_env(),
                               capture_output=True, text=True)
        if first.returncode != 0:
            print(first.stdout[-2000:], first.stderr[-2000:])
            return 1
        completed = _tracked(first.stdout)
        print(f"{'round':>5} {'stop':>7} {'after s':>7} {'first':>6} {'second':>6} "
              f"{'recovery':>8} {'recovery s':>10}  problems")
        for number in range(1, args.rounds + 1):
            if time.monotonic() > deadline:
                print(f"time limit reached after {number - 1} rounds")
                break
            # Change benchmark params so benchmark, select and track have work to do.
            params = root / "params.yaml"
            text = params.read_text()
            params.write_text(text.replace(f"runs: {10 + (number - 1) % 2}",
                                           f"runs: {10 + number % 2}"))
            way = rng.choice(["SIGINT", "SIGKILL"])
            after = rng.uniform(4.0, 20.0)
            runner = _start(root, "run")
            time.sleep(1.0)
            second = _start(root, "run")
            totals["attempted"] += 2
            second_code = second.wait(timeout=120)
            totals["refused"] += second_code == BUSY_EXIT
            try:
                runner.wait(timeout=after)
            except subprocess.TimeoutExpired:
                runner.send_signal(signal.SIGINT if way == "SIGINT" else signal.SIGKILL)
                totals["interrupted" if way == "SIGINT" else "killed"] += 1
            first_out, first_err = runner.communicate(timeout=120)
            first_code = runner.returncode
            completed += _tracked(first_out)
            started = time.monotonic()
            recovery = subprocess.run([str(BIN / "edgeflow"), "run"], cwd=root, env=_env(),
                                      capture_output=True, text=True, timeout=600)
            took = time.monotonic() - started
            totals["attempted"] += 1
            lost: list[str] = []
            stuck: list[str] = []
            if recovery.returncode == 0:
                completed += _tracked(recovery.stdout)
                totals["recovered"] += 1
                lost, stuck = _check(root, completed)
            else:
                lost = [f"recovery exit {recovery.returncode}: "
                        f"{(recovery.stderr.strip().splitlines() or [''])[-1][:200]}"]
            if second_code not in (BUSY_EXIT, 0):
                lost.append(f"second run exit {second_code}")
            # A SIGINT must end a run with 130 (or 0, when it finished first), never kill
            # the process by the signal itself.
            if first_code not in (0, INTERRUPTED_EXIT, -signal.SIGKILL):
                lost.append(f"first run exit {first_code}")
            if "Traceback" in first_err:
                lost.append("first run printed a traceback: "
                            + first_err.strip().splitlines()[-1][:200])
            totals["lost"] += bool(lost)
            totals["stuck"] += bool(stuck)
            problems = lost + stuck
            print(f"{number:>5} {way:>7} {after:>7.1f} {first_code:>6} {second_code:>6} "
                  f"{recovery.returncode:>8} {took:>10.1f}  {'; '.join(problems) or 'none'}")
        final = subprocess.run([str(BIN / "edgeflow"), "run"], cwd=root, env=_env(),
                               capture_output=True, text=True, timeout=600)
        cached = "executed: nothing (every step cached)" in final.stdout
        print(f"final run: exit {final.returncode}, "
              f"{'every step cached' if cached else 'steps re-ran: ' + final.stdout[-300:]}")
        totals["lost"] += not cached or final.returncode != 0
    print("totals: " + ", ".join(f"{key} {value}" for key, value in totals.items()))
    return 0 if totals["lost"] == totals["stuck"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
