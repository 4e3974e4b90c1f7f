"""``edgeflow firmware BUNDLE``: the figures of a real firmware run on the emulated
Cortex-M4 (marked arm, as tests/targets/firmware/test_measure.py), and its one-line
refusals (no folder, no sources named)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tasks.targets.firmware.settings import CACHE_ENV, SOURCES_ENV
from tests.tiny import write_tiny_config


def project(tmp_path: Path, prepared: Path) -> Path:
    """A tiny experiment (params.yaml, farm.yaml) whose prepared data is ``prepared``'s."""
    write_tiny_config(tmp_path)
    shutil.copytree(prepared, tmp_path / "data" / "prepared")
    return tmp_path / "params.yaml"


def test_a_path_that_is_no_folder_is_refused_in_one_line(tmp_path: Path) -> None:
    from flows.cli import app

    result = CliRunner().invoke(app, ["firmware", str(tmp_path / "nowhere"),
                                      "--params", str(tmp_path / "params.yaml")])
    assert result.exit_code == 2
    assert result.output.strip() == (f"edgeflow: error: firmware: {tmp_path / 'nowhere'} is not "
                                     "a folder (a release bundle: releases/<device>/<release-id>)")


@pytest.mark.arm
def test_a_bundle_without_sources_named_says_how_to_name_them(
        tflm_bundle: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.cli import app

    monkeypatch.delenv(SOURCES_ENV, raising=False)
    bundle, prepared = tflm_bundle
    result = CliRunner().invoke(app, ["firmware", str(bundle), "--params",
                                      str(project(tmp_path, prepared)), "--images", "3"])
    assert result.exit_code == 2
    assert result.output.splitlines()[-1].startswith(
        "edgeflow: error: firmware sources: no folder named: set benchmark.firmware.sources in "
        "params.yaml "
        "(`edgeflow firmware --sources`) or EDGEFLOW_THIRD_PARTY")


@pytest.mark.arm
def test_the_command_prints_the_targets_figures(
        tflm_bundle: tuple[Path, Path], firmware_settings: Any, m4_library: Any,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.cli import app

    monkeypatch.delenv(CACHE_ENV, raising=False)
    bundle, prepared = tflm_bundle
    params = project(tmp_path, prepared)
    result = CliRunner().invoke(app, ["firmware", str(bundle), "--params", str(params),
                                      "--sources", str(firmware_settings.sources),
                                      "--images", "30"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[1] == "core: cortex-m4 on qemu -M mps2-an386 (TFLite Micro + CMSIS-NN)"
    assert lines[2].startswith("accuracy on the target: ") and lines[2].endswith(
        " of 30 test images)")
    assert lines[3].startswith("arena needed on the target: ") and "declares" in lines[3]
    assert "too small" not in lines[3]
    assert lines[4].startswith("instructions per inference: ") and "to within 40" in lines[4]
    assert lines[5].startswith("firmware: text ")
    assert (tmp_path / ".edgeflow" / "firmware" / bundle.name / "build" / "firmware.elf").is_file()
