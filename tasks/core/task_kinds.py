"""The kinds of task, as the orchestrator asks them: the registry of the device code
(``kinds/`` of it, loaded by path; a board runs the very same files).

Only that folder is loaded here, not the device code as a whole: the code-closure walk
(:mod:`flows.code_deps`) then makes the configuration, train and convert depend on the
kinds alone, so editing the harness or the predictor does not re-run training. The
module is shared with the harness and the predictor loaded in this process (they find
it by its file), so a kind registered here (:func:`registry` ``.register_file``) is
theirs too.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from tasks.core import by_path

KINDS_DIR = Path(__file__).resolve().parents[1] / "device" / "kinds"
REGISTRY_PATH = KINDS_DIR / "__init__.py"


def registry() -> ModuleType:
    """The registry (``kinds/__init__.py``): ``get``, ``of_spec``, ``names``, ``source``,
    ``register_file``, ``forget``."""
    return by_path.load(REGISTRY_PATH)
