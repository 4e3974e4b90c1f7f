"""Deploying files to a device: verified pushes, owner-only modes, run folder cleanup."""

from __future__ import annotations

import stat
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tasks.farm import push
from tasks.farm.push import (RUN_NAME, DeployError, PhaseTimes, check_then_run, last_line,
                             make_dirs, new_run_name, push_files, remove_runs_command,
                             stale_runs)
from tasks.farm.transports import Connection, LocalConnection, SshConnection
from tests.helpers import ssh_device


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


@pytest.fixture(params=["local", "ssh"])
def board(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """Each transport, reaching this machine's files (the sshd board runs here)."""
    if request.param == "local":
        yield LocalConnection()
        return
    connection = SshConnection(ssh_device(request.getfixturevalue("ssh_server"), tmp_path), "pi")
    yield connection
    connection.close()


# A release with this many check images named every file on one shell command line
# (~400 bytes each): past the kernel's 128 KiB limit on one argument.
MANY_FILES = 400


def test_hundreds_of_files_are_pushed_and_verified_without_a_long_command_line(
        board: Connection, tmp_path: Path) -> None:
    sources = tmp_path / "release" / "check"
    sources.mkdir(parents=True)
    folder = tmp_path / "device" / "app" / "releases" / "20261205T101010123456Z-tflite-fp32"
    target = folder / "check"
    files = []
    for index in range(MANY_FILES):
        source = sources / f"{index:04d}.png"
        source.write_bytes(index.to_bytes(2, "big") * 50)
        files.append((source, str(target / source.name)))
    make_dirs(board, str(target))
    result = push_files(board, files, then=["echo checked"])
    assert result.stdout.strip() == "checked"
    assert sorted(path.name for path in target.iterdir()) == [
        f"{index:04d}.png" for index in range(MANY_FILES)]
    assert all(Path(remote).read_bytes() == local.read_bytes() for local, remote in files)
    assert list(folder.iterdir()) == [target], "the sha256 list is removed once checked"
    # The same list still catches the one file that arrived damaged, and names it.
    (target / "0321.png").write_bytes(b"damaged")
    with pytest.raises(DeployError) as refused:
        check_then_run(board, files)
    assert str(refused.value) == ("push to the device failed: sha256 mismatch on the device "
                                  f"for {target / '0321.png'}")
    assert len(list(target.iterdir())) == MANY_FILES - 1 and not (target / "0321.png").exists()
    assert list(folder.iterdir()) == [target]


def test_a_path_with_a_line_break_is_refused_before_anything_runs(tmp_path: Path) -> None:
    source = tmp_path / "a"
    source.write_text("x")
    with pytest.raises(DeployError) as refused:
        push_files(LocalConnection(), [(source, str(tmp_path / "one\ntwo"))])
    assert str(refused.value) == (f"cannot push to {str(tmp_path / 'one') + chr(10) + 'two'!r}: "
                                  "a path on the device may not contain a line break")


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


def test_idle_is_counted_from_the_newest_folder_when_the_current_run_is_not_listed() -> None:
    """By the device's clock only: the newest folder's time stands for "now", and a
    folder idle for exactly ``idle_seconds`` is not yet stale."""
    names = [f"2026112{n}T000000000000Z-0000000{n}" for n in range(1, 5)]
    times = dict(zip(names, [100.0, 200.0, 300.0, 400.0]))

    class Lists(LocalConnection):
        def listdir(self, remote: str) -> dict[str, float]:
            return times

    assert stale_runs(Lists(), "runs", keep=1, current="elsewhere", idle_seconds=100) == names[:2]


def test_prune_of_a_missing_folder_removes_nothing(tmp_path: Path) -> None:
    assert stale_runs(LocalConnection(), str(tmp_path / "absent"), keep=1, current="",
                      idle_seconds=0) == []
    assert remove_runs_command(str(tmp_path), []) == []


class Answers(LocalConnection):
    """A device whose every command ends with this exit status and stderr; it keeps the
    commands and time limits it was given."""

    def __init__(self, exited: int, stderr: str = "") -> None:
        super().__init__()
        self.exited, self.stderr, self.commands = exited, stderr, []

    def run(self, command: str, *, timeout: float | None = None, warn: bool = True,
            hide: bool = True) -> Any:
        self.commands.append((command, timeout))
        return SimpleNamespace(exited=self.exited, ok=self.exited == 0, stderr=self.stderr)


def _placed(tmp_path: Path) -> list[tuple[Path, str]]:
    source = tmp_path / "model.onnx"
    source.write_bytes(b"weights")
    (tmp_path / "device").mkdir(exist_ok=True)  # where the sha256 list goes
    return [(source, str(tmp_path / "device" / "model.onnx"))]


def test_nothing_to_check_or_run_runs_nothing() -> None:
    device = Answers(0)
    assert check_then_run(device, []) is None
    assert device.commands == []


@pytest.mark.parametrize("stderr, reason", [
    ("sha256sum: not found\n\n", "sha256sum: not found"),
    ("", "exit code 127"),  # nothing said: the exit status is the reason
])
def test_a_check_that_fails_names_its_last_words(tmp_path: Path, stderr: str,
                                                 reason: str) -> None:
    with pytest.raises(DeployError) as refused:
        check_then_run(Answers(127, stderr), _placed(tmp_path))
    assert str(refused.value) == f"push to the device failed: {reason}"


def test_the_commands_after_the_check_run_in_the_same_shell_and_report_themselves(
        tmp_path: Path) -> None:
    """A command after the check that fails is its caller's to read (a probe that
    failed says why itself); only a mismatch is the push's failure."""
    device = Answers(1)
    result = check_then_run(device, _placed(tmp_path), then=["probe"], timeout=42.0)
    assert result.exited == 1
    [(command, timeout)] = device.commands
    assert command.startswith("umask 077 && { while IFS= read -r entry; ")
    assert command.endswith(" && probe")
    assert timeout == 42.0
    with pytest.raises(DeployError, match="^push to the device failed: sha256 mismatch$"):
        check_then_run(Answers(push.MISMATCH_EXIT, "sha256 mismatch\n"), _placed(tmp_path),
                       then=["probe"])


def test_a_push_passes_its_time_limit_to_the_commands_after_the_check(tmp_path: Path) -> None:
    """The limit is the device command's: ``timeout`` stops it (exit 124) at 0.5 s, not
    at the transport's default limit, after which this sleep would have ended well."""
    result = push_files(LocalConnection(), _placed(tmp_path), then=["sleep 5"], timeout=0.5)
    assert result.exited == 124


def test_a_folder_that_cannot_be_made_is_a_deploy_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(DeployError, match=f"^cannot create {tmp_path}/file/runs on the device: "):
        make_dirs(LocalConnection(), str(tmp_path / "file" / "runs"))


def test_last_line_is_the_last_non_blank_line_cut_to_its_end() -> None:
    assert last_line("first\nsecond\n\n   \n") == "second"
    assert last_line("") == ""
    assert last_line("a" * 100 + "b" * 300) == "b" * 300
    assert last_line("abcdef", limit=3) == "def"


def test_phase_times_add_up_per_phase_even_when_a_phase_fails(
        monkeypatch: pytest.MonkeyPatch) -> None:
    ticks = iter([1.0, 1.5, 2.0, 2.25, 10.0, 10.123456])
    monkeypatch.setattr(push.time, "perf_counter", lambda: next(ticks))
    clock = PhaseTimes()
    for _ in range(2):
        with clock.phase("push"):
            pass
    with pytest.raises(OSError), clock.phase("fetch"):
        raise OSError("lost")
    assert clock.as_dict() == {"push": 0.75, "fetch": 0.1235}
