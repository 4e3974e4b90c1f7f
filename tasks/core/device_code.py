"""The code that runs on boards (``tasks/device/``), reached by file path only.

``tasks/device/`` is shipped to devices and must run there with the standard library,
NumPy and one runtime: nothing of edgeflow. So nothing in the project imports it as a
package; a file is pushed by its path, and where this machine runs the same code (the
convert step's checks, the local device) it is loaded from that path here, once, under
the name ``tasks.device.<module>`` (so a test that imports it sees the same module).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

DEVICE_DIR = Path(__file__).resolve().parents[1] / "device"
HARNESS_PATH = DEVICE_DIR / "harness.py"


def load(path: Path) -> ModuleType:
    """The module in ``path`` (a file of :data:`DEVICE_DIR`), loaded once."""
    name = f"tasks.device.{path.stem}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before running it: its dataclasses look themselves up
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def harness() -> ModuleType:
    """The benchmark harness (``tasks/device/harness.py``)."""
    return load(HARNESS_PATH)
