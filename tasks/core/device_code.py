"""The code that runs on boards (``tasks/device/``): the one module that names it.

``tasks/device/`` is a package whose modules import each other relatively and nothing
of edgeflow (the standard library, NumPy, Pillow for images, one runtime). Here it is
the package ``tasks.device``: where this machine runs the same code (the convert step's
checks, the local device, the protocol's recomputations) it is imported by name,
:func:`load`. On a board it is the folder ``edgeflow_device/`` (:data:`SHIPPED_PACKAGE`,
the modules of :func:`package_files`), and each entry module is run through a copy of
``launch.py`` beside that folder under the entry's name: ``python harness.py ARGS`` in
a benchmark's run folder, ``python predict.py IMAGE`` or ``from predict import Model``
in a release. :func:`shipped` says where every file goes; :func:`ship` places them in a
local folder. The release manager (``releases.py``) imports nothing and runs by path.

The kinds of task (``tasks/device/kinds/``, a sub-package: the registry and one module per
kind) ship inside the package, with every kind this process registered from a file
elsewhere (a test's toy kind) as ``kinds/<name>.py``, so a board's registry finds by name
whichever kind a variant's spec names. The orchestrator asks the same registry,
:func:`task_kinds`.

The variant spec that the orchestrator writes and the harness and predictor read is
:class:`VariantSpec` (``tasks/device/spec.py``, standard library only), re-exported here
for the orchestrator's side.
"""

from __future__ import annotations

import importlib
import shutil
from pathlib import Path
from types import ModuleType

from tasks.device.spec import QuantizationSpec, TensorSpec, VariantSpec

__all__ = ["DEVICE_DIR", "KINDS", "LAUNCHER_PATH", "PACKAGE", "PREPROCESS_PATH",
           "QuantizationSpec", "RELEASES_PATH", "SHIPPED_PACKAGE", "TensorSpec", "VariantSpec",
           "harness", "load", "package_files", "predictor", "preprocess", "ship", "shipped",
           "task_kinds"]

PACKAGE = "tasks.device"
SHIPPED_PACKAGE = "edgeflow_device"  # the package folder's name on a board
DEVICE_DIR = Path(__file__).resolve().parents[1] / "device"
LAUNCHER_PATH = DEVICE_DIR / "launch.py"
RELEASES_PATH = DEVICE_DIR / "releases.py"  # the release manager: a script of its own
PREPROCESS_PATH = DEVICE_DIR / "preprocess.py"
KINDS = "kinds"  # the sub-package of the kinds of task
# Run by path, imported by no module: not part of the shipped package.
_NOT_IMPORTED = (LAUNCHER_PATH, RELEASES_PATH)


def load(module: str) -> ModuleType:
    """``tasks.device.<module>``, imported (the package imports nothing of edgeflow)."""
    return importlib.import_module(f"{PACKAGE}.{module}")


def harness() -> ModuleType:
    """The benchmark harness's entry module (``tasks/device/harness.py``)."""
    return load("harness")


def predictor() -> ModuleType:
    """The predictor shipped in every release (``tasks/device/predict.py``)."""
    return load("predict")


def preprocess() -> ModuleType:
    """The pre-processing of images, training's and a release's
    (``tasks/device/preprocess.py``)."""
    return load("preprocess")


def task_kinds() -> ModuleType:
    """The registry of kinds of task (``tasks/device/kinds/``: ``get``, ``of_spec``,
    ``names``, ``register_file``, ``registered``, ``forget``), the one the harness and the
    predictor of this process ask: a kind registered here is theirs too. Standard library
    only (it loads without NumPy)."""
    return load(KINDS)


def package_files() -> tuple[tuple[Path, str], ...]:
    """(local file, its path inside the shipped package) of every module of the package:
    every module of the folder and of its sub-packages (``kinds/``) but the launcher and
    the release manager, which run by path; and every kind of task this process
    registered from a file elsewhere, as ``kinds/<name>.py``."""
    modules = [(path, path.relative_to(DEVICE_DIR).as_posix())
               for path in sorted(DEVICE_DIR.rglob("*.py")) if path not in _NOT_IMPORTED]
    registered = task_kinds().registered()
    return (*modules, *((Path(path), f"{KINDS}/{name}.py") for name, path in registered.items()))


def shipped(folder: str, entries: tuple[str, ...]) -> list[tuple[Path, str]]:
    """(local file, path on the board) of the device code placed in ``folder`` on a board:
    the package under ``<folder>/edgeflow_device/`` (:func:`package_files`) and, for each
    entry module (``"harness"``, ``"predict"``), the launcher as ``<folder>/<entry>.py``."""
    files = package_files()
    modules = {inside[:-3] for _, inside in files if "/" not in inside}
    unknown = [entry for entry in entries if entry not in modules]
    if unknown:
        raise ValueError(f"no device module {', '.join(unknown)} (known: {', '.join(sorted(modules))})")
    return [*((LAUNCHER_PATH, f"{folder}/{entry}.py") for entry in entries),
            *((path, f"{folder}/{SHIPPED_PACKAGE}/{inside}") for path, inside in files)]


def ship(folder: Path, entries: tuple[str, ...]) -> list[str]:
    """Place the device code in the local ``folder`` as on a board (:func:`shipped`); the
    paths placed, relative to ``folder``, POSIX-style."""
    placed = []
    for source, relative in shipped(".", entries):
        relative = relative.removeprefix("./")
        target = folder / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        placed.append(relative)
    return placed
