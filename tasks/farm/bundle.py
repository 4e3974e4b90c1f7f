"""Many small files pushed to a board as one tar: the device code (the harness's package,
two dozen files) costs one SFTP upload and one sha256 check instead of one of each per
file, which at 100 boards was a third of the orchestrator's CPU per board.

:func:`bundle_bytes` builds the archive (names relative to the folder they unpack into,
files mode 600, folders 700, owner 0, times 0: the same bytes for the same files) once per
process and set of file contents; :func:`write_bundle` writes it where the push picks it
up. The archive is placed and sha256-checked like any pushed file
(:func:`tasks.farm.push.check_then_run`), then :func:`unpack_command` unpacks it in the
same shell command, before anything runs from it, and removes it. Needs ``tar`` on the
board (GNU or BusyBox: ``-x -f -C`` only).
"""

from __future__ import annotations

import io
import posixpath
import tarfile
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

from tasks.farm.transports import quote_command

BUNDLE_NAME = ".device-code.tar"


def _relative(folder: str, remote: str) -> str:
    inside = posixpath.relpath(remote, folder)
    if inside.startswith("../") or inside in {".", ".."} or posixpath.isabs(inside):
        raise ValueError(f"{remote} is not inside {folder}")
    return inside


@lru_cache(maxsize=8)
def _archive(entries: tuple[tuple[str, str, int, int], ...]) -> bytes:
    """The archive of (local path, name inside, size, mtime_ns) entries: keyed on size
    and modification time, so an edited file makes a new one."""
    buffer = io.BytesIO()
    folders = sorted({posixpath.dirname(inside) for _, inside, _, _ in entries} - {""})
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        for folder in folders:  # parents before children: sorted names
            info = tarfile.TarInfo(folder)
            info.type, info.mode = tarfile.DIRTYPE, 0o700
            archive.addfile(info)
        for local, inside, _, _ in entries:
            data = Path(local).read_bytes()
            info = tarfile.TarInfo(inside)
            info.size, info.mode = len(data), 0o600
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def bundle_bytes(files: Sequence[tuple[Path, str]], folder: str) -> bytes:
    """The tar of the (local, remote) pairs, each remote path inside ``folder`` (named
    relative to it)."""
    entries = []
    for local, remote in files:
        stat = Path(local).stat()
        entries.append((str(local), _relative(folder, remote), stat.st_size, stat.st_mtime_ns))
    return _archive(tuple(entries))


def write_bundle(files: Sequence[tuple[Path, str]], folder: str, out: Path) -> tuple[Path, str]:
    """Write the archive of ``files`` to ``out``; the pair to push (``out``, the archive's
    path in ``folder`` on the board)."""
    out.write_bytes(bundle_bytes(files, folder))
    return out, f"{folder}/{BUNDLE_NAME}"


def unpack_command(folder: str) -> str:
    """The quoted command that unpacks the pushed archive in ``folder`` and removes it."""
    archive = f"{folder}/{BUNDLE_NAME}"
    return (quote_command(["tar", "-x", "-f", archive, "-C", folder]) + " && "
            + quote_command(["rm", "-f", "--", archive]))
