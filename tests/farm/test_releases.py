"""tasks/farm/releases.py on a local device: what the orchestrator's push hands the
board's manager reaches it (params.release.keep, on_release), seen by what the manager
did, not by the answer's status."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tasks.config import LocalDevice, ReleaseParams
from tasks.core import device_code
from tasks.farm import releases
from tasks.farm.protocol import LOCK_BUSY_EXIT, LOCK_NAME, MAX_RESULT_BYTES
from tasks.farm.push import MISMATCH_EXIT, SHA256_LIST_PREFIX, DeployError
from tasks.farm.session import NO_EXIT_STATUS
from tasks.farm.transports import LocalConnection, connect
from tests.tasks.device.test_releases import many_ids


def built(root: Path, name: str, passes: bool = True) -> tuple[Path, tuple[str, ...]]:
    """A release as the release step builds it: its manifest (and digest), the manager,
    and the verdict its stand-in check answers."""
    folder = root / name
    folder.mkdir(parents=True)
    manifest = json.dumps({"manifest_version": 2, "variant": "onnx-fp32", "files": []}).encode()
    (folder / "manifest.json").write_bytes(manifest)
    (folder / "manifest.sha256").write_text(f"{hashlib.sha256(manifest).hexdigest()}  "
                                            "manifest.json\n")
    (folder / "verdict.json").write_text(json.dumps({"passed": passes,
                                                     "reasons": [] if passes else ["no"]}))
    shutil.copy(device_code.RELEASES_PATH, folder / releases.MANAGER)
    return folder, ("manifest.json", "manifest.sha256", "verdict.json", releases.MANAGER)


def test_release_keep_and_on_release_reach_the_boards_manager(tmp_path: Path) -> None:
    """keep 2, not the manager's default 5: the fourth release leaves two folders (the
    current and the previous); on_release runs for each release made current."""
    python = tmp_path / "python"  # the harness's; a release's check answers its verdict
    python.write_text(f'#!/bin/sh\nif [ "$2" = --check ]; then cat "$(dirname "$1")/'
                      f'verdict.json"; else exec {sys.executable} "$@"; fi\n')
    python.chmod(0o700)
    device = LocalDevice(workdir=tmp_path / "board", python=str(python),
                         on_release='echo "$EDGEFLOW_RELEASE" >> "$1/../../hook.log"')
    os.makedirs(device.workdir)
    connection = connect(device, "pi")
    ids = many_ids(4)
    try:
        for name in ids:
            folder, files = built(tmp_path / "built", name)
            answer = releases.push_and_activate(connection, device, folder, name, files,
                                                ReleaseParams(keep=2), lock_wait=10)
            assert answer["status"] == "released", answer
        assert answer["removed"] == [ids[1]]
        assert sorted(os.listdir(device.workdir / "app" / "releases")) == ids[2:]
        assert (device.workdir / "app" / "hook.log").read_text().split() == ids
        assert releases.status(connection, device)["previous"]["release"] == ids[2]
    finally:
        connection.close()


# What the orchestrator hands the board's manager, without running it: a device that
# keeps every command and answers as told.

RELEASE = "20261206T061944123456Z-onnx-fp32"
PYTHON = "/opt/py/bin/python3"


class Manager(LocalConnection):
    """A board whose release manager answers ``stdout``/``stderr``/``exited`` to every
    command (the verified push's check included); it keeps each (command, timeout)."""

    def __init__(self, exited: int = 0, stdout: str = '{"status": "released"}\n',
                 stderr: str = "") -> None:
        super().__init__()
        self.exited, self.stdout, self.stderr = exited, stdout, stderr
        self.commands: list[tuple[str, float | None]] = []

    def run(self, command: str, *, timeout: float | None = None, warn: bool = True,
            hide: bool = True) -> Any:
        self.commands.append((command, timeout))
        return SimpleNamespace(exited=self.exited, ok=self.exited == 0, stdout=self.stdout,
                               stderr=self.stderr)


def board(tmp_path: Path, **entry: Any) -> LocalDevice:
    return LocalDevice(workdir=tmp_path / "board", python=PYTHON, **entry)


def _activate(tmp_path: Path, device: LocalDevice, connection: Manager,
              params: ReleaseParams = ReleaseParams(), lock_wait: float = 11.0
              ) -> dict[str, Any]:
    folder, files = built(tmp_path / "built", RELEASE)
    return releases.push_and_activate(connection, device, folder, RELEASE, files, params,
                                      lock_wait=lock_wait)


def test_a_push_hands_the_manager_every_release_option_and_waits_long_enough(
        tmp_path: Path) -> None:
    """keep, the check's limit and readable_by from params.release, the hook and its
    limit from farm.yaml: each a value no default or other option has."""
    device = board(tmp_path, on_release="systemctl --user restart app",
                   on_release_timeout_seconds=7.5)
    connection = Manager()
    params = ReleaseParams(keep=3, check_timeout_seconds=17.0, readable_by="everyone")
    assert _activate(tmp_path, device, connection, params) == {"status": "released"}
    [(command, timeout)] = connection.commands
    app, control = f"{device.workdir}/app", f"{device.workdir}/release-control/{RELEASE}"
    assert timeout == 11.0 + 17.0 + 7.5 * 2 + releases.MANAGER_GRACE_SECONDS
    assert command.endswith(f"; }}; code=$?; rm -rf -- {control}; exit $code")
    words = shlex.split(command[command.index("{ sh -c"):].split("; }; code=$?")[0][2:])
    assert words[:10] == ["sh", "-c", 'echo $$ > "$0"; exec "$@"', f"{control}/wait.pid",
                          "flock", "-w", "11", "-E", str(LOCK_BUSY_EXIT),
                          f"{device.workdir}/{LOCK_NAME}"]
    assert words[words.index(PYTHON):] == [
        PYTHON, f"{app}/releases.py", "activate", "--app", app, "--release", RELEASE,
        "--python", PYTHON, "--keep", "3", "--check-timeout", "17",
        "--readable-by", "everyone", "--stop-file", f"{control}/stop",
        "--on-release", "systemctl --user restart app", "--hook-timeout", "7.5"]
    # Every file of the release, and the manager beside the releases.
    # (The sha256 list beside them stays: this board's check never ran.)
    assert sorted(name for name in os.listdir(f"{app}/releases/{RELEASE}")
                  if not name.startswith(SHA256_LIST_PREFIX)) == [
        "manifest.json", "manifest.sha256", releases.MANAGER, "verdict.json"]
    assert os.path.isfile(f"{app}/{releases.MANAGER}") and os.path.isdir(control)


def test_without_on_release_no_hook_is_asked_for(tmp_path: Path) -> None:
    connection = Manager()
    _activate(tmp_path, board(tmp_path), connection)
    [(command, timeout)] = connection.commands
    assert "--on-release" not in command and "--hook-timeout" not in command
    assert command.split("; }; code=$?")[0].endswith(" --readable-by group --stop-file "
                                                     f"{tmp_path}/board/release-control/"
                                                     f"{RELEASE}/stop")
    assert timeout == 11.0 + 300.0 + 120.0 * 2 + releases.MANAGER_GRACE_SECONDS


def _discarded(tmp_path: Path, connection: Manager) -> list[str]:
    removed = f"rm -rf -- {tmp_path}/board/app/releases/{RELEASE}"
    return [command for command, _ in connection.commands if command == removed]


def test_a_busy_device_is_a_release_error_and_the_pushed_folder_is_discarded(
        tmp_path: Path) -> None:
    connection = Manager(exited=LOCK_BUSY_EXIT, stdout="")
    with pytest.raises(releases.ReleaseError) as refused:
        _activate(tmp_path, board(tmp_path), connection, lock_wait=2.5)
    assert type(refused.value) is releases.ReleaseError
    assert str(refused.value) == (
        f"release {RELEASE}: the device stayed busy (its lock held by a benchmark or another "
        "release) for more than 2.5 s")
    assert len(_discarded(tmp_path, connection)) == 1


def test_a_push_that_fails_discards_the_pushed_folder_and_says_why(tmp_path: Path) -> None:
    connection = Manager(exited=MISMATCH_EXIT, stdout="", stderr="sha256 mismatch on x\n")
    with pytest.raises(DeployError, match="^push to the device failed: sha256 mismatch on x$"):
        _activate(tmp_path, board(tmp_path), connection)
    assert len(_discarded(tmp_path, connection)) == 1


@pytest.mark.parametrize("exited, stdout, stderr, error, message", [
    (NO_EXIT_STATUS, "", "", releases.ConnectionLost,
     "the connection to the device was lost (no exit status: the device or its SSH server "
     "went away); `edgeflow status` shows what it runs once it is back"),
    (1, "", "Traceback\nKeyError: 'current'\n", releases.ReleaseError,
     "the device's release manager failed: KeyError: 'current'"),
    (2, "\n  \n", "", releases.ReleaseError, "the device's release manager failed: exit code 2"),
    (0, "[1]\n", "", releases.ReleaseError, "the device's release manager failed: exit code 0"),
    (0, "{" + " " * MAX_RESULT_BYTES + "}\n", "too long", releases.ReleaseError,
     "the device's release manager failed: too long"),
])
def test_each_way_the_manager_leaves_no_answer_is_its_error_naming_why(
        tmp_path: Path, exited: int, stdout: str, stderr: str, error: type,
        message: str) -> None:
    connection = Manager(exited=exited, stdout=stdout, stderr=stderr)
    with pytest.raises(error) as refused:
        _activate(tmp_path, board(tmp_path), connection)
    assert type(refused.value) is error
    assert str(refused.value) == f"release {RELEASE}: {message}"
    assert _discarded(tmp_path, connection) == [], "the manager ran: it keeps or removes it"


def test_the_answer_is_the_last_line_the_manager_printed(tmp_path: Path) -> None:
    connection = Manager(stdout='{"status": "noise"}\ncheck passed\n{"status": "unhealthy"}\n\n')
    assert _activate(tmp_path, board(tmp_path), connection) == {"status": "unhealthy"}


def test_a_rollback_hands_the_manager_its_options_under_the_lock(tmp_path: Path) -> None:
    device = board(tmp_path, on_release="restart", on_release_timeout_seconds=4.0)
    connection = Manager(stdout='{"status": "rolled_back"}\n')
    assert releases.rollback(connection, device, lock_wait=9.0, readable_by="owner") == {
        "status": "rolled_back"}
    [(command, timeout)] = connection.commands
    app = f"{device.workdir}/app"
    assert shlex.split(command) == [
        "flock", "-w", "9", "-E", str(LOCK_BUSY_EXIT), f"{device.workdir}/{LOCK_NAME}",
        PYTHON, f"{app}/releases.py", "rollback", "--readable-by", "owner",
        "--on-release", "restart", "--hook-timeout", "4", "--app", app]
    assert timeout == 9.0 + 4.0 * 2 + releases.MANAGER_GRACE_SECONDS
    with pytest.raises(releases.ReleaseError, match=r"^rollback: the device stayed busy .* "
                                                    r"more than 9 s$"):
        releases.rollback(Manager(exited=LOCK_BUSY_EXIT), device, lock_wait=9.0)


def test_status_reads_the_manager_only_where_it_was_pushed(tmp_path: Path) -> None:
    device = board(tmp_path)
    (device.workdir / "app").mkdir(parents=True)
    connection = Manager(stdout='{"status": "ok", "current": null}\n')
    assert releases.status(connection, device) == {
        "status": "none", "current": None, "previous": None, "releases": [],
        "rolled_back": [], "events": []}
    assert connection.commands == []
    (device.workdir / "app" / releases.MANAGER).write_text("")
    assert releases.status(connection, device) == {"status": "ok", "current": None}
    app = f"{device.workdir}/app"
    assert [shlex.split(command) for command, _ in connection.commands] == [
        [PYTHON, f"{app}/releases.py", "status", "--app", app]]
