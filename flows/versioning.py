"""Recording a Prefect run's outputs with DVC, so ``dvc status`` agrees with it.

``record_outputs`` runs ``dvc commit --force`` on the experiment's ``dvc.yaml`` (staging
dvc.lock in git as ``dvc repro`` does, with ``core.autostage``): dvc.lock
then holds the hashes of every stage's deps, params and outs as this run left them, and
the outs enter the DVC cache. The experiment may be the DVC project's root or any folder
below it with a ``dvc.yaml`` of its own (``edgeflow dvc-yaml --params exp/params.yaml >
exp/dvc.yaml``; DVC reads its paths and ``params.yaml`` relative to that folder). It
refuses, with a one-line reason that says what to do, never DVC's own error: outside any
DVC project, in a folder without ``dvc.yaml``, when the run did not use the experiment's
own ``params.yaml``/``farm.yaml``, or when params.yaml omits sections (dvc.lock would
then describe params the run never read).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from tasks.config import parse_yaml
from tasks.core.files import sha256_file
from flows.code_manifests import write_code_manifests
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


# `dvc commit --force TARGET`, inside DVC's git context as `dvc repro` runs: with
# core.autostage (this project's .dvc/config) the dvc.lock it writes is `git add`ed, as
# after `dvc repro`; the `dvc commit` command itself never stages.
_COMMIT = """\
import sys
from dvc.repo import Repo
with Repo() as repo, repo.scm_context:
    repo.commit(sys.argv[1], force=True)
"""


def dvc_project(folder: Path) -> Path | None:
    """The DVC project ``folder`` belongs to: the nearest folder at or above it that
    holds ``.dvc/`` (as DVC looks for it); None outside any."""
    folder = folder.resolve()
    return next((candidate for candidate in (folder, *folder.parents)
                 if (candidate / ".dvc").is_dir()), None)


def _lock_stamp(ctx: Context) -> Path:
    return ctx.layout.state / "stamps" / "dvc-lock.sha256"


def record_outputs(ctx: Context, executed: bool = True) -> str:
    """Commit the outputs with DVC; returns what was done, for the run's log.

    The steps' code manifests (the code stage's outputs) are written first. A run that
    executed nothing (``executed`` false) and changed no manifest skips ``dvc commit``
    (about 2 s of a no-op run) when dvc.lock is byte for byte what this experiment's
    last commit left: the outputs are then the ones it recorded. A dvc.lock changed
    since (a checkout, a ``dvc repro`` elsewhere, deleted) is committed again."""
    root = ctx.layout.root
    project = dvc_project(root)
    if project is None:
        return (f"not a DVC project ({root} and the folders above it have no .dvc/; "
                "`dvc init` in the project to version outputs): outputs not recorded")
    if not (root / "dvc.yaml").is_file():
        return (f"no dvc.yaml beside {ctx.params_path.name} in {root} (in the DVC project "
                f"{project}): outputs not recorded; write one with `edgeflow dvc-yaml "
                f"--params {ctx.params_path} > {root / 'dvc.yaml'}`")
    if ctx.params_path != root / "params.yaml" or ctx.farm_path != root / "farm.yaml":
        return "custom --params/--farm: outputs not recorded in dvc.lock"
    written = parse_yaml(ctx.params_path.read_text(encoding="utf-8")) or {}
    omitted = [key for key in tracked_params_keys() if not _present(written, key)]
    if omitted:
        # DVC tracks params by key and refuses a stage whose keys are absent.
        return (f"params.yaml omits {', '.join(omitted)} (defaults used): outputs not "
                "recorded in dvc.lock; write every section to track it with DVC")
    target = (root / "dvc.yaml").resolve().relative_to(project).as_posix()
    lock, stamp = root / "dvc.lock", _lock_stamp(ctx)
    where = lock.resolve().relative_to(project).as_posix()  # "dvc.lock" at the root
    # The code manifests the code stage would write, as dvc.lock must record them.
    rewritten = write_code_manifests(ctx.layout)
    if (not executed and not rewritten and lock.is_file() and stamp.is_file()
            and stamp.read_text(encoding="utf-8") == sha256_file(lock)):
        return f"{where} unchanged (every step came from the cache)"
    result = subprocess.run([sys.executable, "-c", _COMMIT, target], cwd=project,
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        output = (result.stderr + result.stdout).strip()
        raise RuntimeError(f"dvc commit failed: {output[-500:]}")
    if lock.is_file():
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(sha256_file(lock), encoding="utf-8")
    return f"recorded in {where}"
