"""tasks.targets.firmware.sources on small archives made here, shaped as the real ones
(one top folder each, TFLM's patches inside the tflite-micro tree): every library lands
where TFLM's download scripts put it, patched as they patch it; the tree is unpacked once
per set of archives, never used half-unpacked, and bad archives are one-line errors."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from tasks.core.errors import ConfigError, StepError
from tasks.targets.firmware import sources
from tasks.targets.firmware.sources import ARCHIVES, COMPLETE, DOWNLOADS, source_tree

# A patch in the format of TFLM's (git diff, a/ b/ prefixes) changing one line of README.
PATCH = """\
diff --git a/README b/README
--- a/README
+++ b/README
@@ -1 +1 @@
-as released
+patched by TFLM
"""


def _tar(path: Path, files: dict[str, str]) -> None:
    with tarfile.open(path, "w:gz") as bundle:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            bundle.addfile(info, io.BytesIO(data))


def fake_archives(folder: Path, patch: str = PATCH) -> Path:
    """One archive per entry of ARCHIVES: a README, and in tflite-micro every patch."""
    folder.mkdir(parents=True, exist_ok=True)
    patches = {f"tflite-micro/{archive.patch}": patch for archive in ARCHIVES if archive.patch}
    for archive in ARCHIVES:
        files = {f"{archive.name}/README": "as released\n"}
        if archive.name == "tflite-micro":
            files.update(patches)
        _tar(folder / f"{archive.name}.tar.gz", files)
    return folder


def test_every_library_lands_where_tflm_looks_and_is_patched_as_tflm_patches_it(
        tmp_path: Path) -> None:
    tree = source_tree(fake_archives(tmp_path / "archives"), tmp_path / "cache")
    downloads = tree.root / DOWNLOADS
    assert tree.root.name == "tflite-micro" and tree.downloads == downloads
    assert sorted(path.name for path in downloads.iterdir()) == [
        "cmsis", "cmsis_nn", "eyalroz_printf", "flatbuffers", "gemmlowp", "kissfft", "pigweed",
        "ruy"]
    assert (downloads / "cmsis" / "Cortex_DFP" / "README").is_file()
    patched = {"flatbuffers", "kissfft", "pigweed"}
    for name in ("cmsis", "cmsis_nn", "eyalroz_printf", "gemmlowp", "ruy", *patched):
        text = (downloads / name / "README").read_text()
        assert text == ("patched by TFLM\n" if name in patched else "as released\n"), name
    assert (tree.root.parent / COMPLETE).read_text().strip() == tree.key


def test_the_tree_is_unpacked_once_and_a_half_unpacked_one_is_never_used(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archives, cache = fake_archives(tmp_path / "archives"), tmp_path / "cache"
    first = source_tree(archives, cache)

    def refuse(*args: object) -> None:
        raise AssertionError("unpacked again")

    with monkeypatch.context() as patched:
        patched.setattr(sources, "_unpack_all", refuse)
        assert source_tree(archives, cache) == first
    # A tree left without its completion mark (a crash mid-unpack, an older edgeflow) is
    # unpacked again, not used.
    (first.root.parent / COMPLETE).unlink()
    (first.root / DOWNLOADS / "ruy" / "README").unlink()
    again = source_tree(archives, cache)
    assert again == first and (again.downloads / "ruy" / "README").is_file()
    assert sorted(path.name for path in cache.iterdir() if not path.name.endswith(".lock")) == [
        first.root.parent.name]


def test_other_archives_make_another_tree(tmp_path: Path) -> None:
    archives, cache = fake_archives(tmp_path / "archives"), tmp_path / "cache"
    first = source_tree(archives, cache)
    _tar(archives / "ruy.tar.gz", {"ruy/README": "as released\n", "ruy/NEW": "x"})
    second = source_tree(archives, cache)
    assert second.key != first.key and second.root != first.root
    assert (second.downloads / "ruy" / "NEW").is_file() and first.root.is_dir()


def test_a_missing_archive_is_one_line_naming_it_and_what_the_folder_must_hold(
        tmp_path: Path) -> None:
    archives = fake_archives(tmp_path / "archives")
    (archives / "cmsis-nn.tar.gz").unlink()
    with pytest.raises(ConfigError) as raised:
        source_tree(archives, tmp_path / "cache")
    message = str(raised.value)
    assert "\n" not in message and "lacks cmsis-nn.tar.gz" in message
    assert "tflite-micro.tar.gz" in message and not (tmp_path / "cache").exists()


def test_a_patch_that_does_not_apply_leaves_no_tree(tmp_path: Path) -> None:
    archives = fake_archives(tmp_path / "archives", PATCH.replace("-as released", "-other text"))
    with pytest.raises(StepError) as raised:
        source_tree(archives, tmp_path / "cache")
    assert "\n" not in str(raised.value) and "flatbuffers.patch does not apply" in str(raised.value)
    assert [path.name for path in (tmp_path / "cache").iterdir()
            if not path.name.endswith(".lock")] == []


def test_an_archive_with_another_top_folder_is_refused(tmp_path: Path) -> None:
    archives = fake_archives(tmp_path / "archives")
    _tar(archives / "gemmlowp.tar.gz", {"gemmlowp-719139c/README": "as released\n"})
    with pytest.raises(StepError,
                       match=r"must unpack into one folder gemmlowp/, not gemmlowp-719139c"):
        source_tree(archives, tmp_path / "cache")


def test_a_member_outside_its_folder_is_refused(tmp_path: Path) -> None:
    archives = fake_archives(tmp_path / "archives")
    _tar(archives / "printf.tar.gz", {"printf/README": "x", "../escaped": "x"})
    with pytest.raises(StepError, match=r"printf.tar.gz cannot be unpacked: .*outside"):
        source_tree(archives, tmp_path / "cache")
    assert not list(tmp_path.rglob("escaped"))
