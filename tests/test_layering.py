"""Dependencies point one way (DESIGN.md), checked on the source of every module under
tasks/ and flows/ with ``ast``: every import statement, at module level or inside a
function, absolute or relative.

- A step (a module at the root of tasks/) never imports another step, and tasks.farm,
  tasks.models and tasks.core never import a step: steps meet through files, and only
  flows/ wires them.
- Below the steps, tasks.config < tasks.farm < tasks.targets (:data:`LAYERS`): none
  imports a layer above its own (the farm never names a kind of target).
- Nothing imports tasks.device: it is shipped to boards and loaded by file path by
  tasks/core/device_code.py, the one module that names that folder.
- tasks/device/ imports nothing of edgeflow: a board has the standard library, NumPy and
  one runtime.
- tasks/core imports nothing of edgeflow outside tasks.core, with one exception
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
                  if path.parent.name not in {"core", "models", "config", "farm", "targets",
                                                  "device"}})
# Layers below the steps, lowest first: a module never imports a layer above its own
# (tasks.targets, the kinds of target, stands between the farm and the steps; tasks.core
# has its own rule below).
LAYERS = ("tasks.config", "tasks.farm", "tasks.targets")
DEVICE = "tasks.device"
DEVICE_CODE = TASKS / "core" / "device_code.py"
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


def _layer(name: str) -> int:
    """The position of ``name``'s layer in :data:`LAYERS`; -1 outside them."""
    return next((index for index, layer in enumerate(LAYERS) if within(name, layer)), -1)


def imported_names(path: Path, source: str | None = None) -> set[str]:
    """Every name the module in ``path`` imports, fully qualified (``from a import b`` is
    ``a.b``: b may be a module), wherever the import statement is."""
    tree = ast.parse(path.read_text(encoding="utf-8") if source is None else source)
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            prefix = ".".join([*base, *([node.module] if node.module else [])])
            names.update(f"{prefix}.{alias.name}" for alias in node.names)
    return names


def violations(path: Path, source: str | None = None) -> list[str]:
    """What the module in ``path`` (or ``source`` as if it were there) imports against
    the rules, one line each."""
    module = module_name(path)
    found = []
    for name in sorted(imported_names(path, source)):
        step = next((step for step in STEPS if within(name, step)), None)
        edgeflow = within(name, "tasks") or within(name, "flows")
        if step is not None and within(module, "tasks") and not within(module, step):
            found.append(f"{module} imports {name}: steps meet through files, wired by flows/")
        elif _layer(name) > _layer(module) >= 0:
            found.append(f"{module} imports {name}: a layer never imports one above it")
        elif within(name, DEVICE) and not within(module, DEVICE):
            found.append(f"{module} imports {name}: tasks/device is loaded by file path only")
        elif within(module, DEVICE) and edgeflow:
            found.append(f"{module} imports {name}: code for boards has nothing of edgeflow")
        elif (within(module, "tasks.core") and edgeflow and not within(name, "tasks.core")
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


def test_a_layer_importing_one_above_it_is_caught() -> None:
    assert check("tasks/farm/probe.py", "from tasks.targets import target_of\n") == [
        "tasks.farm.probe imports tasks.targets.target_of: a layer never imports one above it"]
    assert check("tasks/config/farm.py", "def f():\n    from tasks.farm import push\n")
    assert check("tasks/targets/mcu.py", "from tasks.farm.probe import DeviceProbe\n") == []
    assert check("tasks/benchmark.py", "from tasks.targets import target_of\n") == []
    assert check("tasks/targets/mcu.py", "from tasks.release import registry\n")


def test_the_device_rules_are_caught() -> None:
    assert check("tasks/convert.py", "from tasks.device import harness\n")
    assert check("flows/cli.py", "import tasks.device.harness\n")
    assert check("tasks/device/harness.py", "from tasks.core import files\n")
    assert check("tasks/device/harness.py", "from . import other\n")
    assert check("tasks/device/harness.py", "import json, numpy\n") == []


def test_core_reaches_nothing_above_it_but_configs_option_models() -> None:
    assert check("tasks/core/files.py", "from tasks.farm.untrusted import visible\n")
    assert check("tasks/core/contracts/results.py", "from tasks.models import formats\n")
    assert check("tasks/core/contracts/summary.py",
                 "from tasks.core.contracts.results import McuFit\n") == []
