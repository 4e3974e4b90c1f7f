"""``edgeflow step`` and ``report`` in this process (tests/flows/test_cli.py runs the real
command in a child, which mutation testing does not see): the exact lines, the exit code
of each ending, and what a step's result says (its figures, its lines per device, its
problem)."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

import flows.caching
from flows.cli import app
from flows.steps import STEPS
from tasks.core.contracts.summary import write_summary
from tests.tasks.select.summaries import summary_of, summary_row
from tests.tiny import write_tiny_config


def invoke(*argv: str) -> Result:
    return CliRunner().invoke(app, list(argv), env={"COLUMNS": "300"})


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    write_tiny_config(tmp_path)
    monkeypatch.chdir(tmp_path)
    return tmp_path


class Result_:
    """A step's result: its figures, its lines and its problem, as given."""

    def __init__(self, describe: str | None, lines: list[str], problem: str | None) -> None:
        if describe is not None:
            self.describe = lambda: describe
        self.lines = lambda: lines
        self.problem = lambda: problem


@pytest.mark.parametrize("result, out, err, code", [
    (None, "step prepare: done\n", "", 0),
    (Result_("30 images", [], None), "step prepare: done: 30 images\n", "", 0),
    (Result_(None, ["pi: released", "pi5: refused"], None),
     "step prepare: done\npi: released\npi5: refused\n", "", 0),
    (Result_("2 devices", ["pi: failed"], "pi: the health check failed"),
     "step prepare: done: 2 devices\npi: failed\n",
     "edgeflow: error: pi: the health check failed\n", 1),
])
def test_a_step_says_its_figures_and_lines_and_exits_1_on_its_problem(
        project: Path, monkeypatch: pytest.MonkeyPatch, result: Any, out: str, err: str,
        code: int) -> None:
    ran_with: list[Any] = []
    recorded: list[str] = []
    monkeypatch.setitem(STEPS, "prepare", replace(
        STEPS["prepare"], run=lambda ctx: ran_with.append(ctx.layout.root) or result))
    monkeypatch.setattr(flows.caching, "record_step", lambda ctx, name: recorded.append(name))
    ran = invoke("step", "prepare")
    assert (ran.exit_code, ran.stdout, ran.stderr) == (code, out, err)
    assert ran_with == [project] and recorded == ["prepare"]
    assert [log.name.endswith("-step-prepare.log") for log in (project / ".edgeflow" / "logs")
            .iterdir()] == [True]


def test_an_unknown_step_is_a_usage_error_naming_the_steps(project: Path) -> None:
    ran = invoke("step", "nosuchstep")
    assert (ran.exit_code, ran.stdout) == (2, "")
    assert ran.stderr == (f"edgeflow: error: unknown step 'nosuchstep' (allowed: "
                          f"{', '.join(STEPS)})\n")


def test_a_step_on_a_bad_params_file_is_refused_before_it_runs(
        project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (project / "params.yaml").write_text("train: {epochs: 0}\n")
    monkeypatch.setitem(STEPS, "prepare", replace(STEPS["prepare"], run=pytest.fail))
    ran = invoke("step", "prepare")
    assert (ran.exit_code, ran.stderr) == (2, (
        f"edgeflow: error: {project / 'params.yaml'}: train.epochs: must be an integer from 1 to 1000, "
        "got 0\n"))


def test_the_farm_is_read_beside_the_params_unless_named(
        project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    elsewhere = project / "exp"
    write_tiny_config(elsewhere, farm="devices:\n  other: {}\n")
    seen: list[list[str]] = []
    monkeypatch.setitem(STEPS, "prepare", replace(
        STEPS["prepare"], run=lambda ctx: seen.append(list(ctx.farm.devices))))
    monkeypatch.setattr(flows.caching, "record_step", lambda ctx, name: None)
    assert invoke("step", "prepare", "--params", "exp/params.yaml").exit_code == 0
    assert invoke("step", "prepare", "--params", "exp/params.yaml",
                  "--farm", "farm.yaml").exit_code == 0
    assert seen == [["other"], ["local"]]


# ------------------------------------------------------------------------------ report


def test_report_without_a_summary_says_to_run_first(project: Path) -> None:
    ran = invoke("report")
    assert (ran.exit_code, ran.stderr) == (1, (
        f"edgeflow: error: {project / 'reports' / 'summary.json'} is missing: run "
        "`edgeflow run` first\n"))


def test_report_of_a_folder_is_a_configuration_error(project: Path) -> None:
    ran = invoke("report", "--params", str(project))
    assert (ran.exit_code, ran.stderr) == (
        2, f"edgeflow: error: --params {project} is a folder, not a file\n")


@pytest.mark.parametrize("show_all", [False, True])
def test_report_prints_the_table_the_recommendations_and_where_the_report_is(
        project: Path, show_all: bool) -> None:
    summary = summary_of([summary_row("onnx-fp32", latency_ms={"p50": 1.5, "p90": 2.0, "p99": 2.5, "mean": 1.6}),
                          summary_row("tflite-fp32", status="skipped",
                                      reasons=["no tflite runtime here"])],
                         {"local": "onnx-fp32"})
    write_summary(project / "reports" / "summary.json", summary)
    ran = invoke("report", *(["--all"] if show_all else []))
    assert ran.exit_code == 0, ran.output
    lines = ran.stdout.splitlines()
    assert lines[-1] == f"report: {project / 'reports' / 'report.html'} (and report.md)"
    assert "local: onnx-fp32" in ran.stdout and "**" not in ran.stdout and "`" not in ran.stdout
    assert ("no tflite runtime here" in ran.stdout) == show_all


@pytest.fixture
def faked_run(project: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """``edgeflow run`` with its flow, server, preflight and lock replaced by recorders;
    the flow "ran" and left a summary with one skipped result. What each received is in
    the dict returned."""
    from contextlib import contextmanager, nullcontext
    from types import SimpleNamespace

    import flows.approvals
    import flows.cli.experiment as experiment
    import flows.lifecycle
    import flows.server
    import tasks.core.locks

    seen: dict[str, Any] = {"locked": [], "verbose": []}
    summary = summary_of([summary_row("onnx-fp32"),
                          summary_row("tflite-fp32", status="skipped",
                                      reasons=["no tflite runtime here"])],
                         {"local": "onnx-fp32"})
    write_summary(project / "reports" / "summary.json", summary)
    seen["summary"] = summary
    layout = SimpleNamespace(state=project / "state-here", logs=project / "logs-here")
    outcome = SimpleNamespace(summary_path=str(project / "reports" / "summary.json"),
                              executed=["train"], cached=["prepare"], releases=[], gate=None,
                              dvc="committed")
    state = SimpleNamespace(name="Completed", message="all done", is_completed=lambda: True)

    @contextmanager
    def lock(state_dir: Path) -> Any:
        seen["locked"].append(state_dir)
        yield

    monkeypatch.setattr(flows.server, "launch", lambda: None)
    monkeypatch.setattr(flows.server, "prefect_server", lambda server: nullcontext())
    monkeypatch.setattr(flows.approvals, "install", lambda approver: None)
    monkeypatch.setattr(flows.lifecycle, "preflight",
                        lambda params, farm, rerun: SimpleNamespace(layout=layout))
    monkeypatch.setattr(tasks.core.locks, "experiment_lock", lock)
    monkeypatch.setattr(experiment, "logged", lambda log, verbose, action: (
        seen["verbose"].append(verbose), (state, outcome))[1])
    return seen


@pytest.mark.parametrize("argv, verbose", [([], False), (["--verbose"], True)])
def test_a_run_holds_the_experiment_lock_and_reports_its_outcome_plainly(
        project: Path, faked_run: dict[str, Any], argv: list[str], verbose: bool) -> None:
    from tasks.select.report.markdown import recommendation_lines

    ran = invoke("run", *argv)
    assert ran.exit_code == 0, ran.output
    assert faked_run["locked"] == [project / "state-here"]
    assert faked_run["verbose"] == [verbose]  # the libraries' chatter only when asked
    log = ran.stdout.splitlines()[-2].removeprefix("log: ")
    assert (Path(log).parent, Path(log).name.endswith("-run.log")) == (
        project / "logs-here", True)
    recommended = [line.replace("**", "").replace("`", "")
                   for line in recommendation_lines(faked_run["summary"])]
    assert recommended and all("*" not in line and "`" not in line for line in recommended)
    expected = [
        *recommended,
        "executed: train",
        "cached:   prepare",
        "dvc: committed",
        f"report: {project / 'reports' / 'report.html'} (and report.md)",
        "1 skipped results (a device that cannot run a runtime, a tool missing here) are "
        "listed with reasons in report.md; `edgeflow report --all` shows them",
        f"log: {log}",
        "flow state: Completed: all done"]
    assert ran.stdout.splitlines()[-len(expected):] == expected


def test_the_track_step_first_asks_the_projects_tracking_server(
        project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tasks.core.mlflow_store as store
    from tasks.core.errors import StepError

    asked: list[Any] = []
    monkeypatch.setattr(store, "tracking_uri", lambda root: f"uri of {root}")

    def check_answers(uri: str) -> None:
        asked.append(uri)
        raise StepError("the tracking server does not answer")

    monkeypatch.setattr(store, "check_answers", check_answers)
    ran = invoke("step", "track")
    assert asked == [f"uri of {project}"]
    assert (ran.exit_code, ran.stderr) == (
        1, "edgeflow: error: the tracking server does not answer\n")


def test_a_run_in_a_project_whose_dvc_push_shares_nothing_says_so_after_its_dvc_line(
        project: Path, faked_run: dict[str, Any]) -> None:
    """The project's committed DVC config (default remote userstore, a folder of yours)."""
    (project / ".dvc").mkdir()
    shutil.copy(Path(__file__).resolve().parents[3] / ".dvc" / "config", project / ".dvc")
    lines = invoke("run").stdout.splitlines()
    at = lines.index("dvc: committed")
    assert lines[at + 1:at + 3] == [
        "dvc push: the default remote userstore is a folder private to you on this machine; "
        "`edgeflow remote setup URL` names the team's (README: For a team)",
        f"report: {project / 'reports' / 'report.html'} (and report.md)"]
