"""Assertions shared by the device tests."""

from __future__ import annotations

import os
import stat
from pathlib import Path


def assert_device_tidy(workdir: Path) -> None:
    """Only edgeflow's run folders, no half-pushed file, nothing readable by others."""
    from tasks.deploy import RUN_NAME

    runs = workdir / "runs"
    assert runs.is_dir(), "the device run folder was never created"
    assert all(RUN_NAME.match(run.name) for run in runs.iterdir())
    for path in [workdir, *workdir.rglob("*")]:
        assert not path.name.endswith(".part"), path
        if path.is_symlink():  # a venv's link to the system interpreter: no mode of its own
            continue
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, f"{path} is readable by others"


def processes_mentioning(text: str) -> list[str]:
    """Command lines of the running processes that contain ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(cmdline)
    return found
