"""tasks/farm/bundle.py: the device code as one tar unpacks on a board into exactly the
files it holds, owner-only, and is removed; a file outside the folder is refused; an
edited file makes a new archive."""

from __future__ import annotations

import os
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from tasks.core import device_code
from tasks.farm.bundle import BUNDLE_NAME, bundle_bytes, unpack_command, write_bundle


def test_the_harness_bundle_unpacks_into_the_files_it_replaces_owner_only(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    files = device_code.shipped(str(folder), ("harness",))
    local, remote = write_bundle(files, str(folder), tmp_path / "code.tar")
    assert remote == f"{folder}/{BUNDLE_NAME}"
    (folder / BUNDLE_NAME).write_bytes(local.read_bytes())  # as the push places it
    subprocess.run(["sh", "-c", "umask 077 && " + unpack_command(str(folder))], check=True)
    assert not (folder / BUNDLE_NAME).exists()
    unpacked = sorted(path for path in folder.rglob("*") if path.is_file())
    assert unpacked == sorted(Path(remote) for _, remote in files)
    for source, placed in files:
        assert Path(placed).read_bytes() == Path(source).read_bytes(), placed
        assert stat.S_IMODE(Path(placed).stat().st_mode) == 0o600, placed
    for path in folder.rglob("*"):
        if path.is_dir():
            assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
    with tarfile.open(local) as archive:  # names relative to the folder, no owner
        assert all(not member.name.startswith("/") and member.uid == 0 and member.mtime == 0
                   for member in archive.getmembers())


def test_a_file_outside_the_folder_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "a.py"
    source.write_text("x = 1\n")
    with pytest.raises(ValueError, match=r"^/elsewhere/a.py is not inside /run$"):
        bundle_bytes([(source, "/elsewhere/a.py")], "/run")
    with pytest.raises(ValueError, match="is not inside"):
        bundle_bytes([(source, "/run/../a.py")], "/run")


def test_an_edited_file_makes_a_new_archive(tmp_path: Path) -> None:
    source = tmp_path / "a.py"
    source.write_text("x = 1\n")
    first = bundle_bytes([(source, "/run/a.py")], "/run")
    assert bundle_bytes([(source, "/run/a.py")], "/run") == first
    source.write_text("x = 22\n")
    os.utime(source, ns=(1, 1))
    with tarfile.open(fileobj=__import__("io").BytesIO(bundle_bytes([(source, "/run/a.py")],
                                                                     "/run"))) as archive:
        assert archive.extractfile("a.py").read() == b"x = 22\n"  # type: ignore[union-attr]
