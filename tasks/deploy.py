"""Deploy files to a device: per-run folders, verified pushes, owner-only modes, cleanup.

Layout on a device (every folder mode 700, every file 600, all under its ``workdir``)::

    <workdir>/.benchmark.lock            flock: one benchmark at a time on the device
    <workdir>/runs/<run>/harness.py      the harness, test inputs, artifacts, specs, results
    <workdir>/venv/                      the virtualenv of `edgeflow farm setup`, if managed

A push copies a file under a temporary name, checks its sha256 on the device, and only
then renames it into place: a reader never sees half a file, and a corrupted copy is
never used. Run folders are named by their UTC start time, so the newest ``keep_runs``
are kept and older ones removed.
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

from tasks.devices import Connection, owner_only, quote_command
from tasks.files import sha256_file

RUNS_DIR = "runs"
RUN_NAME = re.compile(r"^\d{8}T\d{12}Z-[0-9a-f]{8}$")
PART_SUFFIX = ".part"
MISMATCH_EXIT = 3


class DeployError(Exception):
    """A file could not be placed on the device, or arrived corrupted."""


@dataclass
class PhaseTimes:
    """Wall seconds spent per orchestration phase (connect, deploy, probe, fetch...)."""

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
    result = connection.run(owner_only(["mkdir", "-p", "-m", "700", "--", *directories]))
    if not result.ok:
        raise DeployError(f"cannot create {directories[0]} on the device: {last_line(result.stderr)}")


def last_line(text: str, limit: int = 300) -> str:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return (lines[-1] if lines else "")[-limit:]


def _verify_then_place(remote: str, expected_sha256: str) -> str:
    part, final = shlex.quote(remote + PART_SUFFIX), shlex.quote(remote)
    mismatch = shlex.quote(f"sha256 mismatch on the device for {remote}: ")
    return (f'actual=$(sha256sum < {part}) && '
            f'if [ "$actual" != {shlex.quote(expected_sha256 + "  -")} ]; then '
            f'printf "%s%s\\n" {mismatch} "$actual" >&2; rm -f -- {part}; exit {MISMATCH_EXIT}; fi'
            f' && chmod 600 -- {part} && mv -f -- {part} {final}')


def push_files(connection: Connection, files: Sequence[tuple[Path, str]]) -> None:
    """Copy each (local, remote) pair under a temporary name, then in one device command
    check every sha256 and rename each into place with mode 600. Raises DeployError
    naming the first file that did not arrive intact."""
    if not files:
        return
    for local, remote in files:
        connection.put(local, remote + PART_SUFFIX)
    script = " && ".join(["umask 077", *(_verify_then_place(remote, sha256_file(local))
                                         for local, remote in files)])
    result = connection.run(script)
    if not result.ok:
        reason = last_line(result.stderr) or f"exit code {result.exited}"
        raise DeployError(f"push to the device failed: {reason}")


def prune_runs(connection: Connection, runs_dir: str, keep: int) -> list[str]:
    """Remove all but the newest ``keep`` run folders; returns the names removed. Only
    names edgeflow gives run folders are touched: anything else in the folder stays."""
    listing = connection.run(quote_command(["ls", "-1A", "--", runs_dir]))
    if not listing.ok:
        return []
    runs = sorted(name for name in listing.stdout.splitlines() if RUN_NAME.match(name))
    stale = runs[:-keep] if keep else runs
    if stale:
        connection.run(quote_command(["rm", "-rf", "--", *(f"{runs_dir}/{name}" for name in stale)]))
    return stale
