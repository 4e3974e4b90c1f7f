"""What the farm commands do over every target (tasks.targets.farm_commands), without a
device: a device named twice to ``edgeflow farm setup`` is set up once."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from flows.cli import app
from tasks.farm import setup as farm_setup


def test_a_device_named_twice_is_set_up_once_in_one_row(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Two setups at once on one board would race over its virtualenv: one runs."""
    key = tmp_path / "id"
    key.write_text("not a key, never read here\n")
    os.chmod(key, 0o600)
    (tmp_path / "known_hosts").write_text("")
    farm_file = tmp_path / "farm.yaml"
    farm_file.write_text(yaml.safe_dump({"devices": {"rpi4x": {
        "transport": "ssh", "host": "rpi4x.local", "user": "pi", "key_file": str(key),
        "known_hosts": str(tmp_path / "known_hosts"), "runtimes": ["onnxruntime"],
        "setup": {}}}}))
    calls: list[str] = []

    def set_up(name: str, device: Any, runtimes: list[str], cache_root: Path
               ) -> farm_setup.SetupOutcome:
        calls.append(name)
        return farm_setup.SetupOutcome(name, changed=True, actions=("built the venv",),
                                       runtimes={"onnxruntime": "1.0"})

    monkeypatch.setattr(farm_setup, "setup_device", set_up)
    result = CliRunner().invoke(app, ["farm", "setup", "rpi4x", "rpi4x", "--farm", str(farm_file)],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert calls == ["rpi4x"]
    rows = [line.split("│")[1:4] for line in result.output.splitlines() if line.startswith("│")]
    assert [[cell.strip() for cell in row] for row in rows] == [
        ["rpi4x", "changed", "built the venv"]]
