"""The TensorFlow Lite Micro tree a firmware is built from, unpacked from source
archives into the cache, once per set of archives.

Input: a folder of ``git archive`` snapshots at the commits TFLM pins (:data:`ARCHIVES`;
each unpacks into a folder of its own name). Output: ``<cache>/tflm-<key>/`` holding the
``tflite-micro`` tree with every library placed where TFLM's download scripts put it
(``tensorflow/lite/micro/tools/make/downloads/<folder>``), so that its Makefile, which
skips a download whose folder exists, builds offline. Those scripts patch some libraries
after downloading them; a folder found in place is not patched, so the same patches are
applied here (:data:`ARCHIVES`' ``patch``).

``key``: the sha256 of the archives' own sha256s, by name: other archives give another
tree. The tree is unpacked into a staging folder and renamed into place when complete,
under a lock, so a half-unpacked tree is never used and two builds unpack it once.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tasks.core.errors import ConfigError, StepError
from tasks.core.files import sha256_file
from tasks.core.locks import file_lock

ROOT_ARCHIVE = "tflite-micro"
DOWNLOADS = Path("tensorflow/lite/micro/tools/make/downloads")
# Marks a finished tree (written last, inside the staging folder).
COMPLETE = ".edgeflow-complete"


@dataclass(frozen=True)
class Archive:
    """One source archive: where its folder goes in the TFLM tree and the TFLM patch
    (a path in the TFLM tree) applied to it, as the download script of that library does."""

    name: str
    destination: Path
    patch: Path | None = None


ARCHIVES: tuple[Archive, ...] = (
    Archive(ROOT_ARCHIVE, Path(".")),
    Archive("cmsis-6", DOWNLOADS / "cmsis"),
    # cmsis_download.sh puts the Cortex_DFP inside the CMSIS folder.
    Archive("cortex-dfp", DOWNLOADS / "cmsis" / "Cortex_DFP"),
    Archive("cmsis-nn", DOWNLOADS / "cmsis_nn"),
    Archive("flatbuffers", DOWNLOADS / "flatbuffers",
            Path("tensorflow/lite/micro/tools/make/flatbuffers.patch")),
    Archive("gemmlowp", DOWNLOADS / "gemmlowp"),
    Archive("ruy", DOWNLOADS / "ruy"),
    Archive("kissfft", DOWNLOADS / "kissfft", Path("third_party/kissfft/kissfft.patch")),
    Archive("printf", DOWNLOADS / "eyalroz_printf"),
    Archive("pigweed", DOWNLOADS / "pigweed",
            Path("tensorflow/lite/micro/tools/make/pigweed.patch")),
)


@dataclass(frozen=True)
class SourceTree:
    """An unpacked, patched TFLM tree: ``root`` is the ``tflite-micro`` folder."""

    root: Path
    key: str

    @property
    def downloads(self) -> Path:
        return self.root / DOWNLOADS


def archive_path(sources: Path, archive: Archive) -> Path:
    return sources / f"{archive.name}.tar.gz"


def sources_key(sources: Path) -> str:
    """The sha256 of every archive's sha256 (by name, in :data:`ARCHIVES` order); a
    :class:`ConfigError` naming the archives missing from ``sources``."""
    missing = [archive_path(sources, archive).name for archive in ARCHIVES
               if not archive_path(sources, archive).is_file()]
    if missing:
        raise ConfigError(f"firmware sources: {sources} lacks {', '.join(missing)} (it must "
                          f"hold {', '.join(f'{a.name}.tar.gz' for a in ARCHIVES)})")
    digest = hashlib.sha256()
    for archive in ARCHIVES:
        digest.update(f"{archive.name} {sha256_file(archive_path(sources, archive))}\n".encode())
    return digest.hexdigest()


def source_tree(sources: Path, cache: Path) -> SourceTree:
    """The tree of ``sources``' archives in ``cache``: unpacked and patched the first time
    (about 30 s), found the next (:mod:`module docs <tasks.targets.firmware.sources>`)."""
    key = sources_key(sources)
    final = cache / f"tflm-{key[:16]}"
    tree = SourceTree(final / ROOT_ARCHIVE, key)
    if (final / COMPLETE).is_file():
        return tree
    cache.mkdir(parents=True, exist_ok=True)
    with file_lock(cache / f".tflm-{key[:16]}.lock", wait_seconds=None):
        if (final / COMPLETE).is_file():  # another process unpacked it meanwhile
            return tree
        shutil.rmtree(final, ignore_errors=True)  # an older, unfinished attempt
        staging = Path(tempfile.mkdtemp(prefix=f".tflm-{key[:16]}.", dir=cache))
        try:
            _unpack_all(sources, staging)
            (staging / COMPLETE).write_text(key + "\n", encoding="utf-8")
            staging.rename(final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return tree


def _unpack_all(sources: Path, staging: Path) -> None:
    root = staging / ROOT_ARCHIVE
    for archive in ARCHIVES:
        target = root / archive.destination
        _unpack(archive_path(sources, archive), archive.name, staging, target)
        if archive.patch is not None:
            _apply_patch(root / archive.patch, target)


def _unpack(path: Path, name: str, staging: Path, target: Path) -> None:
    """Unpack ``path`` (whose one top folder is ``name``) and move that folder to
    ``target``; the ``data`` filter refuses members that would land outside."""
    scratch = Path(tempfile.mkdtemp(prefix=".unpack.", dir=staging))
    try:
        with tarfile.open(path, "r:gz") as bundle:
            bundle.extractall(scratch, filter="data")
        found = [entry.name for entry in scratch.iterdir()]
        if found != [name]:
            raise StepError(f"firmware sources: {path} must unpack into one folder {name}/, "
                            f"not {', '.join(sorted(found)) or 'nothing'}")
        target.parent.mkdir(parents=True, exist_ok=True)
        (scratch / name).rename(target)
    except tarfile.TarError as error:
        # Unreadable, or a member that would land outside its folder (the data filter).
        raise StepError(f"firmware sources: {path} cannot be unpacked: {error}") from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _apply_patch(patch: Path, folder: Path) -> None:
    """Apply a TFLM patch (``git diff`` format, paths a/ b/) inside ``folder``, with the
    whitespace tolerance TFLM's own ``git apply --ignore-whitespace`` has."""
    if shutil.which("patch") is None:
        raise StepError("firmware sources: patch not found: install Debian's patch")
    applied = subprocess.run(["patch", "-p1", "--batch", "--forward", "--silent",
                              "--ignore-whitespace", "-i", str(patch)],
                             cwd=folder, capture_output=True, text=True)
    if applied.returncode != 0:
        detail = " ".join((applied.stdout + applied.stderr).split())[:300]
        raise StepError(f"firmware sources: {patch.name} does not apply to {folder.name}: "
                        f"{detail}")
