"""Dependencies point one way (DESIGN.md), checked on the source of every module under
tasks/ and flows/ with ``ast``: every import statement, at module level or inside a
function, absolute or relative. There is no allowed exception.

The layers, bottom up (:data:`LAYERS`); a module imports only from its own layer or
those below it:

1. ``tasks.core``: errors, files, layout, locks, the strict pydantic base and the bounds
   every option shares, the typed file contracts. Everything uses it; it uses nothing.
2. ``tasks.models``: architectures, formats, pruning, augmentation, model statistics,
   each with its option model beside the code it configures (Olive's pattern), built
   on ``core.strict`` and ``core.bounds`` only.
3. ``tasks.config``: ``params.yaml`` assembles the option models of ``models`` into the
   experiment schema, and ``farm.yaml``'s devices name runtimes from the format
   registry, so the configuration sits above ``models``, not in ``core``.
4. ``tasks.farm``: reaching devices, which takes the device models of ``config``.
5. ``tasks.targets``: the kinds of target (a board that runs the harness, a
   microcontroller profile), built on the farm; the steps ask a target, so no step
   branches on a kind of device, and the farm never names a kind.
6. the steps (a module or package at the root of tasks/ that is no layer above):
   they use farm, config, models and core, and never each other: steps meet through
   files, and only flows/ wires them.
7. ``flows``: the Prefect flow, the CLI, the step registry, DVC rendering.

``tasks.device`` is outside the layers: it is shipped to boards (as the package
``edgeflow_device``), so it imports nothing of edgeflow but its own modules, and those
relatively (a board has the standard library, NumPy and one runtime); nothing imports it
but tasks/core/device_code.py, the one module that names that folder and loads it here.

And no module takes part in an import circle (:func:`circles`), counting function-level
imports too: a circle deferred into a function still ties the modules into one unit
and breaks as soon as someone moves the import to the top.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TASKS = REPO / "tasks"
SOURCES = sorted([*TASKS.rglob("*.py"), *(REPO / "flows").rglob("*.py")])
STEPS_LAYER = "steps"
# Bottom up: a module may import its own layer and those listed before it.
LAYERS = ("tasks.core", "tasks.models", "tasks.config", "tasks.farm", "tasks.targets", STEPS_LAYER,
          "flows")
DEVICE = "tasks.device"
# A step is a module at tasks/ root, or a package there that is neither a layer nor device.
NOT_STEPS = {package.removeprefix("tasks.") for package in (*LAYERS, DEVICE)
             if package.startswith("tasks.")}
STEPS = sorted({f"tasks.{path.stem}" for path in TASKS.glob("*.py") if path.stem != "__init__"}
               | {f"tasks.{path.parent.name}" for path in TASKS.glob("*/__init__.py")
                  if path.parent.name not in NOT_STEPS})
DEVICE_CODE = TASKS / "core" / "device_code.py"
DEVICE_LOADER = "tasks.core.device_code"


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


def layer(name: str) -> str | None:
    """The layer of a module or of a name in one; None for tasks.device and for
    anything not edgeflow's."""
    if within(name, DEVICE):
        return None
    for package in LAYERS:
        if package != STEPS_LAYER and within(name, package):
            return package
    return STEPS_LAYER if within(name, "tasks") else None


def violations(path: Path, source: str | None = None) -> list[str]:
    """What the module in ``path`` (or ``source`` as if it were there) imports against
    the rules, one line each."""
    module = module_name(path)
    found = []
    siblings = imported_names(path, source, relative=True)  # from . import x, from .x import y
    for name in sorted(imported_names(path, source)):
        step = next((step for step in STEPS if within(name, step)), None)
        edgeflow = within(name, "tasks") or within(name, "flows")
        mine, theirs = layer(module), layer(name)
        if step is not None and within(module, "tasks") and not within(module, step) \
                and mine == STEPS_LAYER:
            found.append(f"{module} imports {name}: steps meet through files, wired by flows/")
        elif within(name, DEVICE) and not within(module, DEVICE) and module != DEVICE_LOADER:
            found.append(f"{module} imports {name}: tasks/device is reached through "
                         f"{DEVICE_LOADER} only")
        elif within(module, DEVICE) and edgeflow and not (within(name, DEVICE)
                                                          and name in siblings):
            found.append(f"{module} imports {name}: code for boards has nothing of edgeflow "
                         "but its own modules, imported relatively")
        elif mine is not None and theirs is not None and LAYERS.index(theirs) > LAYERS.index(mine):
            found.append(f"{module} imports {name}: {mine} is below {theirs} "
                         f"(layers, bottom up: {', '.join(LAYERS)})")
    return found


def test_the_layers_are_the_packages_that_exist() -> None:
    assert len(STEPS) >= 7 and {"tasks.benchmark", "tasks.select", "tasks.release"} <= set(STEPS)
    assert not NOT_STEPS & {step.removeprefix("tasks.") for step in STEPS}
    for package in LAYERS:
        if package != STEPS_LAYER:
            assert (REPO / package.replace(".", "/") / "__init__.py").is_file(), package


def test_every_import_points_one_way() -> None:
    found = [line for path in SOURCES for line in violations(path)]
    assert not found, "\n".join(found)


# --------------------------------------------------------------------------- circles


def import_graph(sources: Mapping[Path, str | None]) -> dict[str, set[str]]:
    """Module -> the edgeflow modules it imports (``sources``: each path with its text,
    or None to read the file).

    ``from package import x`` points at ``package.x`` when that is a module, else at
    ``package`` (x is a name defined there). Importing a submodule also runs its
    package's ``__init__`` first, but that is not counted as an edge: every package
    would otherwise be a circle with each submodule that imports a sibling. What makes
    a package and its submodule a circle is a reference back by name: the ``__init__``
    imports the submodule while the submodule imports a name from the ``__init__``
    (the shared types then belong in a module of their own both import, as
    ``tasks.models.formats.base``).
    """
    modules = {module_name(path) for path in sources}
    graph: dict[str, set[str]] = {}
    for path, source in sources.items():
        module = module_name(path)
        targets = set()
        for name in imported_names(path, source):
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != module:
                targets.add(name)
        graph[module] = targets
    return graph


def circles(graph: Mapping[str, Iterable[str]]) -> list[set[str]]:
    """The import circles of ``graph``: its strongly connected components of more than
    one module (Tarjan's algorithm, iterative), each a set of module names."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(component)
    return found


def test_no_module_takes_part_in_an_import_circle() -> None:
    found = circles(import_graph(dict.fromkeys(SOURCES)))
    assert not found, "\n".join(" -> ".join(sorted(circle)) for circle in found)


# --------------------------------------------------------------------------- device code


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
        "tasks.farm.probe imports tasks.benchmark.DeviceRun: tasks.farm is below steps "
        "(layers, bottom up: tasks.core, tasks.models, tasks.config, tasks.farm, tasks.targets, steps, flows)"]
    assert check("tasks/farm/probe.py", "def f():\n    import tasks.benchmark\n")
    assert check("tasks/farm/probe.py", "from tasks import convert\n")
    assert check("tasks/farm/probe.py", "from .. import select\n")
    assert check("tasks/models/stats.py", "from tasks.prepare import SPLITS\n")
    assert check("flows/steps.py", "from tasks.prepare import prepare\n") == []
    assert check("tasks/farm/probe.py", "from tasks.farm.protocol import LOCK_NAME\n") == []


def test_a_step_importing_another_step_is_caught() -> None:
    assert check("tasks/train/__init__.py", "from tasks.prepare import SPLITS\n") == [
        "tasks.train imports tasks.prepare.SPLITS: steps meet through files, wired by flows/"]
    assert check("tasks/select/report.py", "def f():\n    from tasks.release import x\n")
    assert check("tasks/select/report.py", "from tasks.select.cells import x\n") == []
    assert check("tasks/benchmark.py", "from tasks.farm.session import x\n") == []


def test_a_layer_importing_one_above_it_is_caught() -> None:
    assert check("tasks/farm/probe.py", "from tasks.targets import target_of\n") == [
        "tasks.farm.probe imports tasks.targets.target_of: tasks.farm is below tasks.targets "
        "(layers, bottom up: tasks.core, tasks.models, tasks.config, tasks.farm, tasks.targets, "
        "steps, flows)"]
    assert check("tasks/config/farm.py", "def f():\n    from tasks.farm import push\n")
    assert check("tasks/targets/mcu.py", "from tasks.farm.probe import DeviceProbe\n") == []
    assert check("tasks/benchmark.py", "from tasks.targets import target_of\n") == []
    assert check("tasks/targets/mcu.py", "from tasks.release import registry\n")


def test_the_device_rules_are_caught() -> None:
    assert check("tasks/convert.py", "from tasks.device import harness\n")
    assert check("flows/cli/farm.py", "import tasks.device.harness\n")
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


def test_every_layer_reaches_only_down() -> None:
    assert check("tasks/core/files.py", "from tasks.farm.untrusted import visible\n")
    assert check("tasks/core/contracts/results.py", "from tasks.models import formats\n")
    assert check("tasks/core/layout.py", "def f():\n    from tasks.config import Params\n")
    assert check("tasks/models/augment.py", "from tasks.config import AugmentationParams\n") == [
        "tasks.models.augment imports tasks.config.AugmentationParams: tasks.models is below "
        "tasks.config (layers, bottom up: tasks.core, tasks.models, tasks.config, tasks.farm, "
        "tasks.targets, steps, flows)"]
    assert check("tasks/config/farm.py", "from tasks.farm.protocol import LOCK_NAME\n")
    assert check("tasks/benchmark.py", "from flows.console import say\n")
    assert check("tasks/core/contracts/summary.py",
                 "from tasks.core.contracts.results import McuFit\n") == []
    assert check("tasks/config/params.py", "from tasks.models.augment import x\n") == []
    assert check("tasks/farm/probe.py", "from tasks.config import Farm\n") == []
    assert check("flows/cli/compare.py", "from tasks.config import load_params\n") == []


def graph_of(sources: dict[str, str]) -> dict[str, set[str]]:
    return import_graph({REPO / relative: source for relative, source in sources.items()})


def test_a_circle_is_found_even_through_a_function_level_import() -> None:
    graph = graph_of({"tasks/select/a.py": "from tasks.select.b import x\n",
                      "tasks/select/b.py": "def f():\n    from tasks.select import a\n",
                      "tasks/select/c.py": "import tasks.select.a\n"})
    assert graph == {"tasks.select.a": {"tasks.select.b"}, "tasks.select.b": {"tasks.select.a"},
                     "tasks.select.c": {"tasks.select.a"}}
    assert circles(graph) == [{"tasks.select.a", "tasks.select.b"}]


def test_a_package_and_a_submodule_importing_names_from_it_are_a_circle() -> None:
    registry = "def formats():\n    from tasks.models.formats import onnx\n"
    assert circles(graph_of({
        "tasks/models/formats/__init__.py": registry,
        "tasks/models/formats/onnx.py": "from tasks.models.formats import Format\n"})) == [
        {"tasks.models.formats", "tasks.models.formats.onnx"}]
    # The shared names in a module of their own: no circle (the package's __init__ running
    # before its submodule is not an edge).
    assert circles(graph_of({
        "tasks/models/formats/__init__.py": registry + "from .base import Format\n",
        "tasks/models/formats/base.py": "import dataclasses\n",
        "tasks/models/formats/onnx.py": "from tasks.models.formats.base import Format\n"})) == []


def test_circles_finds_each_component_once_and_ignores_chains() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": {"e"}, "e": {"d"}, "f": {"a"}}
    assert sorted(map(sorted, circles(graph))) == [["a", "b", "c"], ["d", "e"]]
    assert circles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


# --------------------------------------------------------------------------- the summary


def summary_line() -> str:
    """One line on this tree's import graph, as a review quotes it: modules, import
    edges, circles, arrows against the layers (``python -m tests.test_layering``)."""
    graph = import_graph(dict.fromkeys(SOURCES))
    found = [line for path in SOURCES for line in violations(path)]
    return (f"{len(graph)} modules, {sum(map(len, graph.values()))} import edges, "
            f"{len(circles(graph))} circles, {len(found)} imports against the layers "
            f"({' < '.join(LAYERS)}; tasks.device apart)")


def test_the_summary_counts_this_tree() -> None:
    line = summary_line()
    assert line.startswith(f"{len(SOURCES)} modules, ") and ", 0 circles, 0 imports against" in line


if __name__ == "__main__":
    print(summary_line())
