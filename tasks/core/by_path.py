"""Loading a module by its file path, once, under its package's dotted name.

For code that is shipped and run by path rather than imported (``tasks/device/``): a
file ``<root>/<package>/<sub>/<stem>.py`` is loaded as ``<package>.<sub>.<stem>`` (and
``<root>/<package>/<sub>/<stem>/__init__.py`` as the same), so a test that imports it sees
the same module object.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def load(path: Path) -> ModuleType:
    """The module in ``path``, loaded once per process."""
    module = path.parent if path.stem == "__init__" else path.with_suffix("")  # a package: its folder
    name = f"{module.parent.parent.name}.{module.parent.name}.{module.name}"
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
