"""What a step's code is, derived from the source so that it cannot drift from it.

A step's work starts in its entry module (``tasks.train`` for train). Its *closure* is
every project module that work can execute: the entry, every project module any of
them imports, and the ``__init__.py`` of every package on the way (importing
``tasks.models.formats.tflite`` runs ``tasks/models/__init__.py`` and
``tasks/models/formats/__init__.py``). Sources are parsed with :mod:`ast`, never
imported, and every import statement counts wherever it stands: at the top, inside a
function (heavy libraries and some project modules are imported lazily), under
``TYPE_CHECKING``. ``from X import Y`` counts ``X.Y`` when that is a module, and
relative imports are resolved against the importing module's package. Counting an
import that a given run never reaches only re-runs a step once too often; missing one
would reuse a stale result.

Code that is loaded by name or shipped instead of imported (``tasks/device/``: imported
by ``importlib`` and pushed to boards, with scripts run by path; see
:mod:`tasks.core.device_code`) is in the closure of every step whose closure holds the
module that loads it: :data:`LOADED_BY_PATH`; but an importer that uses one module of it
alone (:data:`NARROWED`) brings only that one.

Files that are no module but that a module's code reads from its own package (the C
sources, headers and linker script a firmware is compiled from) are declared by that
module, where its code names them: a module-level ``CODE_DATA = ("templates",)`` (a tuple
of string literals; paths relative to the module's folder; a folder brings every file
under it but hidden names and ``__pycache__``). They are in the closure of every step
whose closure holds the module, so editing one re-runs those steps as editing the module
would (:data:`DATA_DECLARATION`).

The same walk collects the top-level names of the third-party modules imported (not
the standard library, not the project): :func:`library_versions` maps them to installed
distributions and their versions.

Used by the Prefect cache key (:mod:`flows.caching`) and ``dvc.yaml`` deps
(:func:`flows.dvc_yaml.dvc_stage`): one derivation for both.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from tasks.config import params
from tasks.core import device_code
from tasks.prepare import preprocessing
from tasks.core.files import Signature, settled, stat_signature

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
PROJECT_PACKAGES = ("tasks", "flows")
# Loader module -> the folder whose .py files it loads by name or ships (repo-relative);
# where the device code lives is device_code's to say.
LOADED_BY_PATH = {Path(device_code.__file__).resolve().relative_to(PACKAGE_ROOT):
                  device_code.DEVICE_DIR.relative_to(PACKAGE_ROOT),
                  # The registry of kinds of task imports the kinds of its folder by name.
                  (device_code.DEVICE_DIR / device_code.KINDS / "__init__.py")
                  .relative_to(PACKAGE_ROOT):
                  (device_code.DEVICE_DIR / device_code.KINDS).relative_to(PACKAGE_ROOT)}
# Importer -> (a loader it imports, the one module of the loader's folder it uses): its
# import of the loader does not bring the loader's whole folder. prepare's pre-processing
# uses device_code.preprocess() alone, the configuration (data.task's check), train
# (the reference's per-sample results) and the accuracy arithmetic (the reference's
# score) device_code.task_kinds() alone, so editing the
# harness does not re-run training (tests/flows/test_code_deps.py checks that each uses
# nothing else of device_code).
_KINDS_MODULE = f"{device_code.PACKAGE}.{device_code.KINDS}"
NARROWED = {Path(preprocessing.__file__).resolve().relative_to(PACKAGE_ROOT):
            (device_code.__name__, f"{device_code.PACKAGE}.{device_code.PREPROCESS_PATH.stem}"),
            Path(params.__file__).resolve().relative_to(PACKAGE_ROOT):
            (device_code.__name__, _KINDS_MODULE),
            # (tasks.train is not imported here: it imports Keras.)
            Path("tasks", "train", "__init__.py"): (device_code.__name__, _KINDS_MODULE),
            # The reference's score as its kind scores it (train, convert, select).
            Path("tasks", "core", "accuracy.py"): (device_code.__name__, _KINDS_MODULE),
            Path("tasks", "train", "detection.py"): (device_code.__name__, _KINDS_MODULE),
            # A pruned model's reference and a pruned detector's epochs, scored by its kind.
            Path("tasks", "optimize.py"): (device_code.__name__, _KINDS_MODULE),
            Path("tasks", "models", "pruning", "detection.py"):
            (device_code.__name__, _KINDS_MODULE)}
# The module-level name under which a module declares the files of its package that its
# code reads (see the module docstring).
DATA_DECLARATION = "CODE_DATA"
# Recorded in a key for a module imported but not installed (an optional runtime the
# code tries): installing it later changes what runs, so it changes the key.
NOT_INSTALLED = "not installed"


@dataclass(frozen=True)
class CodeClosure:
    """``files``: repo-relative paths of the project files (modules and the files they
    declare they read), sorted. ``libraries``:
    top-level names of the third-party modules they import, sorted."""

    files: tuple[Path, ...]
    libraries: tuple[str, ...]


def module_file(name: str, root: Path) -> Path | None:
    """The repo-relative file of module ``name`` (a module or a package's
    ``__init__.py``) under ``root``; None when there is none."""
    # Strings, not Path objects, until one is found: a closure looks up hundreds of names.
    base = name.replace(".", os.sep)
    for candidate in (base + ".py", os.path.join(base, "__init__.py")):
        if os.path.isfile(os.path.join(root, candidate)):
            return Path(candidate)
    return None


def module_name(path: Path) -> str:
    """The dotted name of the module in repo-relative ``path``."""
    parts = path.with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@lru_cache(maxsize=None)
def _imports_of(source: str, name: str, is_package: bool) -> tuple[str, ...]:
    # Steps share most of their modules: each source is looked up once per process (keyed
    # on its text, so an edited file is parsed again), in the kept imports first.
    kept = _kept_imports()
    key = hashlib.sha256(json.dumps([IMPORTS_FORMAT, sys.version_info[:2], name, is_package,
                                     source]).encode()).hexdigest()
    if key not in kept:
        kept[key] = list(imported_names(source, name, is_package))
        _UNSAVED_IMPORTS.add(key)
    return tuple(kept[key])


def _save_kept_imports() -> None:
    if _UNSAVED_IMPORTS:
        _keep_json(IMPORTS_CACHE, dict(list(_kept_imports().items())[-KEPT_IMPORTS_LIMIT:]))
        _UNSAVED_IMPORTS.clear()


# Each parsed source's imports, kept between processes (a no-op run is a new process:
# parsing every step's sources was a twentieth of it) under the digest of all they
# depend on: the format below, the parser's Python version, the module's name, whether
# it is a package, and its text. The newest entries are kept, within a limit.
IMPORTS_CACHE = PACKAGE_ROOT / ".edgeflow" / "cache" / "imports.json"
IMPORTS_FORMAT = 1
KEPT_IMPORTS_LIMIT = 2000
_UNSAVED_IMPORTS: set[str] = set()


@lru_cache(maxsize=1)
def _kept_imports() -> dict[str, list[str]]:
    kept = _read_json(IMPORTS_CACHE)
    return kept if isinstance(kept, dict) else {}


def _read_json(path: Path) -> object:
    """The JSON document kept at ``path``; None when there is none or it is unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _keep_json(path: Path, document: object) -> None:
    """Write ``document`` to ``path`` whole or not at all (staged, then renamed: a
    concurrent reader sees the old file or the new one); a read-only checkout keeps
    nothing, and the work is done again next time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_name(f".{path.name}.{os.getpid()}")
        staging.write_text(json.dumps(document), encoding="utf-8")
        staging.replace(path)
    except OSError:
        pass


# CPython 3.11 keeps the AST constructor's recursion depth in per-interpreter state: two
# threads parsing at once (Prefect runs a flow's tasks in threads, each hashing its code
# closure) can fail with "SystemError: AST constructor recursion depth mismatch"
# (python/cpython#106905), as a deployed run did under mutation testing. One parse at a
# time.
_PARSING = threading.Lock()


def imported_names(source: str, name: str, is_package: bool) -> Iterator[str]:
    """Absolute names of every module an import statement anywhere in ``source`` (the
    module ``name``) may import; for ``from X import Y``, both ``X`` and ``X.Y`` (the
    caller keeps the ones that are modules)."""
    package = name if is_package else name.rpartition(".")[0]
    with _PARSING:
        tree = ast.parse(source)
    for node in _statements(tree.body):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                # `from ..x import y` in package a.b: a.x (one level up per extra dot).
                parts = package.split(".")
                anchor = parts[:len(parts) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names if alias.name != "*")


def declared_data(source: str, name: str) -> tuple[str, ...]:
    """The paths (relative to its folder) that module ``name``, whose text is ``source``,
    declares in its module-level :data:`DATA_DECLARATION`; none without one. A
    declaration that is not a tuple or list of relative paths as string literals, each
    inside the module's folder, is a ValueError: what it names must be known without
    running it."""
    if DATA_DECLARATION not in source:  # nearly every module: no second parse
        return ()
    return _declared_data(source, name)


@lru_cache(maxsize=None)
def _declared_data(source: str, name: str) -> tuple[str, ...]:
    with _PARSING:
        tree = ast.parse(source)
    for node in tree.body:
        targets = (node.targets if isinstance(node, ast.Assign)
                   else [node.target] if isinstance(node, ast.AnnAssign) else [])
        if not any(isinstance(target, ast.Name) and target.id == DATA_DECLARATION
                   for target in targets):
            continue
        value = node.value
        paths = [element.value for element in getattr(value, "elts", ())
                 if isinstance(element, ast.Constant) and isinstance(element.value, str)]
        if (not isinstance(value, (ast.Tuple, ast.List)) or len(paths) != len(value.elts)
                or any(not path or os.path.isabs(path) or ".." in Path(path).parts
                       for path in paths)):
            raise ValueError(f"{name}: {DATA_DECLARATION} must be a tuple of string literals, "
                             f"each a path inside the module's folder (the code closure "
                             f"reads it without running the module)")
        return tuple(paths)
    return ()


# The fields of a statement that hold statements (a function's body, an if's else, a
# try's handlers, a match's cases); an import is a statement, so nothing else is visited.
STATEMENT_FIELDS = ("body", "orelse", "finalbody", "handlers", "cases")


def _statements(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Every statement in ``body``, nested ones included (about a third of the time of
    ``ast.walk``, which visits every expression too)."""
    pending = list(body)
    while pending:
        node = pending.pop()
        yield node
        for field in STATEMENT_FIELDS:
            pending.extend(getattr(node, field, ()))


def _packages_on_the_way(name: str) -> Iterator[str]:
    parts = name.split(".")
    yield from (".".join(parts[:end]) for end in range(1, len(parts)))


def module_closure(entry: str, root: Path = PACKAGE_ROOT,
                   packages: tuple[str, ...] = PROJECT_PACKAGES,
                   loaded_by_path: dict[Path, Path] = LOADED_BY_PATH,
                   narrowed: dict[Path, tuple[str, str]] = NARROWED) -> CodeClosure:
    """The closure of module ``entry`` in the project at ``root`` whose top-level
    packages are ``packages`` (see the module docstring). A project name that is no
    module (``X.Y`` where ``Y`` is a class) is not a file and is left out.

    Walked once per process while every file the walk read or looked for keeps its
    :func:`~tasks.core.files.stat_signature` (a run asks for each step's closure several
    times: the checks before Prefect starts, each cache key)."""
    memo_key = (entry, str(root), packages, tuple(sorted(loaded_by_path.items())),
                tuple(sorted(narrowed.items())))
    known = _WALKS.get(memo_key)
    if known is not None and known.still_holds():
        return known.closure
    walk = _walk(entry, root, packages, loaded_by_path, narrowed)
    if all(settled(signature) for signature in walk.looked_at.values()):
        _WALKS[memo_key] = walk
    return walk.closure


@dataclass(frozen=True)
class _Walk:
    """A closure with what it was derived from: the signature of every file the walk
    read or looked for (None: not there), the ``.py`` files of each folder loaded by
    path, and the files of each path a module declares it reads."""

    closure: CodeClosure
    looked_at: dict[str, Signature | None]
    listed: dict[Path, tuple[Path, ...]]
    declared: dict[Path, tuple[Path, ...]]

    def still_holds(self) -> bool:
        return (all(stat_signature(path) == signature
                    for path, signature in self.looked_at.items())
                and all(_python_files(folder) == files for folder, files in self.listed.items())
                and all(_data_files(target) == files for target, files in self.declared.items()))


_WALKS: dict[tuple[object, ...], _Walk] = {}


def _python_files(target: Path) -> tuple[Path, ...]:
    return (target,) if target.is_file() else tuple(sorted(target.rglob("*.py")))


def _data_files(target: Path) -> tuple[Path, ...]:
    """The file ``target``, or every file under the folder ``target`` but hidden names and
    ``__pycache__``; none when it is neither."""
    if target.is_file():
        return (target,)
    return tuple(sorted(path for path in target.rglob("*") if path.is_file() and not any(
        part.startswith(".") or part == "__pycache__"
        for part in path.relative_to(target).parts)))


def _walk(entry: str, root: Path, packages: tuple[str, ...],
          loaded_by_path: dict[Path, Path], narrowed: dict[Path, tuple[str, str]]) -> _Walk:
    files: set[Path] = set()
    libraries: set[str] = set()
    looked_at: dict[str, Signature | None] = {}
    listed: dict[Path, tuple[Path, ...]] = {}
    declared: dict[Path, tuple[Path, ...]] = {}
    # A name is looked up once (X and X.Y come from every from-import): its file, if any.
    seen: dict[str, Path | None] = {}
    expanded: set[Path] = set()
    # (name, reached only through a narrowed import: a loader's folder is not brought)
    pending: list[tuple[str, bool]] = [(entry, False)]

    def bring_folder(path: Path) -> None:
        if path in loaded_by_path and path not in expanded:  # a folder of modules, or one file
            expanded.add(path)
            target = root / loaded_by_path[path]
            listed[target] = loaded = _python_files(target)
            pending.extend((module_name(module.relative_to(root)), False) for module in loaded)

    while pending:
        name, narrow = pending.pop()
        if name in seen:
            known = seen[name]
            if known is not None and not narrow:
                bring_folder(known)
            continue
        seen[name] = None
        top = name.partition(".")[0]
        if top not in packages:
            if top and top not in sys.stdlib_module_names:
                libraries.add(top)
            continue
        path = module_file(name, root)
        base = os.path.join(root, name.replace(".", os.sep))
        for candidate in (base + ".py", os.path.join(base, "__init__.py")):
            looked_at[candidate] = stat_signature(candidate)
        if path is None:
            continue
        seen[name] = path
        files.add(path)
        pending.extend((package, False) for package in _packages_on_the_way(name))
        source = (root / path).read_text(encoding="utf-8")
        for data in declared_data(source, name):
            target = root / path.parent / data
            declared[target] = found = _data_files(target)
            files.update(file.relative_to(root) for file in found)
        loader, used = narrowed.get(path, ("", ""))
        pending.extend((imported, bool(loader) and (imported == loader
                                                     or imported.startswith(f"{loader}.")))
                       for imported in _imports_of(source, name, path.name == "__init__.py"))
        if used:
            pending.append((used, False))
        if not narrow:
            bring_folder(path)
    _save_kept_imports()
    return _Walk(CodeClosure(tuple(sorted(files)), tuple(sorted(libraries))), looked_at, listed,
                 declared)


# Where the scan of installed distributions is kept between processes (a no-op run is
# a new process: the scan was a fifth of its time), under the names of the metadata
# folders on sys.path it was made from: installing, upgrading or removing a
# distribution adds, renames or removes a ``NAME-VERSION.dist-info`` folder. One file
# per such state (the CLI and a worker's flow run have different sys.path entries).
DISTRIBUTIONS_CACHE = PACKAGE_ROOT / ".edgeflow" / "cache" / "distributions"
METADATA_SUFFIXES = (".dist-info", ".egg-info", ".egg-link")


def _search_path_state() -> list[list[object]]:
    """Each sys.path entry with the sorted names of the distribution metadata in it."""
    state: list[list[object]] = []
    for entry in sys.path:
        try:
            names = sorted(name for name in os.listdir(entry or ".")
                           if name.endswith(METADATA_SUFFIXES))
        except OSError:  # not a folder (a zip), or gone
            names = []
        state.append([entry, names])
    return state


@dataclass(frozen=True)
class Installed:
    """Installed distributions: which provide each top-level module, and their versions."""

    by_module: dict[str, list[str]]
    versions: dict[str, str]


def _scan() -> Installed:
    versions: dict[str, str] = {}
    for distribution in metadata.distributions():  # sys.path order: the first one wins
        versions.setdefault(distribution.metadata["Name"], distribution.version)
    return Installed(metadata.packages_distributions(), versions)


@lru_cache(maxsize=1)
def installed() -> Installed:
    """The scan of installed distributions, from :data:`DISTRIBUTIONS_CACHE` when one was
    made from the same distributions on the same sys.path as now; scanned (about 0.4 s)
    and kept there otherwise. Once per process."""
    state = _search_path_state()
    digest = hashlib.sha256(json.dumps(state).encode()).hexdigest()[:16]
    cache = DISTRIBUTIONS_CACHE / f"{digest}.json"
    kept = _read_json(cache)
    try:
        if kept["sys_path"] == state:  # type: ignore[index]
            return Installed(kept["by_module"], kept["versions"])  # type: ignore[index]
    except (KeyError, TypeError):
        pass
    scan = _scan()
    _keep_json(cache, {"sys_path": state, "by_module": scan.by_module,
                       "versions": scan.versions})
    return scan


def distribution_version(distribution: str) -> str:
    """The installed version of ``distribution``."""
    known = installed().versions.get(distribution)
    return known if known is not None else metadata.version(distribution)


def library_versions(libraries: tuple[str, ...]) -> dict[str, str]:
    """``{distribution: version}`` of the distributions that provide the top-level
    modules ``libraries``, sorted by name; a module no installed distribution provides
    maps its own name to :data:`NOT_INSTALLED`."""
    by_module = installed().by_module
    versions: dict[str, str] = {}
    for library in libraries:
        distributions = by_module.get(library)
        if not distributions:
            versions[library] = NOT_INSTALLED
        for distribution in distributions or []:
            versions[distribution] = distribution_version(distribution)
    return dict(sorted(versions.items()))
