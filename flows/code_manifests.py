"""Each step's code manifest: the sha256 of every project file its work can run and the
installed version of every library that code imports (:mod:`flows.code_deps` derives
both from the step's entry module). The Prefect cache key (:mod:`flows.caching`) and
``dvc.yaml``'s stages (:mod:`flows.dvc_yaml`) depend on a step's code through it, so a
step runs again only when its own code did."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from flows.code_deps import PACKAGE_ROOT, library_versions
from flows.steps import STEPS, Step, code_dependencies
from tasks.core.files import sha256_file, write_json
from tasks.core.layout import Layout

# The pinned versions `make install` installs: a dep of dvc.yaml's code stage, which
# then records the versions installed in each step's code manifest.
LOCK_FILE = "requirements.lock"


# (step name, code root) -> (the stat signature its files' part was made under, the
# paths that signature stats, (each file's sha256, the libraries the files import)).
_MADE: dict[tuple[str, str], tuple[tuple[Any, ...], tuple[str, ...],
                                   tuple[dict[str, str], tuple[str, ...]]]] = {}


def _watched(files: tuple[Path, ...]) -> tuple[str, ...]:
    """Each file and each folder holding one (a module added beside them changes its
    folder), as absolute path strings: what changes when the closure could."""
    return tuple(str(PACKAGE_ROOT / path) for path in sorted(set(files) | {path.parent
                                                                           for path in files}))


def _signature(watched: tuple[str, ...]) -> tuple[Any, ...]:
    """Inode, size, mtime and ctime of each watched path."""
    signature = []
    for path in watched:
        info = os.stat(path)
        signature.append((info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns))
    return tuple(signature)


def code_manifest(step: Step) -> dict[str, Any]:
    """What ``step``'s code is: the sha256 of every project file its work can run (by
    repo-relative path) and the installed version of every distribution that code
    imports. Its cache key and its DVC stage both depend on this, and on nothing else
    of the code. The files' part (their hashes, the libraries they import) is made again
    only when a file of the closure or a folder holding one changed since it was last
    made in this process: every device's cache key asks for it, twice (a hundred
    boards: two hundred times); the versions are looked up each time."""
    made = _MADE.get((step.name, str(PACKAGE_ROOT)))
    if made is None or not _unchanged(made[0], made[1]):
        closure = code_dependencies(step)
        watched = _watched(tuple(closure.files))
        signature = _signature(watched)  # before hashing: an edit meanwhile changes it
        hashes = {path.as_posix(): sha256_file(PACKAGE_ROOT / path) for path in closure.files}
        made = (signature, watched, (hashes, closure.libraries))
        _MADE[(step.name, str(PACKAGE_ROOT))] = made
    hashes, libraries = made[2]
    return {"step": step.name, "files": dict(hashes), "libraries": library_versions(libraries)}


def _unchanged(signature: tuple[Any, ...], watched: tuple[str, ...]) -> bool:
    try:
        return _signature(watched) == signature
    except OSError:  # a file gone: made again
        return False


def manifest_path(layout: Layout, step_name: str) -> Path:
    """Where the experiment at ``layout`` keeps ``step_name``'s code manifest."""
    return layout.code_manifests / f"{step_name}.json"


def write_code_manifests(layout: Layout) -> list[str]:
    """Write every step's :func:`code_manifest` into the experiment (what ``dvc.yaml``'s
    code stage runs: ``edgeflow code-manifests``); a manifest whose content is already
    there is left alone, so DVC re-runs only the steps whose code changed. Returns the
    steps whose manifest was (re)written."""
    written = []
    for name, step in STEPS.items():
        path = manifest_path(layout, name)
        manifest = code_manifest(step)
        try:
            current = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            current = None
        if current != manifest:
            write_json(path, manifest)
            written.append(name)
    return written
