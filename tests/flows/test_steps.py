"""The step registry: dvc.yaml, the Prefect deployments and the code agree with it."""

from __future__ import annotations

from pathlib import Path

import yaml

from tasks.core.config import load_params
from tasks.core.layout import Layout
from flows.steps import LOCK_FILE, STEPS, code_dependencies, render_dvc_yaml

REPO = Path(__file__).resolve().parents[2]


def test_dvc_yaml_is_the_one_the_registry_implies() -> None:
    committed = (REPO / "dvc.yaml").read_text(encoding="utf-8")
    assert committed == render_dvc_yaml(Layout(REPO), load_params(REPO / "params.yaml")), \
        "dvc.yaml is stale: run `edgeflow dvc-yaml > dvc.yaml`"


def test_every_stage_runs_its_step_and_lists_only_known_params() -> None:
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert list(stages) == list(STEPS)
    sections = set(yaml.safe_load((REPO / "params.yaml").read_text()))
    for name, stage in stages.items():
        assert stage["cmd"] == f"edgeflow step {name}"
        assert {key.split(".")[0] for key in stage["params"]} <= sections, name


def test_every_stage_depends_on_its_derived_code_and_the_lock_file() -> None:
    """Each stage's deps start with its step's code closure, then the lock file `make
    install` installs from (DVC's stand-in for library versions), which exists."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert (REPO / LOCK_FILE).is_file() and LOCK_FILE == "requirements.lock"
    for name, stage in stages.items():
        code = [path.as_posix() for path in code_dependencies(STEPS[name]).files]
        assert code and stage["deps"][:len(code) + 1] == [*code, LOCK_FILE], name
        assert all((REPO / path).is_file() for path in code), name


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
    for name, stage in stages["stages"].items():
        code = [path.as_posix() for path in code_dependencies(STEPS[name]).files]
        assert stage["deps"][:len(code) + 1] == [f"../{path}" for path in [*code, LOCK_FILE]]
        assert all((exp / path).resolve().is_file() for path in stage["deps"][:len(code) + 1])
    assert stages["stages"]["train"]["deps"][-1] == "data/prepared"
    assert stages["stages"]["select"]["outs"][0] == "reports/plots"


def test_plots_tell_variants_and_devices_apart_with_the_committed_template() -> None:
    import json

    from flows.steps import PLOT_TEMPLATE

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
    from flows.steps import code_path

    code = code_dependencies(STEPS["train"]).files[0]
    assert code_path(code, tmp_path) == (REPO / code).as_posix()  # the installed code
    (tmp_path / code).parent.mkdir(parents=True)
    (tmp_path / code).write_text("")
    assert code_path(code, tmp_path) == code.as_posix()  # the experiment's own copy
    assert code_path(Path(LOCK_FILE), REPO / "a" / "b") == f"../../{LOCK_FILE}"
