"""Mutation testing of every function of tasks/ and flows/ but plot styling: `make mutants`.

Runs mutmut (pinned in requirements.lock; configured under ``[tool.mutmut]`` in
pyproject.toml: which tests) over the functions of :data:`MODULES` (all but those of
:data:`EXCLUDED`) and prints, per concern (a group of modules), how many mutants the
tests killed, how many survived, hung (timed out, or crashed the tests' process, a
crash checked by a plain run of its tests: :func:`check_crashes`) or were reached by no
test, and the mutation score: (killed + hung) / (tested -
equivalent). Equivalent mutants (a change no test can observe, such as a log text) are
listed with why in ``benchmarks/equivalent_mutants.txt`` (``<mutant name>  # why``) and
left out of the score; every other survivor is printed by name so it can be looked at
with ``.venv/bin/mutmut show NAME``.

Not part of CI: the scope holds about 23,000 mutants, a day of two cores. So a run can
test a seeded sample (``--sample 0.05``: the same mutants on every machine, about that
fraction of each concern; ``--at-least 40``: no fewer than 40 of any concern) and stop
after ``--minutes``; the table gives each score with its 95% interval, and the overall
score weighs each concern by its size, however densely it was sampled. Re-running
continues where the last run stopped and tests only the mutants without a result: new
ones, those of functions whose code changed, those a larger sample adds, and with
``--again survived`` the survivors (after a test was added). mutmut keeps its state in
mutants/.

    .venv/bin/python benchmarks/mutants.py [--no-run] [--sample FRACTION] [--at-least N]
                                 [--minutes M] [--max-children N] [--again STATUS..]
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import math
import json
import os
import shutil
import signal
import subprocess
import sys
import tomllib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tasks.core.accuracy import wilson_interval  # noqa: E402  (the project's own, not a copy)

# What is mutated: every function of tasks/ and flows/ but those of EXCLUDED, grouped by
# concern. mutmut's mutant names (``<module>.x_<function>__mutmut_<n>``, methods
# ``<module>.xǁ<class>ǁ<method>__mutmut_<n>``) are matched with fnmatch, and a mutant
# belongs to the first concern that matches it: the narrow ones come first.
MODULES: dict[str, tuple[str, ...]] = {
    "release (orchestrator)": ("tasks.release.*",),
    "release on the board": ("tasks.device.releases.*",),
    "health check (predict)": ("tasks.device.predict.*",),
    "end-to-end pipeline": ("tasks.device.pipeline.*",),
    "harness (the rest)": ("tasks.device.*",),
    "regression gate": ("tasks.compare.*",),
    "accuracy intervals": ("tasks.core.accuracy.*",),
    "requirements, ranking": ("tasks.select.*",),
    "model formats": ("tasks.models.formats.*",),
    "models, pruning": ("tasks.models.*",),
    "core contracts, files": ("tasks.core.*",),
    "configuration": ("tasks.config.*",),
    "farm: ssh, pushes": ("tasks.farm.*",),
    "targets (boards, MCUs)": ("tasks.targets.*",),
    "prepare and train": ("tasks.prepare.*", "tasks.train.*"),
    "convert, benchmark": ("tasks.convert.*", "tasks.optimize.*", "tasks.benchmark.*"),
    "tracking (MLflow)": ("tasks.track.*",),
    "cache keys, code deps": ("flows.caching.*", "flows.code_deps.*", "flows.code_manifests.*",
                              "flows.versioning.*"),
    "flows: cli, lifecycle": ("flows.*",),
}
# Left out of the scope, with why (the README lists them too).
EXCLUDED: dict[str, str] = {
    "tasks.select.plots.*": "plot styling only (colours, labels, axes): what it draws is "
                            "seen at once; the data it plots comes from tested code",
}
EQUIVALENT_FILE = Path(__file__).with_name("equivalent_mutants.txt")
CRASH_CHECKS = "crash-checks.json"  # in mutants/: mutant -> its plain run's exit code
CRASH_CHECK_TIMEOUT_S = 1800.0  # a plain run of one mutant's tests: minutes at most
STATUS_BY_EXIT_CODE = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests",
                       34: "skipped", 36: "timeout", 24: "timeout", -24: "timeout",
                       152: "timeout", 255: "timeout", 37: "killed",  # 37: type check
                       -11: "crashed", -9: "crashed"}  # the tests' process died: check_crashes


def equivalent_mutants() -> dict[str, str]:
    """Mutant name -> why it is equivalent, from :data:`EQUIVALENT_FILE`."""
    found: dict[str, str] = {}
    if EQUIVALENT_FILE.is_file():
        for line in EQUIVALENT_FILE.read_text(encoding="utf-8").splitlines():
            name, _, why = line.partition("#")
            if name.strip():
                found[name.strip()] = why.strip()
    return found


def concern_of(name: str) -> str | None:
    """The first :data:`MODULES` entry whose patterns match the mutant ``name``; None
    for a mutant of :data:`EXCLUDED` (or of no concern)."""
    if any(fnmatch.fnmatchcase(name, pattern) for pattern in EXCLUDED):
        return None
    return next((concern for concern, patterns in MODULES.items()
                 if any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)), None)


def _metas(mutants_dir: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Each of mutmut's ``.meta`` files (one per source file) with its document, whose
    ``exit_code_by_key`` maps mutant names to exit codes (None: not tested yet)."""
    for meta in sorted(mutants_dir.rglob("*.py.meta")):
        yield meta, json.loads(meta.read_text(encoding="utf-8"))


def sampled(name: str, fraction: float) -> bool:
    """Whether the mutant ``name`` is in the sample of this ``fraction``: its place in
    [0, 1) is read from the sha256 of its name, so the sample is the same on every
    machine and run, each concern gets about that fraction of its mutants, and a larger
    fraction holds every mutant of a smaller one (a run with more time extends the last)."""
    place = int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big") / 2 ** 64
    return place < fraction


def _selected(document: dict[str, Any]) -> Iterator[tuple[str, int | None, str]]:
    """The (name, exit code, concern) of the document's mutants in :data:`MODULES`."""
    for name, code in document["exit_code_by_key"].items():
        concern = concern_of(name)
        if concern is not None:
            yield name, code, concern


def _status(code: int | None) -> str:
    return "not tested" if code is None else STATUS_BY_EXIT_CODE.get(code, "suspicious")


def _short_name(mutant: str) -> str:
    """The key of a mutant's function in its ``.meta``'s ``hash_by_function_name``
    (``tasks.select.x_f__mutmut_3`` -> ``x_f``; a method's keeps its class)."""
    return function_of(mutant).rpartition(".")[2]


def results(mutants_dir: Path) -> dict[str, dict[str, str]]:
    """Per concern of :data:`MODULES`, mutant name -> status from mutmut's ``.meta``
    files, "not tested" for a mutant without a result yet. A crash is the status its
    plain run gave (:func:`check_crashes`) where one is on record for the function's
    current code. Mutants outside MODULES (excluded, or left from an older selection)
    are left out."""
    checks = _crash_checks(mutants_dir)
    by_concern: dict[str, dict[str, str]] = {concern: {} for concern in MODULES}
    for _, document in _metas(mutants_dir):
        for name, code, concern in _selected(document):
            status = _status(code)
            check = checks.get(name)
            if status == "crashed" and check is not None and check["function_hash"] == \
                    document["hash_by_function_name"].get(_short_name(name)):
                status = _status(check["code"])
            by_concern[concern][name] = status
    return {concern: found for concern, found in by_concern.items() if found}


def _crash_checks(mutants_dir: Path) -> dict[str, dict[str, Any]]:
    path = mutants_dir / CRASH_CHECKS
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def check_crashes(mutants_dir: Path, timeout_s: float = CRASH_CHECK_TIMEOUT_S) -> int:
    """Run again, each in a plain pytest process, the tests of every mutant whose tests'
    process mutmut saw die of a signal (and not checked since its function changed),
    and record their exit code in ``mutants/crash-checks.json``; how many were run.
    Forked from mutmut's fork server, a process that converts with TensorFlow or
    OpenVINO sometimes dies (SIGSEGV) whatever the mutant: one such "crash" passed all
    its 22 tests when run this way. So a crash counts as a kill only when the plain run
    fails, crashes or hangs (past ``timeout_s``) too."""
    stats_file = mutants_dir / "mutmut-stats.json"
    if not stats_file.is_file():
        return 0
    mapped = json.loads(stats_file.read_text(encoding="utf-8"))["tests_by_mangled_function_name"]
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    arguments = config["tool"]["mutmut"].get("pytest_add_cli_args", [])
    checks, count = _crash_checks(mutants_dir), 0
    for _, document in _metas(mutants_dir):
        for name, code, _ in _selected(document):
            digest = document["hash_by_function_name"].get(_short_name(name))
            if _status(code) != "crashed" or checks.get(name, {}).get("function_hash") == digest:
                continue
            tests = sorted(mapped.get(function_of(name), []))
            print(f"checking the crash of {name} ({len(tests)} tests)", flush=True)
            environment = {**os.environ, "MUTANT_UNDER_TEST": name,
                           "PYTHONPATH": str(mutants_dir.resolve())}
            try:
                exit_code = subprocess.run(
                    [sys.executable, "-m", "pytest", "-x", "-q", *arguments, *tests],
                    cwd=mutants_dir, env=environment, stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL, timeout=timeout_s).returncode
            except subprocess.TimeoutExpired:
                exit_code = 36  # mutmut's code for a timeout: a hang is a kill
            checks[name] = {"code": exit_code, "function_hash": digest}
            (mutants_dir / CRASH_CHECKS).write_text(json.dumps(checks, indent=1),
                                                    encoding="utf-8")
            count += 1
    return count


@dataclass(frozen=True)
class Tally:
    """One concern's results: how many mutants in scope, tested, killed (hung
    included) and counted (tested and not equivalent)."""

    scope: int
    tested: int
    killed: int
    counted: int

    @property
    def complete(self) -> bool:
        return self.tested == self.scope


def _tally(counts: Counter[str]) -> Tally:
    # A timeout or a crash (one a plain run confirmed: check_crashes) is a kill: the
    # mutant made the code hang, loop or die, and the tests noticed.
    scope = sum(counts.values())
    tested = scope - counts["not tested"]
    return Tally(scope, tested, counts["killed"] + counts["timeout"] + counts["crashed"],
                 tested - counts["equivalent"])


def stratified_score(tallies: list[Tally]) -> tuple[float, float, float] | None:
    """The score of the whole scope estimated from each concern's sample, weighted by the
    concern's size (concerns may be sampled at different rates: ``--at-least``), with a
    95% interval: normal, from each concern's Agresti-Coull variance and its finite
    population correction (a concern tested whole adds no uncertainty). None before any
    result."""
    tested = [tally for tally in tallies if tally.counted]
    if not tested:
        return None
    total = sum(tally.scope for tally in tested)
    score = sum(tally.scope / total * tally.killed / tally.counted for tally in tested)
    variance = 0.0
    for tally in tested:
        adjusted = (tally.killed + 2) / (tally.counted + 4)
        correction = 1 - tally.tested / tally.scope
        variance += ((tally.scope / total) ** 2 * adjusted * (1 - adjusted)
                     / (tally.counted + 4) * correction)
    margin = 1.959964 * math.sqrt(variance)
    return score, max(0.0, score - margin), min(1.0, score + margin)


def _interval(low: float, high: float, complete: bool) -> str:
    return "all" if complete else f"{low:.0%}-{high:.0%}"


def _row(label: str, counts: Counter[str], tally: Tally,
         estimate: tuple[float, float, float] | None) -> str:
    """One line of the table: counts, score and its 95% interval ("all": every mutant
    was tested, the score is no estimate)."""
    score, interval = "-", "-"
    if estimate is not None:
        score, interval = f"{estimate[0]:.1%}", _interval(estimate[1], estimate[2], tally.complete)
    return (f"{label:<22} {tally.scope:>5} {tally.tested:>6} {counts['killed']:>6} "
            f"{counts['timeout'] + counts['crashed']:>4} {counts['survived']:>4} "
            f"{counts['no tests']:>4} {counts['equivalent']:>3} {score:>6} {interval:>9}")


def table(by_concern: dict[str, dict[str, str]], equivalent: dict[str, str]) -> tuple[str, float]:
    """The per-concern table (80 columns) and the overall score. A concern's score is
    (killed + hung) / (tested - equivalent) with its 95% Wilson interval, where only a
    sample was tested; the overall one is :func:`stratified_score`."""
    header = (f"{'concern':<22} {'scope':>5} {'tested':>6} {'killed':>6} {'hung':>4} "
              f"{'surv':>4} {'none':>4} {'eq':>3} {'score':>6} {'95% CI':>9}")
    lines, total, tallies = [header, "-" * len(header)], Counter[str](), []
    for concern, statuses in by_concern.items():
        counts = Counter("equivalent" if name in equivalent
                         and status not in {"killed", "not tested"} else status
                         for name, status in statuses.items())
        tally = _tally(counts)
        total, tallies = total + counts, [*tallies, tally]
        estimate = None
        if tally.counted:
            estimate = (tally.killed / tally.counted, *wilson_interval(tally.killed, tally.counted))
        lines.append(_row(concern, counts, tally, estimate))
    overall = stratified_score(tallies)
    lines += ["-" * len(header), _row("all", total, _tally(total), overall)]
    return "\n".join(lines), (overall[0] if overall else 1.0)


def refresh_copies(root: Path = ROOT) -> None:
    """Bring mutants/ up to date where mutmut does not: copy ``also_copy`` of
    ``[tool.mutmut]`` again, remove the copies of source files that no longer exist (a
    module turned package) and the builds the tests kept from the last run."""
    config = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    target = root / "mutants"
    if not target.is_dir():
        return  # mutmut's first run copies them itself
    for folder in config["tool"]["mutmut"].get("source_paths", []):
        for copy in list((target / folder).rglob("*.py")):
            if not (root / copy.relative_to(target)).exists():
                copy.unlink()
                copy.with_name(copy.name + ".meta").unlink(missing_ok=True)
    # Builds the tests keep for one run (tests.helpers.built_once_per_mutation_run): the
    # code or the tests may have changed since.
    shutil.rmtree(target / ".tests-built-once", ignore_errors=True)
    for name in config["tool"]["mutmut"].get("also_copy", []):
        source, copy = root / name, target / name
        if source.is_dir():
            shutil.rmtree(copy, ignore_errors=True)
            shutil.copytree(source, copy)
        elif source.is_file():
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy)


# mutmut's own step that (re)writes mutants/ from the sources: a function whose code
# changed gets its mutants untested again (mutmut 3.8.1, pinned: its internal API).
GENERATE = ("from mutmut.__main__ import copy_also_copy_files, copy_src_dir, create_mutants, "
            "setup_source_paths\n"
            "copy_src_dir(); copy_also_copy_files(); setup_source_paths(); create_mutants(2)")


def mirrored_test_files(module: str, root: Path = ROOT) -> list[str]:
    """The test files (and folders) that mirror ``module``, the nearest that exist:
    ``tasks.device.predict`` -> ``tests/tasks/device/test_predict.py`` (and a folder
    ``tests/tasks/device/predict/``; ``tasks.farm.setup`` -> ``tests/farm/test_setup.py``,
    as the farm's and the targets' tests sit); where none exists, its package's
    (``tasks.release.view`` -> ``tests/tasks/test_release.py``), up to the package below
    ``tasks`` or ``flows`` (never the whole of ``tests/tasks``)."""
    parts = module.split(".")
    for depth in range(len(parts), 1, -1):
        found = []
        for prefix in (parts[:depth], parts[1:depth]):  # tests/tasks/farm or tests/farm
            *folders, name = prefix
            found += [path.as_posix() for path in (Path("tests", *folders, f"test_{name}.py"),
                                                   Path("tests", *prefix))
                      if prefix and (root / path).exists()]
        if found:
            return found
    return []


def map_unreached(stats_file: Path, functions: set[str], root: Path = ROOT) -> set[str]:
    """Give each of ``functions`` (mutmut's names: ``<module>.x_<function>``) that no
    test reached in mutmut's map (``stats_file``) the tests of its mirrored test files;
    which ones got tests. mutmut maps tests to functions by tracing the test process
    only: code that runs only in a process the tests start (the board's harness and
    predictor, the ``edgeflow`` command) is reached by no test in its map, and its
    mutants would never be tested, although the tests run them."""
    stats = json.loads(stats_file.read_text(encoding="utf-8"))
    mapped: dict[str, list[str]] = stats["tests_by_mangled_function_name"]
    tests = list(stats["duration_by_test"])
    given: set[str] = set()
    for function in sorted(functions):
        if mapped.get(function):
            continue
        files = mirrored_test_files(function.rsplit(".", 1)[0], root)
        chosen = sorted(test for test in tests for path in files
                        if test.partition("::")[0] == path or test.startswith(path + "/"))
        if chosen:
            mapped[function] = chosen
            given.add(function)
    if given:
        stats_file.write_text(json.dumps(stats), encoding="utf-8")
    return given


def function_of(mutant: str) -> str:
    """mutmut's name of the function a mutant belongs to (``...x_f__mutmut_3`` ->
    ``...x_f``)."""
    return mutant.rpartition("__mutmut_")[0]


def untested(mutants_dir: Path, fraction: float = 1.0, at_least: int = 0) -> list[str]:
    """The mutants of :data:`MODULES` in the sample that have no result yet, by name: of
    each concern, this ``fraction`` of its mutants, or ``at_least`` that many where the
    fraction would sample fewer (a small concern gets a score worth reading)."""
    found = [(name, code, concern) for _, document in _metas(mutants_dir)
             for name, code, concern in _selected(document)]
    sizes = Counter(concern for _, _, concern in found)
    return sorted(name for name, code, concern in found
                  if code is None and sampled(name, max(fraction, at_least / sizes[concern])))


def forget(mutants_dir: Path, statuses: set[str], keep: frozenset[str] = frozenset()) -> int:
    """Drop the results of the mutants of :data:`MODULES` whose status is in
    ``statuses`` (to test them again after a test was added), but those in ``keep``
    (the listed equivalent ones); how many."""
    count = 0
    for meta, document in _metas(mutants_dir):
        again = [name for name, code, _ in _selected(document) if code is not None
                 and name not in keep and _status(code) in statuses]
        if again:
            document["exit_code_by_key"].update(dict.fromkeys(again))
            meta.write_text(json.dumps(document, indent=4), encoding="utf-8")
            count += len(again)
    return count


def run_mutmut(max_children: int, again: set[str], fraction: float, at_least: int,
               minutes: float | None) -> None:
    """Test the mutants of :data:`MODULES` in the sample of this ``fraction`` that have
    no result (after the code changed, or ``again``: those of these statuses), and only
    those: mutmut, given names, tests every mutant they match, results or not. After
    ``minutes`` mutmut is interrupted as Ctrl-C does: the results so far are kept, and
    the next run goes on from there."""
    refresh_copies()
    # mutmut's copies in mutants/ are what the tests import, and what the processes they
    # start import too (the `edgeflow` script, `dvc exp run`'s steps, a deployment): the
    # installed package points at the repository's code, whose cache keys differ, and
    # whose mistakes no mutant would make.
    environment = {**os.environ, "PYTHONPATH": str(ROOT / "mutants")}
    python = Path(sys.executable)
    subprocess.run([str(python), "-c", GENERATE], cwd=ROOT, env=environment, check=True,
                   stdout=subprocess.DEVNULL)
    stats = ROOT / "mutants" / "mutmut-stats.json"
    if stats.is_file():  # mutmut's map of tests to functions, from an earlier run
        functions = {function_of(name) for _, document in _metas(ROOT / "mutants")
                     for name, _, _ in _selected(document)}
        given = map_unreached(stats, functions)
        if given:
            print(f"{len(given)} functions no test process reached get their mirrored "
                  "tests", flush=True)
            again = again | {"no tests"}  # their mutants were recorded as such
    if again:
        count = forget(ROOT / "mutants", again, frozenset(equivalent_mutants()))
        print(f"testing again: {count} mutants", flush=True)
    names = untested(ROOT / "mutants", fraction, at_least)
    print(f"{len(names)} mutants to test", flush=True)
    if not names:
        return
    log = ROOT / "mutants" / "mutmut.log"
    print(f"mutmut's own output: {log.relative_to(ROOT)}", flush=True)
    with log.open("w", encoding="utf-8") as output:
        mutmut = subprocess.Popen([str(python.with_name("mutmut")), "run", "--max-children",
                                   str(max_children), *names], cwd=ROOT, stdout=output,
                                  stderr=subprocess.STDOUT, env=environment)
        try:
            mutmut.wait(timeout=None if minutes is None else minutes * 60)
        except subprocess.TimeoutExpired:
            print(f"stopping after {minutes:g} minutes; the next run goes on", flush=True)
            # Only mutmut's own process: it stops its workers and keeps the finished
            # results (an interrupted worker's exit would otherwise be read as a result).
            mutmut.send_signal(signal.SIGINT)
            mutmut.wait()
            return
    if mutmut.returncode != 0:
        # mutmut stops at its first failing test when it maps tests to functions, and
        # when the unmutated tests fail: its last lines say which.
        tail = log.read_text(encoding="utf-8", errors="replace").replace("\r", "\n")
        raise SystemExit(f"mutmut stopped (exit {mutmut.returncode}); the end of {log}:\n"
                         + "\n".join(tail.splitlines()[-15:]))


def _fraction(text: str) -> float:
    """A --sample value: a number in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} is no fraction: give a number above 0 "
                                         "and at most 1 (0.05 tests about 5% of the mutants)")
    return value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-run", action="store_true", help="only summarise the last run")
    parser.add_argument("--max-children", type=int, default=2, help="parallel mutants")
    parser.add_argument("--sample", type=_fraction, default=1.0, metavar="FRACTION",
                        help="test only this fraction of each concern's mutants (the same "
                             "ones on every run; a larger one extends a smaller one)")
    parser.add_argument("--at-least", type=int, default=0, metavar="N",
                        help="sample at least N mutants of each concern (all of a smaller one)")
    parser.add_argument("--minutes", type=float, help="stop testing after this long")
    parser.add_argument("--again", nargs="*", default=[],
                        choices=["survived", "timeout", "crashed", "suspicious", "no tests",
                                 "killed"],
                        help="test the mutants of these statuses again")
    args = parser.parse_args()
    if not args.no_run:
        run_mutmut(args.max_children, set(args.again), args.sample, args.at_least,
                   args.minutes)
        check_crashes(ROOT / "mutants")
    by_concern = results(ROOT / "mutants")
    if not by_concern:
        print("no mutmut results in mutants/: run without --no-run first")
        return 1
    equivalent = equivalent_mutants()
    text, _ = table(by_concern, equivalent)
    print(text)
    survivors = sorted(name for statuses in by_concern.values()
                       for name, status in statuses.items()
                       if status in {"survived", "no tests"} and name not in equivalent)
    if survivors:
        print(f"\n{len(survivors)} not killed (see `.venv/bin/mutmut show NAME`):")
        print("\n".join(f"  {name}" for name in survivors))
    return 0


if __name__ == "__main__":
    sys.exit(main())
