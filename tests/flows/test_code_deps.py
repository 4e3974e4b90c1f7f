"""A step's code dependencies are derived from its imports: exact closures of a small
fake package, the project's own steps, and a real re-run when a reached module changes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows import code_deps
from flows.code_deps import imported_names, module_closure
from flows.steps import STEPS, code_dependencies
from tasks.core import files
from tests.tiny import TINY_PARAMS, write_tiny_config

REPO = Path(__file__).resolve().parents[2]


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")


FAKE_PACKAGE = {
    "app/__init__.py": "",
    "app/main.py": ("import os\n"
                    "from app import helpers\n\n\n"
                    "def run():\n"
                    "    import numpy\n"
                    "    from app.sub import lazy\n"
                    "    return lazy, numpy, os\n"),
    # `value` is a name, not a module: app/sub/deep.py is the dependency.
    "app/helpers.py": "from app.sub.deep import value\n",
    "app/sub/__init__.py": "",
    "app/sub/deep.py": "value = 1\n",
    "app/sub/lazy.py": ("from . import near\n"
                        "from ..loader import load\n"
                        "from .. import sibling\n"),
    "app/sub/near.py": "",
    "app/sibling.py": "",
    "app/loader.py": "def load(path):\n    import yaml\n    return yaml, path\n",
    "app/plugins/board.py": "import json\nimport scipy.ndimage\n",
    "app/unreached.py": "import requests\nfrom app import sibling\n",
}


def test_the_closure_follows_lazy_relative_and_submodule_imports_and_loaded_folders(
        tmp_path: Path) -> None:
    _write(tmp_path, FAKE_PACKAGE)
    closure = module_closure("app.main", root=tmp_path, packages=("app",),
                             loaded_by_path={Path("app/loader.py"): Path("app/plugins")})
    assert [path.as_posix() for path in closure.files] == [
        "app/__init__.py", "app/helpers.py", "app/loader.py", "app/main.py",
        "app/plugins/board.py", "app/sibling.py", "app/sub/__init__.py", "app/sub/deep.py",
        "app/sub/lazy.py", "app/sub/near.py"]
    # Neither the standard library (os, json) nor the project's own package is a library.
    assert closure.libraries == ("numpy", "scipy", "yaml")


def test_an_importer_that_uses_one_module_of_a_loader_brings_that_module_alone(
        tmp_path: Path) -> None:
    """A narrowed importer of the loader (prepare's pre-processing, of device_code) brings
    the loader and the one module it uses, not the loader's folder; reached plainly from
    anywhere else too, the loader brings its whole folder again."""
    _write(tmp_path, {**FAKE_PACKAGE,
                      "app/main.py": "from app import narrow\n",
                      "app/narrow.py": "from app import loader\n",
                      "app/plugins/camera.py": "import requests\n"})
    folder = {Path("app/loader.py"): Path("app/plugins")}
    only = {Path("app/narrow.py"): ("app.loader", "app.plugins.board")}
    closure = module_closure("app.main", root=tmp_path, packages=("app",),
                             loaded_by_path=folder, narrowed=only)
    assert [path.as_posix() for path in closure.files] == [
        "app/__init__.py", "app/loader.py", "app/main.py", "app/narrow.py",
        "app/plugins/board.py"]
    assert closure.libraries == ("scipy", "yaml")
    _write(tmp_path, {"app/main.py": "from app import narrow, loader\n"})
    closure = module_closure("app.main", root=tmp_path, packages=("app",),
                             loaded_by_path=folder, narrowed=only)
    assert "app/plugins/camera.py" in {path.as_posix() for path in closure.files}
    assert closure.libraries == ("requests", "scipy", "yaml")


# The accessor of device_code that gives each module a narrowed importer may use.
ACCESSORS = {"tasks.device.preprocess": "preprocess", "tasks.device.kinds": "task_kinds"}


def test_each_narrowed_importer_uses_nothing_of_device_code_but_its_one_module() -> None:
    """What :data:`flows.code_deps.NARROWED` says holds: prepare's pre-processing uses
    ``device_code.preprocess`` alone, the configuration, train and the accuracy arithmetic
    ``device_code.task_kinds`` alone."""
    import ast

    narrowed = {importer.as_posix(): (loader, used)
                for importer, (loader, used) in code_deps.NARROWED.items()}
    assert narrowed == {
        "tasks/prepare/preprocessing.py": ("tasks.core.device_code", "tasks.device.preprocess"),
        "tasks/config/params.py": ("tasks.core.device_code", "tasks.device.kinds"),
        "tasks/train/__init__.py": ("tasks.core.device_code", "tasks.device.kinds"),
        "tasks/core/accuracy.py": ("tasks.core.device_code", "tasks.device.kinds"),
        "tasks/train/detection.py": ("tasks.core.device_code", "tasks.device.kinds"),
        "tasks/optimize.py": ("tasks.core.device_code", "tasks.device.kinds"),
        "tasks/models/pruning/detection.py": ("tasks.core.device_code", "tasks.device.kinds")}
    for importer, (_, used) in narrowed.items():
        tree = ast.parse((REPO / importer).read_text(encoding="utf-8"))
        names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
        uses = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name) and node.value.id == "device_code"}
        assert uses == {ACCESSORS[used]}, importer
        assert names & {"load", "ship", "shipped", "harness", "package_files"} == set(), importer
    files = _files("prepare")
    assert {"tasks/device/preprocess.py", "tasks/device/kinds/classification.py"} <= files
    assert "tasks/device/harness.py" not in files


def test_a_module_brings_the_files_it_declares_it_reads_and_an_unreached_one_does_not(
        tmp_path: Path) -> None:
    """``CODE_DATA`` names files and folders beside its module: a folder brings every file
    under it (nested ones too; hidden names and ``__pycache__`` aside), a file itself, a
    missing path nothing; the declaration of a module no step reaches brings nothing."""
    _write(tmp_path, {**FAKE_PACKAGE,
                      "app/sub/deep.py": ('value = 1\n'
                                          'CODE_DATA = ("templates", "board.ld", "gone")\n'),
                      "app/sub/templates/harness.cc": "int main() {}\n",
                      "app/sub/templates/include/harness.h": "#pragma once\n",
                      "app/sub/templates/.harness.cc.swp": "",
                      "app/sub/templates/__pycache__/stale.pyc": "",
                      "app/sub/board.ld": "MEMORY {}\n",
                      "app/sub/notes.txt": "not declared\n",
                      "app/unreached.py": 'CODE_DATA: tuple[str, ...] = ("unreached.txt",)\n',
                      "app/unreached.txt": ""})
    closure = module_closure("app.main", root=tmp_path, packages=("app",), loaded_by_path={})
    assert [path.as_posix() for path in closure.files] == [
        "app/__init__.py", "app/helpers.py", "app/loader.py", "app/main.py", "app/sibling.py",
        "app/sub/__init__.py", "app/sub/board.ld", "app/sub/deep.py", "app/sub/lazy.py",
        "app/sub/near.py", "app/sub/templates/harness.cc", "app/sub/templates/include/harness.h"]
    assert closure.libraries == ("numpy", "yaml")
    assert code_deps.declared_data((tmp_path / "app/unreached.py").read_text(), "app.unreached") \
        == ("unreached.txt",)


@pytest.mark.parametrize("declaration", [
    'CODE_DATA = "templates"\n', 'CODE_DATA = (FOLDER,)\n', 'CODE_DATA = ("/etc",)\n',
    'CODE_DATA = ("../outside",)\n', 'CODE_DATA = ("",)\n', 'CODE_DATA: tuple\n'])
def test_a_declaration_the_walk_cannot_read_without_running_the_module_is_an_error(
        declaration: str) -> None:
    with pytest.raises(ValueError, match="app.board: CODE_DATA must be a tuple of string literals"):
        code_deps.declared_data(declaration, "app.board")


NESTED_IMPORTS = """\
if FLAG:
    import in_if
else:
    import in_else
try:
    import in_try
except ImportError:
    import in_handler
else:
    import in_try_else
finally:
    import in_finally
with open(PATH) as handle:
    import in_with
for item in ITEMS:
    import in_for
else:
    import in_for_else
while WAITING:
    import in_while
match VALUE:
    case 1:
        import in_case
class Holder:
    import in_class
    def method(self):
        import in_method
async def fetch():
    async with LOCK:
        import in_async_with
"""


def test_an_import_counts_in_every_kind_of_block_it_can_stand_in() -> None:
    names = set(imported_names(NESTED_IMPORTS, "app.main", is_package=False))
    assert names == {"in_if", "in_else", "in_try", "in_handler", "in_try_else", "in_finally",
                     "in_with", "in_for", "in_for_else", "in_while", "in_case", "in_class",
                     "in_method", "in_async_with"}


def test_relative_imports_climb_one_package_per_extra_dot() -> None:
    source = "from . import near\nfrom .. import up\nfrom ...top import deep\n"
    assert set(imported_names(source, "a.b.c.mod", is_package=False)) == {
        "a.b.c", "a.b.c.near", "a.b", "a.b.up", "a.top", "a.top.deep"}
    # In a package's __init__, "." is the package itself.
    assert set(imported_names("from .. import up\n", "a.b.c", is_package=True)) == {
        "a.b", "a.b.up"}


def test_a_module_reached_only_by_a_lazy_import_drops_out_with_it(tmp_path: Path) -> None:
    _write(tmp_path, {**FAKE_PACKAGE, "app/main.py": "from app import helpers\n"})
    closure = module_closure("app.main", root=tmp_path, packages=("app",), loaded_by_path={})
    assert [path.as_posix() for path in closure.files] == [
        "app/__init__.py", "app/helpers.py", "app/main.py", "app/sub/__init__.py",
        "app/sub/deep.py"]
    assert closure.libraries == ()


def test_a_relative_import_in_a_package_init_is_relative_to_that_package(tmp_path: Path) -> None:
    """In ``app/sub/__init__.py``, ``from . import near`` is app.sub.near and ``from ..
    import sibling`` app.sibling (a module's own package is its parent; a package's is
    itself)."""
    _write(tmp_path, {**FAKE_PACKAGE, "app/sub/__init__.py": "from . import near\n"
                                                             "from .. import sibling\n",
                      "app/main.py": "import app.sub\n"})
    closure = module_closure("app.main", root=tmp_path, packages=("app",), loaded_by_path={})
    assert [path.as_posix() for path in closure.files] == [
        "app/__init__.py", "app/main.py", "app/sibling.py", "app/sub/__init__.py",
        "app/sub/near.py"]


def test_a_closure_is_walked_once_and_again_when_what_it_read_or_looked_for_changes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Within a process the walk is kept while every file it read keeps its signature;
    an edited module, a module that appears where an import found none, and a new file
    in a folder loaded by path each change the closure."""
    monkeypatch.setattr(files, "SETTLED_NS", -(1 << 62))  # every signature settled
    _write(tmp_path, FAKE_PACKAGE)
    walks: list[str] = []
    real_walk = code_deps._walk
    monkeypatch.setattr(code_deps, "_walk", lambda *args: walks.append(args[0]) or real_walk(*args))

    def closure() -> list[str]:
        return [path.as_posix() for path in module_closure(
            "app.main", root=tmp_path, packages=("app",),
            loaded_by_path={Path("app/loader.py"): Path("app/plugins")}).files]

    first = closure()
    assert closure() == first and len(walks) == 1
    time.sleep(0.05)  # past a coarse clock's tick: each write below moves a ctime
    _write(tmp_path, {"app/sibling.py": "from app import extra\n"})  # not there yet
    assert closure() == first and len(walks) == 2
    _write(tmp_path, {"app/extra.py": ""})
    assert closure() == sorted([*first, "app/extra.py"]) and len(walks) == 3
    _write(tmp_path, {"app/plugins/camera.py": ""})
    assert "app/plugins/camera.py" in closure() and len(walks) == 4
    assert closure() and len(walks) == 4
    # A declared folder: a file added under it is in the next closure; an edit to a
    # declared file changes its hash in the manifest, not the closure (no walk).
    _write(tmp_path, {"app/sibling.py": 'CODE_DATA = ("data",)\n', "app/data/a.txt": ""})
    assert "app/data/a.txt" in closure() and len(walks) == 5
    _write(tmp_path, {"app/data/a.txt": "edited", "app/data/deeper/b.txt": ""})
    assert "app/data/deeper/b.txt" in closure() and len(walks) == 6
    _write(tmp_path, {"app/data/a.txt": "edited again"})
    assert closure() and len(walks) == 6


def _files(step: str) -> set[str]:
    return {path.as_posix() for path in code_dependencies(STEPS[step]).files}


def test_train_reaches_its_models_and_core_code_and_no_farm_code() -> None:
    files = _files("train")
    assert {"tasks/train/__init__.py", "tasks/models/batch_norm.py", "tasks/core/files.py",
            "tasks/models/augment.py", "tasks/__init__.py", "tasks/models/__init__.py"} <= files
    # Of the device code, only the kinds of task (train scores the reference with the
    # experiment's kind) and what device_code itself imports (the package, the spec):
    # editing the harness or the predictor does not re-run training.
    assert not [path for path in files if path.startswith("tasks/farm/")]
    assert {path for path in files if path.startswith("tasks/device/")} == {
        "tasks/device/__init__.py", "tasks/device/spec.py", "tasks/device/kinds/__init__.py",
        "tasks/device/kinds/classification.py", "tasks/device/kinds/detection.py"}
    assert "keras" in code_dependencies(STEPS["train"]).libraries


def test_benchmark_reaches_the_farm_and_the_device_code_loaded_by_path() -> None:
    files = _files("benchmark")
    assert {"tasks/farm/push.py", "tasks/farm/transports.py", "tasks/core/device_code.py",
            "tasks/device/harness.py", "tasks/device/__init__.py"} <= files
    assert {"fabric", "onnxruntime", "openvino"} <= set(code_dependencies(STEPS["benchmark"]).libraries)


def test_benchmark_and_release_reach_no_farm_command_code() -> None:
    """The kinds of target bring a step what it runs on a device, not what the farm
    commands do (``edgeflow farm setup``/``probe``) nor another step's device work: an
    edit to the virtualenv setup re-runs neither step, one to the release manager's
    client does not re-run the benchmark."""
    benchmark, release = _files("benchmark"), _files("release")
    assert "tasks/farm/setup.py" not in benchmark
    assert "tasks/farm/releases.py" not in benchmark
    assert "tasks/farm/setup.py" not in release
    assert "tasks/targets/farm_commands.py" not in benchmark | release
    # What each step really runs through its targets it still reaches.
    assert {"tasks/farm/session.py", "tasks/farm/probe.py", "tasks/targets/board.py",
            "tasks/targets/mcu.py"} <= benchmark
    assert {"tasks/farm/releases.py", "tasks/targets/board.py"} <= release


# What the firmware is compiled from (tasks.targets.firmware.build): every core's linker
# script is checked below.
FIRMWARE_TEMPLATES = {"tasks/targets/firmware/templates/harness.cc",
                      "tasks/targets/firmware/templates/semihosting.c",
                      "tasks/targets/firmware/templates/semihosting.h",
                      "tasks/targets/firmware/templates/startup.c"}


def test_the_firmwares_templates_are_code_of_exactly_the_steps_that_reach_its_build() -> None:
    """The harness, vector table, semihosting and linker scripts the benchmark compiles
    into an emulated microcontroller's firmware are in the closure of every step whose
    closure holds the build module (the benchmark among them) and of no other: an edited
    harness re-runs the benchmark, never training."""
    from tasks.targets.firmware import build
    from tasks.targets.firmware.library import CORES

    templates = build._templates()
    assert templates == REPO / "tasks/targets/firmware" / build.CODE_DATA[0]
    expected = FIRMWARE_TEMPLATES | {f"tasks/targets/firmware/templates/{core.linker_script}"
                                     for core in CORES.values()}
    assert {path.relative_to(REPO).as_posix() for path in templates.iterdir()} == expected
    reaching = [name for name in STEPS if "tasks/targets/firmware/build.py" in _files(name)]
    assert "benchmark" in reaching and "train" not in reaching
    for name in STEPS:
        assert (_files(name) & expected == expected) == (name in reaching), name
        assert not _files(name) & expected or name in reaching, name


# The folders of files that modules declare they read (CODE_DATA): the firmware's sources
# and the converters' lock files.
DECLARED_DATA = ("tasks/targets/firmware/templates/", "tasks/models/formats/tools/")


def test_only_select_reaches_the_report_module_and_every_dependency_is_project_code() -> None:
    assert [name for name in STEPS if "tasks/select/report/markdown.py" in _files(name)] == ["select"]
    for name in STEPS:
        files = _files(name)
        assert all(path.startswith("tasks/") for path in files), name
        # A file that is no module is one a reached module declares it reads.
        assert all(path.endswith(".py") or path.startswith(DECLARED_DATA) for path in files), name
        assert all((REPO / path).is_file() for path in files), name
        code = code_dependencies(STEPS[name])
        assert list(code.files) == sorted(code.files) and list(code.libraries) == sorted(code.libraries)


# The real flow in a copy of the project, one run per line read from stdin, each
# reported as one marked JSON line: one process, so one Prefect server start-up.
DRIVER = """
import json, sys
from pathlib import Path

import pytest
from flows.lifecycle import run_lifecycle
for _ in sys.stdin:
    state, outcome = run_lifecycle(Path("params.yaml"), Path("farm.yaml"))
    print("OUTCOME", json.dumps({"executed": outcome.executed, "cached": outcome.cached}),
          flush=True)
"""
CHEAP_PARAMS = (TINY_PARAMS.replace("epochs: 6", "epochs: 2")
                .replace("formats: {tflite: [fp32], onnx: [fp32], openvino: [fp32]}",
                         "formats: {tflite: [fp32]}")
                .replace("min_accuracy: 0.5", "min_accuracy: 0.1"))


def _next_run(driver: subprocess.Popen[str], log: Path) -> dict[str, list[str]]:
    driver.stdin.write("run\n")
    driver.stdin.flush()
    for line in driver.stdout:
        if line.startswith("OUTCOME "):
            return json.loads(line.removeprefix("OUTCOME "))
    raise AssertionError(f"the run ended without an outcome:\n{log.read_text()[-3000:]}")


def _append_comment(module: Path) -> None:
    with open(module, "a", encoding="utf-8") as handle:
        handle.write("# a comment: the file changed, what it does did not\n")


def test_editing_a_module_reruns_exactly_the_steps_that_reach_it(tmp_path: Path) -> None:
    """In a copy of the project, a comment appended to a module re-runs the steps whose
    code reaches it, and then only the steps whose inputs changed: tasks/select/report/markdown.py
    (only select reaches it; select's outputs come out the same, so track stays cached),
    then tasks/farm/untrusted.py (only benchmark reaches it, through tasks.benchmark: new
    timings re-run select and track)."""
    for name in ("tasks", "flows"):
        shutil.copytree(REPO / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    write_tiny_config(tmp_path, CHEAP_PARAMS)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}  # the copy's code runs, and is hashed
    env.pop("PREFECT_API_URL", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    log = tmp_path / "driver.log"
    with open(log, "w", encoding="utf-8") as stderr, subprocess.Popen(
            [sys.executable, "-c", DRIVER], cwd=tmp_path, env=env, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr) as driver:
        try:
            runs = [_next_run(driver, log)]
            _append_comment(tmp_path / "tasks" / "select" / "report" / "markdown.py")
            runs.append(_next_run(driver, log))
            _append_comment(tmp_path / "tasks" / "farm" / "untrusted.py")
            runs.append(_next_run(driver, log))
        finally:
            driver.stdin.close()
            driver.wait(timeout=120)
    assert runs == [
        {"executed": ["prepare", "train", "optimize", "convert", "benchmark[local]", "select",
                      "track", "release[local]"], "cached": []},
        {"executed": ["select"],
         "cached": ["prepare", "train", "optimize", "convert", "benchmark[local]", "track",
                    "release[local]"]},
        {"executed": ["benchmark[local]", "select", "track", "release[local]"],
         "cached": ["prepare", "train", "optimize", "convert"]},
    ]


def _distribution(site: Path, name: str, version: str, module: str) -> Path:
    """A real installed-distribution record (what pip writes) in the folder ``site``."""
    info = site / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "top_level.txt").write_text(f"{module}\n")
    return info


def test_the_scan_of_distributions_is_kept_until_a_distribution_changes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows import code_deps

    site = tmp_path / "site"
    info = _distribution(site, "edgeflow-probe-dist", "1.0", "edgeflow_probe_mod")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(code_deps, "DISTRIBUTIONS_CACHE", tmp_path / "cache")
    code_deps.installed.cache_clear()
    try:
        assert code_deps.library_versions(("edgeflow_probe_mod",)) == {"edgeflow-probe-dist": "1.0"}
        [kept] = (tmp_path / "cache").iterdir()
        # The next process reads the kept scan: what the file says is what it gets.
        document = json.loads(kept.read_text())
        document["versions"]["edgeflow-probe-dist"] = "1.0-from-the-kept-scan"
        kept.write_text(json.dumps(document))
        code_deps.installed.cache_clear()
        assert code_deps.installed().versions["edgeflow-probe-dist"] == "1.0-from-the-kept-scan"
        assert code_deps.installed().by_module["edgeflow_probe_mod"] == ["edgeflow-probe-dist"]
        # An upgrade renames the metadata folder: scanned again, kept beside the first.
        info.rename(site / "edgeflow-probe-dist-2.0.dist-info")
        (site / "edgeflow-probe-dist-2.0.dist-info" / "METADATA").write_text(
            "Metadata-Version: 2.1\nName: edgeflow-probe-dist\nVersion: 2.0\n")
        code_deps.installed.cache_clear()
        assert code_deps.library_versions(("edgeflow_probe_mod",)) == {"edgeflow-probe-dist": "2.0"}
        assert len(list((tmp_path / "cache").iterdir())) == 2
        # Uninstalled: the module is no longer provided.
        shutil.rmtree(site / "edgeflow-probe-dist-2.0.dist-info")
        code_deps.installed.cache_clear()
        assert code_deps.library_versions(("edgeflow_probe_mod",)) == {
            "edgeflow_probe_mod": code_deps.NOT_INSTALLED}
    finally:
        code_deps.installed.cache_clear()


def test_a_runs_preflight_parses_every_steps_code_before_the_flow_needs_it(tmp_path: Path) -> None:
    """While a temporary Prefect server boots, not on a no-op run's path after it answers:
    the flow's cache keys then parse no source again."""
    from flows import code_deps
    from flows.lifecycle import preflight

    write_tiny_config(tmp_path)
    code_deps._imports_of.cache_clear()
    code_deps._WALKS.clear()  # what a new process starts with
    preflight(tmp_path / "params.yaml", tmp_path / "farm.yaml", None)
    parsed = code_deps._imports_of.cache_info()
    assert parsed.currsize > 20
    for step in STEPS.values():
        code_dependencies(step)
    assert code_deps._imports_of.cache_info().misses == parsed.misses


def test_parsed_imports_are_kept_between_processes_under_the_sources_text(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A new process reads what an earlier one parsed, and an edited source is parsed
    again: the kept entry for its old text is never used for the new one."""
    from flows import code_deps

    _write(tmp_path, FAKE_PACKAGE)
    kept_file = tmp_path / "cache" / "imports.json"
    monkeypatch.setattr(code_deps, "IMPORTS_CACHE", kept_file)

    def closure() -> list[str]:
        # What a new process does: nothing parsed in this one, the kept file read afresh.
        code_deps._imports_of.cache_clear()
        code_deps._kept_imports.cache_clear()
        code_deps._WALKS.clear()
        return [path.as_posix() for path in module_closure(
            "app.main", root=tmp_path, packages=("app",)).files]

    try:
        assert "app/unreached.py" not in closure()
        kept = json.loads(kept_file.read_text())
        [main_key] = [key for key, names in kept.items() if "app.helpers" in names]
        kept[main_key].append("app.unreached")
        kept_file.write_text(json.dumps(kept))
        # Read, not parsed again: the doctored entry is what the next process gets.
        assert "app/unreached.py" in closure()
        (tmp_path / "app/main.py").write_text(FAKE_PACKAGE["app/main.py"] + "# edited\n")
        assert "app/unreached.py" not in closure()
        # Kept beside the old text's entry: both texts are known from now on.
        mains = [names for names in json.loads(kept_file.read_text()).values()
                 if "app.helpers" in names]
        assert sorted("app.unreached" in names for names in mains) == [False, True]
    finally:
        code_deps._imports_of.cache_clear()
        code_deps._kept_imports.cache_clear()
