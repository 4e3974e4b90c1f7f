"""The experiment lock and the store lock, with real processes: refused with the holder
named, re-entrant in one process, released when the holder is killed."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from tasks.core.locks import (ExperimentBusy, LockTimeout, NotWritable, experiment_lock,
                              file_lock)
from tests.helpers import read_only_tree

HOLD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from tasks.core.locks import experiment_lock
    with experiment_lock(Path(sys.argv[1])):
        print("held", flush=True)
        time.sleep(60)
""")


def _holder(state: Path) -> subprocess.Popen[str]:
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(state), "--flag"],
                               stdout=subprocess.PIPE, text=True,
                               cwd=Path(__file__).resolve().parents[3])
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_second_holder_is_refused_naming_the_first_until_it_is_killed(tmp_path: Path) -> None:
    state = tmp_path / ".edgeflow"
    holder = _holder(state)
    try:
        with pytest.raises(ExperimentBusy) as refused:
            with experiment_lock(state):
                pass
        message = str(refused.value)
        assert message.startswith(f"another edgeflow run of this experiment is in progress "
                                  f"(pid {holder.pid} on ")
        assert "`-c " in message and "--flag`" in message
        assert message.endswith(f"wait for it to finish or stop it (lock: {state / 'run.lock'})")
        assert "\n" not in message and refused.value.exit_code == 75
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # The kernel released the lock with its holder: no stale lock file blocks anyone.
    with experiment_lock(state):
        assert (state / "run.lock").read_text().startswith(f'{{"pid": {os.getpid()}')


def test_the_lock_is_reentrant_in_one_process_and_released_after(tmp_path: Path) -> None:
    state = tmp_path / ".edgeflow"
    with experiment_lock(state):
        with experiment_lock(state):  # the CLI, then the flow it runs
            pass
        holder = subprocess.run([sys.executable, "-c", HOLD.replace("time.sleep(60)", "pass"),
                                 str(state)], capture_output=True, text=True,
                                cwd=Path(__file__).resolve().parents[3])
        assert holder.returncode == 1 and "ExperimentBusy" in holder.stderr
    holder = subprocess.run([sys.executable, "-c", HOLD.replace("time.sleep(60)", "pass"),
                             str(state)], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parents[3])
    assert holder.returncode == 0 and holder.stdout.strip() == "held"


def test_a_waiting_lock_waits_then_times_out_naming_the_holder(tmp_path: Path) -> None:
    state = tmp_path / "store"
    holder = _holder(state)
    try:
        started = time.monotonic()
        with pytest.raises(LockTimeout, match=rf"run.lock stayed locked for more than 0.5 s "
                                              rf"\(pid {holder.pid} on "):
            with file_lock(state / "run.lock", wait_seconds=0.5):
                pass
        assert 0.5 <= time.monotonic() - started < 5
    finally:
        holder.kill()
        holder.wait()
    with file_lock(state / "run.lock", wait_seconds=5):
        pass



def test_an_experiment_lock_asked_to_wait_queues_behind_its_holder(tmp_path: Path) -> None:
    """What a deployed run does: it waits for the run holding the experiment, then runs;
    past its wait it is a LockTimeout naming the holder, not ExperimentBusy."""
    state = tmp_path / ".edgeflow"
    holder = _holder(state)
    try:
        with pytest.raises(LockTimeout, match=rf"\(pid {holder.pid} on "):
            with experiment_lock(state, wait_seconds=0.3):
                pass
        started = time.monotonic()
        threading.Timer(1.0, holder.kill).start()
        with experiment_lock(state, wait_seconds=30):
            waited = time.monotonic() - started
            assert holder.poll() is not None  # got it once the holder was gone
    finally:
        holder.kill()
        holder.wait()
    assert 0.9 <= waited < 10


ADVICE = ("edgeflow keeps its lock, logs and outputs there; make it writable, or copy the "
          "experiment to a folder you can write")


@pytest.mark.parametrize("made, refusing", [
    ((), ".edgeflow"),  # a fresh experiment: its state folder cannot be made
    ((".edgeflow",), ".edgeflow/run.lock"),  # no new file in the state folder
    ((".edgeflow", ".edgeflow/run.lock"), ".edgeflow/run.lock"),  # the lock not writable
], ids=["fresh", "state-folder-made", "lock-file-made"])
def test_a_read_only_experiment_folder_is_one_line_naming_it(
        tmp_path: Path, made: tuple[str, ...], refusing: str) -> None:
    """``chmod -R a-w`` on an experiment (whatever it already holds): one line naming the
    folder and what refused, exit 1; not a traceback about run.lock."""
    experiment = tmp_path / "experiment"
    (experiment / ".edgeflow").mkdir(parents=True) if made else experiment.mkdir()
    if ".edgeflow/run.lock" in made:
        (experiment / ".edgeflow" / "run.lock").touch()
    with read_only_tree(experiment):
        with pytest.raises(NotWritable) as refused:
            with experiment_lock(experiment / ".edgeflow"):
                pass
    message = str(refused.value)
    assert message.startswith(f"the experiment folder {experiment} is not writable (")
    assert message.endswith(f": {experiment / refusing}): {ADVICE}")
    assert "\n" not in message and refused.value.exit_code == 1
    with experiment_lock(experiment / ".edgeflow"):  # writable again: the lock works
        pass


def test_a_store_lock_in_a_read_only_folder_names_the_folder(tmp_path: Path) -> None:
    store = tmp_path / "mlruns"
    store.mkdir()
    with read_only_tree(store):
        with pytest.raises(NotWritable) as refused:
            with file_lock(store / "mlflow.db.lock", wait_seconds=1):
                pass
    assert str(refused.value).startswith(f"{store} is not writable (")
    assert str(refused.value).endswith(f": {store / 'mlflow.db.lock'})")


def test_a_file_where_the_state_folder_belongs_is_named_not_called_read_only(
        tmp_path: Path) -> None:
    (tmp_path / ".edgeflow").write_text("")
    with pytest.raises(NotWritable) as refused:
        with experiment_lock(tmp_path / ".edgeflow"):
            pass
    lock = tmp_path / ".edgeflow" / "run.lock"
    assert str(refused.value) == (f"cannot create the lock {lock} (File exists: "
                                  f"{tmp_path / '.edgeflow'})")


# The same refusals without a read-only tree (read_only_tree skips where root may not set
# the immutable attribute): the file system's answers, raised where locks.py meets them.
REFUSED = {"EACCES": PermissionError(errno.EACCES, "Permission denied"),
           "EROFS": OSError(errno.EROFS, "Read-only file system"),
           "ENOSPC": OSError(errno.ENOSPC, "No space left on device")}


def _refusing(monkeypatch: pytest.MonkeyPatch, at: Path, error: OSError, call: str) -> None:
    """``Path.mkdir`` (``call`` "mkdir") or ``os.open`` ("open") raising ``error`` for
    ``at``, as the kernel's answer names it (``filename``); other paths untouched."""
    from tasks.core import locks

    def refused() -> OSError:
        return type(error)(error.errno, error.strerror, str(at))

    if call == "mkdir":
        make = Path.mkdir

        def mkdir(self: Path, *args: object, **kwargs: object) -> None:
            if self == at:
                raise refused()
            make(self, *args, **kwargs)  # type: ignore[arg-type]
        monkeypatch.setattr(Path, "mkdir", mkdir)
    else:
        opener = os.open

        def open_(path: object, *args: object, **kwargs: object) -> int:
            if Path(str(path)) == at:
                raise refused()
            return opener(path, *args, **kwargs)  # type: ignore[arg-type]
        monkeypatch.setattr(locks.os, "open", open_)


@pytest.mark.parametrize("errno_name", ["EACCES", "EROFS"])
@pytest.mark.parametrize("made, call, refusing, named", [
    ((), "mkdir", ".edgeflow", ""),  # the state folder cannot be made in the experiment
    ((".edgeflow",), "open", ".edgeflow/run.lock", ".edgeflow"),  # no new file in it
    ((".edgeflow", ".edgeflow/run.lock"), "open", ".edgeflow/run.lock",
     ".edgeflow/run.lock"),  # the lock file refuses writing
], ids=["fresh", "state-folder-made", "lock-file-made"])
def test_a_refused_lock_is_one_line_naming_the_folder_that_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, errno_name: str,
        made: tuple[str, ...], call: str, refusing: str, named: str) -> None:
    experiment = tmp_path.resolve() / "experiment"
    (experiment / ".edgeflow").mkdir(parents=True) if made else experiment.mkdir()
    if ".edgeflow/run.lock" in made:
        (experiment / ".edgeflow" / "run.lock").touch()
    error = REFUSED[errno_name]
    _refusing(monkeypatch, experiment / refusing, error, call)
    reason = f"{error.strerror}: {experiment / refusing}"
    with pytest.raises(NotWritable) as refused:
        with file_lock(experiment / ".edgeflow" / "run.lock"):
            pass
    assert str(refused.value) == f"{experiment / named} is not writable ({reason})"
    assert (refused.value.reason, refused.value.refused) == (reason, True)
    with pytest.raises(NotWritable) as refused:
        with experiment_lock(experiment / ".edgeflow"):
            pass
    assert str(refused.value) == (f"the experiment folder {experiment} is not writable "
                                  f"({reason}): {ADVICE}")


@pytest.mark.parametrize("call, failing", [("mkdir", ".edgeflow"),
                                           ("open", ".edgeflow/run.lock")])
def test_a_lock_that_fails_otherwise_names_the_lock_and_the_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, call: str, failing: str) -> None:
    """A full disk is not a read-only folder: the lock and the error, not the advice."""
    experiment = tmp_path.resolve() / "experiment"
    (experiment / ".edgeflow").mkdir(parents=True) if call == "open" else experiment.mkdir()
    _refusing(monkeypatch, experiment / failing, REFUSED["ENOSPC"], call)
    lock = experiment / ".edgeflow" / "run.lock"
    expected = f"cannot create the lock {lock} (No space left on device: {experiment / failing})"
    for taking in (lambda: file_lock(lock), lambda: experiment_lock(experiment / ".edgeflow")):
        with pytest.raises(NotWritable) as refused:
            with taking():
                pass
        assert str(refused.value) == expected
        assert refused.value.refused is False
