"""tasks/device/releases.py on a folder: which releases are pruned and which one a
rollback returns to, and its whole state space run on a folder (keep at its boundary, a
refused and an undone release, a rollback, files changed since); the real health checks
and pushes run in tests/tasks/test_release.py."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from tasks.core import device_code


def manager_module() -> Any:
    return device_code.load("releases")


@pytest.fixture()
def manager() -> Any:
    return manager_module()


def make(app: Path, name: str, passed: bool | None = True) -> str:
    folder = app / "releases" / name
    folder.mkdir(parents=True)
    manifest = json.dumps({"manifest_version": 2, "files": []}).encode()
    (folder / "manifest.json").write_bytes(manifest)  # complete, as released: no file changed
    (folder / "manifest.sha256").write_text(f"{hashlib.sha256(manifest).hexdigest()}  "
                                            "manifest.json\n")
    if passed is not None:
        (folder / "health.json").write_text(json.dumps({"passed": passed}))
    return name


IDS = [f"2026112{day}T000000000000Z-v{day}" for day in range(1, 8)]


def test_prune_keeps_the_newest_and_never_the_current_or_previous(tmp_path: Path,
                                                                  manager: Any) -> None:
    for name in IDS:
        make(tmp_path, name)
    removed = manager.prune(str(tmp_path), 3, {IDS[0], IDS[5]})
    assert removed == [IDS[1], IDS[2], IDS[3]]
    assert manager.releases(str(tmp_path)) == [IDS[0], IDS[4], IDS[5], IDS[6]]


def test_a_release_whose_files_changed_on_the_board_is_no_rollback_target(
        tmp_path: Path, manager: Any) -> None:
    """Its health check passed once, but the predictor would refuse it now."""
    app = str(tmp_path)
    make(tmp_path, IDS[0])
    make(tmp_path, IDS[1])
    make(tmp_path, IDS[2])
    manager.switch(app, IDS[2])
    state = {**manager.load_state(app), "previous": IDS[1]}
    assert manager.rollback_target(app, state) == IDS[1]
    (tmp_path / "releases" / IDS[1] / "manifest.json").write_text('{"edited": true}')
    assert manager.rollback_target(app, state) == IDS[0]  # the older intact one
    (tmp_path / "releases" / IDS[0] / "manifest.sha256").unlink()
    assert manager.rollback_target(app, state) is None


def test_a_rollback_goes_to_the_previous_release_else_the_newest_healthy_older_one(
        tmp_path: Path, manager: Any) -> None:
    app = str(tmp_path)
    make(tmp_path, IDS[0])
    make(tmp_path, IDS[1], passed=False)
    make(tmp_path, IDS[2], passed=None)  # never checked: an interrupted release
    make(tmp_path, IDS[3])
    make(tmp_path, IDS[4])
    manager.switch(app, IDS[4])
    state = manager.load_state(app)
    assert state["current"] == IDS[4] and os.readlink(tmp_path / "current") == f"releases/{IDS[4]}"
    assert manager.rollback_target(app, state) == IDS[3]
    state["previous"] = IDS[0]
    assert manager.rollback_target(app, state) == IDS[0]
    state["previous"], state["rolled_back"] = None, [IDS[3]]
    assert manager.rollback_target(app, state) == IDS[0]  # not unhealthy, unchecked or rolled back
    state["previous"] = IDS[1]  # recorded, but its check failed
    assert manager.rollback_target(app, state) == IDS[0]


def test_a_link_edgeflow_did_not_make_is_no_current_release(tmp_path: Path, manager: Any) -> None:
    (tmp_path / "current").symlink_to("/etc")
    assert manager.current_release(str(tmp_path)) is None
    make(tmp_path, IDS[0])
    manager.switch(str(tmp_path), IDS[0])
    assert manager.current_release(str(tmp_path)) == IDS[0]
    assert [name for name in os.listdir(tmp_path) if name.startswith(".current")] == []


def test_an_activation_stopped_before_its_switch_leaves_current_and_stops_its_check(
        tmp_path: Path) -> None:
    """The orchestrator's Ctrl-C reaches the manager as SIGTERM during the health check
    (a stop file before it starts): it answers ``stopped`` at once, the check's process
    is gone, and ``current`` has not moved."""
    import signal
    import subprocess
    import sys
    import time

    from tests.helpers import processes_left, processes_mentioning

    app = tmp_path / "app"
    make(app, IDS[0])
    make(app, IDS[1], passed=None)
    os.symlink(f"releases/{IDS[0]}", app / "current")
    slow = tmp_path / "slow-python"
    # A sleep no other test process starts (test_release.py's hook sleeps too, maybe at
    # the same moment on another xdist worker): its pid in the duration.
    marker = f"sleep {1_000_000 + os.getpid()}"
    slow.write_text(f"#!/bin/sh\nexec {marker}\n")
    slow.chmod(0o700)
    argv = [sys.executable, str(device_code.RELEASES_PATH), "activate", "--app", str(app),
            "--release", IDS[1], "--python", str(slow), "--stop-file", str(tmp_path / "stop")]
    manager = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not processes_mentioning(marker):
        assert manager.poll() is None and time.monotonic() < deadline, "the check never ran"
        time.sleep(0.05)
    started = time.monotonic()
    manager.send_signal(signal.SIGTERM)
    answer = json.loads(manager.communicate(timeout=10)[0])
    assert time.monotonic() - started < 5 and manager.returncode == 0
    assert (answer["status"], answer["current"]) == ("stopped", IDS[0])
    assert os.readlink(app / "current") == f"releases/{IDS[0]}"
    # The stopped release is removed (nothing would ever use it), and the answer says so.
    assert answer["removed"] == [IDS[1]]
    assert not (app / "releases" / IDS[1]).exists()
    assert manager_module().releases(str(app)) == [IDS[0]]
    assert processes_left(marker, within=3.0) == []
    assert not (app / "releases" / IDS[1] / "health.json").exists()

    make(app, IDS[1], passed=None)  # pushed again
    (tmp_path / "stop").touch()  # asked to stop before it started: no check at all
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True)
    assert json.loads(done.stdout)["status"] == "stopped"
    assert os.readlink(app / "current") == f"releases/{IDS[0]}"


@pytest.mark.parametrize(("readable_by", "file_mode", "folder_mode"),
                         [("owner", 0o600, 0o700), ("group", 0o640, 0o750),
                          ("everyone", 0o644, 0o755)])
def test_the_releases_get_the_modes_readable_by_names(tmp_path: Path, manager: Any,
                                                      readable_by: str, file_mode: int,
                                                      folder_mode: int) -> None:
    """Pushed owner-only (600/700), every release kept, its files and folders (check/
    too), and the folders above it get the modes release.readable_by names; the workdir
    only gains the search bits."""
    workdir = tmp_path / "workdir"
    app = workdir / "app"
    for name in IDS[:2]:
        make(app, name)
        (app / "releases" / name / "check").mkdir()
        (app / "releases" / name / "check" / "0000.png").write_bytes(b"png")
    for path in [app, *app.rglob("*")]:
        path.chmod(0o700 if path.is_dir() else 0o600)
    workdir.chmod(0o700)
    manager.share(str(app), readable_by)
    under = list((app / "releases").rglob("*"))
    assert {oct(path.stat().st_mode & 0o777) for path in under if path.is_file()} == {
        oct(file_mode)}
    assert {oct(path.stat().st_mode & 0o777) for path in [app, app / "releases", *under]
            if path.is_dir()} == {oct(folder_mode)}
    assert oct(workdir.stat().st_mode & 0o777) == oct(0o700 | folder_mode & 0o111)


def test_a_health_check_on_a_release_missing_a_module_names_the_file(
        tmp_path: Path, manager: Any) -> None:
    """The predictor refuses the incomplete release before running any of its package:
    the check's reason is its one line, not a traceback's last."""
    from tests.helpers import release_folder

    folder = release_folder(tmp_path / "releases" / IDS[0])
    (folder / "edgeflow_device" / "runtimes.py").unlink()
    result = manager.run_check(str(tmp_path), IDS[0], sys.executable, 60)
    assert result["reasons"] == [
        f"the predictor failed (exit 2): predict.py: edgeflow_device/runtimes.py in "
        f"{folder} is missing (the release is incomplete)"]
    assert json.loads((folder / "health.json").read_text())["passed"] is False


# --------------------------------------------------------------------------- the state space
# activate, rollback and status as the board runs them, one after another: the health
# check is a stand-in interpreter that answers what the release's own verdict.json says.


@pytest.fixture()
def board(tmp_path: Path) -> tuple[Path, str]:
    """An app folder and a 'python' whose check answers each release's verdict.json."""
    python = tmp_path / "check-python"
    python.write_text('#!/bin/sh\ncat "$(dirname "$1")/verdict.json"\n')
    python.chmod(0o700)
    return tmp_path / "app", str(python)


def pushed(app: Path, name: str, passes: bool = True, files: dict[str, bytes] | None = None
           ) -> str:
    """A release pushed, not yet checked; its check passes or fails (reason "model gone");
    ``files`` are released with it (listed in its manifest with their sha256)."""
    make(app, name, passed=None)
    folder = app / "releases" / name
    listed = []
    for path, content in (files or {}).items():
        (folder / path).write_bytes(content)
        listed.append({"path": path, "sha256": hashlib.sha256(content).hexdigest()})
    manifest = json.dumps({"manifest_version": 2, "variant": "onnx-fp32", "files": listed}
                          ).encode()
    (folder / "manifest.json").write_bytes(manifest)
    (folder / "manifest.sha256").write_text(f"{hashlib.sha256(manifest).hexdigest()}  "
                                            "manifest.json\n")
    (folder / "verdict.json").write_text(json.dumps(
        {"passed": passes, "reasons": [] if passes else ["model gone"]}))
    return name


def release(manager: Any, board: tuple[Path, str], name: str, keep: int = 5,
            passes: bool = True, on_release: str | None = None) -> dict[str, Any]:
    app, python = board
    pushed(app, name, passes)
    result: dict[str, Any] = manager.activate(str(app), name, python, on_release, keep, 30, 30)
    return result


def recorded(app: Path) -> dict[str, Any]:
    """state.json as the manager wrote it, and where the link points."""
    state = json.loads((app / "state.json").read_text())
    link = os.readlink(app / "current") if os.path.lexists(app / "current") else None
    return {"link": link, "previous": state["previous"], "rolled_back": state["rolled_back"],
            "last": {key: state["events"][-1][key] for key in ("action", "release", "detail")}}


@pytest.mark.parametrize("keep", [2, 3, 4])
def test_keep_releases_are_kept_and_one_more_prunes_the_oldest(manager: Any,
                                                               board: tuple[Path, str],
                                                               keep: int) -> None:
    app = board[0]
    for name in IDS[:keep]:
        assert release(manager, board, name, keep)["removed"] == []
    assert manager.releases(str(app)) == IDS[:keep]
    done = release(manager, board, IDS[keep], keep)
    assert (done["status"], done["removed"]) == ("released", [IDS[0]])
    assert manager.releases(str(app)) == IDS[1:keep + 1]


def test_keep_one_never_prunes_the_current_or_the_previous_release(
        manager: Any, board: tuple[Path, str]) -> None:
    app = board[0]
    assert [release(manager, board, name, keep=1)["removed"] for name in IDS[:4]] == [
        [], [], [IDS[0]], [IDS[1]]]
    assert manager.releases(str(app)) == [IDS[2], IDS[3]]
    assert recorded(app)["previous"] == IDS[2]


def test_a_refused_release_is_removed_and_the_record_stays_as_it_was(
        manager: Any, board: tuple[Path, str]) -> None:
    app, python = board
    release(manager, board, IDS[0])
    release(manager, board, IDS[1])
    refused = release(manager, board, IDS[2], passes=False)
    assert (refused["status"], refused["current"], refused["removed"]) == (
        "unhealthy", IDS[1], [IDS[2]])
    assert refused["message"] == "health check failed: model gone"
    assert manager.releases(str(app)) == IDS[:2]
    assert recorded(app) == {"link": f"releases/{IDS[1]}", "previous": IDS[0], "rolled_back": [],
                             "last": {"action": "check-failed", "release": IDS[2],
                                      "detail": "model gone"}}
    # The previous release activated again, its check failing now: refused, but its
    # folder is the rollback's and stays.
    (app / "releases" / IDS[0] / "verdict.json").write_text(
        json.dumps({"passed": False, "reasons": ["model gone"]}))
    again = manager.activate(str(app), IDS[0], python, None, 5, 30, 30)
    assert (again["status"], again["removed"]) == ("unhealthy", [])
    assert manager.releases(str(app)) == IDS[:2]
    # The next good release follows the current one, not the refused one.
    done = release(manager, board, IDS[3])
    assert (done["previous"], done["removed"]) == (IDS[1], [])
    assert manager.releases(str(app)) == [IDS[0], IDS[1], IDS[3]]
    assert recorded(app)["previous"] == IDS[1]


def test_a_release_whose_on_release_fails_is_undone_and_removed(
        manager: Any, board: tuple[Path, str]) -> None:
    app = board[0]
    hook = f'test "$EDGEFLOW_RELEASE" != {IDS[2]} || {{ echo broke; exit 3; }}'
    release(manager, board, IDS[0], on_release=hook)
    release(manager, board, IDS[1], on_release=hook)
    failed = release(manager, board, IDS[2], on_release=hook)
    assert (failed["status"], failed["current"], failed["removed"]) == (
        "hook_failed", IDS[1], [IDS[2]])
    assert failed["message"] == f"on_release failed (exit 3: broke); switched back to {IDS[1]}"
    assert failed["restored_hook"]["ok"] is True
    assert manager.releases(str(app)) == IDS[:2]
    assert recorded(app) == {
        "link": f"releases/{IDS[1]}", "previous": IDS[0], "rolled_back": [],
        "last": {"action": "activate-undone", "release": IDS[2],
                 "detail": f"on_release failed: broke; switched back to {IDS[1]}"}}


def test_a_first_release_whose_on_release_fails_leaves_no_release(
        manager: Any, board: tuple[Path, str]) -> None:
    app = board[0]
    failed = release(manager, board, IDS[0], on_release="exit 4")
    assert (failed["status"], failed["current"], failed["removed"]) == ("hook_failed", None,
                                                                        [IDS[0]])
    assert manager.releases(str(app)) == [] and not os.path.lexists(app / "current")
    assert recorded(app)["previous"] is None
    # No release to go back to, so no on_release to run again.
    assert failed["restored_hook"] is None
    assert failed["message"] == "on_release failed (exit 4: ); no release to restore"


def test_after_a_rollback_the_next_release_follows_the_release_rolled_back_to(
        manager: Any, board: tuple[Path, str]) -> None:
    app = board[0]
    for name in IDS[:3]:
        release(manager, board, name, keep=3)
    back = manager.rollback(str(app), None, 30)
    assert (back["status"], back["current"], back["from"]) == ("rolled_back", IDS[1], IDS[2])
    assert recorded(app) == {"link": f"releases/{IDS[1]}", "previous": IDS[0],
                             "rolled_back": [IDS[2]],
                             "last": {"action": "rollback", "release": IDS[1],
                                      "detail": f"from {IDS[2]}"}}
    # The next release: the one rolled back to is its previous; the oldest is pruned, the
    # one rolled back from is kept (keep counts it) and stays listed as rolled back from.
    done = release(manager, board, IDS[3], keep=3)
    assert (done["previous"], done["removed"]) == (IDS[1], [IDS[0]])
    assert manager.releases(str(app)) == IDS[1:4]
    status = manager.status(str(app))
    assert (status["current"]["release"], status["previous"]["release"]) == (IDS[3], IDS[1])
    assert [entry["release"] for entry in status["rolled_back"]] == [IDS[2]]
    # Rolled back again: to the previous, never to the release rolled back from before.
    again = manager.rollback(str(app), None, 30)
    assert (again["current"], again["from"]) == (IDS[1], IDS[3])
    assert recorded(app)["previous"] is None and recorded(app)["rolled_back"] == [IDS[2], IDS[3]]
    last = manager.rollback(str(app), None, 30)
    assert (last["status"], last["current"]) == ("nothing_to_roll_back_to", IDS[1])


def test_status_names_each_file_changed_on_the_board(manager: Any,
                                                     board: tuple[Path, str]) -> None:
    app, python = board
    for name in IDS[:2]:
        pushed(app, name, files={"model.onnx": b"weights", "labels.txt": b"cat\ndog\n"})
        manager.activate(str(app), name, python, None, 5, 30, 30)
    status = manager.status(str(app))
    assert [(status[which]["release"], status[which]["files_intact"], status[which]["changed"])
            for which in ("current", "previous")] == [(IDS[1], True, []), (IDS[0], True, [])]
    (app / "releases" / IDS[1] / "model.onnx").write_bytes(b"weights, retrained by hand")
    (app / "releases" / IDS[0] / "labels.txt").unlink()
    status = manager.status(str(app))
    assert [(status[which]["release"], status[which]["files_intact"], status[which]["changed"])
            for which in ("current", "previous")] == [(IDS[1], False, ["model.onnx"]),
                                                      (IDS[0], False, ["labels.txt"])]
    assert manager.rollback(str(app), None, 30)["status"] == "nothing_to_roll_back_to"


@pytest.mark.parametrize("manifest", [None, b"[]", b'{"variant": "v1", "sha2'],
                         ids=["missing", "not-an-object", "truncated"])
def test_status_of_a_release_without_a_readable_manifest_knows_only_its_name_and_health(
        tmp_path: Path, manager: Any, manifest: bytes | None) -> None:
    app = tmp_path / "app"
    make(app, IDS[0], passed=False)
    path = app / "releases" / IDS[0] / "manifest.json"
    path.unlink() if manifest is None else path.write_bytes(manifest)
    (app / "state.json").write_text(json.dumps({"rolled_back": [IDS[0]]}))
    assert manager.status(str(app))["rolled_back"] == [{
        "release": IDS[0], "variant": None, "sha256": None, "manifest_sha256": None,
        "created_at": None, "mlflow": None, "health": {"passed": False},
        "files_intact": None, "changed": None}]


# ------------------------------------------------------------ the state space, against a model
# Every operation a board sees, in sequences that start at keep's boundary (keep + 1
# releases) and then mix: a release that passes, one whose check fails, one whose
# on_release fails, the current one released again, a release rolled back from released
# again by hand, a rollback, and `current` moved by hand (drift: the link is the truth).
# After each, the manager's answer, its folders, its link and state.json are what a
# model of the documented rules says: a success prunes beyond the newest `keep` (keep 0:
# every one) but never the release or the one it replaced; a refused or undone release is
# removed at once; a rollback goes to the previous release if healthy, else the newest
# healthy older one not rolled back from.

HOOK = 'test ! -e "$1/hook-fails" || { echo broke; exit 3; }'


def many_ids(count: int) -> list[str]:
    return [f"20261120T{number:012d}Z-v{number}" for number in range(count)]


class Model:
    """What the documented rules say a board holds."""

    def __init__(self) -> None:
        self.folders: list[str] = []
        self.healthy: set[str] = set()
        self.current: str | None = None
        self.previous: str | None = None
        self.rolled_back: list[str] = []
        self.last: dict[str, Any] | None = None

    def prune(self, keep: int, protect: set[str | None]) -> list[str]:
        beyond = self.folders[:max(0, len(self.folders) - keep)] if keep > 0 else list(self.folders)
        removed = [name for name in beyond if name not in protect]
        self.folders = [name for name in self.folders if name not in removed]
        return removed

    def older_healthy(self, than: str | None) -> str | None:
        older = [name for name in self.folders if (than is None or name < than)
                 and name not in self.rolled_back and name in self.healthy]
        return older[-1] if older else None

    def release(self, name: str, outcome: str, keep: int) -> dict[str, Any]:
        before = self.current
        if name == before:
            return {"status": "already_current", "current": before,
                    "message": f"{name} is already current"}
        if name not in self.folders:
            self.folders = sorted([*self.folders, name])
        protect = {before, self.previous}
        if outcome == "check fails":
            self.healthy.discard(name)
            self.last = {"action": "check-failed", "release": name, "detail": "model gone"}
            removed = [] if name in protect else [name]
            self.folders = [folder for folder in self.folders if folder not in removed]
            return {"status": "unhealthy", "current": before, "removed": removed}
        self.healthy.add(name)
        if outcome == "hook fails":
            restored = f"switched back to {before}" if before else "no release to restore"
            self.last = {"action": "activate-undone", "release": name,
                         "detail": f"on_release failed: broke; {restored}"}
            removed = [] if name in protect else [name]
            self.folders = [folder for folder in self.folders if folder not in removed]
            return {"status": "hook_failed", "current": before, "removed": removed}
        self.current, self.previous = name, before
        self.rolled_back = [other for other in self.rolled_back if other != name]
        self.last = {"action": "activate", "release": name, "detail": ""}
        return {"status": "released", "current": name, "removed": self.prune(keep, {name, before}),
                "message": f"{name} is current" + (f" (was {before})" if before else "")}

    def rollback(self) -> dict[str, Any]:
        previous, current = self.previous, self.current
        if previous and previous != current and previous in self.healthy \
                and previous in self.folders:
            target: str | None = previous
        else:
            target = self.older_healthy(current)
        if target is None:
            return {"status": "nothing_to_roll_back_to", "current": current}
        if current is not None:
            self.rolled_back = [*(name for name in self.rolled_back if name != current), current]
        self.current = target
        self.previous = self.older_healthy(target)
        self.last = {"action": "rollback", "release": target, "detail": f"from {current}"}
        return {"status": "rolled_back", "current": target}


def run_operation(manager: Any, board: tuple[Path, str], model: Model, operation: str,
                  name: str, keep: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """``operation`` on the board and on the model: (the manager's answer, the model's)."""
    app, python = board
    if operation == "rollback":
        return manager.rollback(str(app), HOOK, 30), model.rollback()
    if operation == "drift":  # current moved by hand to release ``name``, one kept
        other = name
        os.symlink(f"releases/{other}", app / "moved")
        os.replace(app / "moved", app / "current")
        model.current = other
        return {"status": "drift", "current": other}, {"status": "drift", "current": other}
    if operation in ("passes", "check fails", "hook fails"):
        pushed(app, name, passes=operation != "check fails")
        if operation == "hook fails":
            (app / "releases" / name / "hook-fails").touch()
    answer = manager.activate(str(app), name, python, HOOK, keep, 30, 30)
    return answer, model.release(name, "passes" if operation in ("again", "rolled back")
                                 else operation, keep)


OPERATIONS = ["passes", "passes", "passes", "check fails", "hook fails", "rollback",
              "rollback", "again", "rolled back", "drift"]


@pytest.mark.parametrize("keep", [0, 1, 2, 3, 5])
def test_every_sequence_of_releases_rollbacks_and_drift_keeps_what_the_rules_say(
        manager: Any, board: tuple[Path, str], keep: int) -> None:
    import random

    app = board[0]
    rng = random.Random(keep)
    chosen = rng.choices(OPERATIONS, k=40)
    names = iter(many_ids(60))
    model = Model()
    seen = set()
    # keep + 2 releases (the boundary crossed), the mix, then a refusal and rollbacks
    # until none is left to roll back to, and releases after them.
    tail = ["check fails", *["rollback"] * (keep + 4), "passes", "passes"]
    for step, operation in enumerate(["passes"] * (keep + 2) + chosen + tail):
        if operation == "again" and model.current is None:
            operation = "passes"
        if operation == "rolled back":
            again = [name for name in model.rolled_back if name in model.folders
                     and name != model.current]
            operation, name = ("rolled back", again[-1]) if again else ("passes", next(names))
        elif operation == "again":
            name = str(model.current)
        elif operation == "drift":
            others = [folder for folder in model.folders if folder != model.current]
            if not others:
                continue
            name = rng.choice(others)  # the previous one, or another
        else:
            name = next(names)
        answer, expected = run_operation(manager, board, model, operation, name, keep)
        said = f"step {step}: {operation} {name}"
        assert {key: answer.get(key) for key in expected} == expected, said
        seen.add(answer["status"])
        if answer["status"] == "already_current":  # with the check it passed when released
            assert answer["health"] == json.loads(
                (app / "releases" / name / "health.json").read_text()), said
            assert answer["health"]["passed"] is True, said
        assert manager.releases(str(app)) == model.folders, said
        if model.last is not None:
            assert recorded(app) == {
                "link": f"releases/{model.current}" if model.current else None,
                "previous": model.previous, "rolled_back": model.rolled_back,
                "last": model.last}, said
        assert manager.load_state(str(app))["current"] == model.current, said
    assert seen == {"released", "unhealthy", "hook_failed", "already_current", "rolled_back",
                    "nothing_to_roll_back_to", "drift"}


def test_state_keeps_the_newest_events_and_status_shows_the_last_five(
        manager: Any, board: tuple[Path, str]) -> None:
    """Two events more than the history holds: the two oldest go, never the newest."""
    app = board[0]
    names = many_ids(manager.MAX_EVENTS + 2)
    pushed(app, names[0])
    state = manager.load_state(str(app))
    for name in names:
        manager._record(str(app), state, "activate", name)
    kept = json.loads((app / "state.json").read_text())["events"]
    assert [event["release"] for event in kept] == names[2:]
    assert [event["release"] for event in manager.status(str(app))["events"]] == names[-5:]


def test_a_timed_out_hook_group_that_goes_on_sigterm_is_ended_at_once(manager: Any) -> None:
    """_end_group polls for the group to go (every 50 ms), not a second at a time."""
    import subprocess
    import time

    hook = subprocess.Popen(["sleep", "30"], start_new_session=True)
    started = time.monotonic()
    manager._end_group(hook)
    assert hook.returncode == -15  # SIGTERM was enough
    assert time.monotonic() - started < 0.5


def _main_calls(manager: Any, monkeypatch: pytest.MonkeyPatch, argv: list[str]
                ) -> tuple[list[tuple[str, tuple[Any, ...]]], list[int]]:
    """main(argv) in process with activate, rollback and status recorded, not run; the
    umask it set (restored after the test) and no SIGTERM handler installed."""
    calls: list[tuple[str, tuple[Any, ...]]] = []
    for name in ("activate", "rollback", "status"):
        monkeypatch.setattr(manager, name, lambda *args, name=name: calls.append((name, args))
                            or {"status": "ok"})
    umasks: list[int] = []
    monkeypatch.setattr(manager.os, "umask", umasks.append)
    monkeypatch.setattr(manager.signal, "signal", lambda *args: None)
    assert manager.main(argv) == 0
    return calls, umasks


@pytest.mark.parametrize("readable_by", sorted(device_code.load("releases").READABLE_BY))
def test_main_passes_each_option_to_activate_as_its_type(
        manager: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, readable_by: str) -> None:
    calls, umasks = _main_calls(manager, monkeypatch, [
        "activate", "--app", str(tmp_path), "--release", IDS[0], "--python", "py",
        "--on-release", "hook", "--keep", "3", "--check-timeout", "30.5",
        "--hook-timeout", "7.5", "--readable-by", readable_by, "--stop-file", "stop"])
    assert calls == [("activate", (str(tmp_path), IDS[0], "py", "hook", 3, 30.5, 7.5,
                                   readable_by, "stop"))]
    # What the manager writes gets the folder mode's bits (files then get the file mode).
    assert umasks == [0o777 & ~manager.READABLE_BY[readable_by][1]]


def test_main_defaults_and_the_rollback_hook_timeout(manager: Any, monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    calls, _ = _main_calls(manager, monkeypatch, ["activate", "--app", str(tmp_path),
                                                   "--release", IDS[0]])
    assert calls == [("activate", (str(tmp_path), IDS[0], sys.executable, None, 5, 600.0,
                                   120.0, "group", None))]
    calls, _ = _main_calls(manager, monkeypatch, ["rollback", "--app", str(tmp_path),
                                                   "--on-release", "hook", "--hook-timeout", "9"])
    assert calls == [("rollback", (str(tmp_path), "hook", 9.0))]
    assert isinstance(calls[0][1][2], float)


@pytest.mark.parametrize("release_id", [None, "", "latest", "../" + IDS[0]])
def test_main_refuses_an_activation_of_no_release_id(
        manager: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys,
        release_id: str | None) -> None:
    argv = ["activate", "--app", str(tmp_path)]
    argv += [] if release_id is None else ["--release", release_id]
    with pytest.raises(SystemExit) as exited:
        _main_calls(manager, monkeypatch, argv)
    assert exited.value.code == 2
    assert capsys.readouterr().err.rstrip().endswith(
        f"error: --release must be a release id, not {release_id!r}")


def test_main_help_explains_the_stop_file(manager: Any, capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        manager.main(["--help"])
    assert exited.value.code == 0
    assert ("--stop-file STOP_FILE activate: stop before the switch once this file exists"
            in " ".join(capsys.readouterr().out.split()))


def test_an_activation_stopped_before_its_switch_records_why_and_keeps_current(
        manager: Any, board: tuple[Path, str], tmp_path: Path) -> None:
    """The stop file present: ``stopped``, current and previous as they were, the
    release removed and the event recorded as ``activate-stopped`` for that release."""
    app = board[0]
    release(manager, board, IDS[0])
    release(manager, board, IDS[1])
    pushed(app, IDS[2])
    stop = tmp_path / "stop"
    stop.touch()
    answer = manager.activate(str(app), IDS[2], board[1], None, 5, 30, 30, stop_file=str(stop))
    assert answer == {"status": "stopped", "release": IDS[2], "current": IDS[1],
                      "removed": [IDS[2]],
                      "message": f"stopped on request before the switch: {IDS[1]} stays current"}
    assert recorded(app) == {"link": f"releases/{IDS[1]}", "previous": IDS[0], "rolled_back": [],
                             "last": {"action": "activate-stopped", "release": IDS[2],
                                      "detail": "stopped on request before the switch"}}


def test_past_the_last_stopping_point_sigterm_is_caught_and_ignored(manager: Any) -> None:
    """main's SIGTERM handler raises Stopped until _past_stopping; after it a SIGTERM is
    caught by a handler that does nothing: not ignored (SIG_IGN), which a hook started
    later would inherit, nor the default, which would end the manager mid-switch. A
    handler someone else installed is left alone. (No real SIGTERM is sent: the test
    runner's process, under pytest-xdist or mutmut, is not this test's to signal.)"""
    import signal

    before = signal.getsignal(signal.SIGTERM)
    try:
        signal.signal(signal.SIGTERM, manager._stop_now)
        manager._past_stopping(None)
        handler = signal.getsignal(signal.SIGTERM)
        assert handler not in (signal.SIG_IGN, signal.SIG_DFL, manager._stop_now, None)
        assert callable(handler) and handler(signal.SIGTERM, None) is None

        def theirs(signum: int, frame: Any) -> None:
            return None

        signal.signal(signal.SIGTERM, theirs)
        manager._past_stopping(None)
        assert signal.getsignal(signal.SIGTERM) is theirs
    finally:
        signal.signal(signal.SIGTERM, before)
