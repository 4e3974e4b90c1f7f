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
