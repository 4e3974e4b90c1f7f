"""The code that runs on boards (``tasks/device/``), reached by file path only.

``tasks/device/`` is shipped to devices and must run there with the standard library,
NumPy and one runtime: nothing of edgeflow. So nothing in the project imports it as a
package; a file is pushed by its path, and where this machine runs the same code (the
convert step's checks, the local device) it is loaded from that path here, once, under
the name ``tasks.device.<module>`` (so a test that imports it sees the same module).
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from tasks.core import by_path, task_kinds

DEVICE_DIR = Path(__file__).resolve().parents[1] / "device"
HARNESS_PATH = DEVICE_DIR / "harness.py"
PREDICT_PATH = DEVICE_DIR / "predict.py"
PREPROCESS_PATH = DEVICE_DIR / "preprocess.py"
RELEASES_PATH = DEVICE_DIR / "releases.py"
# The registry of kinds of task and the kinds, beside the harness and the predictor.
KINDS_FOLDER = "kinds"


def load(path: Path) -> ModuleType:
    """The module in ``path`` (a file of :data:`DEVICE_DIR`), loaded once."""
    return by_path.load(path)


def harness() -> ModuleType:
    """The benchmark harness (``tasks/device/harness.py``)."""
    return load(HARNESS_PATH)


def predictor() -> ModuleType:
    """The predictor shipped in every release (``tasks/device/predict.py``)."""
    return load(PREDICT_PATH)


def task_kind_files() -> list[tuple[Path, str]]:
    """The registry of kinds of task and every kind this process knows, as (the file
    here, its path beside the harness or the predictor on a board: ``kinds/...``): what
    ships with the harness and in a release, so a board finds by name whichever kind a
    variant's spec names."""
    kinds = task_kinds.registry()
    return [(task_kinds.REGISTRY_PATH, f"{KINDS_FOLDER}/__init__.py"),
            *((Path(kinds.source(name)), f"{KINDS_FOLDER}/{name}.py") for name in kinds.names())]


def harness_files() -> list[tuple[Path, str]]:
    """What a board needs to run the harness, as (the file here, its path relative to the
    harness's folder there): the harness and the kinds of task."""
    return [(HARNESS_PATH, HARNESS_PATH.name), *task_kind_files()]


def place_harness(folder: Path) -> Path:
    """Copy :func:`harness_files` into ``folder`` on this machine; the harness's path."""
    for source, relative in harness_files():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_bytes(source.read_bytes())
    return folder / HARNESS_PATH.name
