"""Recording a Prefect run's outputs with DVC, so ``dvc status`` agrees with it.

``record_outputs`` runs ``dvc commit --force``: dvc.lock then holds the hashes of every
stage's deps, params and outs as this run left them, and the outs enter the DVC cache.
It refuses (with a reason, not an error) when the run did not use the DVC project's own
``params.yaml``/``farm.yaml``, or when params.yaml omits sections: dvc.lock would then
describe params the run never read.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from tasks.core.config import parse_yaml
from flows.steps import STEPS, Context


def tracked_params_keys() -> list[str]:
    """Every params key a DVC stage lists (``train.seed``, ``data``...), in step order."""
    return list(dict.fromkeys(key for step in STEPS.values() for key in step.params))


def _present(document: Any, dotted: str) -> bool:
    for part in dotted.split("."):
        if not isinstance(document, dict) or part not in document:
            return False
        document = document[part]
    return True


def record_outputs(ctx: Context) -> str:
    """Commit the outputs with DVC; returns what was done, for the run's log."""
    root = ctx.layout.root
    if not (root / "dvc.yaml").is_file() or not (root / ".dvc").is_dir():
        return "not a DVC project: outputs not recorded"
    if ctx.params_path != root / "params.yaml" or ctx.farm_path != root / "farm.yaml":
        return "custom --params/--farm: outputs not recorded in dvc.lock"
    written = parse_yaml(ctx.params_path.read_text(encoding="utf-8")) or {}
    omitted = [key for key in tracked_params_keys() if not _present(written, key)]
    if omitted:
        # DVC tracks params by key and refuses a stage whose keys are absent.
        return (f"params.yaml omits {', '.join(omitted)} (defaults used): outputs not "
                "recorded in dvc.lock; write every section to track it with DVC")
    result = subprocess.run([sys.executable, "-m", "dvc", "commit", "--force", "--quiet"],
                            cwd=root, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        output = (result.stderr + result.stdout).strip()
        raise RuntimeError(f"dvc commit failed: {output[-500:]}")
    return "recorded in dvc.lock"
