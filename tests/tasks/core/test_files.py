"""Atomic output folders: what a killed step leaves is removed by the next one, never
what a live process is writing. Content hashes: read once per process while a file's
signature stays the same, never trusted for a file written within the clock's tick."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tasks.core import files
from tasks.core.files import atomic_output_dir, remove_abandoned_staging, sha256_file


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


def _hex(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def test_a_settled_file_is_read_once_and_read_again_after_any_write(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "weights.bin"
    path.write_bytes(b"A" * 64)
    old = time.time_ns() - 10**12
    os.utime(path, ns=(old, old))
    monkeypatch.setattr(files, "SETTLED_NS", -(1 << 62))  # every signature settled
    reads: list[str] = []
    monkeypatch.setattr(files, "open", lambda name, *args: reads.append(name) or open(name, *args),
                        raising=False)
    assert sha256_file(path) == _hex(b"A" * 64)
    assert sha256_file(path) == _hex(b"A" * 64)
    assert len(reads) == 1
    time.sleep(0.05)  # past a coarse clock's tick: the write moves the ctime
    path.write_bytes(b"B" * 64)  # the same size, and the mtime put back
    os.utime(path, ns=(old, old))
    assert sha256_file(path) == _hex(b"B" * 64)
    assert len(reads) == 2


def test_a_file_changed_within_the_last_tick_is_never_trusted_by_its_signature(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two writes within one tick of a coarse file clock leave the same signature: a file
    whose last change is that recent is read every time."""
    path = tmp_path / "labels.json"
    path.write_bytes(b"[1, 2]")
    now = time.time_ns()
    same = (7, 6, now, now)  # what both writes would show within one tick
    monkeypatch.setattr(files, "stat_signature", lambda name: same)
    assert sha256_file(path) == _hex(b"[1, 2]")
    path.write_bytes(b"[3, 4]")
    assert sha256_file(path) == _hex(b"[3, 4]")
    # The same signature, settled: the first hash is kept (what makes the check above
    # the one that matters).
    settled = (8, 6, now - 2 * files.SETTLED_NS, now - 2 * files.SETTLED_NS)
    monkeypatch.setattr(files, "stat_signature", lambda name: settled)
    assert sha256_file(path) == _hex(b"[3, 4]")
    path.write_bytes(b"[5, 6]")
    assert sha256_file(path) == _hex(b"[3, 4]")
