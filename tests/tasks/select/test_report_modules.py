"""The report is select's, one module per view, with no circle: no module of
tasks/select imports one that imports it back (a function-level import counts), and the
console's views load neither the plots nor numpy."""

from __future__ import annotations

import subprocess
import sys

from tests.test_layering import REPO, TASKS, imported_names, module_name

MODULES = {module_name(path): path for path in sorted((TASKS / "select").rglob("*.py"))}


def _imports(module: str) -> set[str]:
    """The modules of tasks/select that ``module`` imports (``from a import b``: a, or
    a.b where b is a module), itself left out."""
    found = set()
    for name in imported_names(MODULES[module]):
        owner = max((other for other in MODULES
                     if name == other or name.startswith(f"{other}.")), key=len, default=None)
        if owner not in {None, module}:
            found.add(owner)
    return found


def test_no_two_modules_of_select_import_each_other() -> None:
    graph = {module: _imports(module) for module in MODULES}
    assert graph["tasks.select.report.html"] >= {"tasks.select.report.cells"}
    assert "tasks.select.report" in graph["tasks.select"]
    circles = sorted((a, b) for a, imported in graph.items() for b in imported
                     if a < b and a in graph.get(b, set()))
    assert circles == []


def test_the_console_views_load_neither_the_plots_nor_numpy() -> None:
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys; import tasks.select.report.terminal, "
         "tasks.select.report.markdown; print(sorted(m for m in sys.modules "
         "if m == 'numpy' or m.startswith('tasks.select')))"],
        cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert "numpy" not in loaded and "tasks.select.plots" not in loaded
    assert "tasks.select.report.terminal" in loaded
