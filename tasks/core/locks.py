"""One run of an experiment at a time, and one writer of a shared MLflow store.

``experiment_lock`` holds an exclusive ``flock`` on ``<experiment>/.edgeflow/run.lock``
for the whole of an ``edgeflow run``, ``edgeflow step`` or deployed flow run: a second
one is refused at once with a one-line message naming the running one (its pid,
command, host and start time, written into the lock file). The kernel releases a flock
when its holder exits, however it exits (a crash, SIGKILL, a power cut of the orchestrating
machine's process): a lock file left behind never blocks the next run.

A deployed flow run waits for the lock instead (``wait_seconds``): under a scheduler a
second run of the experiment from another deployment (the nightly one while an
on-change one runs) is a queue, not a red run; two runs of one deployment never meet
here, Prefect queues them first (prefect.yaml's ``concurrency_limit``, ENQUEUE).

``file_lock`` is the same mechanism for a resource several experiments may share (an
MLflow sqlite store named by ``MLFLOW_TRACKING_URI``): it waits instead of refusing.

Locks are re-entrant within one process (the CLI takes the experiment lock, then the
flow it runs takes it again): a flock on a second file description of the same file
would deadlock against its own process.

A lock that cannot be created (a read-only experiment folder, a read-only mount) is
:class:`NotWritable`, one line naming the folder: the lock is the first thing a run
writes, so a folder no run could write in is refused before any work.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime, timezone
from pathlib import Path

from tasks.core.errors import EdgeflowError

LOCK_NAME = "run.lock"
POLL_SECONDS = 0.1


class ExperimentBusy(EdgeflowError):
    """Another run of the same experiment holds its lock."""

    exit_code = 75  # EX_TEMPFAIL: nothing is wrong with the input; try again later


class LockTimeout(EdgeflowError):
    """A shared resource stayed locked longer than the caller would wait."""

    exit_code = 75


class NotWritable(EdgeflowError):
    """A lock file cannot be created or opened for writing where it must be (its folder
    or the file is read-only, a read-only mount...)."""

    def __init__(self, message: str, reason: str = "", refused: bool = True) -> None:
        super().__init__(message)
        self.reason = reason  # what failed: "<strerror>: <path>"
        self.refused = refused  # a permission refused (not a full disk, a file in the way)


_held: dict[Path, tuple[int, int]] = {}  # resolved path -> (fd, depth)
_guard = threading.Lock()


def _holder() -> dict[str, object]:
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:200] if sys.argv else "?",
            "started": datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")}


def describe_holder(path: Path) -> str:
    """Who holds the lock at ``path``, as its holder wrote it (best effort)."""
    try:
        holder = json.loads(path.read_text(encoding="utf-8"))
        return (f"pid {holder['pid']} on {holder['host']}, `{holder['command']}`, "
                f"started {holder['started']}")
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"


@contextmanager
def file_lock(path: Path, wait_seconds: float | None = 0.0) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if needed) for the block.

    ``wait_seconds``: 0 refuses at once, None waits forever, otherwise waits that long;
    raises :class:`ExperimentBusy` (refused at once) or :class:`LockTimeout`.
    """
    key = path.resolve()
    with _guard:
        if key in _held:
            fd, depth = _held[key]
            _held[key] = (fd, depth + 1)
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield
        finally:
            _release(key)
        return
    fd = _open(key)
    try:
        _acquire(fd, key, wait_seconds)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(_holder()).encode(), 0)
    except BaseException:
        os.close(fd)
        raise
    with _guard:
        _held[key] = (fd, 1)
    try:
        yield
    finally:
        _release(key)


# Where the file system refuses writing: permission bits, an immutable or append-only
# attribute, a read-only mount.
_REFUSALS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})


def _open(key: Path) -> int:
    """The lock file at ``key``, opened for writing (it and its folders made if needed);
    :class:`NotWritable` naming the folder (or the file) that refused."""
    try:
        key.parent.mkdir(parents=True, exist_ok=True)
        return os.open(key, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        failed = Path(error.filename) if error.filename else key
        reason = f"{error.strerror}: {failed}"
        if error.errno not in _REFUSALS:  # a full disk, a file where a folder should be
            raise NotWritable(f"cannot create the lock {key} ({reason})", reason,
                              False) from None
        # mkdir names the folder it could not make (its parent refused); open names the
        # lock file (its folder refused a new file, or the file refuses writing).
        folder = failed if failed == key and key.exists() else failed.parent
        raise NotWritable(f"{folder} is not writable ({reason})", reason, True) from None


def _acquire(fd: int, path: Path, wait_seconds: float | None) -> None:
    deadline = None if wait_seconds is None else time.monotonic() + wait_seconds
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if deadline is not None and time.monotonic() >= deadline:
                if wait_seconds == 0:
                    raise ExperimentBusy(
                        f"another edgeflow run of this experiment is in progress "
                        f"({describe_holder(path)}); wait for it to finish or stop it "
                        f"(lock: {path})") from None
                raise LockTimeout(f"{path} stayed locked for more than {wait_seconds:g} s "
                                  f"({describe_holder(path)})") from None
            time.sleep(POLL_SECONDS)


def _release(key: Path) -> None:
    with _guard:
        fd, depth = _held[key]
        if depth > 1:
            _held[key] = (fd, depth - 1)
            return
        del _held[key]
    # The holder's description stays in the file: harmless once the flock is gone.
    os.close(fd)


@contextmanager
def experiment_lock(state_dir: Path, wait_seconds: float = 0.0) -> Iterator[None]:
    """The lock of the experiment whose state folder is ``state_dir``: refused at once
    (:class:`ExperimentBusy`) while another process holds it, or with ``wait_seconds``
    waited for that long (then :class:`LockTimeout`): a deployed run queues behind
    another deployment's run of the same experiment. :class:`NotWritable` naming the
    experiment folder when the lock cannot be written there."""
    with ExitStack() as stack:
        try:
            stack.enter_context(file_lock(state_dir / LOCK_NAME, wait_seconds=wait_seconds))
        except NotWritable as error:
            if not error.refused:
                raise
            raise NotWritable(
                f"the experiment folder {state_dir.parent} is not writable ({error.reason}): "
                "edgeflow keeps its lock, logs and outputs there; make it writable, or copy "
                "the experiment to a folder you can write", error.reason, True) from None
        yield
