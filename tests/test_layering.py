"""Dependencies point one way (DESIGN.md), checked on the source of every module under
tasks/ and flows/ with ``ast``: every import statement, at module level or inside a
function, absolute or relative.

- A step (a module at the root of tasks/) never imports another step, and tasks.farm,
  tasks.models and tasks.core never import a step: steps meet through files, and only
  flows/ wires them.
- Nothing imports tasks.device but tasks/core/device_code.py, the one module that names
  that folder: the folder is shipped to boards, and device_code loads it here.
- tasks/device/ imports nothing of edgeflow but its own modules, and those relatively: a
  board has the standard library, NumPy and one runtime, and the folder is a package of
  another name there (``edgeflow_device``).
- tasks/core imports nothing of edgeflow outside tasks.core (but tasks.device, which
  imports nothing of edgeflow, through device_code), with one exception
  (:data:`CONFIG_MAY_IMPORT`).
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TASKS = REPO / "tasks"
SOURCES = sorted([*TASKS.rglob("*.py"), *(REPO / "flows").rglob("*.py")])
# A step is a module at tasks/ root, or a package there that is not a layer below steps.
STEPS = sorted({f"tasks.{path.stem}" for path in TASKS.glob("*.py") if path.stem != "__init__"}
               | {f"tasks.{path.parent.name}" for path in TASKS.glob("*/__init__.py")
                  if path.parent.name not in {"core", "models", "config", "farm", "device"}})
DEVICE = "tasks.device"
DEVICE_CODE = TASKS / "core" / "device_code.py"
DEVICE_LOADER = "tasks.core.device_code"
# config.py parses params.yaml once, into the option models of the architectures,
# formats and pruning recipes; each of those is defined beside the code that uses it
# (tasks.models, Olive's pattern: one unit, its options, a registry by name), so the
# configuration boundary must name them. Nothing else in tasks.core reaches outside it.
CONFIG_MAY_IMPORT = {"tasks.models.architectures", "tasks.models.formats", "tasks.models.pruning",
                     "tasks.models.model_file"}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def within(name: str, package: str) -> bool:
    """``name`` is ``package`` or something in it."""
    return name == package or name.startswith(f"{package}.")


def imported_names(path: Path, source: str | None = None,
                   relative: bool | None = None) -> set[str]:
    """Every name the module in ``path`` imports, fully qualified (``from a import b`` is
    ``a.b``: b may be a module), wherever the import statement is; with ``relative``
    True (False) only those of relative (absolute) import statements."""
    tree = ast.parse(path.read_text(encoding="utf-8") if source is None else source)
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and not relative:
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and relative in (None, bool(node.level)):
            base = package[:len(package) - node.level + 1] if node.level else []
            prefix = ".".join([*base, *([node.module] if node.module else [])])
            names.update(f"{prefix}.{alias.name}" for alias in node.names)
    return names


def violations(path: Path, source: str | None = None) -> list[str]:
    """What the module in ``path`` (or ``source`` as if it were there) imports against
    the rules, one line each."""
    module = module_name(path)
    found = []
    siblings = imported_names(path, source, relative=True)  # from . import x, from .x import y
    for name in sorted(imported_names(path, source)):
        step = next((step for step in STEPS if within(name, step)), None)
        edgeflow = within(name, "tasks") or within(name, "flows")
        if step is not None and within(module, "tasks") and not within(module, step):
            found.append(f"{module} imports {name}: steps meet through files, wired by flows/")
        elif within(name, DEVICE) and not within(module, DEVICE) and module != DEVICE_LOADER:
            found.append(f"{module} imports {name}: tasks/device is reached through "
                         f"{DEVICE_LOADER} only")
        elif within(module, DEVICE) and edgeflow and not (within(name, DEVICE)
                                                          and name in siblings):
            found.append(f"{module} imports {name}: code for boards has nothing of edgeflow "
                         "but its own modules, imported relatively")
        elif (within(module, "tasks.core") and edgeflow and not within(name, "tasks.core")
              and not within(name, DEVICE)  # below core: it imports nothing of edgeflow
              and not (module == "tasks.config"
                       and any(within(name, allowed) for allowed in CONFIG_MAY_IMPORT))):
            found.append(f"{module} imports {name}: tasks.core depends on nothing above it")
    return found


def test_every_import_points_one_way() -> None:
    assert len(STEPS) >= 7 and "tasks.benchmark" in STEPS
    found = [line for path in SOURCES for line in violations(path)]
    assert not found, "\n".join(found)


def docstrings(tree: ast.AST) -> set[int]:
    """The ids of the docstring nodes of a module and of its classes and functions."""
    return {id(node.body[0].value) for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and node.body and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)}


def test_only_device_code_names_the_device_folder() -> None:
    """No other module builds a path or a module name into tasks/device (prose aside)."""
    found = []
    for path in SOURCES:
        if path == DEVICE_CODE or within(module_name(path), DEVICE):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip = docstrings(tree)
        found += [f"{module_name(path)}:{node.lineno}: {node.value!r}" for node in ast.walk(tree)
                  if isinstance(node, ast.Constant) and isinstance(node.value, str)
                  and id(node) not in skip
                  and ("tasks/device" in node.value or "tasks.device" in node.value)]
    assert not found, "\n".join(found)


# --------------------------------------------------------------------------- the checker


def check(relative: str, source: str) -> list[str]:
    return violations(REPO / relative, source)


def test_a_farm_module_importing_a_step_is_caught_even_inside_a_function() -> None:
    assert check("tasks/farm/probe.py", "from tasks.benchmark import DeviceRun\n") == [
        "tasks.farm.probe imports tasks.benchmark.DeviceRun: steps meet through files, wired "
        "by flows/"]
    assert check("tasks/farm/probe.py", "def f():\n    import tasks.benchmark\n")
    assert check("tasks/farm/probe.py", "from tasks import convert\n")
    assert check("tasks/farm/probe.py", "from .. import select\n")
    assert check("tasks/models/stats.py", "from tasks.prepare import SPLITS\n")
    assert check("tasks/train/__init__.py", "from tasks.prepare import SPLITS\n")
    assert check("flows/steps.py", "from tasks.prepare import prepare\n") == []
    assert check("tasks/farm/probe.py", "from tasks.farm.protocol import LOCK_NAME\n") == []


def test_the_device_rules_are_caught() -> None:
    assert check("tasks/convert.py", "from tasks.device import harness\n")
    assert check("flows/cli.py", "import tasks.device.harness\n")
    assert check("tasks/farm/setup.py", "def f():\n    from tasks.device.spec import VariantSpec\n")
    assert check("tasks/core/device_code.py", "from tasks.device.spec import VariantSpec\n") == []
    assert check("tasks/device/harness.py", "from tasks.core import files\n") == [
        "tasks.device.harness imports tasks.core.files: code for boards has nothing of "
        "edgeflow but its own modules, imported relatively"]
    assert check("tasks/device/harness.py", "from .. import core\n")
    assert check("tasks/device/harness.py", "from ..core import files\n")
    assert check("tasks/device/harness.py", "import json, numpy\n") == []


def test_device_modules_import_their_siblings_relatively_only() -> None:
    """On a board the folder is the package edgeflow_device: ``tasks.device`` is no name
    there, so a sibling is imported relatively."""
    assert check("tasks/device/harness.py", "from . import runtimes\n") == []
    assert check("tasks/device/harness.py", "from .runtimes import load_runner\n") == []
    assert check("tasks/device/measure.py", "def f():\n    from .pipeline import end_to_end\n") == []
    assert check("tasks/device/harness.py", "from tasks.device import runtimes\n") == [
        "tasks.device.harness imports tasks.device.runtimes: code for boards has nothing of "
        "edgeflow but its own modules, imported relatively"]
    assert check("tasks/device/harness.py", "import tasks.device.runtimes\n")


def test_core_reaches_nothing_above_it_but_configs_option_models() -> None:
    assert check("tasks/core/files.py", "from tasks.farm.untrusted import visible\n")
    assert check("tasks/core/contracts/results.py", "from tasks.models import formats\n")
    assert check("tasks/core/contracts/summary.py",
                 "from tasks.core.contracts.results import McuFit\n") == []
