"""The lifecycle as DVC users drive it: a git + DVC project made as this repo is (its
dvc.yaml, .dvc/config, .dvc/plots, .gitignore), a tiny experiment, `dvc exp run`,
`dvc exp show`, `dvc metrics diff`, `dvc plots diff`, `dvc push` and a fresh clone's
`dvc pull`, and `edgeflow run` before and after DVC's runs.

The project's first experiment runs once (a module fixture no test changes: `dvc exp
run -S train.epochs=3`, then committed); a test that changes the project works on its
own copy, which keeps the DVC cache and edgeflow's stamps and Prefect records.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.tiny import TINY_PARAMS, write_tiny_config

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ALL_STEPS = ["prepare", "train", "optimize", "convert", "benchmark[local]", "select", "track",
             "release[local]"]
VARIANTS = {"tflite-fp32", "onnx-fp32", "openvino-fp32"}


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The HOME of every command: the default DVC remote is the user's, under it."""
    return tmp_path_factory.mktemp("home")


def _run(*argv: str, cwd: Path, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "HOME": str(home)}
    env.pop("MLFLOW_TRACKING_URI", None)
    result = subprocess.run(list(argv), cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=900, check=False)
    assert result.returncode == 0, f"{argv}: {result.stdout[-2000:]}{result.stderr[-2000:]}"
    return result


def _dvc(*args: str, cwd: Path, home: Path) -> str:
    return _run(str(BIN / "dvc"), *args, cwd=cwd, home=home).stdout


def _git(*args: str, cwd: Path, home: Path) -> str:
    return _run("git", *args, cwd=cwd, home=home).stdout


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, home: Path) -> Path:
    """A git + DVC project as this repo ships it, after `dvc exp run -S train.epochs=3`
    whose results are committed."""
    root = tmp_path_factory.mktemp("dvc-project")
    for name in ("tasks", "flows"):  # dvc.yaml's code deps
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", "requirements.lock", ".gitignore", ".dvcignore"):
        shutil.copy(REPO / name, root / name)
    (root / ".dvc").mkdir()
    for name in _git("ls-files", ".dvc", cwd=REPO, home=home).split():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, root / name)
    write_tiny_config(root)
    _git("init", "--quiet", cwd=root, home=home)
    _git("config", "user.email", "test@example.com", cwd=root, home=home)
    _git("config", "user.name", "test", cwd=root, home=home)
    _git("add", "-A", cwd=root, home=home)
    _git("commit", "--quiet", "-m", "tiny experiment", cwd=root, home=home)
    _dvc("exp", "run", "-S", "train.epochs=3", cwd=root, home=home)
    _git("add", "-A", cwd=root, home=home)
    _git("commit", "--quiet", "-m", "three epochs", cwd=root, home=home)
    return root


@pytest.fixture
def copy(project: Path, tmp_path: Path) -> Path:
    """This test's own copy of the project (git history, DVC cache, edgeflow's cache).
    MLflow's store stays behind (its experiment names the original folder)."""
    root = tmp_path / "copy"
    shutil.copytree(project, root, symlinks=True,
                    ignore=lambda folder, names: ["mlflow"] if Path(folder) == project else [])
    return root


def _read(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def test_git_tracks_the_metrics_reports_and_dvc_lock_and_dvc_the_rest(project: Path,
                                                                       home: Path) -> None:
    tracked = set(_git("ls-files", cwd=project, home=home).split())
    assert {"dvc.lock", "metrics/train.json", "metrics/train_history.json",
            "metrics/benchmark.json", "metrics/mlflow_run.json", "reports/summary.json",
            "reports/report.md", "reports/points.json", "code-manifests/train.json"} <= tracked
    assert not [name for name in tracked if name.startswith(
        ("data/", "models/", "results/", "reports/plots/", ".edgeflow/", "mlflow/"))]
    assert "reports/report.html" not in tracked  # its embedded images: the DVC cache's
    assert _git("status", "--porcelain", cwd=project, home=home) == ""
    assert json.loads(_dvc("status", "--json", cwd=project, home=home)) == {}


def test_exp_show_lists_accuracy_size_and_latency_per_experiment(project: Path,
                                                                 home: Path) -> None:
    shown = json.loads(_dvc("exp", "show", "--json", "-n", "2", cwd=project, home=home))
    runs = {}
    for commit in shown:
        for experiment in [commit, *(commit.get("experiments") or [])]:
            for revision in experiment.get("revs", [experiment]):
                data = revision.get("data") or {}
                runs[revision["rev"]] = data
    workspace = runs["workspace"]
    assert workspace["params"]["params.yaml"]["data"]["train"]["epochs"] == 3
    train = workspace["metrics"]["metrics/train.json"]["data"]
    benchmark = workspace["metrics"]["metrics/benchmark.json"]["data"]
    assert train == _read(project / "metrics" / "train.json") and train["epochs_run"] == 3
    assert set(benchmark["local"]) == VARIANTS
    summary = _read(project / "reports" / "summary.json")
    for row in summary["results"]:
        shown_row = benchmark[row["device"]][row["variant"]]
        assert shown_row["accuracy"] == row["accuracy"] and shown_row["accuracy"] > 0.3
        assert shown_row["size_bytes"] == row["size_bytes"] > 1000
        assert shown_row["latency_p50_ms"] == row["latency_ms"]["p50"] > 0
    # The experiment itself (its own commit) holds the same metrics, not `!`.
    experiments = [data for rev, data in runs.items() if rev != "workspace"
                   and data.get("params", {}).get("params.yaml", {}).get("data", {})
                   .get("train", {}).get("epochs") == 3]
    assert experiments and all(
        data["metrics"]["metrics/train.json"]["data"]["epochs_run"] == 3 for data in experiments)


def test_edgeflow_run_after_dvc_exp_run_executes_nothing(copy: Path, home: Path) -> None:
    from flows.lifecycle import run_lifecycle

    state, outcome = run_lifecycle(copy / "params.yaml", copy / "farm.yaml")
    assert state.is_completed(), state.message
    assert outcome.executed == [] and outcome.cached == ALL_STEPS
    assert outcome.dvc == "recorded in dvc.lock"
    assert json.loads(_dvc("status", "--json", cwd=copy, home=home)) == {}


def test_dvc_repro_after_edgeflow_run_executes_nothing_and_commits_compare(
        copy: Path, home: Path) -> None:
    from flows.lifecycle import run_lifecycle

    write_tiny_config(copy, TINY_PARAMS.replace("epochs: 6", "epochs: 4"))
    state, outcome = run_lifecycle(copy / "params.yaml", copy / "farm.yaml")
    assert state.is_completed(), state.message
    assert outcome.executed == ALL_STEPS[1:] and outcome.cached == ["prepare"]
    repro = _dvc("repro", cwd=copy, home=home)
    assert "Running stage" not in repro and "up to date" in repro
    assert json.loads(_dvc("status", "--json", cwd=copy, home=home)) == {}
    # autostage: the flow's `dvc commit` staged dvc.lock for the next commit.
    assert "M  dvc.lock" in _git("status", "--porcelain", cwd=copy, home=home).splitlines()

    _git("add", "-A", cwd=copy, home=home)
    _git("commit", "--quiet", "-m", "four epochs", cwd=copy, home=home)
    # --all: a latency that came out the same (it is rounded) is listed too, not dropped.
    diff = json.loads(_dvc("metrics", "diff", "HEAD~1", "--all", "--json", cwd=copy,
                           home=home))
    assert diff["metrics/train.json"]["epochs_run"] == {"old": 3, "new": 4, "diff": 1}
    now = _read(copy / "metrics" / "benchmark.json")["local"]
    for variant in VARIANTS:
        latency = diff["metrics/benchmark.json"][f"local.{variant}.latency_p50_ms"]
        assert latency["new"] == now[variant]["latency_p50_ms"] and latency["old"] > 0

    plots = json.loads(_dvc("plots", "diff", "HEAD~1", "--json", cwd=copy, home=home))["data"]
    for name in ("accuracy_vs_latency", "accuracy_vs_size"):
        content = plots[name][0]["content"]
        assert content["encoding"]["color"]["field"] == "variant"
        assert content["encoding"]["shape"]["field"] == "device"
        points = {(p["rev"], p["device"], p["variant"]) for p in content["data"]["values"]}
        assert points == {(rev, "local", variant) for rev in ("HEAD~1", "workspace")
                          for variant in VARIANTS}
    images = {entry["revisions"][0]
              for entry in plots["reports/plots/devices/local/pareto.png"]}
    assert images == {"HEAD~1", "workspace"}  # the old PNG comes from the DVC cache


def test_push_then_a_fresh_clone_pulls_everything_from_the_default_remote(
        project: Path, home: Path, tmp_path: Path) -> None:
    remotes = _dvc("remote", "list", cwd=project, home=home).split()
    store = home / ".cache" / "edgeflow" / "dvc-remote"
    assert remotes == ["userstore", str(store), "(default)"]
    _dvc("push", cwd=project, home=home)
    assert any(store.rglob("*")), "nothing pushed"

    # A fresh clone elsewhere: no outputs, no DVC cache, the same default remote.
    clone = tmp_path / "elsewhere" / "clone"
    _git("clone", "--quiet", str(project), str(clone), cwd=tmp_path, home=home)
    assert not (clone / "models").exists() and not (clone / ".dvc" / "cache").exists()
    _dvc("pull", cwd=clone, home=home)
    assert json.loads(_dvc("status", "--json", cwd=clone, home=home)) == {}
    for name in ("models/variants/index.json", "data/prepared/test.npz",
                 "results/local/tflite-fp32.json", "reports/plots/p90_heatmap.png",
                 "reports/report.html"):
        assert (clone / name).read_bytes() == (project / name).read_bytes(), name
