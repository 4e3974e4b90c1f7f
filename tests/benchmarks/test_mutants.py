"""benchmarks/mutants.py on mutmut state files written here: which mutants belong to
which concern, what is tested next, what is tested again, and the score."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def mutants() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mutants_tool", REPO / "benchmarks" / "mutants.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _meta(folder: Path, relative: str, codes: dict[str, int | None]) -> Path:
    path = folder / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"exit_code_by_key": codes, "hash_by_function_name": {}}))
    return path


def test_a_mutant_belongs_to_the_narrowest_concern_of_its_module(mutants: ModuleType) -> None:
    assert mutants.concern_of("tasks.select.x_verdict__mutmut_3") == "requirements, ranking"
    assert mutants.concern_of("tasks.select.ranking.x_choose__mutmut_3") == "requirements, ranking"
    assert mutants.concern_of("tasks.farm.trust.x_examine__mutmut_1") == "farm: ssh, pushes"
    assert mutants.concern_of("flows.caching.x_input_key__mutmut_9") == "cache keys, code deps"
    assert mutants.concern_of("flows.lifecycle.x_run__mutmut_9") == "flows: cli, lifecycle"
    # A module with a concern of its own is not counted in its package's.
    assert mutants.concern_of("tasks.device.releases.x_keep__mutmut_1") == "release on the board"
    assert mutants.concern_of("tasks.device.timing.x_timed_loop__mutmut_1") == "harness (the rest)"
    assert mutants.concern_of("tasks.core.accuracy.x_wilson_interval__mutmut_1") == "accuracy intervals"
    assert mutants.concern_of("tasks.core.files.x_atomic__mutmut_1") == "core contracts, files"
    assert mutants.concern_of("tasks.models.formats.onnx.x_export__mutmut_1") == "model formats"
    assert mutants.concern_of("tasks.models.pruning.x_prune__mutmut_1") == "models, pruning"
    # Plot styling is left out, and so is what is no module of tasks/ or flows/.
    assert mutants.concern_of("tasks.select.plots.x_pareto__mutmut_1") is None
    assert mutants.concern_of("benchmarks.latency.x_main__mutmut_1") is None


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
    """A module renamed or moved must not drop out of the mutation scope unseen (issue 26
    split select's _measures in two, issue 25 replaced push's verify_commands)."""
    import fnmatch

    functions = _functions_of_the_tree()
    assert "tasks.select.x_evaluate__mutmut_1" in functions
    assert "flows.caching.x\u01c1StepContentPolicy\u01c1compute_key__mutmut_1" in functions
    stale = [f"{concern}: {pattern}" for concern, patterns in mutants.MODULES.items()
             for pattern in patterns
             if not any(fnmatch.fnmatchcase(name, pattern) for name in functions)]
    stale += [f"excluded: {pattern}" for pattern in mutants.EXCLUDED
              if not any(fnmatch.fnmatchcase(name, pattern) for name in functions)]
    assert stale == []


def test_every_function_of_tasks_and_flows_is_in_the_scope_but_plot_styling(
        mutants: ModuleType) -> None:
    """Issue 27: the scope is every module; a new one joins it without an edit here."""
    functions = _functions_of_the_tree()
    outside = sorted({name.rsplit(".x", 1)[0] for name in functions
                      if mutants.concern_of(name) is None})
    assert outside == ["tasks.select.plots"]
    assert set(mutants.EXCLUDED) == {"tasks.select.plots.*"}
    # Each exclusion says why.
    assert all(len(why) > 20 for why in mutants.EXCLUDED.values())


def test_the_sample_is_seeded_by_name_even_across_concerns_and_grows_by_extension(
        mutants: ModuleType) -> None:
    names = [f"tasks.m{module}.x_f__mutmut_{n}" for module in range(4) for n in range(2500)]
    small = {name for name in names if mutants.sampled(name, 0.05)}
    large = {name for name in names if mutants.sampled(name, 0.2)}
    assert small < large  # a larger sample extends a smaller one
    assert {name for name in names if mutants.sampled(name, 1.0)} == set(names)
    # About the fraction asked, in every module (2,500 each: 5% +- 1.3 points at 99.9%).
    for module in range(4):
        share = sum(name.startswith(f"tasks.m{module}.") for name in small) / 2500
        assert 0.037 < share < 0.063
    # The same names on every run: the place is the sha256 of the name, not a random draw.
    import hashlib
    first = next(iter(sorted(small)))
    assert int.from_bytes(hashlib.sha256(first.encode()).digest()[:8], "big") < 0.05 * 2 ** 64


def test_a_sample_fraction_out_of_range_is_refused_in_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    for bad in ("0", "1.5", "half"):
        run = subprocess.run([sys.executable, str(REPO / "benchmarks" / "mutants.py"), "--no-run",
                              "--sample", bad], capture_output=True, text=True, cwd=tmp_path)
        assert run.returncode == 2
        assert f"'{bad}' is no fraction: give a number above 0 and at most 1" in run.stderr
        assert "Traceback" not in run.stderr


def test_untested_forget_and_results_read_and_write_mutmut_state(mutants: ModuleType,
                                                               tmp_path: Path) -> None:
    meta = _meta(tmp_path, "tasks/select.py.meta", {
        "tasks.select.x_verdict__mutmut_1": 1,      # killed
        "tasks.select.x_verdict__mutmut_2": 0,      # survived
        "tasks.select.x_verdict__mutmut_3": None,   # not tested yet
        "tasks.select.x_verdict__mutmut_4": 36,     # timed out
        "tasks.select.plots.x_pareto__mutmut_1": None})  # excluded: plot styling
    assert mutants.untested(tmp_path) == ["tasks.select.x_verdict__mutmut_3"]
    # In a sample, only the sampled ones (this name's place is 0.0087).
    assert mutants.untested(tmp_path, 0.008) == [] and mutants.untested(tmp_path, 0.009) != []
    assert mutants.results(tmp_path) == {"requirements, ranking": {
        "tasks.select.x_verdict__mutmut_1": "killed", "tasks.select.x_verdict__mutmut_2": "survived",
        "tasks.select.x_verdict__mutmut_3": "not tested", "tasks.select.x_verdict__mutmut_4": "timeout"}}

    assert mutants.forget(tmp_path, {"survived", "timeout"}) == 2
    codes = json.loads(meta.read_text())["exit_code_by_key"]
    assert codes == {"tasks.select.x_verdict__mutmut_1": 1, "tasks.select.x_verdict__mutmut_2": None,
                     "tasks.select.x_verdict__mutmut_3": None, "tasks.select.x_verdict__mutmut_4": None,
                     "tasks.select.plots.x_pareto__mutmut_1": None}
    assert mutants.untested(tmp_path) == [f"tasks.select.x_verdict__mutmut_{n}" for n in (2, 3, 4)]
    # A listed equivalent survivor keeps its result.
    _meta(tmp_path, "tasks/select.py.meta", {"tasks.select.x_verdict__mutmut_1": 0,
                                             "tasks.select.x_verdict__mutmut_2": 0})
    assert mutants.forget(tmp_path, {"survived"}, frozenset({"tasks.select.x_verdict__mutmut_1"})) == 1
    assert mutants.untested(tmp_path) == ["tasks.select.x_verdict__mutmut_2"]


def test_a_crash_counts_as_its_plain_runs_result_for_the_functions_code_it_ran_on(
        mutants: ModuleType, tmp_path: Path) -> None:
    """Crashes (a signal) are run again in a plain pytest process with the mutant
    active: one whose tests fail there is a kill, one whose tests pass survived, one
    that hangs past the limit a timeout; a check on record is not run again, and applies
    only while the function's code is the one it ran on."""
    names = [f"tasks.select.x_verdict__mutmut_{n}" for n in range(1, 6)]
    meta = tmp_path / "tasks/select.py.meta"
    meta.parent.mkdir(parents=True)
    meta.write_text(json.dumps({
        "exit_code_by_key": {names[0]: -11, names[1]: -11, names[2]: -9, names[3]: 1,
                             names[4]: -11},
        "hash_by_function_name": {"x_verdict": "v1"}}))
    (tmp_path / "mutmut-stats.json").write_text(json.dumps({
        "tests_by_mangled_function_name": {"tasks.select.x_verdict": ["tests/test_x.py"]}}))
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests/test_x.py").write_text(
        "import os, time\n"
        "def test_it():\n"
        "    mutant = os.environ['MUTANT_UNDER_TEST']\n"
        f"    if mutant == {names[4]!r}:\n"
        "        time.sleep(60)\n"
        f"    assert mutant != {names[0]!r}\n")
    (tmp_path / mutants.CRASH_CHECKS).write_text(json.dumps(
        {names[2]: {"code": 1, "function_hash": "v1"}}))  # checked before: not run again
    assert mutants.check_crashes(tmp_path, timeout_s=8) == 3
    checks = json.loads((tmp_path / mutants.CRASH_CHECKS).read_text())
    assert {name: check["code"] for name, check in checks.items()} == {
        names[0]: 1, names[1]: 0, names[2]: 1, names[4]: 36}
    assert mutants.results(tmp_path)["requirements, ranking"] == {
        names[0]: "killed", names[1]: "survived", names[2]: "killed", names[3]: "killed",
        names[4]: "timeout"}
    assert mutants.check_crashes(tmp_path, timeout_s=8) == 0  # every crash checked
    # The function's code changed (and mutmut tested its mutants again, crashing): the
    # checks were of other code.
    document = json.loads(meta.read_text())
    document["hash_by_function_name"]["x_verdict"] = "v2"
    meta.write_text(json.dumps(document))
    assert set(mutants.results(tmp_path)["requirements, ranking"].values()) == {
        "crashed", "killed"}


def test_the_score_counts_timeouts_as_kills_and_leaves_equivalent_and_untested_out(
        mutants: ModuleType) -> None:
    statuses = {"requirements, ranking": {
        "a": "killed", "b": "killed", "c": "timeout", "d": "survived", "e": "survived",
        "f": "no tests", "g": "crashed", "h": "not tested", "i": "not tested"},
                "regression gate": {"j": "killed", "k": "survived"}}
    text, score = mutants.table(statuses, {"e": "a log text", "a": "listed but killed",
                                           "h": "listed, not tested"})
    # killed 2 + hung 2 (a timeout, a crash) of 7 tested - 1 equivalent (a killed mutant
    # listed stays a kill, an untested one stays untested): 4/6. The gate's 1/2 weighs
    # 2 of 11 in scope: (9 * 4/6 + 2 * 1/2) / 11 = 7/11, not the pooled 5/8.
    assert score == pytest.approx(7 / 11)
    rows = {line.split("  ")[0]: line[22:].split() for line in text.splitlines()}
    # scope, tested, killed, hung, survived, no test, equivalent, score, 95% interval
    assert rows["requirements, ranking"] == ["9", "7", "2", "2", "1", "1", "1", "66.7%", "30%-90%"]
    # Tested whole: the score is no estimate.
    assert rows["regression gate"] == ["2", "2", "1", "0", "1", "0", "0", "50.0%", "all"]
    assert rows["all"] == ["11", "9", "3", "2", "2", "1", "1", "63.6%", "52%-75%"]
    assert max(len(line) for line in text.splitlines()) <= 80
    assert mutants.STATUS_BY_EXIT_CODE[-11] == "crashed" and mutants.STATUS_BY_EXIT_CODE[36] == "timeout"


def test_the_overall_score_weighs_each_concern_by_its_size_not_its_sample(
        mutants: ModuleType) -> None:
    tally = mutants.Tally  # scope, tested, killed, counted
    # 90% of a 1,000-mutant concern sampled 50, 50% of a 100-mutant one tested whole.
    score, low, high = mutants.stratified_score([tally(1000, 50, 45, 50), tally(100, 100, 50, 100)])
    assert score == pytest.approx((1000 * 0.9 + 100 * 0.5) / 1100)
    # Only the sampled concern adds uncertainty: sqrt(w^2 p(1-p)/(n+4) (1 - n/N)) with
    # Agresti-Coull's p = 47/54.
    margin = 1.959964 * (1000 / 1100) * (47 / 54 * 7 / 54 / 54 * 0.95) ** 0.5
    assert (low, high) == (pytest.approx(score - margin), pytest.approx(score + margin))
    # Every concern tested whole: exact.
    assert mutants.stratified_score([tally(100, 100, 90, 100), tally(10, 10, 5, 10)]) == (
        pytest.approx(95 / 110), pytest.approx(95 / 110), pytest.approx(95 / 110))
    # A perfect sample still leaves a margin; nothing tested, no score.
    _, low, high = mutants.stratified_score([tally(1000, 40, 40, 40)])
    assert 0.85 < low < 1.0 and high == 1.0
    assert mutants.stratified_score([tally(10, 0, 0, 0)]) is None


def test_a_small_concern_gets_at_least_its_share_of_the_sample(mutants: ModuleType,
                                                               tmp_path: Path) -> None:
    big = {f"tasks.select.x_verdict__mutmut_{n}": None for n in range(1000)}
    small = {f"tasks.compare.gate.x_gate__mutmut_{n}": None for n in range(40)}
    _meta(tmp_path, "tasks/select.py.meta", big)
    _meta(tmp_path, "tasks/compare/gate.py.meta", small)
    plain = mutants.untested(tmp_path, 0.05)
    assert 30 < sum(name in big for name in plain) < 75
    assert sum(name in small for name in plain) < 8
    boosted = mutants.untested(tmp_path, 0.05, at_least=20)
    # The small concern: about 20 of 40 (its own fraction, 0.5); the big one unchanged.
    assert 10 <= sum(name in small for name in boosted) <= 30
    assert [name for name in boosted if name in big] == [name for name in plain if name in big]
    assert set(plain) < set(boosted)
    assert set(mutants.untested(tmp_path, 0.05, at_least=40)) >= set(small)


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


def test_a_function_no_traced_test_reached_gets_the_tests_that_mirror_its_module(
        mutants: ModuleType, tmp_path: Path) -> None:
    """mutmut traces only the test process: what runs in a process a test starts (the
    board's predictor, the edgeflow command) would have no tests, so its mutants none."""
    for name in ("tests/tasks/device/test_predict.py", "tests/farm/test_setup.py",
                 "tests/tasks/test_release.py", "tests/flows/test_cli.py",
                 "tests/flows/cli/test_releases.py", "tests/tasks/test_other.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    mirrored = lambda module: mutants.mirrored_test_files(module, tmp_path)  # noqa: E731
    assert mirrored("tasks.device.predict") == ["tests/tasks/device/test_predict.py"]
    assert mirrored("tasks.farm.setup") == ["tests/farm/test_setup.py"]  # as the farm's sit
    assert mirrored("tasks.release.view") == ["tests/tasks/test_release.py"]  # its package's
    assert mirrored("flows.cli.experiment") == ["tests/flows/test_cli.py", "tests/flows/cli"]
    # Never the whole of tests/tasks: a module with no mirror gets none.
    assert mirrored("tasks.nowhere.module") == []

    stats = tmp_path / "mutmut-stats.json"
    traced = {"tasks.release.view.x_status_rows": ["tests/tasks/test_other.py::test_a"]}
    stats.write_text(json.dumps({"tests_by_mangled_function_name": dict(traced), "duration_by_test": {
        "tests/tasks/device/test_predict.py::test_x": 1.0,
        "tests/tasks/device/test_predict.py::test_y": 2.0,
        "tests/tasks/test_release.py::test_z": 3.0,
        "tests/flows/cli/test_releases.py::test_w": 4.0,
        "tests/tasks/test_other.py::test_a": 5.0}, "stats_time": 1.0}))
    functions = {"tasks.device.predict.x_main", "tasks.device.predict.x\u01c1Model\u01c1check",
                 "tasks.release.view.x_status_rows", "flows.cli.experiment.x_run",
                 "tasks.nowhere.module.x_f"}
    assert mutants.map_unreached(stats, functions, tmp_path) == {
        "tasks.device.predict.x_main", "tasks.device.predict.x\u01c1Model\u01c1check",
        "flows.cli.experiment.x_run"}
    mapped = json.loads(stats.read_text())["tests_by_mangled_function_name"]
    assert mapped["tasks.device.predict.x_main"] == [
        "tests/tasks/device/test_predict.py::test_x", "tests/tasks/device/test_predict.py::test_y"]
    assert mapped["flows.cli.experiment.x_run"] == ["tests/flows/cli/test_releases.py::test_w"]
    # A function the trace reached keeps its tests; one with no mirror stays without.
    assert mapped["tasks.release.view.x_status_rows"] == traced["tasks.release.view.x_status_rows"]
    assert "tasks.nowhere.module.x_f" not in mapped
    assert mutants.function_of("tasks.device.predict.x_main__mutmut_12") == "tasks.device.predict.x_main"
