"""What goes into a step's cache key (and dvc.yaml deps) beyond its files and params:
the versions of the libraries its code imports, and the user's image folder."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import yaml

from flows import code_deps
from flows.caching import input_key, record_run, visible_tree_hash
from flows.code_deps import NOT_INSTALLED, library_versions
from flows.code_manifests import LOCK_FILE, write_code_manifests
from flows.dvc_yaml import dvc_path
from flows.steps import STEPS, Context, code_dependencies
from tests.image_folders import build_photo_folder
from tests.tiny import TINY_PARAMS, write_tiny_config

REPO = Path(__file__).resolve().parents[2]
FOLDER_PARAMS = TINY_PARAMS.replace(
    "data: {image_size: [16, 16], calibration_size: 32}",
    "data: {source: folder, folder: images/, image_size: [16, 16], calibration_size: 8}")


@pytest.fixture
def ctx(tmp_path: Path) -> Context:
    write_tiny_config(tmp_path)
    return Context.load(tmp_path / "params.yaml", tmp_path / "farm.yaml")


def test_library_versions_are_the_installed_distributions_of_the_imported_modules() -> None:
    versions = library_versions(code_dependencies(STEPS["train"]).libraries)
    assert versions["keras"] == metadata.version("keras")
    prepare = library_versions(code_dependencies(STEPS["prepare"]).libraries)
    assert prepare["scikit-learn"] == metadata.version("scikit-learn")  # sklearn's digits
    assert prepare["pillow"] == metadata.version("pillow")  # PIL
    assert "mlflow" not in versions and "fabric" not in versions
    assert library_versions(("no_such_module_anywhere",)) == {
        "no_such_module_anywhere": NOT_INSTALLED}


@pytest.mark.parametrize("module, distribution, importers", [
    # tasks.config imports the architectures: every step but track reaches Keras.
    ("keras", "keras", ["prepare", "train", "optimize", "convert", "benchmark", "select",
                        "release"]),
    ("mlflow", "mlflow", ["track", "release"]),  # release: the model registry
    ("fabric", "fabric", ["benchmark", "release"]),
])
def test_a_new_version_of_a_library_changes_the_keys_of_exactly_the_steps_that_import_it(
        ctx: Context, monkeypatch: pytest.MonkeyPatch, module: str, distribution: str,
        importers: list[str]) -> None:
    before = {name: input_key(ctx, name) for name in STEPS}
    installed = code_deps.distribution_version
    monkeypatch.setattr(code_deps, "distribution_version",
                        lambda name: "99.0" if name == distribution else installed(name))
    changed = [name for name in STEPS if input_key(ctx, name) != before[name]]
    assert changed == importers
    assert importers == [name for name in STEPS
                         if module in code_dependencies(STEPS[name]).libraries]


def _photo_experiment(root: Path) -> Context:
    """An experiment whose data is a real folder of 2 classes x 12 photos, ``images/``."""
    build_photo_folder(root / "images", {"china": 12, "flower": 12})
    write_tiny_config(root, FOLDER_PARAMS)
    return Context.load(root / "params.yaml", root / "farm.yaml")


def _edit_image(path: Path) -> None:
    from PIL import Image

    with Image.open(path) as image:
        mirrored = image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    mirrored.save(path, quality=90)


def test_adding_removing_or_editing_an_image_reruns_prepare_and_what_follows(
        tmp_path: Path) -> None:
    ctx = _photo_experiment(tmp_path)
    images = tmp_path / "images"
    STEPS["prepare"].run(ctx)
    record_run(ctx, "prepare")
    prepare, train = input_key(ctx, "prepare"), input_key(ctx, "train")

    # Hidden names are not images prepare reads: nothing to re-run.
    (images / "china" / ".DS_Store").write_bytes(b"finder")
    (images / ".thumbnails").mkdir()
    (images / ".thumbnails" / "0000.jpg").write_bytes(b"thumb")
    assert input_key(ctx, "prepare") == prepare

    added = images / "china" / "extra.jpg"
    shutil.copy(images / "flower" / "0012.jpg", added)
    with_added = input_key(ctx, "prepare")
    added.unlink()
    assert with_added != prepare and input_key(ctx, "prepare") == prepare

    _edit_image(images / "flower" / "0020.jpg")
    assert input_key(ctx, "prepare") != prepare
    assert input_key(ctx, "train") == train, "until prepare has run again"
    STEPS["prepare"].run(ctx)  # the run the new key causes; then train's input differs
    assert input_key(ctx, "train") != train


def test_dvc_yaml_lists_the_image_folder_under_prepare_and_dvc_status_sees_an_edit(
        tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from flows.cli import app

    ctx = _photo_experiment(tmp_path)
    shutil.copytree(REPO / "tasks", tmp_path / "tasks", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / LOCK_FILE, tmp_path / LOCK_FILE)
    generated = CliRunner().invoke(app, ["dvc-yaml", "--params", str(tmp_path / "params.yaml")])
    assert generated.exit_code == 0, generated.output
    (tmp_path / "dvc.yaml").write_text(generated.stdout, encoding="utf-8")
    stages = yaml.safe_load(generated.stdout)["stages"]
    assert stages["prepare"]["deps"] == ["code-manifests/prepare.json", "images"]
    assert "images" not in stages["train"]["deps"]

    def dvc(*args: str) -> str:
        result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=tmp_path,
                                capture_output=True, text=True, timeout=120, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    dvc("init", "--no-scm", "--quiet")
    write_code_manifests(ctx.layout)
    STEPS["prepare"].run(ctx)
    dvc("commit", "--force", "--quiet", "prepare")
    assert json.loads(dvc("status", "--json", "prepare")) == {}
    _edit_image(tmp_path / "images" / "china" / "0003.jpg")
    assert json.loads(dvc("status", "--json", "prepare")) == {
        "prepare": [{"changed deps": {"images": "modified"}}]}


def test_the_repo_digits_experiment_has_no_folder_dep() -> None:
    from flows.dvc_yaml import render_dvc_yaml
    from tasks.config import load_params
    from tasks.core.layout import Layout

    stages = yaml.safe_load(render_dvc_yaml(Layout(REPO), load_params(REPO / "params.yaml")))
    assert stages["stages"]["prepare"]["deps"] == ["code-manifests/prepare.json"]


@pytest.mark.parametrize("path, written", [
    ("/exp/images", "images"), ("images", "images"), ("/exp/data/photos", "data/photos"),
    ("/elsewhere/images", "/elsewhere/images"),  # DVC hashes it by its absolute path
])
def test_a_folder_is_named_relative_to_the_project_when_inside_it(path: str,
                                                                   written: str) -> None:
    assert dvc_path(Path(path), Path("/exp")) == written


def test_the_folder_hash_goes_through_linked_class_folders_and_never_opens_a_fifo(
        tmp_path: Path) -> None:
    import os

    outside = tmp_path / "outside"
    _write_bytes(outside / "0.jpg", b"one")
    _write_bytes(tmp_path / "images" / "a" / "0.jpg", b"zero")
    (tmp_path / "images" / "b").symlink_to(outside, target_is_directory=True)
    before = visible_tree_hash(tmp_path / "images")
    (outside / "0.jpg").write_bytes(b"two")
    linked_edit = visible_tree_hash(tmp_path / "images")
    os.mkfifo(tmp_path / "images" / "a" / "pipe.jpg")  # opening it would block for ever
    with_fifo = visible_tree_hash(tmp_path / "images")
    assert len({before, linked_edit, with_fifo}) == 3
    assert visible_tree_hash(tmp_path / "nowhere") == "missing"


def _write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_every_distribution_that_provides_a_module_is_versioned_sorted_by_name(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A namespace module several distributions provide brings each of them; a version
    the scan does not know is asked of the installed metadata."""
    scan = code_deps.Installed(by_module={"ns": ["zeta-dist", "alpha-dist"], "pkg": ["pyyaml"],
                                          "empty": []},
                               versions={"zeta-dist": "2.0", "alpha-dist": "1.0"})
    monkeypatch.setattr(code_deps, "installed", lambda: scan)
    versions = library_versions(("pkg", "ns", "empty", "gone"))
    assert versions == {"alpha-dist": "1.0", "empty": NOT_INSTALLED, "gone": NOT_INSTALLED,
                        "pyyaml": metadata.version("pyyaml"), "zeta-dist": "2.0"}
    assert list(versions) == sorted(versions)
