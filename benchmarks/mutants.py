"""Mutation testing of the modules whose mistakes users would feel most: `make mutants`.

Runs mutmut (pinned in requirements.lock; configured under ``[tool.mutmut]`` in
pyproject.toml: which fast tests) over the functions of :data:`MODULES` and prints, per
concern (a group of functions), how many mutants the tests killed, how many survived,
hung (timed out, or crashed the tests' process) or were reached by no test, and the
mutation score: (killed + hung) / (all - equivalent). Equivalent mutants (a change no
test can observe, such as a log text) are listed with why in
``benchmarks/equivalent_mutants.txt`` (``<mutant name>  # why``) and left out of the
score; every other survivor is printed by name so it can be looked at with
``.venv/bin/mutmut show NAME``.

Not part of CI: on two cores the whole selection takes about 1.5 hours. Re-running
continues where the last run stopped and tests only the mutants without a result: new
ones, those of functions whose code changed, and with ``--again survived`` the
survivors (after a test was added). mutmut keeps its state in mutants/.

    .venv/bin/python benchmarks/mutants.py [--no-run] [--max-children N] [--again STATUS..]
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shutil
import subprocess
import sys
import tomllib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# What is mutated: mutmut's mutant names (``<module>.x_<function>__mutmut_<n>``) matched
# with fnmatch: the functions that make each decision users rely on, not the code around
# them (report rendering, file discovery, runtime loaders), whose mistakes show at once.
MODULES: dict[str, tuple[str, ...]] = {
    "requirement checks and ranking": tuple(f"tasks.select.x_{name}__mutmut_*" for name in (
        "_min_accuracy", "_max_accuracy_drop", "_max_latency", "_min_frame_rate", "_max_size",
        "_max_memory", "_fits_flash", "_fits_ram", "_ran_as_declared", "_mcu_measures",
        "_harness_measures", "evaluate",
        "flag_slow_quantized", "verdict")) + tuple(
        f"tasks.select.ranking.x_{name}__mutmut_*" for name in (
            "rank_value", "choose", "recommend", "_relatively_close", "_reason")),
    "harness statistics and input checks": ("tasks.device.latency.x_latency_summary*",
                                            "tasks.device.timing.x_timed_loop*",
                                            "tasks.device.harness.x_verify_inputs*"),
    "agreement checks": ("tasks.convert.x_check_variant*",
                         "tasks.convert.x__refuse_disagreements*"),
    "cache keys": ("flows.caching.x_input_key*", "flows.caching.x_visible_tree_hash*",
                   "flows.caching.x__location_free*", "flows.caching.x_outputs_hash*",
                   "flows.caching.xǁStepContentPolicyǁcompute_key*",
                   "flows.code_deps.x_module_closure*", "flows.code_deps.x_imported_names*",
                   "flows.code_deps.x_library_versions*"),
    "verified pushes": ("tasks.farm.push.x_check_then_run*", "tasks.farm.push.x_push_files*",
                        "tasks.farm.push.x_verify_command*",
                        "tasks.farm.push.x_sha256_list*", "tasks.farm.push.x_place_files*"),
    "device protocol": ("tasks.farm.protocol.*",),
    "size limits and host keys": ("tasks.farm.transports.x_read_within*",
                                  "tasks.farm.transports.xǁSshConnectionǁread_file*",
                                  "tasks.farm.transports.xǁLocalConnectionǁread_file*",
                                  "tasks.farm.trust.*"),
}
EQUIVALENT_FILE = Path(__file__).with_name("equivalent_mutants.txt")
STATUS_BY_EXIT_CODE = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests",
                       34: "skipped", 36: "timeout", 24: "timeout", -24: "timeout",
                       152: "timeout", 255: "timeout", 37: "killed",  # 37: type check
                       -11: "crashed", -9: "crashed"}  # the tests' process died (a runaway loop)


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
    """The :data:`MODULES` entry whose patterns match the mutant ``name``, if any."""
    return next((concern for concern, patterns in MODULES.items()
                 if any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)), None)


def _metas(mutants_dir: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Each of mutmut's ``.meta`` files (one per source file) with its document, whose
    ``exit_code_by_key`` maps mutant names to exit codes (None: not tested yet)."""
    for meta in sorted(mutants_dir.rglob("*.py.meta")):
        yield meta, json.loads(meta.read_text(encoding="utf-8"))


def _selected(document: dict[str, Any]) -> Iterator[tuple[str, int | None, str]]:
    """The (name, exit code, concern) of the document's mutants that :data:`MODULES`
    selects."""
    for name, code in document["exit_code_by_key"].items():
        concern = concern_of(name)
        if concern is not None:
            yield name, code, concern


def results(mutants_dir: Path) -> dict[str, dict[str, str]]:
    """Per concern of :data:`MODULES`, mutant name -> status, from mutmut's ``.meta``
    files. Mutants outside MODULES (generated, or left from an older selection) and
    mutants not run yet are left out."""
    by_concern: dict[str, dict[str, str]] = {concern: {} for concern in MODULES}
    for _, document in _metas(mutants_dir):
        for name, code, concern in _selected(document):
            if code is not None:
                by_concern[concern][name] = STATUS_BY_EXIT_CODE.get(code, "suspicious")
    return {concern: found for concern, found in by_concern.items() if found}


def table(by_concern: dict[str, dict[str, str]], equivalent: dict[str, str]) -> tuple[str, float]:
    """The per-concern table and the overall score (killed / non-equivalent)."""
    header = f"{'concern':<36} {'mutants':>7} {'killed':>6} {'survived':>8} {'hung':>7} " \
             f"{'no test':>7} {'equiv.':>6} {'score':>6}"
    lines, killed_all, counted_all = [header, "-" * len(header)], 0, 0
    for concern, statuses in by_concern.items():
        counts = Counter("equivalent" if name in equivalent and status != "killed" else status
                         for name, status in statuses.items())
        counted = sum(counts.values()) - counts["equivalent"]
        # A timeout or a crash is a kill: the mutant made the code hang, loop or exhaust
        # memory, and the tests noticed.
        hung = counts["timeout"] + counts["crashed"]
        killed = counts["killed"] + hung
        killed_all, counted_all = killed_all + killed, counted_all + counted
        score = killed / counted if counted else 1.0
        lines.append(f"{concern:<36} {sum(counts.values()):>7} {counts['killed']:>6} "
                     f"{counts['survived']:>8} {hung:>7} {counts['no tests']:>7} "
                     f"{counts['equivalent']:>6} {score:>6.1%}")
    overall = killed_all / counted_all if counted_all else 1.0
    lines.append(f"{'all':<36} {counted_all:>7} {'':>6} {'':>8} {'':>7} {'':>7} {'':>6} "
                 f"{overall:>6.1%}")
    return "\n".join(lines), overall


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


def untested(mutants_dir: Path) -> list[str]:
    """The mutants of :data:`MODULES` that have no result yet, by name."""
    return sorted(name for _, document in _metas(mutants_dir)
                  for name, code, _ in _selected(document) if code is None)


def forget(mutants_dir: Path, statuses: set[str], keep: frozenset[str] = frozenset()) -> int:
    """Drop the results of the mutants of :data:`MODULES` whose status is in
    ``statuses`` (to test them again after a test was added), but those in ``keep``
    (the listed equivalent ones); how many."""
    count = 0
    for meta, document in _metas(mutants_dir):
        again = [name for name, code, _ in _selected(document) if code is not None
                 and name not in keep and STATUS_BY_EXIT_CODE.get(code, "suspicious") in statuses]
        if again:
            document["exit_code_by_key"].update(dict.fromkeys(again))
            meta.write_text(json.dumps(document, indent=4), encoding="utf-8")
            count += len(again)
    return count


def run_mutmut(max_children: int, again: set[str]) -> None:
    """Test the mutants of :data:`MODULES` that have no result (after the code changed,
    or ``again``: those of these statuses), and only those: mutmut, given names, tests
    every mutant they match, results or not."""
    refresh_copies()
    # mutmut's copy in mutants/ must be what the tests import, not a PYTHONPATH's.
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    python = Path(sys.executable)
    subprocess.run([str(python), "-c", GENERATE], cwd=ROOT, env=environment, check=True,
                   stdout=subprocess.DEVNULL)
    if again:
        count = forget(ROOT / "mutants", again, frozenset(equivalent_mutants()))
        print(f"testing again: {count} mutants", flush=True)
    names = untested(ROOT / "mutants")
    print(f"{len(names)} mutants to test", flush=True)
    if names:
        subprocess.run([str(python.with_name("mutmut")), "run", "--max-children",
                        str(max_children), *names], cwd=ROOT, check=False,
                       stdout=subprocess.DEVNULL, env=environment)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-run", action="store_true", help="only summarise the last run")
    parser.add_argument("--max-children", type=int, default=2, help="parallel mutants")
    parser.add_argument("--again", nargs="*", default=[],
                        choices=["survived", "timeout", "no tests", "killed"],
                        help="test the mutants of these statuses again")
    args = parser.parse_args()
    if not args.no_run:
        run_mutmut(args.max_children, set(args.again))
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
