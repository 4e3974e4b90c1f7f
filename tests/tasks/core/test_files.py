"""Atomic output folders: what a killed step leaves is removed by the next one, never
what a live process is writing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.core.files import atomic_output_dir, remove_abandoned_staging


def _dead_pid() -> int:
    process = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                             capture_output=True, text=True, check=True)
    return int(process.stdout)


def test_staging_of_dead_processes_is_removed_and_live_ones_kept(tmp_path: Path) -> None:
    target = tmp_path / "variants"
    dead = tmp_path / f".variants.{_dead_pid()}.abc123_z"
    old_format = tmp_path / ".variants.k2j4h5g6"  # before staging names carried a pid
    live = tmp_path / f".variants.{os.getpid()}.xyz12345"
    other_target = tmp_path / ".variantsx.1.abcdefgh"  # not this target's
    # Device `pi.lab`'s staging beside device `pi`'s results: never `pi`'s to remove.
    dotted_device = tmp_path / f".variants.lab.{_dead_pid()}.abcdefgh"
    for folder in (dead, old_format, live, other_target, dotted_device):
        folder.mkdir()
    assert sorted(remove_abandoned_staging(target)) == sorted([dead, old_format])
    assert live.is_dir() and other_target.is_dir() and dotted_device.is_dir()
    assert not dead.exists() and not old_format.exists()


def test_interrupted_block_discards_its_staging_and_keeps_the_old_outputs(tmp_path: Path) -> None:
    target = tmp_path / "results"
    target.mkdir()
    (target / "old.json").write_text("{}")
    with pytest.raises(KeyboardInterrupt):
        with atomic_output_dir(target) as staging:
            assert staging.name.startswith(f".results.{os.getpid()}.")
            (staging / "half.json").write_text("{")
            raise KeyboardInterrupt
    assert sorted(path.name for path in tmp_path.iterdir()) == ["results"]
    assert [path.name for path in target.iterdir()] == ["old.json"]
