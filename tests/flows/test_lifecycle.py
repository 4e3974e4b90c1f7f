"""End to end: the real Prefect flow, DVC and MLflow on a tiny config in a fresh project.

The project's first run happens once (module fixtures that no test changes): tests that
only read its outputs use it as it is; a test that changes an experiment (its params,
farm or outputs, or runs it again) gets its own copy, which keeps the cache, so every
test passes alone and in any order.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.tiny import TINY_FARM, TINY_PARAMS, write_tiny_config

REPO = Path(__file__).resolve().parents[2]
ALL_STEPS = ["prepare", "train", "optimize", "convert", "benchmark[local]", "select", "track",
             "release[local]"]
BIN = Path(sys.executable).parent


def _command(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run(list(argv), cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600, check=False)


def _dvc(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return _command(str(BIN / "dvc"), *args, cwd=cwd)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh DVC project: this repo's code, dvc.yaml and a tiny params/farm."""
    root = tmp_path_factory.mktemp("e2e-project")
    for name in ("tasks", "flows"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", "requirements.lock"):  # the lock file: a dep of every stage
        shutil.copy(REPO / name, root / name)
    write_tiny_config(root)
    result = _dvc("init", "--no-scm", "--quiet", cwd=root)
    assert result.returncode == 0, result.stderr
    return root


@pytest.fixture(scope="module")
def first_run(project: Path) -> Any:
    """The project's first run: its (state, outcome). Tests only read what it wrote."""
    from flows.lifecycle import run_lifecycle

    return run_lifecycle(project / "params.yaml", project / "farm.yaml")


@pytest.fixture
def experiment(project: Path, first_run: Any, tmp_path: Path) -> Path:
    """This test's own copy of the project after its first run, for a test that changes
    it. A copied experiment keeps its cache (tests/flows/test_state.py). MLflow's store
    stays behind: its experiment names the original folder's artifact location, where
    the copy's runs would write; the copy's first track starts a store of its own."""
    root = tmp_path / "experiment"
    shutil.copytree(project, root, symlinks=True,
                    ignore=lambda folder, names: ["mlflow"] if Path(folder) == project else [])
    return root


def test_first_run_executes_every_step_and_produces_real_outputs(project: Path, first_run) -> None:
    from tasks.device import runtimes, tensors
    from tasks.core.files import read_json

    state, outcome = first_run
    assert state.is_completed(), state.message
    assert outcome.executed == ALL_STEPS and outcome.cached == []

    train = read_json(project / "metrics" / "train.json")
    assert train["test_accuracy"] > 0.3  # ten classes: chance is 0.1

    index = read_json(project / "models" / "variants" / "index.json")
    assert {v["name"] for v in index["variants"]} == {"tflite-fp32", "onnx-fp32", "openvino-fp32"}
    with np.load(project / "data" / "prepared" / "test.npz") as data:
        images = data["x"][:8]
    for variant in index["variants"]:
        artifact = project / "models" / "variants" / variant["file"]
        runner = runtimes.load_runner(variant["runtime"], str(artifact))
        logits = tensors.predict(runner, images, variant["spec"])
        assert logits.shape == (8, 10) and np.isfinite(logits).all()
        assert variant["check"]["agreement"] >= 0.99 and variant["check"]["passed"]

    summary = read_json(project / "reports" / "summary.json")
    assert len(summary["results"]) == 3
    for row in summary["results"]:
        assert row["status"] == "pass", row
        assert row["device"] == "local" and row["format"] and row["precision"] == "fp32"
        assert 0.3 < row["accuracy"] <= 1 and row["size_bytes"] > 1000
        assert 0 < row["latency_ms"]["p50"] <= row["latency_ms"]["p90"] <= row["latency_ms"]["p99"]
        assert row["throughput_fps"] > 0 and row["peak_rss_mb"] > 0 and row["reasons"] == []
    assert summary["recommendations"]["local"] in {r["variant"] for r in summary["results"]}
    assert (project / "reports" / "report.md").read_text().count("fp32 |") >= 3
    for plot in ("devices/local/pareto.png", "devices/local/latency.png", "p90_heatmap.png",
                 "accuracy_vs_size.png"):
        assert (project / "reports" / "plots" / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (project / "reports" / "report.html").read_text().count("data:image/png;base64,") == 4


def test_a_run_without_a_console_logs_its_progress_in_the_flow_run(project: Path,
                                                                  first_run) -> None:
    """Nobody renders the progress here, as in a deployment's run in a worker: it goes to
    the flow run's log, which the Prefect UI shows."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    from tasks.core.files import read_json

    APILogHandler().flush()
    state, _ = first_run
    with get_client(sync_client=True) as client:
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(
            any_=[state.state_details.flow_run_id])))
    messages = [log.message for log in logs]
    history = read_json(project / "metrics" / "train_history.json")
    training = [message for message in messages if message.startswith("train: ")]
    assert training[0] == "train: 0/6"
    assert training[len(history)].startswith(f"train: {len(history)}/6 (loss ")
    variants = len(read_json(project / "models" / "variants" / "index.json")["variants"])
    assert f"benchmark[local]: 0/{variants}" in messages
    assert any(message.startswith(f"benchmark[local]: {variants}/{variants} ")
               for message in messages)


def test_mlflow_holds_the_parent_and_one_nested_run_per_result(project: Path, first_run) -> None:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("edgeflow")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("edgeflow.kind") == "lifecycle"]
    assert len(parents) == 1
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert sorted(r.data.params["variant"] for r in children) == [
        "onnx-fp32", "openvino-fp32", "tflite-fp32"]
    for child in children:
        assert child.data.params["device"] == "local"
        for metric in ("accuracy", "size_bytes", "latency_p50_ms", "latency_p90_ms",
                       "latency_p99_ms", "latency_mean_ms", "throughput_fps", "peak_rss_mb",
                       "load_ms"):
            assert child.data.metrics[metric] > 0, metric
        assert child.data.tags["device.arch"] and child.data.tags["status"] == "pass"


def test_dvc_status_agrees_with_the_flow(project: Path, first_run) -> None:
    result = _dvc("status", "--json", cwd=project)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {}


def test_second_run_executes_no_step(experiment: Path) -> None:
    from flows.lifecycle import run_lifecycle

    state, outcome = run_lifecycle(experiment / "params.yaml", experiment / "farm.yaml")
    assert state.is_completed()
    assert outcome.executed == [] and outcome.cached == ALL_STEPS


def test_a_gated_run_compares_with_the_previous_lifecycle_run(experiment: Path) -> None:
    """``gate``: with no earlier run, said so; after one, compared (nothing changed: no
    regression) and the run page's line names that run."""
    from flows.lifecycle import run_lifecycle

    state, outcome = run_lifecycle(experiment / "params.yaml", experiment / "farm.yaml", gate=True)
    assert state.is_completed() and outcome.gate == "no earlier lifecycle run to compare with"
    state, outcome = run_lifecycle(experiment / "params.yaml", experiment / "farm.yaml",
                                   refresh=["track"], gate=True)
    assert outcome.gate == "no earlier lifecycle run to compare with", "only itself tracked"
    first = json.loads((experiment / "metrics" / "mlflow_run.json").read_text())["parent_run_id"]
    state, outcome = run_lifecycle(experiment / "params.yaml", experiment / "farm.yaml",
                                   refresh=["track"], gate=True)
    assert state.is_completed(), state.message
    assert outcome.gate.startswith(f"no regression against MLflow run {first} in ")
    assert f"| gate: {outcome.gate}" in state.message


def _walked_cases() -> list[Any]:
    from tests.tasks.test_compare import sampled_cases

    return sampled_cases()


@pytest.mark.parametrize(("before", "after", "board", "include"), _walked_cases())
def test_every_status_on_every_board_pairing_blocks_the_release_only_on_a_counted_regression(
        before: str, after: str, board: str, include: bool,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 27, fast (no flow run): the flow's gate over the sampled status walk of
    tests/tasks/test_compare.py passes, and so lets the releases go on, unless a counted
    regression fails it; the line is the gate's, its Markdown table goes on the run's
    page either way."""
    from types import SimpleNamespace

    from flows import lifecycle
    from tasks.compare import compare
    from tasks.compare import gate as gate_module
    from tasks.compare.gate import GateResult
    from tasks.compare.view import comparison_markdown
    from tests.tasks.test_compare import gate_line, walk

    case = walk(before, after, board, include)
    gated = GateResult(compare(case.before, case.after, case.limits), "MLflow run x")
    ctx = SimpleNamespace(layout="the layout", params=SimpleNamespace(compare=case.limits))
    monkeypatch.setattr(gate_module, "regression_gate",
                        lambda layout, limits: gated if (layout, limits) == (
                            "the layout", case.limits) else None)
    published: list[tuple[str, str]] = []
    monkeypatch.setattr(lifecycle, "publish_comparison",
                        lambda markdown, against: published.append((markdown, against)))
    assert lifecycle._gate(ctx) == (gate_line(case), not case.counted)
    assert published == [(comparison_markdown(gated.comparison, "MLflow run x", "this run"),
                          "MLflow run x")]


def test_a_first_run_has_nothing_to_gate_and_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from flows import lifecycle
    from tasks.compare import gate as gate_module

    monkeypatch.setattr(gate_module, "regression_gate", lambda layout, limits: None)
    monkeypatch.setattr(lifecycle, "publish_comparison", lambda *_: pytest.fail("published"))
    ctx = SimpleNamespace(layout=None, params=SimpleNamespace(compare=None))
    assert lifecycle._gate(ctx) == ("no earlier lifecycle run to compare with", True)


def test_a_regressed_run_fails_its_gate_and_releases_nothing(experiment: Path) -> None:
    """The run before this one was twice as fast (its summary in MLflow says so): this
    real run, whose release is due, fails the gate, and no device gets its model."""
    from mlflow import MlflowClient

    from flows.lifecycle import run_lifecycle
    from tasks.core.mlflow_store import tracking_uri

    state, _ = run_lifecycle(experiment / "params.yaml", experiment / "farm.yaml",
                             refresh=["track"])
    assert state.is_completed(), state.message
    before = json.loads((experiment / "metrics" / "mlflow_run.json").read_text())["parent_run_id"]
    client = MlflowClient(tracking_uri=tracking_uri(experiment))
    logged = Path(client.download_artifacts(before, "reports/summary.json", str(experiment /
                                                                               ".baseline")))
    baseline = json.loads(logged.read_text())
    for row in baseline["results"]:
        if row["latency_ms"]:
            row["latency_ms"] = {key: value / 2 for key, value in row["latency_ms"].items()}
            row["latency_ci95_ms"] = {key: [bound / 2 for bound in bounds] if bounds else None
                                      for key, bounds in row["latency_ci95_ms"].items()}
    logged.write_text(json.dumps(baseline))
    client.log_artifact(before, str(logged), artifact_path="reports")
    timed = sum(1 for row in baseline["results"] if row["latency_ms"])

    state, outcome = run_lifecycle(experiment / "params.yaml", experiment / "farm.yaml",
                                   refresh=["track", "release"], gate=True)
    assert state.is_failed()
    assert outcome.gate.startswith(f"{2 * timed} regressions against MLflow run {before}: ")
    assert "release[local]" not in outcome.executed
    assert outcome.releases == ["local: not released: the regression gate failed"]
    now = json.loads((experiment / "metrics" / "mlflow_run.json").read_text())["parent_run_id"]
    assert client.get_run(now).data.tags["edgeflow.gate"] == "regression"


def test_a_declined_release_is_asked_again_by_the_next_run(experiment: Path) -> None:
    """``release.policy: approve`` on a board with nothing released: a run nobody approved
    releases nothing; the next run, approved, releases (it was cached as done:
    ``executed: nothing``)."""
    from flows import approvals
    from flows.lifecycle import run_lifecycle

    write_tiny_config(experiment, TINY_PARAMS.replace("policy: auto", "policy: approve"))
    shutil.rmtree(experiment / ".edgeflow" / "devices" / "local" / "app")
    asked: list[str] = []
    for answer in (False, True):
        approvals.install(lambda device, variant, change: asked.append(change) or answer)
        try:
            state, outcome = run_lifecycle(experiment / "params.yaml", experiment / "farm.yaml")
        finally:
            approvals.install(None)
        assert state.is_completed(), state.message
        assert outcome.executed[-1:] == ["release[local]"]
    assert len(asked) == 2 and asked[0] == asked[1] and asked[0].startswith("nothing -> ")
    assert outcome.releases[0].startswith("local: released: ")


def test_a_refused_release_fails_the_run_and_is_tried_again(experiment: Path) -> None:
    """``on_release: exit 7``: the release is refused and the run is Failed, saying so
    (it was Completed, exit 0); the next run tries again instead of a cached success."""
    from flows.lifecycle import run_lifecycle

    write_tiny_config(experiment, farm="devices:\n  local: {threads: 1, on_release: 'exit 7'}\n")
    shutil.rmtree(experiment / ".edgeflow" / "devices" / "local" / "app")
    for _ in range(2):
        state, outcome = run_lifecycle(experiment / "params.yaml", experiment / "farm.yaml")
        assert state.is_failed()
        assert state.message.endswith(" | release refused on local"), state.message
        assert "release[local]" in outcome.executed
        assert outcome.releases[0].startswith("local: refused: local keeps its release: "
                                              "on_release failed (exit 7")


def test_changing_benchmark_params_reruns_only_benchmark_and_what_follows(
        experiment: Path) -> None:
    from flows.lifecycle import run_lifecycle

    write_tiny_config(experiment, TINY_PARAMS.replace("runs: 10,", "runs: 12,"))
    state, outcome = run_lifecycle(experiment / "params.yaml", experiment / "farm.yaml")
    assert state.is_completed()
    assert outcome.cached == ["prepare", "train", "optimize", "convert"]
    assert outcome.executed == ["benchmark[local]", "select", "track", "release[local]"]
    results = json.loads((experiment / "results" / "local" / "onnx-fp32.json").read_text())
    assert results["harness"]["runs"] >= 12


def test_deleted_outputs_are_rebuilt_not_trusted(experiment: Path) -> None:
    from flows.lifecycle import run_lifecycle

    shutil.rmtree(experiment / "reports")
    state, outcome = run_lifecycle(experiment / "params.yaml", experiment / "farm.yaml")
    assert "select" in outcome.executed and (experiment / "reports" / "summary.json").is_file()


def test_dvc_repro_reruns_what_changed_then_nothing(experiment: Path) -> None:
    write_tiny_config(experiment, TINY_PARAMS.replace("runs: 10,", "runs: 12,")
                      .replace("min_accuracy: 0.5", "min_accuracy: 0.4"))
    first = _dvc("repro", cwd=experiment)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "Running stage 'select'" in first.stdout and "Running stage 'train'" not in first.stdout
    assert json.loads(_dvc("status", "--json", cwd=experiment).stdout) == {}
    second = _dvc("repro", cwd=experiment)
    assert second.returncode == 0 and "Running stage" not in second.stdout


def test_a_broken_device_fails_the_run_without_hiding_the_others(experiment: Path) -> None:
    from flows.lifecycle import run_lifecycle
    from tasks.core.files import read_json

    write_tiny_config(experiment, farm=TINY_FARM + "  broken: {python: /nonexistent/python3}\n")
    state, outcome = run_lifecycle(experiment / "params.yaml", experiment / "farm.yaml")
    assert state.is_failed()
    assert state.message.startswith("partial: errors on 1 of 2 device(s) (broken)")
    assert "device not usable" in state.message
    rows = read_json(experiment / "reports" / "summary.json")["results"]
    assert {r["status"] for r in rows if r["device"] == "local"} == {"pass"}
    assert {r["status"] for r in rows if r["device"] == "broken"} == {"error"}
    assert outcome.counts["error"] == 3


def test_cli_bad_params_is_one_line_exit_2_and_keeps_outputs(experiment: Path) -> None:
    summary = experiment / "reports" / "summary.json"
    before = summary.read_bytes()
    (experiment / "bad.yaml").write_text("train: {epochs: 0}\n")
    result = _command(str(BIN / "edgeflow"), "run", "--params", str(experiment / "bad.yaml"),
                      "--farm", str(experiment / "farm.yaml"), cwd=experiment)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "train.epochs" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert summary.read_bytes() == before


def test_cli_report_prints_the_table(project: Path, first_run) -> None:
    result = _command(str(BIN / "edgeflow"), "report", "--params", str(project / "params.yaml"),
                      cwd=project)
    assert result.returncode == 0, result.stderr
    assert "tflite-fp32" in result.stdout and "report.md" in result.stdout


def test_a_farm_of_ssh_devices_is_benchmarked_in_parallel(experiment: Path) -> None:
    """`edgeflow run --farm` with three real SSH devices (each its own OpenSSH server; on
    its own address in a network namespace where this machine allows it): every result
    per device in summary, report and MLflow, the devices benchmarked at once. Then a
    fourth, switched-off board: the run is partial and says so."""
    import yaml

    from tasks.core.files import read_json
    from tests.sshd import keygen, netns_available, sshd_available, start_sshd, stop_sshd

    if not sshd_available():
        pytest.skip("OpenSSH server not installed (`make test` installs it when run as root)")
    isolated = netns_available()
    client_key = experiment.parent / "farm-client-key"
    keygen(client_key)
    names = ["pi-a", "pi-b", "jetson"]
    farm = experiment / "farm-ssh.yaml"
    servers = []
    try:
        for n in range(3):
            servers.append(start_sshd(experiment.parent / f"sshd-{n}", client_key,
                                      isolated=isolated))
        if isolated:  # each board on its own address, in its own network namespace
            assert len({server.host for server in servers}) == 3
        devices = {name: server.farm_entry(experiment.parent / f"board-{name}", sys.executable,
                                           tags={"class": "low-end"})
                   for name, server in zip(names, servers)}
        # A fourth board that is switched off: nothing listens on its port.
        ghost = {**devices["jetson"], "host": "127.0.0.1", "port": 1, "connect_attempts": 2,
                 "retry_backoff_seconds": 0.1}
        farm.write_text(yaml.safe_dump({"devices": devices}))
        result = _command(str(BIN / "edgeflow"), "run", "--farm", str(farm), cwd=experiment)
        _check_three_boards(experiment, result, names)
        farm.write_text(yaml.safe_dump({"devices": {**devices, "ghost": ghost}}))
        partial = _command(str(BIN / "edgeflow"), "run", "--farm", str(farm), cwd=experiment)
    finally:
        for server in servers:
            stop_sshd(server)

    # With the switched-off board the run is partial: exit 1, the other boards' results kept.
    assert partial.returncode == 1, partial.stdout[-3000:] + partial.stderr[-3000:]
    assert "flow state: Failed: partial: errors on 1 of 4 device(s) (ghost)" in partial.stdout
    rows = read_json(experiment / "reports" / "summary.json")["results"]
    assert {row["status"] for row in rows if row["device"] != "ghost"} == {"pass"}
    ghost_rows = [row for row in rows if row["device"] == "ghost"]
    assert len(ghost_rows) == 3 and {row["status"] for row in ghost_rows} == {"error"}
    assert all("cannot connect to 127.0.0.1:1 after 2 attempt(s)" in row["reasons"][0]
               for row in ghost_rows)
    assert "ghost" in (experiment / "reports" / "report.md").read_text()


def _check_three_boards(project: Path, result: subprocess.CompletedProcess[str],
                        names: list[str]) -> None:
    import mlflow

    from tasks.core.files import read_json

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "flow state: Completed" in result.stdout
    executed = result.stdout.split("executed:")[1].splitlines()[0]
    assert all(f"benchmark[{name}]" in executed for name in names), result.stdout[-3000:]

    summary = read_json(project / "reports" / "summary.json")
    assert {row["device"] for row in summary["results"]} == set(names)
    assert len(summary["results"]) == 9 and {row["status"] for row in summary["results"]} == {"pass"}
    assert set(summary["recommendations"]) == set(names)
    report = (project / "reports" / "report.md").read_text()
    assert all(name in report for name in names)

    # One device's variants run one after another; the devices ran at the same time.
    spans = {}
    for name in names:
        harness = [read_json(path)["harness"] for path in (project / "results" / name).glob("*.json")]
        spans[name] = (min(h["started_at"] for h in harness), max(h["finished_at"] for h in harness))
    assert max(start for start, _ in spans.values()) < min(end for _, end in spans.values()), spans

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("edgeflow")
    latest = client.search_runs([experiment.experiment_id],
                                filter_string="tags.`edgeflow.kind` = 'lifecycle'",
                                order_by=["attributes.start_time DESC"], max_results=1)[0]
    children = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{latest.info.run_id}'")
    assert sorted(child.data.params["device"] for child in children) == sorted(names * 3)
    for child in children:
        assert child.data.tags["device.arch"] and child.data.tags["device.runtime.onnxruntime"]
        assert child.data.metrics["latency_p50_ms"] > 0

    # Each board now runs its recommended variant, and its MLflow alias says which.
    assert all(f"release[{name}]" in executed for name in names), result.stdout[-3000:]
    registry = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow' / 'mlflow.db'}",
                                   registry_uri=f"sqlite:///{project / 'mlflow' / 'mlflow.db'}")
    for name in names:
        app = project.parent / f"board-{name}" / "app"
        manifest = read_json(app / "current" / "manifest.json")
        assert manifest["variant"] == summary["recommendations"][name]
        assert f"release: {name}: released: " in result.stdout
        version = registry.get_model_version_by_alias(f"edgeflow-{project.name}", f"device-{name}")
        assert str(version.version) == manifest["mlflow"]["version"]
        assert _board_classes(app, manifest) == _keras_classes(project, app, manifest)


def _board_classes(app: Path, manifest: dict[str, Any]) -> list[int]:
    """The classes the board's predictor gives its release's first 20 check images."""
    images = [str(app / "current" / "check" / name) for name in manifest["check"]["images"][:20]]
    done = subprocess.run([sys.executable, str(app / "current" / "predict.py"), *images],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return [json.loads(line)["index"] for line in done.stdout.splitlines()]


def _keras_classes(project: Path, app: Path, manifest: dict[str, Any]) -> list[int]:
    """Keras's classes for the same images, decoded as the predictor decodes them."""
    import keras
    import numpy as np
    from PIL import Image

    pixels = np.stack([np.asarray(Image.open(app / "current" / "check" / name), np.float32)
                       for name in manifest["check"]["images"][:20]])[..., None] / 255
    model = keras.models.load_model(project / "models" / "base" / "model.keras")
    return [int(index) for index in np.argmax(model.predict(pixels, verbose=0), axis=1)]


# In process, the flow's wiring itself (the runs above execute it in a subprocess, where
# no coverage or mutation tool sees it): fakes for Prefect's tasks and the steps' work.

def _farm_ctx(*devices: str, policy: str = "always", timeout: float = 37.0) -> Any:
    from types import SimpleNamespace

    from tasks.config import Parallelism

    return SimpleNamespace(
        farm=SimpleNamespace(devices={device: object() for device in devices},
                             parallelism=Parallelism(2, "test")),
        params=SimpleNamespace(release=SimpleNamespace(policy=policy,
                                                       approval_timeout_seconds=timeout)),
        layout=SimpleNamespace(summary=Path("/exp/reports/summary.json")))


@pytest.mark.parametrize("refresh", [[], ["release"], ["benchmark"]])
@pytest.mark.parametrize("cached", [True, False])
def test_a_step_will_run_when_refreshed_or_not_cached(monkeypatch: pytest.MonkeyPatch,
                                                      refresh: list[str], cached: bool) -> None:
    from flows import lifecycle

    asked: list[tuple[Any, ...]] = []
    monkeypatch.setattr(lifecycle, "will_be_cached",
                        lambda ctx, name, device: asked.append((name, device)) or cached)
    runs = lifecycle._will_run("ctx", "release", "pi", refresh)  # type: ignore[arg-type]
    assert runs is ("release" in refresh or not cached)
    assert asked in ([], [("release", "pi")])


@pytest.mark.parametrize("policy", ["always", "never", "approve"])
def test_approvals_are_asked_only_under_approve_for_devices_that_will_release(
        monkeypatch: pytest.MonkeyPatch, policy: str) -> None:
    """Three devices: one cached (not asked), one with nothing to propose (not asked),
    one asked; the answer given is the approver's, with the proposal's two texts."""
    from flows import approvals, lifecycle

    ctx = _farm_ctx("cached", "nothing", "asked", "refused", policy=policy, timeout=37.0)
    monkeypatch.setattr(lifecycle, "_will_run",
                        lambda c, name, device, refresh: name == "release" and device != "cached")
    monkeypatch.setattr(lifecycle, "propose_release", lambda c, device: None
                        if device == "nothing" else (f"v-{device}", f"a -> v-{device}"))
    timeouts: list[float] = []
    asked: list[tuple[str, str, str]] = []

    def current(timeout: float) -> Any:
        timeouts.append(timeout)
        return lambda device, variant, change: asked.append((device, variant, change)) or \
            device == "asked"

    monkeypatch.setattr(approvals, "current", current)
    answers = lifecycle._approvals(ctx, ["x"])
    if policy != "approve":
        assert (answers, timeouts, asked) == ({}, [], [])
        return
    assert answers == {"asked": True, "refused": False}
    assert timeouts == [37.0]
    assert asked == [("asked", "v-asked", "a -> v-asked"),
                     ("refused", "v-refused", "a -> v-refused")]


class _FakeState:
    def __init__(self, name: str) -> None:
        self.name = name
        self.resulted = False

    def result(self) -> str:
        self.resulted = True
        return "done"


def test_steps_run_in_order_and_each_is_noted_as_cached_or_executed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from flows import lifecycle

    calls: list[tuple[Any, ...]] = []
    states = {"prepare": "Cached", "train": "Completed", "optimize": "Cached",
              "convert": "Completed"}

    def step(ctx: Any, name: str, refresh: list[str]) -> tuple[Any, str]:
        def task(c: Any, n: str, return_state: bool) -> _FakeState:
            calls.append((n, return_state))
            return _FakeState(states[n])
        return task, f"label-{name}"

    monkeypatch.setattr(lifecycle, "_step", step)
    outcome = lifecycle.LifecycleOutcome()
    lifecycle._run_in_order("ctx", tuple(states), ["train"], outcome)  # type: ignore[arg-type]
    assert calls == [(name, True) for name in states]
    assert outcome.cached == ["label-prepare", "label-optimize"]
    assert outcome.executed == ["label-train", "label-convert"]


class _FakeFuture:
    def __init__(self, state: str) -> None:
        self.state = _FakeState(state)


@pytest.mark.parametrize("lasting", [True, False])
def test_per_device_tags_only_devices_that_will_run_on_a_lasting_server_and_passes_answers(
        monkeypatch: pytest.MonkeyPatch, lasting: bool) -> None:
    from flows import lifecycle

    ctx = _farm_ctx("pi", "jetson", "local")
    monkeypatch.setattr(lifecycle, "on_lasting_server", lambda: lasting)
    monkeypatch.setattr(lifecycle, "_will_run",
                        lambda c, name, device, refresh: device != "jetson")
    limited: list[list[str]] = []
    monkeypatch.setattr(lifecycle, "ensure_device_limits", lambda devices: limited.append(devices))
    submitted: list[tuple[Any, ...]] = []
    futures: list[_FakeFuture] = []

    def step(c: Any, name: str, refresh: list[str], device: str, tagged: bool) -> Any:
        class Task:
            @staticmethod
            def submit(*args: Any) -> _FakeFuture:
                submitted.append((tagged, *args[1:]))
                futures.append(_FakeFuture("Cached" if device == "pi" else "Completed"))
                return futures[-1]
        return Task, f"{name}[{device}]"

    widths: list[int] = []

    class Runner:  # Prefect's ThreadPoolTaskRunner, of farm.yaml's max_parallel threads
        def __init__(self, max_workers: int) -> None:
            widths.append(max_workers)

        def __enter__(self) -> "Runner":
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        @staticmethod
        def submit(task: Any, parameters: dict[str, Any]) -> _FakeFuture:
            assert parameters["ctx"].unwrap() is ctx  # quoted: Prefect does not walk it
            return task.submit(ctx, parameters["step_name"], parameters["device"],
                               parameters["approved"])

    logged: list[str] = []
    waited: list[int] = []
    monkeypatch.setattr(lifecycle, "_step", step)
    monkeypatch.setattr(lifecycle, "ThreadPoolTaskRunner", Runner)
    monkeypatch.setattr(lifecycle, "get_run_logger",
                        lambda: type("Log", (), {"info": staticmethod(logged.append)}))
    monkeypatch.setattr(lifecycle, "wait", lambda fs: waited.append(len(fs)))
    outcome = lifecycle.LifecycleOutcome()
    lifecycle._per_device(ctx, "release", [], outcome, {"pi": True, "local": False})
    assert widths == [2] and logged == ["release: 3 devices, at most 2 boards at once (test)"]
    assert limited == ([["pi", "local"]] if lasting else [])
    assert submitted == [(lasting, "release", "pi", True), (False, "release", "jetson", None),
                         (lasting, "release", "local", False)]
    assert waited == [3] and all(future.state.resulted for future in futures)
    assert outcome.cached == ["release[pi]"]
    assert outcome.executed == ["release[jetson]", "release[local]"]
    submitted.clear()
    lifecycle._per_device(ctx, "benchmark", [], lifecycle.LifecycleOutcome())
    assert [args[-1] for args in submitted] == [None, None, None]


def test_release_lines_and_failures_are_of_the_devices_whose_release_ran_in_farm_order(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from flows import lifecycle
    from tasks.release import outcome as release_outcome

    ctx = _farm_ctx("pi", "jetson", "local")
    monkeypatch.setattr(release_outcome, "last_attempt",
                        lambda layout, device: f"{device}: released")
    monkeypatch.setattr(release_outcome, "unsuccessful",
                        lambda layout, devices: [f"failed on {device}" for device in devices])
    executed = ["benchmark[pi]", "release[local]", "release[pi]", "release"]
    assert lifecycle._release_lines(ctx, executed) == ["pi: released", "local: released"]
    assert lifecycle._unsuccessful_releases(ctx, executed) == ["failed on pi", "failed on local"]
    monkeypatch.setattr(release_outcome, "last_attempt", lambda *_: pytest.fail("asked"))
    monkeypatch.setattr(release_outcome, "unsuccessful", lambda *_: pytest.fail("asked"))
    assert lifecycle._release_lines(ctx, ["benchmark[pi]"]) == []
    assert lifecycle._unsuccessful_releases(ctx, ["benchmark[pi]"]) == []


def _wired_lifecycle(monkeypatch: pytest.MonkeyPatch, *, ok: bool, gate_passed: bool,
                     unreleased: list[str]) -> list[Any]:
    """``_lifecycle`` with every step, record and page replaced: what it called, in order."""
    from types import SimpleNamespace

    from flows import lifecycle

    calls: list[Any] = []

    def in_order(ctx: Any, names: tuple[str, ...], refresh: list[str], outcome: Any) -> None:
        calls.append(("in order", names, refresh))
        outcome.executed.extend(names)

    def per_device(ctx: Any, name: str, refresh: list[str], outcome: Any,
                   approvals: Any = None) -> None:
        calls.append(("per device", name, refresh, approvals))
        outcome.executed.append(f"{name}[pi]")

    def record(ctx: Any, executed: bool) -> str:
        calls.append(("dvc", executed))
        return "dvc: recorded"

    counts = SimpleNamespace(document=lambda: {"pass": 2, "fail": 1, "error": 0, "skipped": 0})
    monkeypatch.setattr(lifecycle, "_run_in_order", in_order)
    monkeypatch.setattr(lifecycle, "_per_device", per_device)
    monkeypatch.setattr(lifecycle, "remove_stale_results", lambda ctx: calls.append("stale"))
    monkeypatch.setattr(lifecycle, "_gate", lambda ctx: (calls.append("gate") or
                                                         ("gate line", gate_passed)))
    monkeypatch.setattr(lifecycle, "_approvals", lambda ctx, refresh: {"pi": True})
    monkeypatch.setattr(lifecycle, "_release_lines", lambda ctx, executed: ["pi: released v"])
    monkeypatch.setattr(lifecycle, "_unsuccessful_releases", lambda ctx, executed: unreleased)
    monkeypatch.setattr(lifecycle, "record_with_dvc", record)
    monkeypatch.setattr(lifecycle, "read_summary", lambda path: SimpleNamespace(counts=counts))
    monkeypatch.setattr(lifecycle, "verdict", lambda summary: SimpleNamespace(
        ok=ok, message="2 pass, 1 fail" if ok else "an error", problems=("p1", "p2")))
    monkeypatch.setattr(lifecycle, "publish", lambda *args: calls.append(("publish", *args)))
    return calls


@pytest.mark.parametrize("ok", [True, False])
@pytest.mark.parametrize("gate", [None, True, False])  # not gated, gate passed, gate failed
@pytest.mark.parametrize("unreleased", [[], ["refused on pi", "failed on jetson"]])
def test_the_lifecycle_runs_its_steps_in_order_and_its_state_says_every_failure(
        monkeypatch: pytest.MonkeyPatch, ok: bool, gate: bool | None,
        unreleased: list[str]) -> None:
    from flows import lifecycle

    ctx = _farm_ctx("pi", "jetson")
    calls = _wired_lifecycle(monkeypatch, ok=ok, gate_passed=gate is not False,
                             unreleased=unreleased)
    state = lifecycle._lifecycle(ctx, ["train"], gate is not None)
    released = gate is not False
    assert calls == [
        ("in order", ("prepare", "train", "optimize", "convert"), ["train"]),
        ("per device", "benchmark", ["train"], None), "stale",
        ("in order", ("select", "track"), ["train"]),
        *(["gate"] if gate is not None else []),
        *([("per device", "release", ["train"], {"pi": True})] if released else []),
        ("dvc", True),
        ("publish", ctx.layout.summary, "2 pass, 1 fail" if ok else "an error",
         ["pi: released v"] if released else
         ["pi: not released: the regression gate failed",
          "jetson: not released: the regression gate failed"]),
    ]
    failures = unreleased if released else []
    message = ("2 pass, 1 fail" if ok else "an error") \
        + (" | gate: gate line" if gate is not None else "") \
        + (" | release refused on pi, failed on jetson" if failures else "")
    assert state.message == message
    assert state.is_completed() is (ok and gate is not False and not failures)
    assert state.is_failed() is not state.is_completed()
    outcome = lifecycle.LifecycleOutcome(**state.result(raise_on_failure=False))
    assert outcome.executed == ["prepare", "train", "optimize", "convert", "benchmark[pi]",
                                "select", "track", *(["release[pi]"] if released else [])]
    assert outcome.summary_path == "/exp/reports/summary.json"
    assert outcome.counts == {"pass": 2, "fail": 1, "error": 0, "skipped": 0}
    assert outcome.problems == ["p1", "p2"]
    assert outcome.dvc == "dvc: recorded"
    assert outcome.gate == ("gate line" if gate is not None else "")
    assert outcome.releases == (["pi: released v"] if released else
                                ["pi: not released: the regression gate failed",
                                 "jetson: not released: the regression gate failed"])


def test_a_run_that_executed_nothing_records_so_with_dvc(monkeypatch: pytest.MonkeyPatch) -> None:
    from flows import lifecycle

    calls = _wired_lifecycle(monkeypatch, ok=True, gate_passed=True, unreleased=[])
    monkeypatch.setattr(lifecycle, "_run_in_order", lambda *_: None)
    monkeypatch.setattr(lifecycle, "_per_device", lambda *_: None)
    lifecycle._lifecycle(_farm_ctx("pi"), [], False)
    assert ("dvc", False) in calls


@pytest.mark.parametrize(("device", "approved", "called"), [
    (None, None, "run"), ("pi", None, "per device pi"), ("pi", True, "release pi True"),
    ("pi", False, "release pi False")])
def test_a_step_task_runs_the_work_its_arguments_name_and_stamps_it(
        monkeypatch: pytest.MonkeyPatch, device: str | None, approved: bool | None,
        called: str) -> None:
    from dataclasses import replace

    from flows import lifecycle
    from flows.steps import STEPS

    calls: list[str] = []
    step = replace(STEPS["release"], run=lambda ctx: calls.append("run"),
                   per_device=lambda ctx, name: calls.append(f"per device {name}"))
    monkeypatch.setitem(lifecycle.STEPS, "release", step)
    monkeypatch.setattr(lifecycle, "release_one_device", lambda ctx, name, approve: calls.append(
        f"release {name} {approve('pi', 'v', 'a -> v')}"))
    monkeypatch.setattr(lifecycle, "record_run",
                        lambda ctx, name, dev: calls.append(f"stamped {name} {dev}"))
    from types import SimpleNamespace

    ctx = SimpleNamespace(farm=SimpleNamespace(pools=None))  # no pools: every step in place
    assert lifecycle.run_step.fn(ctx, "release", device, approved) == \
        f"release:{device or 'all'}"
    assert calls == [called, f"stamped release {device}"]


@pytest.mark.parametrize("device", [None, "pi"])
@pytest.mark.parametrize("tags", [True, False])
def test_a_step_task_is_named_refreshed_and_tagged_as_asked(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, device: str | None, tags: bool) -> None:
    from flows import lifecycle

    monkeypatch.setattr(lifecycle, "cache_dir", lambda ctx: tmp_path / "cache")
    monkeypatch.setattr(lifecycle, "results_dir", lambda ctx: tmp_path / "results")
    from types import SimpleNamespace

    ctx = SimpleNamespace(farm=SimpleNamespace(devices={"pi": SimpleNamespace()}))  # no retries
    for refresh in (["benchmark"], ["train", "select"]):
        task, label = lifecycle._step(ctx, "benchmark", refresh, device, tags)  # type: ignore
        assert label == ("benchmark" if device is None else "benchmark[pi]")
        assert task.name == label
        assert task.refresh_cache is ("benchmark" in refresh)
        assert set(task.tags) == ({"device:pi"} if device and tags else set())
        assert task.cache_policy.key_storage == tmp_path / "cache" / "keys"
        assert task.result_storage == tmp_path / "results"


@pytest.mark.parametrize(("value", "plain"), [
    (None, True), ("a", True), (True, True), (3, True), (2.5, True), ([], True),
    (["a", ["b", 1]], True), (Path("a"), False), (["a", Path("b")], False),
    ({"a": 1}, False), (("a",), False), ([["a", {"b"}]], False)])
def test_plain_json_parameters_skip_prefects_encoder_and_others_go_through_it(
        monkeypatch: pytest.MonkeyPatch, value: Any, plain: bool) -> None:
    from flows import lifecycle

    assert lifecycle._is_plain_json(value) is plain
    monkeypatch.setattr(lifecycle, "_prefect_serialize_parameters",
                        lambda parameters: {"encoded": sorted(parameters)})
    parameters = {"params_path": "p.yaml", "refresh": value}
    assert lifecycle._serialize_parameters(parameters) == (
        parameters if plain else {"encoded": ["params_path", "refresh"]})


def test_only_an_input_errors_traceback_is_dropped_from_prefects_log() -> None:
    import sys

    from flows.lifecycle import _INPUT_ERROR_FILTER
    from tasks.core.errors import UsageError

    for error, kept in ((UsageError("bad"), False), (ValueError("bug"), True)):
        try:
            raise error
        except Exception:
            info = sys.exc_info()
        record = logging.LogRecord("prefect.task_runs", logging.ERROR, __file__, 1, "failed",
                                   None, info)
        record.exc_text = "Traceback ..."
        assert _INPUT_ERROR_FILTER.filter(record) is True
        assert (record.exc_info is info, record.exc_text) == \
            ((True, "Traceback ...") if kept else (False, None))


def test_preflight_checks_the_configuration_then_usage_then_keys_then_tracking(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from flows import lifecycle

    calls: list[Any] = []
    ctx = SimpleNamespace(farm="farm", layout=SimpleNamespace(root=Path("/exp")))
    monkeypatch.setattr(lifecycle.Context, "load",
                        lambda params, farm: calls.append(("load", params, farm)) or ctx)
    monkeypatch.setattr(lifecycle, "known_steps", lambda refresh: calls.append(("steps", refresh)))
    monkeypatch.setattr(lifecycle, "check_key_files", lambda farm: calls.append(("keys", farm)))
    monkeypatch.setattr(lifecycle, "tracking_uri", lambda root: f"uri {root}")
    monkeypatch.setattr(lifecycle, "check_answers", lambda uri: calls.append(("answers", uri)))
    monkeypatch.setattr(lifecycle, "code_dependencies",
                        lambda step: SimpleNamespace(libraries=(step.name,)))
    monkeypatch.setattr(lifecycle, "library_versions",
                        lambda libraries: calls.append(("versions", *libraries)))
    assert lifecycle.preflight(Path("p.yaml"), Path("f.yaml"), ["train"]) is ctx
    assert calls == [("load", Path("p.yaml"), Path("f.yaml")), ("steps", ["train"]),
                     ("keys", "farm"), ("answers", "uri /exp"),
                     *[("versions", name) for name in lifecycle.STEPS]]


def test_notices_off_the_console_go_to_the_run_log_progress_as_info_and_warnings_as_warnings(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from flows import lifecycle
    from tasks.core import notices

    logged: list[tuple[str, str]] = []

    class Logger:
        def info(self, line: str) -> None:
            logged.append(("info", line))

        def warning(self, line: str) -> None:
            logged.append(("warning", line))

    monkeypatch.setattr(lifecycle, "get_run_logger", lambda: Logger())
    with lifecycle._notices_to_run_log():
        notices.progress("convert", 2, 8, "onnx-fp32")
        notices.warn("a board is slow")
    assert logged == [("info", "convert: 2/8 onnx-fp32"), ("warning", "a board is slow")]
    assert not notices.listened()
    logged.clear()
    with notices.listening(lambda notice: None), lifecycle._notices_to_run_log():
        notices.warn("on the console")
    assert logged == []


def _locks(monkeypatch: pytest.MonkeyPatch, calls: list[Any]) -> None:
    from contextlib import contextmanager

    from flows import lifecycle

    @contextmanager
    def lock(state: Path, wait_seconds: float = 0.0) -> Any:
        calls.append(("locked", state))
        try:
            yield
        finally:
            calls.append(("unlocked", state))

    monkeypatch.setattr(lifecycle, "experiment_lock", lock)


@pytest.mark.parametrize("fails", [False, True])
def test_the_flow_runs_under_the_experiments_lock_and_records_a_failure_in_mlflow(
        monkeypatch: pytest.MonkeyPatch, fails: bool) -> None:
    from types import SimpleNamespace

    from flows import lifecycle
    from tasks.track import failure

    calls: list[Any] = []
    ctx = SimpleNamespace(layout=SimpleNamespace(state=Path("/exp/.edgeflow")),
                          params_dump=lambda: {"train": {}})
    _locks(monkeypatch, calls)
    monkeypatch.setattr(lifecycle, "preflight",
                        lambda params, farm, refresh: calls.append(("preflight", params, farm,
                                                                    refresh)) or ctx)
    monkeypatch.setattr(lifecycle.notices, "listened", lambda: True)
    broken = RuntimeError("convert broke")

    def run(c: Any, refresh: list[str], gate: bool) -> str:
        calls.append(("lifecycle", refresh, gate))
        if fails:
            raise broken
        return "state"

    monkeypatch.setattr(lifecycle, "_lifecycle", run)
    monkeypatch.setattr(failure, "record_failure",
                        lambda params, layout, error: calls.append(("failed", params, error)))
    if fails:
        with pytest.raises(RuntimeError):
            lifecycle.lifecycle.fn("p.yaml", "f.yaml", ("train",), True)
    else:
        assert lifecycle.lifecycle.fn("p.yaml", "f.yaml", None, False) == "state"
    assert calls == [
        ("preflight", Path("p.yaml"), Path("f.yaml"), ("train",) if fails else None),
        ("locked", Path("/exp/.edgeflow")),
        ("lifecycle", ["train"] if fails else [], fails),
        *([("failed", {"train": {}}, broken)] if fails else []),
        ("unlocked", Path("/exp/.edgeflow"))]


@pytest.mark.parametrize("nested", [False, True])
def test_a_run_returns_its_state_and_outcome_and_raises_the_flows_own_error(
        monkeypatch: pytest.MonkeyPatch, nested: bool) -> None:
    from types import SimpleNamespace

    from prefect.states import Completed

    from flows import lifecycle

    calls: list[Any] = []
    ctx = SimpleNamespace(layout=SimpleNamespace(state=Path("/exp/.edgeflow")),
                          params_path=Path("/exp/params.yaml"), farm_path=Path("/exp/farm.yaml"))
    _locks(monkeypatch, calls)
    monkeypatch.setattr(lifecycle, "preflight", lambda *args: calls.append(("preflight", *args))
                        or ctx)
    data = {"executed": ["prepare"], "cached": ["train"], "dvc": "recorded"}
    inner = Completed(data=data)
    returned: list[Any] = [Completed(data=inner if nested else data)]

    def flow(params: str, farm: str, refresh: Any, gate: bool, return_state: bool) -> Any:
        calls.append(("flow", params, farm, refresh, gate, return_state))
        return returned[0]

    monkeypatch.setattr(lifecycle, "lifecycle", flow)
    state, outcome = lifecycle.run_lifecycle(Path("p.yaml"), Path("f.yaml"), ["benchmark"], True)
    assert state is returned[0]
    assert outcome == lifecycle.LifecycleOutcome(executed=["prepare"], cached=["train"],
                                                 dvc="recorded")
    assert calls == [("preflight", Path("p.yaml"), Path("f.yaml"), ["benchmark"]),
                     ("locked", Path("/exp/.edgeflow")),
                     ("flow", "/exp/params.yaml", "/exp/farm.yaml", ["benchmark"], True, True),
                     ("unlocked", Path("/exp/.edgeflow"))]
    for name in ("prefect.task_runs", "prefect.flow_runs"):
        assert logging.getLogger(name).filters.count(lifecycle._INPUT_ERROR_FILTER) == 1
    returned[0] = Completed(data=ValueError("the flow's own"))
    with pytest.raises(ValueError, match="the flow's own"):
        lifecycle.run_lifecycle(Path("p.yaml"), Path("f.yaml"))
