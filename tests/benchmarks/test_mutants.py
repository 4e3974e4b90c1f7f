"""benchmarks/mutants.py on mutmut state files written here: which mutants belong to
which concern, what is tested next, what is tested again, and the score."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def mutants() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mutants_tool", REPO / "benchmarks" / "mutants.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _meta(folder: Path, relative: str, codes: dict[str, int | None]) -> Path:
    path = folder / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"exit_code_by_key": codes, "hash_by_function_name": {}}))
    return path


def test_a_mutant_belongs_to_the_concern_of_its_function_only(mutants: ModuleType) -> None:
    assert mutants.concern_of("tasks.select.x_verdict__mutmut_3") == "requirement checks and ranking"
    assert mutants.concern_of("tasks.farm.trust.x_examine__mutmut_1") == "size limits and host keys"
    assert mutants.concern_of("flows.caching.x_input_key__mutmut_9") == "cache keys"
    # The same module, a function no concern names (report rendering, file discovery).
    assert mutants.concern_of("tasks.select.x_collect_results__mutmut_1") is None
    assert mutants.concern_of("flows.caching.x_cache_dir__mutmut_1") is None


def _functions_of_the_tree() -> list[str]:
    """A mutmut-style name (``<module>.x_<function>__mutmut_1``, methods
    ``<module>.xǁ<class>ǁ<method>__mutmut_1``) for every top-level function and method
    under tasks/ and flows/."""
    import ast

    names = []
    for path in sorted([*(REPO / "tasks").rglob("*.py"), *(REPO / "flows").rglob("*.py")]):
        module = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                names.append(f"{module}.x_{node.name}__mutmut_1")
            elif isinstance(node, ast.ClassDef):
                names += [f"{module}.x\u01c1{node.name}\u01c1{method.name}__mutmut_1"
                          for method in node.body
                          if isinstance(method, (ast.FunctionDef, ast.AsyncFunctionDef))]
    return names


def test_every_pattern_of_every_concern_names_code_that_exists(mutants: ModuleType) -> None:
    """A function renamed or moved (issue 26 split select's _measures in two, issue 25
    replaced push's verify_commands) must not drop out of the mutation scope unseen."""
    import fnmatch

    functions = _functions_of_the_tree()
    assert "tasks.select.x_evaluate__mutmut_1" in functions
    assert "flows.caching.x\u01c1StepContentPolicy\u01c1compute_key__mutmut_1" in functions
    stale = [f"{concern}: {pattern}" for concern, patterns in mutants.MODULES.items()
             for pattern in patterns
             if not any(fnmatch.fnmatchcase(name, pattern) for name in functions)]
    assert stale == []


def test_untested_forget_and_results_read_and_write_mutmut_state(mutants: ModuleType,
                                                               tmp_path: Path) -> None:
    meta = _meta(tmp_path, "tasks/select.py.meta", {
        "tasks.select.x_verdict__mutmut_1": 1,      # killed
        "tasks.select.x_verdict__mutmut_2": 0,      # survived
        "tasks.select.x_verdict__mutmut_3": None,   # not tested yet
        "tasks.select.x_verdict__mutmut_4": 36,     # timed out
        "tasks.select.x_collect_results__mutmut_1": None})  # outside every concern
    assert mutants.untested(tmp_path) == ["tasks.select.x_verdict__mutmut_3"]
    assert mutants.results(tmp_path) == {"requirement checks and ranking": {
        "tasks.select.x_verdict__mutmut_1": "killed", "tasks.select.x_verdict__mutmut_2": "survived",
        "tasks.select.x_verdict__mutmut_4": "timeout"}}

    assert mutants.forget(tmp_path, {"survived", "timeout"}) == 2
    codes = json.loads(meta.read_text())["exit_code_by_key"]
    assert codes == {"tasks.select.x_verdict__mutmut_1": 1, "tasks.select.x_verdict__mutmut_2": None,
                     "tasks.select.x_verdict__mutmut_3": None, "tasks.select.x_verdict__mutmut_4": None,
                     "tasks.select.x_collect_results__mutmut_1": None}
    assert mutants.untested(tmp_path) == [f"tasks.select.x_verdict__mutmut_{n}" for n in (2, 3, 4)]
    # A listed equivalent survivor keeps its result.
    _meta(tmp_path, "tasks/select.py.meta", {"tasks.select.x_verdict__mutmut_1": 0,
                                             "tasks.select.x_verdict__mutmut_2": 0})
    assert mutants.forget(tmp_path, {"survived"}, frozenset({"tasks.select.x_verdict__mutmut_1"})) == 1
    assert mutants.untested(tmp_path) == ["tasks.select.x_verdict__mutmut_2"]


def test_the_score_counts_timeouts_as_kills_and_leaves_equivalent_survivors_out(
        mutants: ModuleType) -> None:
    statuses = {"requirement checks and ranking": {
        "a": "killed", "b": "killed", "c": "timeout", "d": "survived", "e": "survived",
        "f": "no tests", "g": "crashed"}}
    text, score = mutants.table(statuses, {"e": "a log text", "a": "listed but killed"})
    # killed 2 + hung 2 (a timeout, a crash) of 7 - 1 equivalent (a killed mutant listed
    # stays a kill).
    assert score == pytest.approx(4 / 6)
    row = next(line for line in text.splitlines() if line.startswith("requirement"))
    assert row.split()[-7:] == ["7", "2", "1", "2", "1", "1", "66.7%"]
    assert mutants.STATUS_BY_EXIT_CODE[-11] == "crashed" and mutants.STATUS_BY_EXIT_CODE[36] == "timeout"


def test_refresh_drops_copies_of_removed_modules_and_the_kept_builds(mutants: ModuleType,
                                                                    tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.mutmut]\nsource_paths = ["tasks"]\nalso_copy = ["params.yaml"]\n')
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "kept.py").write_text("")
    (tmp_path / "params.yaml").write_text("new: 1\n")
    copy = tmp_path / "mutants"
    for name in ("tasks/kept.py", "tasks/gone.py", "tasks/gone.py.meta", "params.yaml",
                 ".tests-built-once/build/project/x"):
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        (copy / name).write_text("old")
    mutants.refresh_copies(tmp_path)
    assert (copy / "tasks" / "kept.py").exists()
    assert not (copy / "tasks" / "gone.py").exists() and not (copy / "tasks" / "gone.py.meta").exists()
    assert (copy / "params.yaml").read_text() == "new: 1\n"
    assert not (copy / ".tests-built-once").exists()
