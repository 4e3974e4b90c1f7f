"""Device-side release manager: health-check, switch, roll back and prune releases.

Shipped in every release folder and run there by the orchestrator, under the device
lock (``flock`` on the workdir's lock file: one release or benchmark at a time), with the
standard library only. Layout, all under ``<app>`` (``<workdir>/app``)::

    releases/<release-id>/   the release: manifest.json, artifact, predict.py (the launcher
                             of edgeflow_device/, the device code), releases.py, check/;
                             health.json once its check has run
    current -> releases/<id> the release in use (a relative symlink)
    state.json               current, previous, the releases rolled back from, events

``current`` only ever moves by renaming a new link over it, so a reader (or a kill at
any moment) sees the old release or the new one, both complete, and it only moves to a
release whose health check passed. Commands print one JSON object on stdout:

    python releases.py activate --app APP --release ID [--on-release CMD] [--keep N]
    python releases.py rollback --app APP [--on-release CMD]
    python releases.py status --app APP

``--on-release`` is a shell command run after every switch (``sh -c CMD``, with the
release folder as ``$1`` and ``EDGEFLOW_RELEASE``/``EDGEFLOW_RELEASE_DIR`` set, in a
process group of its own: one that runs past ``--hook-timeout`` is killed with everything
it started); when it fails, the switch is undone (and the command run again for the
restored release: its failure there is reported too). A release refused (its health
check) or undone (``on_release``) is removed at once.

An activation is stopped (SIGTERM, or the ``--stop-file`` present: the orchestrator's
Ctrl-C) only before the switch: it answers ``stopped`` and ``current`` stays as it was.
Once the switch is under way it runs to its end.

``--readable-by`` (params ``release.readable_by``) says who may read the releases: the
device user (``owner``: files 600, folders 700), also its group (``group``, the default:
640/750, and the workdir searchable by the group, so an application running as another
user of that group can load ``current``), or everyone (``everyone``: 644/755).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

RELEASE_ID = re.compile(r"^\d{8}T\d{12}Z-[A-Za-z0-9][A-Za-z0-9_.-]{0,100}$")
RELEASES, CURRENT, STATE, HEALTH = "releases", "current", "state.json", "health.json"
MANIFEST, MANIFEST_DIGEST = "manifest.json", "manifest.sha256"
MAX_EVENTS = 50
# Who may read the releases: (file mode, folder mode) of everything under app/.
READABLE_BY = {"owner": (0o600, 0o700), "group": (0o640, 0o750), "everyone": (0o644, 0o755)}
DEFAULT_READABLE_BY = "group"
CHECK_FAILED_EXIT = 3
HOOK_KILL_GRACE_SECONDS = 2.0  # a timed-out hook's group: SIGTERM, then SIGKILL after this
HOOK_OUTPUT_KEPT = 64 * 1024  # bytes of a hook's output read back: its last line is said


class Stopped(Exception):
    """The orchestrator asked the activation to stop (before the switch)."""


def _stop_now(signum: int, frame: Any) -> None:
    raise Stopped()


def _past_stopping(stop_file: str | None) -> None:
    """The last moment an activation can be stopped: from here on a stop signal is
    ignored (the switch, ``on_release`` and their record run to their end)."""
    if signal.getsignal(signal.SIGTERM) is _stop_now:
        signal.signal(signal.SIGTERM, lambda *_: None)  # caught, so a hook still gets TERM
    if stop_file and os.path.exists(stop_file):
        raise Stopped()


def _write_json(path: str, document: Any) -> None:
    staging = f"{path}.{os.getpid()}.tmp"
    with open(staging, "w", encoding="utf-8") as handle:
        json.dump(document, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(staging, path)


def _read_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def release_dir(app: str, release: str) -> str:
    return os.path.join(app, RELEASES, release)


def current_release(app: str) -> str | None:
    """The release ``current`` points at, or None (none yet, or a link edgeflow did not
    make)."""
    try:
        target = os.readlink(os.path.join(app, CURRENT))
    except OSError:
        return None
    folder, _, name = target.rpartition("/")
    return name if folder == RELEASES and RELEASE_ID.match(name) else None


def releases(app: str) -> list[str]:
    """The release folders, oldest first (ids sort by creation time)."""
    try:
        names = os.listdir(os.path.join(app, RELEASES))
    except FileNotFoundError:
        return []
    return sorted(name for name in names if RELEASE_ID.match(name)
                  and os.path.isdir(release_dir(app, name)))


def health(app: str, release: str) -> dict[str, Any] | None:
    found = _read_json(os.path.join(release_dir(app, release), HEALTH))
    return found if isinstance(found, dict) else None


def healthy(app: str, release: str) -> bool:
    """Whether ``release`` passed its health check and its files are still the released
    ones (a release edited on the board since is no rollback target)."""
    found = health(app, release)
    if not (found and found.get("passed")):
        return False
    folder = release_dir(app, release)
    manifest = _read_json(os.path.join(folder, MANIFEST))
    return isinstance(manifest, dict) and not changed_files(folder, manifest)


def load_state(app: str) -> dict[str, Any]:
    state = _read_json(os.path.join(app, STATE))
    if not isinstance(state, dict):
        state = {}
    state.setdefault("previous", None)
    state.setdefault("rolled_back", [])
    state.setdefault("events", [])
    state["current"] = current_release(app)  # the link is the truth
    return state


def _record(app: str, state: dict[str, Any], action: str, release: str | None,
            detail: str = "") -> None:
    state["events"] = [*state["events"], {"at": time.time(), "action": action,
                                          "release": release, "detail": detail}][-MAX_EVENTS:]
    _write_json(os.path.join(app, STATE), state)


def switch(app: str, release: str) -> None:
    """Point ``current`` at ``release``: a new link renamed over the old one (atomic)."""
    staging = os.path.join(app, f".{CURRENT}.{os.getpid()}")
    if os.path.lexists(staging):
        os.unlink(staging)
    os.symlink(f"{RELEASES}/{release}", staging)
    os.replace(staging, os.path.join(app, CURRENT))


def run_check(app: str, release: str, python: str, timeout: float) -> dict[str, Any]:
    """The release's health check (its own predictor, in a process of its own), recorded
    as its ``health.json``."""
    folder = release_dir(app, release)
    try:
        done = subprocess.run([python, os.path.join(folder, "predict.py"), "--check"],
                              capture_output=True, text=True, timeout=timeout, check=False)
        lines = [line for line in done.stdout.splitlines() if line.strip()]
        try:
            result = json.loads(lines[-1]) if lines else None
        except ValueError:
            result = None
        if not isinstance(result, dict):
            said = [line for line in done.stderr.splitlines() if line.strip()]
            result = {"passed": False, "reasons": [
                f"the predictor failed (exit {done.returncode}): "
                f"{said[-1][-300:] if said else 'it said nothing'}"]}
    except subprocess.TimeoutExpired:
        result = {"passed": False, "reasons": [f"the check did not finish within {timeout:g} s"]}
    result["release"] = release
    _write_json(os.path.join(folder, HEALTH), result)
    return result


def run_hook(app: str, command: str | None, timeout: float) -> dict[str, Any] | None:
    """``command`` for the release ``current`` points at; None when there is none."""
    if not command:
        return None
    release = current_release(app)
    folder = os.path.realpath(os.path.join(app, CURRENT))
    env = {**os.environ, "EDGEFLOW_RELEASE": release or "", "EDGEFLOW_RELEASE_DIR": folder}
    # A session (process group) of its own: on a timeout, everything the hook started
    # goes with it, not only its shell. Its output goes to a file, not a pipe: the hook
    # is over when its shell exits, and an application it starts in the background
    # (`app &`), which inherits the output, keeps running instead of holding a pipe open
    # until the timeout kills it.
    with tempfile.TemporaryFile("w+b") as output:
        hook = subprocess.Popen(["sh", "-c", command, "on_release", folder], stdout=output,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            hook.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _end_group(hook)
            return {"ok": False, "exit": None,
                    "said": f"did not finish within {timeout:g} s (it was stopped, with every "
                            "process it started)"}
        output.seek(max(0, output.seek(0, os.SEEK_END) - HOOK_OUTPUT_KEPT))
        text = output.read().decode("utf-8", "replace")
    said = [line for line in text.splitlines() if line.strip()]
    return {"ok": hook.returncode == 0, "exit": hook.returncode,
            "said": said[-1][-300:] if said else ""}


def _end_group(process: "subprocess.Popen[str]") -> None:
    """End ``process``'s whole process group: SIGTERM, SIGKILL for what is left after
    a grace period."""
    deadline = time.monotonic() + HOOK_KILL_GRACE_SECONDS
    for number in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, number)
        except ProcessLookupError:
            break
        while number == signal.SIGTERM and time.monotonic() < deadline:
            process.poll()  # reap the leader: a zombie would keep the group alive
            try:
                os.killpg(process.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
    process.wait()


def prune(app: str, keep: int, protect: set[str | None]) -> list[str]:
    """Remove the releases beyond the newest ``keep``, never one in ``protect``."""
    removed = []
    for name in releases(app)[:-keep] if keep > 0 else releases(app):
        if name not in protect:
            shutil.rmtree(release_dir(app, name), ignore_errors=True)
            removed.append(name)
    return removed


def share(app: str, readable_by: str) -> None:
    """Give the releases kept (files, folders) and the folders above them, up to the
    workdir, the modes ``readable_by`` names: every release, so that a rollback target is
    readable as the current one is. The workdir only gains the search bits (it holds the
    benchmark's runs, which keep their own owner-only modes)."""
    file_mode, folder_mode = READABLE_BY[readable_by]
    for folder in (app, os.path.join(app, RELEASES)):
        os.chmod(folder, folder_mode)
    workdir = os.path.dirname(app)
    mode = os.stat(workdir).st_mode & 0o7777
    if mode | folder_mode & 0o111 != mode:  # a workdir set up by hand may not be ours to chmod
        os.chmod(workdir, mode | folder_mode & 0o111)
    for name in releases(app):
        for root, folders, files in os.walk(release_dir(app, name)):
            os.chmod(root, folder_mode)
            for file in files:
                if not os.path.islink(os.path.join(root, file)):
                    os.chmod(os.path.join(root, file), file_mode)


def discard(app: str, release: str, protect: set[str | None]) -> list[str]:
    """Remove a release that was refused or undone (never one in ``protect``): nothing
    would ever use it, and it would stay until a later success pruned it."""
    if release in protect:
        return []
    shutil.rmtree(release_dir(app, release), ignore_errors=True)
    return [release]


def _fail_back(app: str, state: dict[str, Any], restore: str | None, hook: dict[str, Any],
               command: str | None, timeout: float, action: str, release: str) -> dict[str, Any]:
    """``on_release`` failed after switching to ``release``: switch back to ``restore``."""
    if restore is not None:
        switch(app, restore)
    else:  # the first release: there was no current one to go back to
        os.unlink(os.path.join(app, CURRENT))
    restored_hook = run_hook(app, command, timeout) if restore is not None else None
    state["current"] = restore
    if restore is None:
        restored = "no release to restore"
    elif restored_hook is not None and not restored_hook["ok"]:
        restored = (f"switched back to {restore}, but on_release failed there too "
                    f"({_hook_failure(restored_hook)}): the application is not running")
    else:
        restored = f"switched back to {restore}"
    _record(app, state, f"{action}-undone", release,
            f"on_release failed: {hook['said']}; {restored}")
    return {"status": "hook_failed", "release": release, "current": restore, "hook": hook,
            "restored_hook": restored_hook,
            "message": f"on_release failed ({_hook_failure(hook)}); {restored}"}


def _hook_failure(hook: dict[str, Any]) -> str:
    return hook["said"] if hook["exit"] is None else f"exit {hook['exit']}: {hook['said']}"


def activate(app: str, release: str, python: str, on_release: str | None, keep: int,
             check_timeout: float, hook_timeout: float,
             readable_by: str = DEFAULT_READABLE_BY,
             stop_file: str | None = None) -> dict[str, Any]:
    """Health-check ``release``, switch ``current`` to it, run ``on_release``; undo the
    switch when that fails. Releases beyond ``keep`` are removed (never the current one
    or the one before it), and so is ``release`` when it is refused or undone. Stopped
    (:class:`Stopped` raised by the SIGTERM handler :func:`main` installs, or
    ``stop_file`` present) before the switch: ``stopped``, ``current`` untouched."""
    state = load_state(app)
    before = state["current"]
    try:
        if stop_file and os.path.exists(stop_file):
            raise Stopped()
        if not os.path.isfile(os.path.join(release_dir(app, release), "manifest.json")):
            return {"status": "error", "release": release, "current": before,
                    "message": f"release {release} is not on the device"}
        share(app, readable_by)
        if before == release:
            return {"status": "already_current", "release": release, "current": before,
                    "health": health(app, release), "message": f"{release} is already current"}
        result = run_check(app, release, python, check_timeout)
        if not result.get("passed"):
            _past_stopping(None)
            _record(app, state, "check-failed", release, "; ".join(result.get("reasons", [])))
            return {"status": "unhealthy", "release": release, "current": before,
                    "health": result,
                    "removed": discard(app, release, {before, state["previous"]}),
                    "message": "health check failed: " + "; ".join(result.get("reasons", []))}
        _past_stopping(stop_file)
    except Stopped:
        _past_stopping(None)
        _record(app, state, "activate-stopped", release, "stopped on request before the switch")
        return {"status": "stopped", "release": release, "current": before,
                "removed": discard(app, release, {before, state["previous"]}),
                "message": f"stopped on request before the switch: "
                           f"{before or 'no release'} stays current"}
    switch(app, release)
    state["current"] = release
    hook = run_hook(app, on_release, hook_timeout)
    if hook is not None and not hook["ok"]:
        undone = _fail_back(app, state, before, hook, on_release, hook_timeout, "activate",
                            release)
        return {**undone, "health": result,
                "removed": discard(app, release, {undone["current"], state["previous"]})}
    state["previous"] = before
    state["rolled_back"] = [name for name in state["rolled_back"] if name != release]
    _record(app, state, "activate", release)
    removed = prune(app, keep, {release, before})
    return {"status": "released", "release": release, "current": release, "previous": before,
            "health": result, "hook": hook, "removed": removed,
            "message": f"{release} is current" + (f" (was {before})" if before else "")}


def rollback_target(app: str, state: dict[str, Any]) -> str | None:
    """The release a rollback returns to: the one before ``current`` if it is still there
    and healthy, else the newest healthy release older than ``current``."""
    current = state["current"]
    previous = state["previous"]
    if previous and previous != current and healthy(app, previous):
        return str(previous)
    older = [name for name in releases(app)
             if (current is None or name < current) and name not in state["rolled_back"]
             and healthy(app, name)]
    return older[-1] if older else None


def rollback(app: str, on_release: str | None, hook_timeout: float) -> dict[str, Any]:
    """Switch ``current`` back to :func:`rollback_target` and run ``on_release``."""
    state = load_state(app)
    current = state["current"]
    target = rollback_target(app, state)
    if target is None:
        return {"status": "nothing_to_roll_back_to", "current": current,
                "message": "no earlier healthy release on the device"}
    switch(app, target)
    state["current"] = target
    hook = run_hook(app, on_release, hook_timeout)
    if hook is not None and not hook["ok"]:
        return _fail_back(app, state, current, hook, on_release, hook_timeout, "rollback", target)
    if current is not None:
        state["rolled_back"] = [*(name for name in state["rolled_back"] if name != current),
                                current]
    older = [name for name in releases(app) if name < target
             and name not in state["rolled_back"] and healthy(app, name)]
    state["previous"] = older[-1] if older else None
    _record(app, state, "rollback", target, f"from {current}")
    return {"status": "rolled_back", "release": target, "current": target, "from": current,
            "hook": hook, "message": f"{target} is current again (was {current})"}


def _sha256(path: str) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def changed_files(folder: str, manifest: dict[str, Any]) -> list[str]:
    """The files of the release in ``folder`` that are not the released ones: the
    manifest when it no longer matches ``manifest.sha256`` (it cannot hold its own hash;
    see ``bundle.py``), each file it lists whose sha256 differs or that is gone."""
    changed = []
    try:
        with open(os.path.join(folder, MANIFEST_DIGEST), encoding="utf-8") as handle:
            recorded = handle.read().split()[:1]
        if recorded != [_sha256(os.path.join(folder, MANIFEST))]:
            changed.append(MANIFEST)
    except OSError:
        if manifest.get("manifest_version") != 1:  # releases before the digest had none
            changed.append(MANIFEST_DIGEST)
    for entry in manifest.get("files") or []:
        try:
            if _sha256(os.path.join(folder, entry["path"])) != entry["sha256"]:
                changed.append(entry["path"])
        except OSError:
            changed.append(entry["path"])
    return changed


def _summary(app: str, release: str | None) -> dict[str, Any] | None:
    if release is None:
        return None
    folder = release_dir(app, release)
    manifest = _read_json(os.path.join(folder, MANIFEST))
    changed, manifest_sha256 = None, None
    if isinstance(manifest, dict):
        changed = changed_files(folder, manifest)
        manifest_sha256 = _sha256(os.path.join(folder, MANIFEST))
    else:
        manifest = {}
    return {"release": release, "variant": manifest.get("variant"),
            "sha256": manifest.get("sha256"), "manifest_sha256": manifest_sha256,
            "created_at": manifest.get("created_at"), "mlflow": manifest.get("mlflow"),
            "health": {key: value for key, value in (health(app, release) or {}).items()
                       if key != "predicted"} or None,
            "files_intact": None if changed is None else not changed, "changed": changed}


def status(app: str) -> dict[str, Any]:
    """What runs now, what ran before, the releases kept and those rolled back from."""
    state = load_state(app)
    return {"status": "ok", "current": _summary(app, state["current"]),
            "previous": _summary(app, state["previous"]), "releases": releases(app),
            "rolled_back": [_summary(app, name) for name in state["rolled_back"]
                            if os.path.isdir(release_dir(app, name))],
            "events": state["events"][-5:]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("activate", "rollback", "status"))
    parser.add_argument("--app", required=True)
    parser.add_argument("--release")
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--on-release", default=None)
    parser.add_argument("--keep", type=int, default=5)
    parser.add_argument("--check-timeout", type=float, default=600.0)
    parser.add_argument("--hook-timeout", type=float, default=120.0)
    parser.add_argument("--readable-by", choices=sorted(READABLE_BY), default=DEFAULT_READABLE_BY)
    parser.add_argument("--stop-file", default=None,
                        help="activate: stop before the switch once this file exists")
    args = parser.parse_args(argv)
    # What the manager writes (health.json, state.json) is as readable as the releases.
    os.umask(0o777 & ~READABLE_BY[args.readable_by][1])
    app = os.path.abspath(args.app)
    if args.command == "activate":
        if not args.release or not RELEASE_ID.match(args.release):
            parser.error(f"--release must be a release id, not {args.release!r}")
        signal.signal(signal.SIGTERM, _stop_now)  # until _past_stopping
        result = activate(app, args.release, args.python, args.on_release, args.keep,
                          args.check_timeout, args.hook_timeout, args.readable_by,
                          args.stop_file)
    elif args.command == "rollback":
        result = rollback(app, args.on_release, args.hook_timeout)
    else:
        result = status(app)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
