"""Releases on a device: push a built release, make it current, roll back, read state.

On the device (all under ``<workdir>/app``, see ``tasks/device/releases.py``)::

    releases/<release-id>/   one release: artifact, manifest.json, predict.py, check/...
    current -> releases/<id> what the application uses
    releases.py              the release manager, refreshed by every push
    state.json               current, previous, releases rolled back from, events

A push places every file of the release through the verified push (temporary name,
rename, mode 600, sha256 checked on the device before anything uses it; the manager then
gives the releases the modes ``release.readable_by`` names), then one shell command,
under the device lock (the benchmark's: a release never runs beside a benchmark, and two
releases to one device wait for each other), runs the manager: the
health check in the new release, the atomic switch of ``current``, ``on_release`` and
the switch back when it fails. What the device answers is untrusted: size-limited and
parsed as one JSON object.

A stop request (Ctrl-C) while an activation waits for the lock or runs its health check
stops it on the device (:mod:`tasks.farm.stoppable`, as a benchmark is stopped):
``current`` stays as it was, the folder pushed for it is removed, and
:class:`~tasks.core.interrupt.Interrupted` is raised. One
that comes once the switch is under way lets it finish: its answer is returned (and the
caller, recording it, stops next).
"""

from __future__ import annotations

import contextlib
import shlex
from pathlib import Path
from typing import Any

from tasks.config import LocalDevice, ReleaseParams, SshDevice
from tasks.core.errors import DeviceError
from tasks.core.interrupt import Interrupted, stop_requested, stopping_with
from tasks.farm import stoppable
from tasks.farm.protocol import LOCK_BUSY_EXIT, LOCK_NAME, MAX_RESULT_BYTES, parse_untrusted_json
from tasks.farm.push import check_then_run, last_line, make_dirs, place_files
from tasks.farm.session import NO_EXIT_STATUS
from tasks.farm.transports import Connection, quote_command

APP_DIR = "app"
MANAGER = "releases.py"
# <workdir>/release-control/<release-id>/: an activation's stop controls, beside app/ (what
# is under app/ is the application's, with the modes release.readable_by gives it).
CONTROL_DIR = "release-control"
DEFAULT_LOCK_WAIT_SECONDS = 600.0
# The manager's own work beyond the health check and on_release: the switch, a prune.
MANAGER_GRACE_SECONDS = 60.0
DISCARD_SECONDS = 60.0
# A stopped activation's command ends (its control folder goes) within this long unless
# its manager is past the switch; only then may the folder pushed for it be removed.
STOPPED_END_SECONDS = 5.0


class ReleaseError(DeviceError):
    """A release command on the device did not answer with a result."""


class ConnectionLost(ReleaseError):
    """The connection went away while a release command ran: what the device did (switched
    or not) is unknown until it is reached again."""


def app_dir(device: LocalDevice | SshDevice) -> str:
    return f"{device.workdir}/{APP_DIR}"


def _manager_command(device: LocalDevice | SshDevice, lock_wait: float, *argv: str) -> str:
    """The manager run with ``argv`` under the device lock."""
    workdir = str(device.workdir)
    return quote_command(["flock", "-w", f"{lock_wait:g}", "-E", str(LOCK_BUSY_EXIT),
                          f"{workdir}/{LOCK_NAME}", device.harness_python(),
                          f"{app_dir(device)}/{MANAGER}", *argv, "--app", app_dir(device)])


def _answer(result: Any, what: str, lock_wait: float) -> dict[str, Any]:
    """The manager's JSON answer; ReleaseError naming why there is none."""
    if result.exited == LOCK_BUSY_EXIT:
        raise ReleaseError(f"{what}: the device stayed busy (its lock held by a benchmark or "
                           f"another release) for more than {lock_wait:g} s")
    if result.exited == NO_EXIT_STATUS:
        raise ConnectionLost(f"{what}: the connection to the device was lost (no exit status: "
                           "the device or its SSH server went away); `edgeflow status` shows "
                           "what it runs once it is back")
    lines = [line for line in (result.stdout or "").splitlines() if line.strip()]
    try:
        if not lines or len(lines[-1]) > MAX_RESULT_BYTES:
            raise ValueError("no answer")
        return parse_untrusted_json(lines[-1].encode())
    except ValueError:
        said = last_line(result.stderr) or f"exit code {result.exited}"
        raise ReleaseError(f"{what}: the device's release manager failed: {said}") from None


def _hook_argv(device: LocalDevice | SshDevice) -> list[str]:
    if device.on_release is None:
        return []
    return ["--on-release", device.on_release,
            "--hook-timeout", f"{device.on_release_timeout_seconds:g}"]


def push_and_activate(connection: Connection, device: LocalDevice | SshDevice, folder: Path,
                      release_id: str, files: tuple[str, ...], params: ReleaseParams,
                      lock_wait: float = DEFAULT_LOCK_WAIT_SECONDS) -> dict[str, Any]:
    """Place the release built in ``folder`` on the device, verify it, and make it
    current (health check, switch, ``on_release``): the manager's answer, whose
    ``status`` is ``released``, ``already_current``, ``unhealthy`` or ``hook_failed``."""
    app = app_dir(device)
    remote = f"{app}/releases/{release_id}"
    control = f"{device.workdir}/{CONTROL_DIR}/{release_id}"
    placed = [(folder / name, f"{remote}/{name}") for name in files]
    folders = sorted({str(Path(target).parent) for _, target in placed})
    _, _, stop_file = stoppable.control_files(control)
    command = quote_command(stoppable.locked_argv(
        control, f"{device.workdir}/{LOCK_NAME}", f"{lock_wait:g}",
        [device.harness_python(), f"{app}/{MANAGER}", "activate", "--app", app,
         "--release", release_id, "--python", device.harness_python(),
         "--keep", str(params.keep), "--check-timeout", f"{params.check_timeout_seconds:g}",
         "--readable-by", params.readable_by, "--stop-file", stop_file, *_hook_argv(device)]))
    # The control folder goes whatever the command ends as (its status is kept).
    command = f"{{ {command}; }}; code=$?; rm -rf -- {shlex.quote(control)}; exit $code"
    limit = (lock_wait + params.check_timeout_seconds + device.on_release_timeout_seconds * 2
             + MANAGER_GRACE_SECONDS)
    with stopping_with(lambda: stoppable.stop(connection, control)):
        try:
            make_dirs(connection, *folders, control)
            place_files(connection, placed)
            manager = [(folder / MANAGER, f"{app}/{MANAGER}")]
            place_files(connection, manager)
            result = check_then_run(connection, [*placed, *manager], then=[command],
                                    timeout=limit)
        except KeyboardInterrupt:
            # Ctrl-C in this thread: the SSH transport gives up at once and the
            # connection closes on the way out, before the stopper's own channel could
            # reach the device: stop it now.
            with contextlib.suppress(Exception):
                stoppable.stop(connection, control)
                _discard_stopped(connection, app, release_id, control)
            raise
        except (DeviceError, OSError):
            _discard(connection, remote)
            raise
    if stop_requested():
        answer = None
        with contextlib.suppress(ReleaseError):
            answer = _answer(result, f"release {release_id}", lock_wait)
        if answer is None or answer.get("status") == "stopped":
            # The manager never ran (flock was stopped while it waited) or stopped before
            # the switch: nothing will use the folder pushed for it.
            _discard_stopped(connection, app, release_id, control)
            raise Interrupted(f"release {release_id} stopped on the device before the switch")
        return answer  # the switch was under way: what it ended as is recorded
    if result.exited == LOCK_BUSY_EXIT:
        _discard(connection, remote)
    return _answer(result, f"release {release_id}", lock_wait)


def _discard(connection: Connection, remote: str) -> None:
    """Remove a release folder the manager never ran for (its push failed, or the device
    stayed busy): nothing would ever use it. Best effort: a device that cannot be reached
    keeps it until a later release prunes it."""
    try:
        connection.run(quote_command(["rm", "-rf", "--", remote]), timeout=DISCARD_SECONDS)
    except (DeviceError, OSError):
        pass


def _discard_stopped(connection: Connection, app: str, release_id: str, control: str) -> None:
    """Remove the folder pushed for an activation that was asked to stop, once its
    command has ended (its control folder gone: the stop request makes a manager that
    starts after it stop at once) and unless it is ``current`` (the stop came once the
    switch was under way). A command still running after :data:`STOPPED_END_SECONDS` is
    past the switch: it keeps or removes its release itself. Best effort, as
    :func:`_discard`."""
    tries = int(STOPPED_END_SECONDS / 0.1)
    script = (f'i=0; while [ -e "$0" ] && [ "$i" -lt {tries} ]; do sleep 0.1; i=$((i+1)); '
              'done; [ -e "$0" ] && exit 0; '
              '[ "$(readlink "$1/current")" = "releases/$2" ] && exit 0; '
              'rm -rf -- "$1/releases/$2"')
    try:
        connection.run(quote_command(["sh", "-c", script, control, app, release_id]),
                       timeout=STOPPED_END_SECONDS + DISCARD_SECONDS)
    except (DeviceError, OSError):
        pass


def rollback(connection: Connection, device: LocalDevice | SshDevice,
             lock_wait: float = DEFAULT_LOCK_WAIT_SECONDS,
             readable_by: str = "group") -> dict[str, Any]:
    """Switch ``current`` back to the previous healthy release (``on_release`` runs);
    the manager's answer (``status`` ``rolled_back``, ``nothing_to_roll_back_to`` or
    ``hook_failed``). What the manager writes is as readable as ``readable_by`` says
    (``release.readable_by``), as in a release."""
    command = _manager_command(device, lock_wait, "rollback", "--readable-by", readable_by,
                               *_hook_argv(device))
    result = connection.run(command, timeout=lock_wait + device.on_release_timeout_seconds * 2
                            + MANAGER_GRACE_SECONDS)
    return _answer(result, "rollback", lock_wait)


def status(connection: Connection, device: LocalDevice | SshDevice) -> dict[str, Any]:
    """What the device runs (current, previous, kept releases, rolled back ones, recent
    events); ``{"status": "none"}`` where nothing was ever released. Not under the lock:
    it only reads."""
    if MANAGER not in connection.listdir(app_dir(device)):
        return {"status": "none", "current": None, "previous": None, "releases": [],
                "rolled_back": [], "events": []}
    command = quote_command([device.harness_python(), f"{app_dir(device)}/{MANAGER}", "status",
                             "--app", app_dir(device)])
    return _answer(connection.run(command), "status", 0)
