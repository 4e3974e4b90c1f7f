"""Recording outputs with DVC: only for the DVC project's own, complete params."""

from __future__ import annotations

from pathlib import Path

from flows.steps import Context
from flows.versioning import record_outputs
from tests.tiny import TINY_FARM, TINY_PARAMS, write_tiny_config


def _context(root: Path, params: str = TINY_PARAMS) -> Context:
    write_tiny_config(root, params, TINY_FARM)
    return Context.load(root / "params.yaml", root / "farm.yaml")


def test_outside_a_dvc_project_nothing_is_recorded(tmp_path: Path) -> None:
    assert record_outputs(_context(tmp_path)).startswith("not a DVC project")


def test_another_farm_is_not_recorded(tmp_path: Path) -> None:
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / ".dvc").mkdir()
    write_tiny_config(tmp_path)
    (tmp_path / "lab").mkdir()
    (tmp_path / "lab" / "farm.yaml").write_text(TINY_FARM)
    ctx = Context.load(tmp_path / "params.yaml", tmp_path / "lab" / "farm.yaml")
    assert record_outputs(ctx).startswith("custom --params/--farm")


def test_params_missing_sections_are_not_recorded(tmp_path: Path) -> None:
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / ".dvc").mkdir()
    message = record_outputs(_context(tmp_path, "train: {epochs: 1}\n"))
    assert message.startswith("params.yaml omits data, model, optimize, train.seed, formats")


def test_every_stage_params_key_is_tracked() -> None:
    from flows.versioning import tracked_params_keys

    keys = tracked_params_keys()
    assert "train.seed" in keys and "requirements.max_accuracy_drop" in keys
    assert len(keys) == len(set(keys))


def test_an_experiment_folder_without_dvc_yaml_in_a_dvc_project_says_how_to_add_one(
        tmp_path: Path) -> None:
    (tmp_path / ".dvc").mkdir()
    ctx = _context(tmp_path / "exp")
    message = record_outputs(ctx)
    assert message.count("\n") == 0 and "outputs not recorded" in message
    assert message.startswith(f"no dvc.yaml beside params.yaml in {tmp_path / 'exp'} "
                              f"(in the DVC project {tmp_path})")
    assert message.endswith(f"`edgeflow dvc-yaml --params {tmp_path / 'exp' / 'params.yaml'} "
                            f"> {tmp_path / 'exp' / 'dvc.yaml'}`")


def test_outside_any_dvc_project_the_reason_names_the_folder(tmp_path: Path) -> None:
    message = record_outputs(_context(tmp_path / "a" / "b"))
    assert message.count("\n") == 0
    assert message.startswith(f"not a DVC project ({tmp_path / 'a' / 'b'} and the folders "
                              "above it have no .dvc/")


def test_dvc_project_is_the_nearest_folder_with_dot_dvc(tmp_path: Path) -> None:
    from flows.versioning import dvc_project

    (tmp_path / ".dvc").mkdir()
    (tmp_path / "a" / "b").mkdir(parents=True)
    assert dvc_project(tmp_path / "a" / "b") == tmp_path.resolve()
    (tmp_path / "a" / ".dvc").mkdir()
    assert dvc_project(tmp_path / "a" / "b") == (tmp_path / "a").resolve()
    assert dvc_project(tmp_path / "a") == (tmp_path / "a").resolve()


def test_a_run_that_executed_nothing_commits_only_when_dvc_lock_changed(tmp_path: Path) -> None:
    import subprocess
    import sys

    ctx = _context(tmp_path)
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=tmp_path,
                   check=True)
    (tmp_path / "out.txt").write_text("made\n")
    (tmp_path / "dvc.yaml").write_text("stages:\n  make:\n    cmd: echo made > out.txt\n"
                                       "    deps: [params.yaml]\n    outs: [out.txt]\n")
    assert record_outputs(ctx, executed=False) == "recorded in dvc.lock", "never recorded yet"
    lock = (tmp_path / "dvc.lock").read_text()
    assert "out.txt" in lock
    assert record_outputs(ctx, executed=False) == \
        "dvc.lock unchanged (every step came from the cache)"
    (tmp_path / "out.txt").write_text("made again\n")
    assert record_outputs(ctx, executed=True) == "recorded in dvc.lock", "a run that executed"
    changed = (tmp_path / "dvc.lock").read_text()
    assert changed != lock
    (tmp_path / "dvc.lock").write_text(lock)  # e.g. a checkout of the older lock
    assert record_outputs(ctx, executed=False) == "recorded in dvc.lock"
    assert (tmp_path / "dvc.lock").read_text() == changed
    (tmp_path / "dvc.lock").unlink()
    assert record_outputs(ctx, executed=False) == "recorded in dvc.lock"
    assert (tmp_path / "dvc.lock").read_text() == changed


def test_an_experiment_in_a_subfolder_names_its_own_dvc_lock(tmp_path: Path) -> None:
    import subprocess
    import sys

    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=tmp_path,
                   check=True)
    ctx = _context(tmp_path / "exp")
    (tmp_path / "exp" / "out.txt").write_text("made\n")
    (tmp_path / "exp" / "dvc.yaml").write_text("stages:\n  make:\n    cmd: echo made > out.txt\n"
                                               "    deps: [params.yaml]\n    outs: [out.txt]\n")
    assert record_outputs(ctx) == "recorded in exp/dvc.lock"
    assert "out.txt" in (tmp_path / "exp" / "dvc.lock").read_text()
    assert record_outputs(ctx, executed=False) == \
        "exp/dvc.lock unchanged (every step came from the cache)"


def test_params_of_another_name_are_not_recorded(tmp_path: Path) -> None:
    """``--params fast.yaml`` beside the experiment's own params.yaml and farm.yaml: DVC's
    stages read params.yaml, not what the run used."""
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / ".dvc").mkdir()
    write_tiny_config(tmp_path)
    (tmp_path / "fast.yaml").write_text(TINY_PARAMS)
    ctx = Context.load(tmp_path / "fast.yaml", tmp_path / "farm.yaml")
    assert record_outputs(ctx) == "custom --params/--farm: outputs not recorded in dvc.lock"


def test_a_params_key_is_present_only_through_mappings_and_even_when_null() -> None:
    from flows.versioning import _present

    assert _present({"train": {"seed": None}}, "train.seed")
    assert _present({"train": {"seed": 1}}, "train")
    assert not _present({"train": 5}, "train.seed")
    assert not _present({"train": {}}, "train.seed")
    assert not _present({"training": {"seed": 1}}, "train.seed")


def test_the_tracked_keys_are_every_stages_keys_once_in_step_order() -> None:
    from flows.steps import STEPS
    from flows.versioning import tracked_params_keys

    keys = tracked_params_keys()
    seen = [key for step in STEPS.values() for key in step.params]
    assert keys == sorted(set(seen), key=seen.index)
    assert keys[:4] == ["data", "model", "train", "optimize"]
