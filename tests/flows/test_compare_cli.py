"""``edgeflow compare A B`` on real runs of the tiny project: summary files and MLflow
lifecycle runs in, a table and an exit status out (1 on a regression: a CI gate)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.flows.test_cli import edgeflow, refused
from tests.helpers import FARM_QUICK, benchmarked_copy

LOCAL_FARM = "devices:\n  local: {threads: 1}\n"


@pytest.fixture(scope="module")
def measured(tiny_project: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The tiny project benchmarked on the local device and tracked twice (two finished
    lifecycle runs in its MLflow store, the same summary)."""
    from tasks.track import track

    root = tmp_path_factory.mktemp("compared")
    layout = benchmarked_copy(tiny_project, root, LOCAL_FARM, FARM_QUICK)
    (root / "params.yaml").write_text("compare: {latency_increase: 0.10}\n", encoding="utf-8")
    dump = tiny_project.params.model_dump(mode="json")
    runs = [json.loads(track(dump, layout, run_name=name).read_text())["parent_run_id"]
            for name in ("first", "second")]
    return layout, runs


def _planted(summary_path: Path, target: Path, factor: float,
             interval: float | None = None) -> Path:
    """A copy of a summary whose every measured latency (and interval) is ``factor``
    times the real one: a planted regression. With ``interval``, every p50/p90 interval
    is first replaced by value x (1 -/+ interval): a busy machine's real intervals can be
    wide enough that a 20% change is rightly not called a regression."""
    document = json.loads(summary_path.read_text())
    for row in document["results"]:
        if row["latency_ms"]:
            if interval is not None:
                row["latency_ci95_ms"] = {
                    key: [row["latency_ms"][key] * (1 - interval),
                          row["latency_ms"][key] * (1 + interval)]
                    for key in row["latency_ci95_ms"]}
            row["latency_ms"] = {key: value * factor for key, value in row["latency_ms"].items()}
            row["latency_ci95_ms"] = {key: [bound * factor for bound in bounds] if bounds else None
                                      for key, bounds in row["latency_ci95_ms"].items()}
    target.write_text(json.dumps(document))
    return target


def test_an_unchanged_run_passes_and_a_planted_20_percent_regression_fails(
        measured: Any, tmp_path: Path) -> None:
    layout, _ = measured
    same = edgeflow("compare", str(layout.summary), str(layout.root), cwd=layout.root)
    assert same.returncode == 0, same.stderr
    measured_pairs = sum(1 for row in json.loads(layout.summary.read_text())["results"]
                         if row["status"] != "skipped")
    assert f"no regression in {measured_pairs} pairs" in same.stdout
    assert "thresholds: latency_increase 0.1, accuracy_drop 0.01, size_increase 0.05" in same.stdout

    baseline = _planted(layout.summary, tmp_path / "baseline.json", 1.0, interval=0.02)
    slower = _planted(layout.summary, tmp_path / "slower.json", 1.2, interval=0.02)
    gated = edgeflow("compare", str(baseline), str(slower), cwd=layout.root)
    assert gated.returncode == 1
    flagged = [line for line in gated.stdout.splitlines() if line.startswith("regression: ")]
    timed = [row["variant"] for row in json.loads(layout.summary.read_text())["results"]
             if row["latency_ms"]]
    # p50 and p90 of every timed pair, each +20%.
    assert len(flagged) == 2 * len(timed) and all("+20.0%" in line for line in flagged)
    assert gated.stderr.strip() == (f"edgeflow: {2 * len(timed)} regressions (thresholds: "
                                    "latency_increase 0.1, accuracy_drop 0.01, size_increase 0.05)")
    # A looser gate, from the command line, lets the same change through.
    loose = edgeflow("compare", str(baseline), str(slower), "--latency-increase", "0.25",
                     cwd=layout.root)
    assert loose.returncode == 0, loose.stdout


def test_lifecycle_runs_are_compared_by_id_or_as_latest_and_previous(measured: Any) -> None:
    layout, (first, second) = measured
    named = edgeflow("compare", "previous", "latest", cwd=layout.root)
    assert named.returncode == 0, named.stderr
    assert f"MLflow run {first} -> MLflow run {second}" in " ".join(named.stdout.split())
    by_id = edgeflow("compare", first, str(layout.summary), cwd=layout.root)
    assert by_id.returncode == 0, by_id.stderr


@pytest.mark.parametrize(("argv", "code", "message"), [
    (["nowhere.json", "latest"], 2,
     "'nowhere.json' is not a summary file, a project folder, an MLflow run id (32 hex digits), "
     "'latest' or 'previous'"),
    (["0" * 32, "latest"], 1, "MLflow run 00000000000000000000000000000000 has no "
                              "reports/summary.json in "),
    (["latest", "latest", "--latency-increase", "-1"], 2, "--latency-increase: "),
])
def test_what_cannot_be_compared_is_a_one_line_error(measured: Any, argv: list[str], code: int,
                                                     message: str) -> None:
    layout, _ = measured
    assert refused(edgeflow("compare", *argv, cwd=layout.root), code).startswith(message)


def test_a_project_without_runs_has_no_latest_to_compare(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text("{}\n", encoding="utf-8")
    line = refused(edgeflow("compare", "previous", "latest", cwd=tmp_path), 1)
    assert line == (f"'previous': no MLflow store at {tmp_path / 'mlflow' / 'mlflow.db'}; "
                    "run `edgeflow run` first")
    assert not (tmp_path / "mlflow").exists(), "reading made no store"


def test_the_gate_compares_a_run_with_the_one_before_it(measured: Any, tiny_project: Any,
                                                       tmp_path: Path) -> None:
    """What the nightly deployment does after track: this run's summary against the
    previous lifecycle run's in MLflow; a planted 20% regression fails it."""
    from tasks.compare.gate import regression_gate
    from tasks.config import CompareParams

    layout, (first, second) = measured
    gated = regression_gate(layout, CompareParams())
    assert gated is not None and gated.against == f"MLflow run {first}"
    assert gated.comparison.regressions == []
    assert gated.line().startswith(f"no regression against MLflow run {first} in ")
    real = layout.summary.read_text()
    try:
        _planted(layout.summary, layout.summary, 1.2)
        slower = regression_gate(layout, CompareParams())
        assert slower is not None and len(slower.comparison.regressions) >= 2
        assert slower.line().startswith(
            f"{len(slower.comparison.regressions)} regressions against MLflow run {first}: ")
        # The regressed run is never a baseline: a regression fails every gated run
        # until it is fixed, not only the first one.
        from mlflow import MlflowClient

        from tasks.core.mlflow_store import tracking_uri
        from tasks.track import track

        client = MlflowClient(tracking_uri=tracking_uri(layout.root))
        assert client.get_run(second).data.tags["edgeflow.gate"] == "regression"
        record = json.loads(track(tiny_project.params.model_dump(mode="json"), layout,
                                  run_name="third").read_text())
        again = regression_gate(layout, CompareParams())
        assert again is not None and again.against == f"MLflow run {first}"
        assert again.comparison.regressions, "still slower than the last good run"
        assert client.get_run(record["parent_run_id"]).data.tags["edgeflow.gate"] == "regression"
    finally:
        layout.summary.write_text(real)
    # A project that never tracked a run has nothing to compare with.
    from tasks.core.layout import Layout

    assert regression_gate(Layout(tmp_path), CompareParams()) is None


def test_an_emulated_boards_regression_fails_the_gate_only_when_opted_in(tmp_path: Path) -> None:
    """Issue 28: ``edgeflow compare`` shows an emulated board's pairs, names them not
    gated and exits 0 on their regressions, unless params say compare.include_emulated;
    an emulated against a physical run of the same pair is not comparable either way."""
    from tests.tasks.test_compare import row, summary

    qemu = {"emulated": True, "emulation": "qemu-user"}
    before = tmp_path / "before.json"
    before.write_text(json.dumps(summary(row("a-fp32", "pi", **qemu),
                                         row("b-fp32", "pi")).document()))
    after = tmp_path / "after.json"
    after.write_text(json.dumps(summary(row("a-fp32", "pi", p50=1.5, **qemu),
                                        row("b-fp32", "pi", p50=1.5, **qemu)).document()))
    shown = edgeflow("compare", str(before), str(after), cwd=tmp_path)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert ("not gated: a-fp32@pi: emulated (qemu-user): not gated; set "
            "compare.include_emulated to gate it") in shown.stdout
    assert ("not gated: b-fp32@pi: not comparable: physical before, emulated (qemu-user) after"
            in shown.stdout)
    assert "regression: " not in shown.stdout and "no regression in 0 pairs" in shown.stdout

    (tmp_path / "params.yaml").write_text("compare: {include_emulated: true}\n", encoding="utf-8")
    gated = edgeflow("compare", str(before), str(after), cwd=tmp_path)
    assert gated.returncode == 1
    flagged = [line for line in gated.stdout.splitlines() if line.startswith("regression: ")]
    assert [line.split(" (")[0] for line in flagged] == ["regression: a-fp32@pi: p50 +50.0%"]
    assert "not gated: b-fp32@pi: not comparable" in gated.stdout


@pytest.fixture(scope="module")
def compared_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("walked")


def _walked_cases() -> list[Any]:
    from tests.tasks.test_compare import sampled_cases

    return sampled_cases()


@pytest.mark.parametrize(("before", "after", "board", "include"), _walked_cases())
def test_every_status_on_every_board_pairing_sets_the_exit_code_and_the_lines(
        before: str, after: str, board: str, include: bool, compared_files: Path) -> None:
    """Issue 27: ``edgeflow compare`` (in process) on each case of the status walk
    (tests/tasks/test_compare.py): exit 1 exactly on a counted regression, and each line
    it says (a pair in one run only, not gated, each regression, the count of gated
    pairs) exactly."""
    from typer.testing import CliRunner

    from flows.cli import app
    from tests.tasks.test_compare import walk

    case = walk(before, after, board, include)
    first, second, params = (compared_files / name
                             for name in ("before.json", "after.json", "params.yaml"))
    first.write_text(json.dumps(case.before.document()))
    second.write_text(json.dumps(case.after.document()))
    params.write_text(f"compare: {{include_emulated: {str(include).lower()}}}\n",
                      encoding="utf-8")
    result = CliRunner().invoke(app, ["compare", str(first), str(second), "--params", str(params)])
    thresholds = "(thresholds: latency_increase 0.1, accuracy_drop 0.01, size_increase 0.05)"
    said = [line for line in result.stdout.splitlines()
            if line.startswith(("only in ", "not gated: ", "regression: ", "no regression"))]
    assert said == [*(["only in the first run: v-fp32@local"] if after == "missing" else []),
                    *(["only in the second run: v-fp32@local"] if before == "missing" else []),
                    *[f"not gated: {line}" for line in case.not_gated],
                    *[f"regression: {line}" for line in case.counted],
                    *([] if case.counted else
                      [f"no regression in {case.gated_pairs} pairs {thresholds}"])]
    many = {1: "1 regression", 2: "2 regressions", 3: "3 regressions"}.get(len(case.counted))
    assert (result.exit_code, result.stderr) == (
        (1, f"edgeflow: {many} {thresholds}\n") if case.counted else (0, ""))


# Which measures each threshold judges (written out: a new threshold must be added here).
JUDGES = {"latency_increase": ["p50", "p90"], "accuracy_drop": ["accuracy"],
          "size_increase": ["size"]}


def test_every_threshold_has_an_option_here() -> None:
    from tasks.config import CompareParams

    assert list(JUDGES) == [name for name, value in CompareParams().model_dump().items()
                            if not isinstance(value, bool)]


@pytest.mark.parametrize("loosened", list(JUDGES))
def test_each_threshold_option_reaches_the_comparison_and_only_its_measures(
        loosened: str, tmp_path: Path) -> None:
    """Every measure regresses (accuracy -0.02, size +6%, p50 and p90 +20%, no
    intervals); loosening one threshold on the command line lets its own measures
    through, and only them, and the thresholds line shows the value given."""
    from typer.testing import CliRunner

    from flows.cli import app
    from tests.tasks.test_compare import row, summary

    plain = {"ci": False, "accuracy_ci": None}
    first, second = tmp_path / "before.json", tmp_path / "after.json"
    first.write_text(json.dumps(summary({**row(**plain), "accuracy_interval": None}).document()))
    second.write_text(json.dumps(summary({**row(p50=1.2, p90=2.4, accuracy=0.93, size=106_000,
                                                **plain), "accuracy_interval": None}
                                         ).document()))
    (tmp_path / "params.yaml").write_text("{}\n", encoding="utf-8")  # the defaults
    result = CliRunner().invoke(app, ["compare", str(first), str(second), "--params",
                                      str(tmp_path / "params.yaml"),
                                      f"--{loosened.replace('_', '-')}", "0.5"])
    flagged = [line.split(" ")[2] for line in result.stdout.splitlines()
               if line.startswith("regression: ")]
    assert flagged == [measure for measure in ("accuracy", "size", "p50", "p90")
                       if measure not in JUDGES[loosened]]
    thresholds = {"latency_increase": 0.1, "accuracy_drop": 0.01, "size_increase": 0.05,
                  loosened: 0.5}
    assert (result.exit_code, result.stderr) == (1, (
        f"edgeflow: {len(flagged)} regressions (thresholds: "
        + ", ".join(f"{name} {value:g}" for name, value in thresholds.items()) + ")\n"))
