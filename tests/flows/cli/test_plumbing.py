"""flows/cli/plumbing.py in process (typer's CliRunner): what each command hands its
library, what it prints, and its exit code. The libraries are replaced by recorders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from flows.cli import app


def _invoke(*argv: str) -> Any:
    return CliRunner().invoke(app, list(argv))


@pytest.mark.parametrize(("written", "line"), [
    (["train", "select"], "code manifests: train, select\n"), ([], "code manifests: none changed\n")])
def test_code_manifests_writes_into_the_params_files_experiment_and_says_which(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, written: list[str], line: str) -> None:
    from flows import code_manifests

    roots: list[Path] = []
    monkeypatch.setattr(code_manifests, "write_code_manifests",
                        lambda layout: roots.append(layout.root) or written)
    (tmp_path / "exp").mkdir()
    monkeypatch.chdir(tmp_path)  # a relative path: the experiment is its resolved folder
    result = _invoke("code-manifests", "--params", "exp/params.yaml")
    assert (result.exit_code, result.output) == (0, line)
    assert roots == [(tmp_path / "exp").resolve()]


def test_code_manifests_given_a_folder_is_a_configuration_error(tmp_path: Path) -> None:
    result = _invoke("code-manifests", "--params", str(tmp_path))
    assert result.exit_code == 2
    assert result.output == f"edgeflow: error: --params {tmp_path} is a folder, not a file\n"


def test_dvc_yaml_prints_the_rendering_for_the_params_files_experiment(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from flows import dvc_yaml
    from tasks import config

    params = Path("params.yaml")
    monkeypatch.chdir(tmp_path)  # a relative path: the experiment is its resolved folder
    monkeypatch.setattr(config, "load_params", lambda path: f"loaded {path}")
    monkeypatch.setattr(dvc_yaml, "render_dvc_yaml",
                        lambda layout, loaded: f"stages: {layout.root} {loaded}\n")
    result = _invoke("dvc-yaml", "--params", str(params))
    assert (result.exit_code, result.output) == (0, f"stages: {tmp_path.resolve()} loaded {params}\n")


def test_dvc_yaml_of_a_missing_params_file_is_one_line_exit_2(tmp_path: Path) -> None:
    result = _invoke("dvc-yaml", "--params", str(tmp_path / "absent.yaml"))
    assert result.exit_code == 2
    assert result.output.startswith("edgeflow: error: ") and result.output.count("\n") == 1


def test_the_plumbing_and_serving_commands_are_registered_and_dvc_yaml_is_hidden() -> None:
    commands = {command.name or command.callback.__name__: command  # type: ignore[union-attr]
                for command in app.registered_commands}
    assert {"code-manifests", "dvc-yaml", "serve", "stop"} <= set(commands)
    assert commands["dvc-yaml"].hidden is True
    assert not any(commands[name].hidden for name in ("code-manifests", "serve", "stop"))


def test_register_adds_each_command_by_its_name() -> None:
    import typer

    from flows.cli import plumbing

    fresh = typer.Typer()
    plumbing.register(fresh)
    named = {command.name: command.hidden for command in fresh.registered_commands}
    assert named == {"code-manifests": False, "dvc-yaml": True}
