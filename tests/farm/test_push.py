"""Deploying files to a device: verified pushes, owner-only modes, run folder cleanup."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from tasks.farm.push import (RUN_NAME, DeployError, make_dirs, new_run_name, push_files,
                          remove_runs_command, stale_runs)
from tasks.farm.transports import LocalConnection


class CorruptingConnection(LocalConnection):
    """A transport that flips a byte of every file it copies (a bad link, a full disk)."""

    def put(self, local: Path, remote: str) -> None:
        data = bytearray(local.read_bytes())
        data[0] ^= 0xFF
        Path(remote).write_bytes(bytes(data))


def test_push_places_files_owner_only(tmp_path: Path) -> None:
    source = tmp_path / "model.onnx"
    source.write_bytes(b"weights" * 100)
    target = tmp_path / "device" / "run" / "model.onnx"
    connection = LocalConnection()
    make_dirs(connection, str(target.parent))
    push_files(connection, [(source, str(target))])
    assert target.read_bytes() == source.read_bytes()
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert stat.S_IMODE(target.parent.stat().st_mode) == 0o700
    assert not target.with_name("model.onnx.part").exists()


def test_a_corrupted_push_is_refused_and_not_placed(tmp_path: Path) -> None:
    source = tmp_path / "model.onnx"
    source.write_bytes(b"weights" * 100)
    target = tmp_path / "device" / "model.onnx"
    target.parent.mkdir()
    with pytest.raises(DeployError, match="sha256 mismatch on the device for .*model.onnx"):
        push_files(CorruptingConnection(), [(source, str(target))])
    assert list(target.parent.iterdir()) == [], "nothing half-pushed or corrupted is left"


def test_hostile_remote_names_are_inert(tmp_path: Path) -> None:
    source = tmp_path / "a"
    source.write_text("x")
    folder = tmp_path / "dev $(touch PWNED); touch PWNED3 'q\" `touch PWNED4`"
    make_dirs(LocalConnection(), str(folder))
    push_files(LocalConnection(), [(source, str(folder / "b;touch PWNED2"))])
    assert (folder / "b;touch PWNED2").read_text() == "x"
    assert not list(Path.cwd().glob("PWNED*")) and not list(tmp_path.glob("PWNED*"))


def test_prune_keeps_the_newest_runs_and_nothing_else(tmp_path: Path) -> None:
    import os
    import time

    runs = tmp_path / "runs"
    names = [new_run_name() for _ in range(6)]
    assert names == sorted(names) and all(RUN_NAME.match(name) for name in names)
    for name in [*names, "keep-me", "20261126T000000000000Z-not-hex!"]:
        (runs / name).mkdir(parents=True, exist_ok=True)
        os.utime(runs / name, (time.time() - 7200, time.time() - 7200))
    os.utime(runs / names[-1])  # the current run: just made
    os.utime(runs / names[1])   # another run in progress, touched a moment ago
    connection = LocalConnection()
    stale = stale_runs(connection, str(runs), keep=2, current=names[-1], idle_seconds=600)
    assert stale == [names[0], names[2], names[3]]
    for command in remove_runs_command(str(runs), stale):
        assert connection.run(command).ok
    assert sorted(path.name for path in runs.iterdir()) == sorted(
        [names[1], names[4], names[5], "keep-me", "20261126T000000000000Z-not-hex!"])


def test_the_current_run_is_never_stale(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    name = new_run_name()
    (runs / name).mkdir(parents=True)
    # Another orchestrator's clock may be ahead: a newer-named run does not make ours stale.
    (runs / "29991231T000000000000Z-abcdef01").mkdir()
    assert stale_runs(LocalConnection(), str(runs), keep=1, current=name, idle_seconds=-1) == []


def test_prune_of_a_missing_folder_removes_nothing(tmp_path: Path) -> None:
    assert stale_runs(LocalConnection(), str(tmp_path / "absent"), keep=1, current="",
                      idle_seconds=0) == []
    assert remove_runs_command(str(tmp_path), []) == []
