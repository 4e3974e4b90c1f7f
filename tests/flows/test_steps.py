"""The step registry: dvc.yaml, the Prefect deployments and the code agree with it."""

from __future__ import annotations

import hashlib
import sys
from typing import TYPE_CHECKING, Any
import json
from pathlib import Path

import pytest
import yaml

from tasks.config import load_params
from tasks.core.layout import Layout
from flows import code_manifests
from flows.code_manifests import LOCK_FILE, manifest_path, write_code_manifests
from flows.dvc_yaml import CODE_STAGE, render_dvc_yaml
from flows.steps import STEPS, code_dependencies

if TYPE_CHECKING:
    from flows.steps import Context

REPO = Path(__file__).resolve().parents[2]


def test_dvc_yaml_is_the_one_the_registry_implies() -> None:
    committed = (REPO / "dvc.yaml").read_text(encoding="utf-8")
    assert committed == render_dvc_yaml(Layout(REPO), load_params(REPO / "params.yaml")), \
        "dvc.yaml is stale: run `edgeflow dvc-yaml > dvc.yaml`"


def test_every_stage_runs_its_step_and_lists_only_known_params() -> None:
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert list(stages) == [CODE_STAGE, *STEPS]
    assert stages.pop(CODE_STAGE)["cmd"] == "edgeflow code-manifests"
    sections = set(yaml.safe_load((REPO / "params.yaml").read_text()))
    for name, stage in stages.items():
        assert stage["cmd"] == f"edgeflow step {name}"
        assert {key.split(".")[0] for key in stage["params"]} <= sections, name


def test_each_stage_depends_on_its_code_through_the_manifest_the_code_stage_writes() -> None:
    """The code stage reads every file of any step's closure and the lock file `make
    install` installs from, and writes one manifest per step; each step's stage starts
    from its own manifest and lists no code file."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    code = stages.pop(CODE_STAGE)
    closures = {name: [path.as_posix() for path in code_dependencies(step).files]
                for name, step in STEPS.items()}
    assert (REPO / LOCK_FILE).is_file() and LOCK_FILE == "requirements.lock"
    assert code["deps"] == [*sorted({path for files in closures.values() for path in files}),
                            LOCK_FILE]
    assert all((REPO / path).is_file() for path in code["deps"])
    manifests = [f"code-manifests/{name}.json" for name in STEPS]
    assert code["outs"] == [{path: {"cache": False}} for path in manifests]
    for (name, stage), manifest in zip(stages.items(), manifests):
        assert stage["deps"][0] == manifest, name
        assert not [dep for dep in stage["deps"] if dep.startswith(("tasks/", "flows/"))], name
        assert LOCK_FILE not in stage["deps"], name


def test_a_manifest_holds_hashes_and_versions_and_is_rewritten_only_when_they_change(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    layout = Layout(tmp_path)
    assert write_code_manifests(layout) == list(STEPS)
    manifest = json.loads(manifest_path(layout, "train").read_text())
    closure = code_dependencies(STEPS["train"])
    assert manifest["files"] == {path.as_posix(): hashlib.sha256(
        (REPO / path).read_bytes()).hexdigest() for path in closure.files}
    assert manifest["libraries"] == code_manifests.library_versions(closure.libraries)
    assert "keras" in manifest["libraries"] and manifest["step"] == "train"
    assert write_code_manifests(layout) == []  # unchanged: left alone (DVC re-runs nothing)
    before = manifest_path(layout, "prepare").read_text()
    # A library train's code imports and prepare's does not gets a new version: the
    # manifests of exactly the steps importing it are rewritten.
    libraries = {name: set(code_dependencies(step).libraries) for name, step in STEPS.items()}
    upgraded = sorted(libraries["train"] - libraries["prepare"])[0]
    real = code_manifests.library_versions
    monkeypatch.setattr(code_manifests, "library_versions", lambda names: {
        **real(names), **({"upgraded": "2.0"} if upgraded in names else {})})
    rewritten = write_code_manifests(layout)
    assert rewritten == [name for name in STEPS if upgraded in libraries[name]]
    assert "train" in rewritten and "prepare" not in rewritten
    assert manifest_path(layout, "prepare").read_text() == before
    assert json.loads(manifest_path(layout, "train").read_text())["libraries"]["upgraded"] == "2.0"


def test_the_firmwares_templates_are_deps_of_the_code_stage_and_re_run_the_benchmark(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """dvc.yaml's code stage reads the templates the benchmark compiles into a firmware,
    and an edited one rewrites the manifests of exactly the steps whose code reaches them
    (the benchmark's among them): ``dvc repro`` then re-runs the benchmark stage."""
    import shutil

    templates = sorted(path.relative_to(REPO).as_posix()
                       for path in (REPO / "tasks/targets/firmware/templates").iterdir())
    assert "tasks/targets/firmware/templates/harness.cc" in templates
    code = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][CODE_STAGE]
    assert set(templates) <= set(code["deps"])
    code_root = tmp_path / "code"  # a copy of every step's code, which the manifests hash
    for step in STEPS.values():
        for path in code_dependencies(step).files:
            (code_root / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(REPO / path, code_root / path)
    monkeypatch.setattr(code_manifests, "PACKAGE_ROOT", code_root)
    layout = Layout(tmp_path / "exp")
    write_code_manifests(layout)
    benchmark = json.loads(manifest_path(layout, "benchmark").read_text())
    assert set(templates) <= set(benchmark["files"])
    with open(code_root / "tasks/targets/firmware/templates/harness.cc", "a") as handle:
        handle.write("// an edit\n")
    reaching = [name for name, step in STEPS.items()
                if "tasks/targets/firmware/build.py" in
                {path.as_posix() for path in code_dependencies(step).files}]
    assert write_code_manifests(layout) == reaching
    assert "benchmark" in reaching and "train" not in reaching


def test_prefect_deployments_point_at_the_flow_with_valid_parameters() -> None:
    import inspect

    from flows import lifecycle

    document = yaml.safe_load((REPO / "prefect.yaml").read_text())
    accepted = set(inspect.signature(lifecycle.lifecycle.fn).parameters)
    assert document["deployments"]
    for deployment in document["deployments"]:
        module, function = deployment["entrypoint"].split(":")
        assert (REPO / module).is_file() and function == "lifecycle"
        assert set(deployment["parameters"]) <= accepted
        assert set(deployment["parameters"].get("refresh", [])) <= set(STEPS)
    nightly = next(d for d in document["deployments"] if d["name"] == "nightly-rebenchmark")
    assert nightly["schedules"][0]["cron"] and nightly["parameters"]["refresh"] == ["benchmark"]
    assert nightly["parameters"]["gate"] is True, "the nightly run fails on a regression"


def test_mlflow_folder_never_shadows_the_library() -> None:
    assert not (REPO / "mlflow" / "__init__.py").exists()
    import mlflow

    assert Path(mlflow.__file__).resolve().parent != (REPO / "mlflow").resolve()


def test_an_experiment_in_a_subfolder_names_the_code_from_its_own_folder() -> None:
    """DVC reads a dvc.yaml's paths relative to its folder: exp/dvc.yaml reaches the code
    through ``..``; its own files stay relative to exp/."""
    exp = REPO / "exp"
    stages = yaml.safe_load(render_dvc_yaml(Layout(exp), load_params(REPO / "params.yaml")))
    code = stages["stages"][CODE_STAGE]
    assert code["deps"][-1] == f"../{LOCK_FILE}"
    assert all(dep.startswith("../") and (exp / dep).resolve().is_file() for dep in code["deps"])
    assert code["outs"][0] == {"code-manifests/prepare.json": {"cache": False}}
    assert stages["stages"]["train"]["deps"][0] == "code-manifests/train.json"
    assert stages["stages"]["train"]["deps"][-1] == "data/prepared"
    assert stages["stages"]["select"]["outs"][0] == "reports/plots"


def test_plots_tell_variants_and_devices_apart_with_the_committed_template() -> None:
    import json

    from flows.dvc_yaml import PLOT_TEMPLATE

    plots = yaml.safe_load((REPO / "dvc.yaml").read_text())["plots"]
    scatter = [next(iter(plot.values())) for plot in plots if isinstance(plot, dict)
               and next(iter(plot.values())).get("template") == PLOT_TEMPLATE]
    assert {(plot["x"], *plot["y"].items()) for plot in scatter} == {
        ("latency_p50_ms", ("reports/points.json", "accuracy")),
        ("size_bytes", ("reports/points.json", "accuracy"))}
    template = json.loads((REPO / ".dvc" / "plots" / f"{PLOT_TEMPLATE}.json").read_text())
    encoding = template["encoding"]
    assert (encoding["color"]["field"], encoding["shape"]["field"]) == ("variant", "device")
    assert encoding["column"]["field"] == "rev"  # `dvc plots diff`: one column per commit
    assert template["data"]["values"] == "<DVC_METRIC_DATA>"


def test_an_experiment_away_from_the_code_names_it_where_it_is(tmp_path: Path) -> None:
    from flows.dvc_yaml import code_path

    code = code_dependencies(STEPS["train"]).files[0]
    assert code_path(code, tmp_path) == (REPO / code).as_posix()  # the installed code
    (tmp_path / code).parent.mkdir(parents=True)
    (tmp_path / code).write_text("")
    assert code_path(code, tmp_path) == code.as_posix()  # the experiment's own copy
    assert code_path(Path(LOCK_FILE), REPO / "a" / "b") == f"../../{LOCK_FILE}"


# What each step's function hands its task, in process: the task modules are replaced
# in sys.modules by recorders (no TensorFlow is imported).

TWO_BOARDS = "devices:\n  zeta: {threads: 1}\n  alpha: {threads: 2}\n"


@pytest.fixture
def ctx(tmp_path: Path) -> "Context":
    from flows.steps import Context
    from tests.tiny import TINY_PARAMS, write_tiny_config

    write_tiny_config(tmp_path / "exp", TINY_PARAMS.replace("seed: 42", "seed: 7"), TWO_BOARDS)
    return Context.load(tmp_path / "exp" / "params.yaml", tmp_path / "exp" / "farm.yaml")


def _recorder(monkeypatch: pytest.MonkeyPatch, module: str, *names: str) -> list[Any]:
    import types

    calls: list[Any] = []
    fake = types.ModuleType(module)
    for name in names:
        setattr(fake, name, lambda *args, _name=name, **kwargs:
                calls.append((_name, args, kwargs)) or f"{_name} done")
    monkeypatch.setitem(sys.modules, module, fake)
    return calls


def test_a_context_is_loaded_resolved_and_reads_sections_by_dotted_key(
        ctx: "Context", tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.steps import Context

    exp = (tmp_path / "exp").resolve()
    assert (ctx.params_path, ctx.farm_path, ctx.layout.root) == (
        exp / "params.yaml", exp / "farm.yaml", exp)
    assert list(ctx.farm.devices) == ["zeta", "alpha"]
    assert ctx.section("train.seed") == 7
    assert ctx.section("data")["image_size"] == [16, 16]
    assert ctx.params_dump() == ctx.params.model_dump(mode="json")
    monkeypatch.chdir(tmp_path)
    relative = Context.load(Path("exp/params.yaml"), Path("exp/farm.yaml"))
    assert (relative.params_path, relative.layout.root) == (exp / "params.yaml", exp)


def test_each_step_hands_its_task_the_experiments_own_inputs(
        ctx: "Context", monkeypatch: pytest.MonkeyPatch) -> None:
    from flows import steps

    lay, params = ctx.layout, ctx.params
    calls = {module: _recorder(monkeypatch, module, *names) for module, names in {
        "tasks.prepare": ("prepare",), "tasks.train": ("train",),
        "tasks.optimize": ("optimize",), "tasks.convert": ("convert", "ConvertInputs"),
        "tasks.select": ("select",), "tasks.track": ("track",)}.items()}
    for name in ("prepare", "train", "optimize", "convert", "select", "track"):
        assert steps.STEPS[name].run(ctx) == f"{name} done"
    assert calls["tasks.prepare"] == [("prepare", (params.data, lay.prepared), {})]
    assert calls["tasks.train"] == [("train", (params.model, params.train, lay.prepared,
                                               lay.base_model, lay.train_metrics.parent,
                                               None), {})]
    assert calls["tasks.optimize"] == [("optimize", (params.optimize, lay.base_model,
                                                     lay.prepared, lay.pruned),
                                        {"seed": 7, "decoding": None})]
    assert calls["tasks.convert"] == [
        ("ConvertInputs", (lay.base_model, lay.pruned, lay.prepared), {}),
        ("convert", (params.formats, params.convert, params.quantization,
                     params.requirements.max_accuracy_drop, "ConvertInputs done",
                     lay.variants, None), {})]
    assert calls["tasks.select"] == [("select", (
        params.requirements, ctx.farm, lay.results, lay.base_model / "reference.json",
        lay.reports, lay.train_metrics.parent, params.select), {})]
    assert calls["tasks.track"] == [("track", (ctx.params_dump(), lay), {})]


def test_train_optimize_and_convert_get_the_detectors_one_decoding_section(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """data.detection reaches train (its reference's mAP), optimize (a pruned detector's
    reference) and convert (each variant's spec) as the same object."""
    from flows import steps
    from flows.steps import Context
    from tasks.config import DetectionDecoding

    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "params.yaml").write_text(
        "data: {task: detection, source: digit_scenes, image_size: [32, 32], color: rgb,\n"
        "       detection: {score_threshold: 0.4, max_detections: 9}}\n"
        "model: {architecture: tiny_detector}\n")
    (tmp_path / "exp" / "farm.yaml").write_text(TWO_BOARDS)
    ctx = Context.load(tmp_path / "exp" / "params.yaml", tmp_path / "exp" / "farm.yaml")
    trained = _recorder(monkeypatch, "tasks.train", "train")
    converted = _recorder(monkeypatch, "tasks.convert", "convert", "ConvertInputs")
    optimized = _recorder(monkeypatch, "tasks.optimize", "optimize")
    for name in ("train", "optimize", "convert"):
        steps.STEPS[name].run(ctx)
        assert "data" in steps.STEPS[name].params
    expected = DetectionDecoding(score_threshold=0.4, iou_threshold=0.45, max_detections=9)
    assert trained[0][1][-1] == expected
    assert optimized[0][2]["decoding"] == expected
    assert converted[-1][0] == "convert" and converted[-1][1][-1] == expected


def test_benchmark_checks_every_key_then_measures_each_board_in_farm_order_then_drops_stale(
        ctx: "Context", monkeypatch: pytest.MonkeyPatch) -> None:
    from flows import steps

    order: list[str] = []
    monkeypatch.setattr(steps, "check_key_files", lambda farm: order.append("keys"))
    calls = _recorder(monkeypatch, "tasks.benchmark", "benchmark_device")
    monkeypatch.setattr(steps, "remove_stale_results", lambda c: order.append("stale"))
    assert steps.STEPS["benchmark"].run(ctx) == ["benchmark_device done"] * 2
    assert order == ["keys", "stale"]
    assert calls == [("benchmark_device", (name, ctx.farm.devices[name], ctx.params.benchmark,
                                           ctx.layout.variants, ctx.layout.prepared,
                                           ctx.layout.device_results(name)), {})
                     for name in ("zeta", "alpha")]


def test_only_result_folders_of_devices_gone_from_the_farm_are_removed(ctx: "Context") -> None:
    from flows.steps import remove_stale_results

    remove_stale_results(ctx)  # no results yet: nothing to do
    results = ctx.layout.results
    for name in ("zeta", "alpha", "gone", "also-gone"):
        (results / name).mkdir(parents=True)
        (results / name / "r.json").write_text("{}")
    (results / "notes.txt").write_text("a file is not a device's results")
    remove_stale_results(ctx)
    assert sorted(path.name for path in results.iterdir()) == ["alpha", "notes.txt", "zeta"]


def test_release_releases_every_board_in_farm_order_asking_nobody(
        ctx: "Context", monkeypatch: pytest.MonkeyPatch) -> None:
    from flows import steps

    calls = _recorder(monkeypatch, "tasks.release", "release_device", "ReleaseRun")
    assert steps.STEPS["release"].run(ctx) == "ReleaseRun done"
    assert calls == [
        *[("release_device", (ctx.params, ctx.farm, ctx.layout, name), {"approve": None})
          for name in ("zeta", "alpha")],
        ("ReleaseRun", (("release_device done", "release_device done"),), {})]
    calls.clear()
    approve = object()
    steps.STEPS["release"].per_device(ctx, "alpha", approve)  # type: ignore[misc]
    assert calls == [("release_device", (ctx.params, ctx.farm, ctx.layout, "alpha"),
                      {"approve": approve})]
    settled = _recorder(monkeypatch, "tasks.release.outcome", "last_settled")
    assert steps.STEPS["release"].settled(ctx.layout, "alpha") == "last_settled done"
    assert settled == [("last_settled", (ctx.layout, "alpha"), {})]
    assert steps.STEPS["benchmark"].settled(ctx.layout, "alpha") is True


def test_a_folder_source_and_a_brought_model_are_user_inputs_of_their_steps(
        ctx: "Context", tmp_path: Path) -> None:
    from flows.steps import STEPS

    params = ctx.params
    assert STEPS["prepare"].user_inputs(params) == []  # digits: scikit-learn's
    images = params.model_copy(update={"data": params.data.model_copy(
        update={"source": "folder", "folder": tmp_path / "images"})})
    assert STEPS["prepare"].user_inputs(images) == [tmp_path / "images"]
    coco = params.model_copy(update={"data": params.data.model_copy(
        update={"source": "folder", "folder": tmp_path / "images",
                "coco_json": tmp_path / "instances.json"})})
    assert STEPS["prepare"].user_inputs(coco) == [tmp_path / "images",
                                                  tmp_path / "instances.json"]
    unnamed = params.model_copy(update={"data": params.data.model_copy(
        update={"source": "folder", "folder": None})})
    assert STEPS["prepare"].user_inputs(unnamed) == []
    named_not_used = params.model_copy(update={"data": params.data.model_copy(
        update={"folder": tmp_path / "images"})})
    assert STEPS["prepare"].user_inputs(named_not_used) == []
    assert STEPS["train"].user_inputs(params) == []
    brought = params.model_copy(update={"model": params.model.model_copy(
        update={"path": tmp_path / "model.keras"})}) if hasattr(params.model, "path") else None
    if brought is None:
        from types import SimpleNamespace
        brought = SimpleNamespace(model=SimpleNamespace(path=tmp_path / "model.keras"))
    assert STEPS["train"].user_inputs(brought) == [tmp_path / "model.keras"]
    assert all(STEPS[name].user_inputs(params) == [] for name in STEPS
               if name not in ("prepare", "train"))


def test_a_steps_outputs_are_its_outs_then_metrics_then_records(ctx: "Context") -> None:
    from flows.steps import STEPS

    lay = ctx.layout
    assert STEPS["train"].all_outputs(lay) == [
        lay.base_model, lay.train_metrics, lay.train_metrics.with_name("train_history.json")]
    assert STEPS["select"].all_outputs(lay) == [
        lay.reports / "plots", lay.reports / "report.html",
        lay.train_metrics.with_name("benchmark.json"), lay.summary, lay.reports / "report.md",
        lay.reports / "points.json"]
    assert STEPS["benchmark"].device_outputs(lay, "zeta") == [lay.device_results("zeta")]
    assert STEPS["prepare"].device_outputs(lay, "zeta") == []
    assert [name for name, step in STEPS.items() if step.per_device] == ["benchmark", "release"]
    assert [name for name, step in STEPS.items() if step.persist] == ["release"]
