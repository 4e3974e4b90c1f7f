"""File helpers shared by the steps: content hashes, JSON, and atomic output folders."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tasks.core.errors import StepError


Signature = tuple[int, int, int, int]


def stat_signature(path: Path | str) -> Signature | None:
    """What identifies a file's content without reading it: its inode, size, mtime and
    ctime (nanoseconds); None when there is no file. Writing the content changes the
    ctime, which nobody can set (``touch -d`` and ``cp -p`` set the mtime only), and
    replacing the file changes the inode."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    return (status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns)


# File clocks tick coarsely (a kernel tick, milliseconds): a file written again within
# the tick of its last write keeps its times. A signature is trusted only once the
# file's last change is this far in the past, as git trusts an index entry only when
# the file is older than the index ("racily clean").
SETTLED_NS = 2_000_000_000


def settled(signature: Signature | None) -> bool:
    """Whether ``signature`` identifies its file's content: none of the file's writes
    could share its times (see :data:`SETTLED_NS`). A missing file's (None) always does."""
    return signature is None or time.time_ns() - signature[3] > SETTLED_NS


# sha256 of each file hashed in this process, under the signature it had: a run hashes
# the same code and data files for several steps' cache keys (and again in the flow
# for a deployed run), hundreds of files.
_HASHED: dict[str, tuple[Signature, str]] = {}


def sha256_file(path: Path) -> str:
    """The sha256 of the file's content, hex. Read once per process while the file's
    :func:`stat_signature` stays the same and :func:`settled`."""
    name = os.path.abspath(path)
    before = stat_signature(name)
    known = _HASHED.get(name)
    if known is not None and before is not None and known[0] == before:
        return known[1]
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    hexdigest = digest.hexdigest()
    if before is not None and settled(before) and stat_signature(name) == before:
        _HASHED[name] = (before, hexdigest)  # unchanged while it was read
    return hexdigest


def sha256_tree(path: Path) -> str:
    """Hash of a file, or of a folder's relative file names and contents (sorted)."""
    if path.is_file():
        return sha256_file(path)
    digest = hashlib.sha256()
    for item in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(item.relative_to(path).as_posix().encode())
        digest.update(sha256_file(item).encode())
    return digest.hexdigest()


def write_json(path: Path, document: Any) -> Path:
    """Write JSON atomically (temporary name, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(temporary, path)
    return path


def read_json(path: Path, keys: Sequence[str] = ()) -> Any:
    """The JSON document in ``path``; with ``keys``, it must be an object holding them.
    A file that is missing, unreadable, not JSON or not of that shape is a
    :class:`StepError` naming it: files are the contract between steps, and a broken one
    is fixed by running the step that writes it again, not by reading a traceback."""
    again = "run the step that writes it again"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StepError(f"{path} is missing: {again}") from None
    except UnicodeDecodeError as error:
        raise StepError(f"{path} is damaged (not UTF-8 text at byte {error.start}): "
                        f"{again}") from None
    except OSError as error:
        raise StepError(f"{path}: cannot read: {error.strerror}") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise StepError(f"{path} is damaged (not valid JSON: {error.msg} at line "
                        f"{error.lineno} column {error.colno}): {again}") from None
    if keys and not (isinstance(document, dict) and all(key in document for key in keys)):
        raise StepError(f"{path} is damaged (not a JSON object with {', '.join(keys)}): "
                        f"{again}")
    return document


# tempfile.mkdtemp's random part: 8 of [a-z0-9_].
STAGING_SUFFIX = "[a-z0-9_]{8}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_abandoned_staging(target: Path) -> list[Path]:
    """Remove the staging folders of ``target`` whose process is gone (killed mid-step:
    ``.variants.<pid>.<random>``), and those of older versions that carried no pid.
    A live process's staging folder (another device's benchmark) is never touched.
    Returns what was removed."""
    # Exactly `.<name>.<pid>.<mkdtemp suffix>` or the old `.<name>.<suffix>`: device
    # names may hold dots, and `.pi.lab.<pid>.<suffix>` belongs to device `pi.lab`.
    pattern = re.compile(rf"\.{re.escape(target.name)}\.(?:(\d+)\.)?{STAGING_SUFFIX}")
    removed = []
    for candidate in target.parent.glob(f".{target.name}.*"):
        match = pattern.fullmatch(candidate.name)
        if match and candidate.is_dir() and not (match[1] and _alive(int(match[1]))):
            shutil.rmtree(candidate, ignore_errors=True)
            removed.append(candidate)
    return removed


@contextmanager
def atomic_output_dir(target: Path) -> Iterator[Path]:
    """Yield an empty staging folder that replaces ``target`` only if the block succeeds.

    A step that fails (or is interrupted) leaves the previous outputs exactly as they
    were; one that was killed leaves its staging folder, removed by the next step that
    writes ``target``.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned_staging(target)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.{os.getpid()}.", dir=target.parent))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(staging, target)
    shutil.rmtree(old, ignore_errors=True)
