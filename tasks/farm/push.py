"""Deploy files to a device: per-run folders, verified pushes, owner-only modes, cleanup.

Layout on a device (every folder mode 700, every file 600, all under its ``workdir``)::

    <workdir>/.benchmark.lock            flock: one benchmark at a time on the device
    <workdir>/runs/<run>/harness.py      the harness (the launcher of edgeflow_device/ beside
                                         it), test inputs, artifacts, specs, results
    <workdir>/venv/                      the virtualenv of `edgeflow farm setup`, if managed

A push copies a file under a temporary name and renames it into place (a reader never
sees half a file); its sha256 is checked on the device before it is used, by the shell
for the harness and test inputs and by the harness for the artifacts it loads, so a
corrupted copy is never used. The shell reads what to check from a list pushed as a
file, never from its command line: a release of hundreds of check images would pass
the kernel's limit on one argument (128 KiB, ``Argument list too long``). Run folders
are named by their UTC start time: the newest ``keep_runs`` are kept, and older ones
are removed once nothing has touched them for longer than a run in progress can stay
quiet.
"""

from __future__ import annotations

import re
import shlex
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tasks.farm.transports import Connection, quote_command
from tasks.core.errors import DeviceError
from tasks.core.files import sha256_file

RUNS_DIR = "runs"
RUN_NAME = re.compile(r"^\d{8}T\d{12}Z-[0-9a-f]{8}$")
MISMATCH_EXIT = 3


class DeployError(DeviceError):
    """A file could not be placed on the device, or arrived corrupted."""


@dataclass
class PhaseTimes:
    """Wall seconds spent per phase of a device run (connect, push, check+probe,
    harness, fetch)."""

    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - start

    def as_dict(self) -> dict[str, float]:
        return {name: round(value, 4) for name, value in self.seconds.items()}


def new_run_name() -> str:
    """A run folder name that sorts by start time and never collides."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ") + "-" + uuid.uuid4().hex[:8]


def make_dirs(connection: Connection, *directories: str) -> None:
    """Create owner-only folders (and their parents) on the device."""
    for directory in directories:
        try:
            connection.makedirs(directory)
        except OSError as error:
            raise DeployError(f"cannot create {directory} on the device: {error}") from None


def last_line(text: str, limit: int = 300) -> str:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return (lines[-1] if lines else "")[-limit:]


def place_files(connection: Connection, files: Sequence[tuple[Path, str]]) -> None:
    """Copy each (local, remote) pair; the transport writes a temporary name and renames
    it into place with mode 600, without a shell. The harness checks the sha256 of the
    artifacts it is given before it loads them (``--expect-sha256``)."""
    for local, remote in files:
        connection.put(local, remote)


# What the shell on the device runs to check a sha256 list (:func:`write_sha256_list`),
# ``{list}`` replaced by the list's quoted path: its length is the same for any number
# of files. A line is "<sha256> <path>"; a path runs to the end of its line, spaces
# included. A missing file reads as empty, so it is a mismatch too.
_CHECK_LIST = ('{{ while IFS= read -r entry; do file=${{entry#* }}; '
               '[ "$(sha256sum < "$file")" = "${{entry%% *}}  -" ] || '
               '{{ printf "sha256 mismatch on the device for %s\\n" "$file" >&2; '
               'rm -f -- "$file" {list}; exit {code}; }}; done < {list} && rm -f -- {list}; }}')
SHA256_LIST_PREFIX = ".sha256-"


def sha256_list(files: Sequence[tuple[Path, str]]) -> str:
    """The text of the list :func:`verify_command` checks: one "<sha256> <remote path>"
    line per (local, remote) pair. A remote path with a line break cannot be a line of
    it: DeployError."""
    lines = []
    for local, remote in files:
        if "\n" in remote:
            raise DeployError(f"cannot push to {remote!r}: a path on the device may not "
                              "contain a line break")
        lines.append(f"{sha256_file(local)} {remote}\n")
    return "".join(lines)


def write_sha256_list(connection: Connection, files: Sequence[tuple[Path, str]],
                      folder: str) -> str:
    """Push the sha256 list of ``files`` into ``folder`` on the device (a name of its own:
    two pushes into one folder never share one); its remote path. The check removes it."""
    import tempfile

    remote = f"{folder}/{SHA256_LIST_PREFIX}{uuid.uuid4().hex}"
    with tempfile.TemporaryDirectory(prefix="edgeflow-sha256-") as scratch:
        local = Path(scratch) / "sha256.list"
        local.write_text(sha256_list(files), encoding="utf-8")
        connection.put(local, remote)
    return remote


def verify_command(listed: str) -> str:
    """The shell command that checks each file of the sha256 list at ``listed`` (on the
    device): a mismatch removes that file and exits with MISMATCH_EXIT naming it. The
    list is removed either way. Its length does not grow with the number of files."""
    return _CHECK_LIST.format(list=shlex.quote(listed), code=MISMATCH_EXIT)


def check_then_run(connection: Connection, files: Sequence[tuple[Path, str]],
                   then: Sequence[str] = (), timeout: float | None = None) -> Any:
    """In one device command, check the sha256 of each placed (local, remote) pair, then
    run the ``then`` commands (quoted command lines: one shell start for all). Raises
    DeployError naming the first file that did not arrive intact; returns the command's
    result for the caller to read what ``then`` printed. The files are named in a list
    pushed beside the first one (:func:`write_sha256_list`), not on the command line."""
    if not files and not then:
        return None
    checks = ([verify_command(write_sha256_list(connection, files, str(Path(files[0][1]).parent)))]
              if files else [])
    result = connection.run(" && ".join(["umask 077", *checks, *then]), timeout=timeout)
    if result.exited == MISMATCH_EXIT or (not then and not result.ok):
        reason = last_line(result.stderr) or f"exit code {result.exited}"
        raise DeployError(f"push to the device failed: {reason}")
    return result


def push_files(connection: Connection, files: Sequence[tuple[Path, str]],
               then: Sequence[str] = (), timeout: float | None = None) -> Any:
    """Place each (local, remote) pair, then :func:`check_then_run` them."""
    place_files(connection, files)
    return check_then_run(connection, files, then, timeout)


def stale_runs(connection: Connection, runs_dir: str, keep: int, current: str,
               idle_seconds: float) -> list[str]:
    """The run folders beyond the newest ``keep`` that nothing has touched for
    ``idle_seconds`` (by the device's clock): a run in progress, from another flow or
    another orchestrating machine, refreshes its folder before each variant and is never
    removed under it. ``current`` is never stale. Only names edgeflow gives run folders
    count: anything else in the folder stays."""
    entries = connection.listdir(runs_dir)
    now = entries.get(current, max(entries.values(), default=0.0))
    runs = sorted(name for name in entries if RUN_NAME.match(name))
    return [name for name in runs[:-keep]
            if name != current and now - entries[name] > idle_seconds]


def remove_runs_command(runs_dir: str, names: Sequence[str]) -> list[str]:
    """The quoted command removing these run folders (nothing when there are none)."""
    if not names:
        return []
    return [quote_command(["rm", "-rf", "--", *(f"{runs_dir}/{name}" for name in names)])]
