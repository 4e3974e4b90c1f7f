"""The Prefect cache policy of every lifecycle step.

A step's cache key hashes its name, the source of its own code (the files the step
registry lists), its params sections, the device it runs on (benchmark) and the content
of every file it reads. Same key -> Prefect returns the persisted result and the step
does not run.

Prefect alone would trust a key even when the files on disk are no longer the ones that
run wrote (deleted, or rewritten by ``dvc repro`` with other params). So every run of a
step leaves a stamp (its key and the hash of what it wrote) under ``.edgeflow/stamps``;
when the outputs on disk do not match the stamp for the current key, the cached record
is dropped and the step runs again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect.cache_policies import CachePolicy

from tasks.files import read_json, sha256_tree, write_json
from tasks.steps import STEPS, Context, code_paths, device_cache_input


def cache_dir(ctx: Context) -> Path:
    """Where Prefect keeps cache records (``keys/``) and persisted results (``results/``)
    for this experiment. Two folders: Prefect names both files after the cache key."""
    return ctx.layout.state / "prefect"


def _stamp_path(ctx: Context, step_name: str, device: str | None) -> Path:
    return ctx.layout.state / "stamps" / f"{step_name}-{device or 'all'}.json"


def _outputs(ctx: Context, step_name: str, device: str | None) -> list[Path]:
    step = STEPS[step_name]
    if device is not None:
        return [ctx.layout.device_results(device)]
    return step.all_outputs(ctx.layout)


def input_key(ctx: Context, step_name: str, device: str | None = None) -> str:
    step = STEPS[step_name]
    layout = ctx.layout
    digest = hashlib.sha256(step_name.encode())
    for path in code_paths(step):
        digest.update(sha256_tree(path).encode())
    for key in step.params:
        digest.update(json.dumps(ctx.section(key), sort_keys=True).encode())
    if device is not None:
        digest.update(device_cache_input(ctx.farm.devices[device]).encode())
    elif step.reads_farm:
        digest.update(json.dumps(ctx.farm.model_dump(mode="json"), sort_keys=True).encode())
    for path in step.deps(layout):
        digest.update(path.relative_to(layout.root).as_posix().encode())
        digest.update(sha256_tree(path).encode() if path.exists() else b"missing")
    return f"{step_name}-{device or 'all'}-{digest.hexdigest()[:32]}"


def outputs_hash(ctx: Context, step_name: str, device: str | None = None) -> str | None:
    """Hash of what the step wrote; None when any output is missing."""
    paths = _outputs(ctx, step_name, device)
    if not all(path.exists() for path in paths):
        return None
    return hashlib.sha256("".join(sha256_tree(path) for path in paths).encode()).hexdigest()


def record_run(ctx: Context, step_name: str, device: str | None = None) -> None:
    """Stamp the outputs a step just wrote with the key it ran under."""
    write_json(_stamp_path(ctx, step_name, device),
               {"key": input_key(ctx, step_name, device),
                "outputs": outputs_hash(ctx, step_name, device)})


def _outputs_match(ctx: Context, step_name: str, device: str | None, key: str) -> bool:
    stamp_path = _stamp_path(ctx, step_name, device)
    if not stamp_path.is_file():
        return False
    stamp = read_json(stamp_path)
    current = outputs_hash(ctx, step_name, device)
    return stamp.get("key") == key and current is not None and stamp.get("outputs") == current


@dataclass
class StepContentPolicy(CachePolicy):
    """Keys a task run on its ``ctx``/``step_name``/``device`` inputs (see module doc)."""

    def compute_key(self, task_ctx: Any, inputs: dict[str, Any],
                    flow_parameters: dict[str, Any], **kwargs: Any) -> str | None:
        ctx, step_name, device = inputs["ctx"], inputs["step_name"], inputs.get("device")
        key = input_key(ctx, step_name, device)
        if not _outputs_match(ctx, step_name, device, key):
            # The record may exist from an earlier run whose files are gone: drop it.
            for stale in cache_dir(ctx).glob(f"*/{key}*"):
                stale.unlink(missing_ok=True)
        return key
