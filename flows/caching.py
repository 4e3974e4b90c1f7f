"""The Prefect cache policy of every lifecycle step.

A step's cache key hashes its name; its code manifest
(:func:`flows.code_manifests.code_manifest`: the path and content of every project file
its work can run, the import closure of its entry module with package ``__init__`` files,
the device code and the files a reached module declares it reads (the firmware's
templates), :mod:`flows.code_deps`, and the installed version of every
third-party distribution that code imports; DVC's
stage depends on the same manifest); its params sections; the device it
runs on (benchmark); where outside the experiment its work lands (track: the MLflow
store, minus credentials: :attr:`flows.steps.Step.destination`); the content of every
file it reads; and, for prepare with a
``folder`` source, the names and contents of the user's image folder (hidden names
skipped, as prepare skips them). Same key -> Prefect returns the persisted result and
the step does not run.

Prefect alone would trust a key even when the files on disk are no longer the ones that
run wrote (deleted, or rewritten by ``dvc repro`` with other params). So every run of a
step leaves a stamp (its key and the hash of what it wrote) under ``.edgeflow/stamps``;
when the outputs on disk do not match the stamp for the current key, the cached record
is dropped and the step runs again.

``edgeflow step NAME`` (what ``dvc repro`` and ``dvc exp run`` call) leaves the same
stamp (:func:`record_step`). A stamp whose key and outputs match is proof the work is
done, whoever did it: when Prefect has no record for that key, one is written before
Prefect looks (:func:`ensure_record`), so ``edgeflow run`` after ``dvc repro`` executes
nothing, as ``dvc repro`` after ``edgeflow run`` does (the flow ``dvc commit``s).

Prefect's cache record names its persisted result by absolute path. An experiment
folder that was moved or copied (or a record written by a run that kept its results
elsewhere) would make Prefect refuse the record ("path is outside of the base path")
and fail the run; so before Prefect reads a record, one that points outside this
experiment's result folder is re-pointed at the same file here when that file exists
(the cache is re-used), and dropped otherwise (the step runs again). Never a failure.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect.cache_policies import CachePolicy

from tasks.core.errors import StepError
from tasks.core.files import read_json, sha256_file, sha256_tree, write_json
from flows.code_manifests import code_manifest
from flows.steps import STEPS, Context


def cache_dir(ctx: Context) -> Path:
    """Where Prefect keeps cache records (``keys/``) and persisted results (``results/``)
    for this experiment. Two folders: Prefect names both files after the cache key."""
    return ctx.layout.state / "prefect"


def _stamp_path(ctx: Context, step_name: str, device: str | None) -> Path:
    return ctx.layout.state / "stamps" / f"{step_name}-{device or 'all'}.json"


def _outputs(ctx: Context, step_name: str, device: str | None) -> list[Path]:
    step = STEPS[step_name]
    if device is not None:
        return step.device_outputs(ctx.layout, device)
    return step.all_outputs(ctx.layout)


def input_key(ctx: Context, step_name: str, device: str | None = None) -> str:
    step = STEPS[step_name]
    layout = ctx.layout
    digest = hashlib.sha256(step_name.encode())
    digest.update(json.dumps(code_manifest(step), sort_keys=True).encode())
    for key in step.params:
        digest.update(_location_free(ctx.section(key), layout.root))
    if device is not None:
        digest.update(_location_free(ctx.farm.devices[device].model_dump(mode="json"),
                                     layout.root))
    elif step.reads_farm:
        # How many boards run at once, and on which machines, change no result: not part
        # of the key.
        digest.update(_location_free(ctx.farm.model_dump(mode="json",
                                                         exclude={"max_parallel", "pools"}),
                                     layout.root))
    destination = step.destination(layout)
    if destination:  # the other steps' keys stay what they were
        digest.update(json.dumps(destination, sort_keys=True).encode())
    for path in step.deps(layout):
        digest.update(path.relative_to(layout.root).as_posix().encode())
        digest.update(sha256_tree(path).encode() if path.exists() else b"missing")
    for path in step.user_inputs(ctx.params):
        digest.update(visible_tree_hash(path).encode())
    return f"{step_name}-{device or 'all'}-{digest.hexdigest()[:32]}"


def visible_tree_hash(root: Path) -> str:
    """Hash of the relative names and contents of what prepare may read under ``root``
    (the content of ``root`` itself when it is a file):
    every entry but hidden names (``.DS_Store``, ``.git``), through class folders that
    are links as prepare goes through them. A name that is no regular file (a broken
    link, a FIFO: never opened) counts by its name; "missing" when ``root`` is none."""
    if root.is_file():  # a model file you bring
        return _file_hash(root)
    if not root.is_dir():
        return "missing"
    digest = hashlib.sha256()
    for top in sorted(entry for entry in root.iterdir() if not entry.name.startswith(".")):
        # rglob does not descend into a linked folder; a class folder may be one.
        below = sorted(entry for entry in top.rglob("*") if not any(
            part.startswith(".") for part in entry.relative_to(top).parts)) if top.is_dir() else []
        for entry in [top, *below]:
            digest.update(entry.relative_to(root).as_posix().encode() + b"\0")
            if entry.is_file():
                digest.update(_file_hash(entry).encode())
    return digest.hexdigest()


def _file_hash(path: Path) -> str:
    try:
        return sha256_file(path)
    except OSError as error:  # prepare skips it as unreadable: a key, not a crash
        return f"unreadable: {error.strerror}"


def _location_free(document: Any, root: Path) -> bytes:
    """``document`` as key material in which paths inside the experiment folder are
    relative to it: config files resolve relative paths against their folder, and a
    moved or copied experiment must keep its keys (its cache)."""
    prefix = str(root.resolve())

    def relative(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: relative(item) for key, item in value.items()}
        if isinstance(value, list):
            return [relative(item) for item in value]
        if isinstance(value, str) and (value == prefix or value.startswith(prefix + "/")):
            return "<experiment>" + value[len(prefix):]
        return value

    return json.dumps(relative(document), sort_keys=True).encode()


def outputs_hash(ctx: Context, step_name: str, device: str | None = None) -> str | None:
    """Hash of what the step wrote; None when any output is missing."""
    paths = _outputs(ctx, step_name, device)
    if not all(path.exists() for path in paths):
        return None
    return hashlib.sha256("".join(sha256_tree(path) for path in paths).encode()).hexdigest()


def record_run(ctx: Context, step_name: str, device: str | None = None) -> None:
    """Stamp the outputs a step just wrote with the key it ran under; a device's work
    that is not settled (:attr:`flows.steps.Step.settled`: a release nobody approved yet,
    or one that failed) is left unstamped, so the next run does it again."""
    if device is not None and not STEPS[step_name].settled(ctx.layout, device):
        _stamp_path(ctx, step_name, device).unlink(missing_ok=True)
        return
    write_json(_stamp_path(ctx, step_name, device),
               {"key": input_key(ctx, step_name, device),
                "outputs": outputs_hash(ctx, step_name, device)})


def record_step(ctx: Context, step_name: str) -> None:
    """Stamp what ``edgeflow step step_name`` (a whole step, outside Prefect) wrote, as
    the flow's tasks stamp theirs: a per-device step once per device, as the flow runs it."""
    if STEPS[step_name].per_device is not None:
        for device in ctx.farm.devices:
            record_run(ctx, step_name, device)
    else:
        record_run(ctx, step_name)


def step_result(step_name: str, device: str | None) -> str:
    """What the flow's step task returns (and Prefect persists) for a run."""
    return f"{step_name}:{device or 'all'}"


def ensure_record(ctx: Context, key: str, result: str) -> None:
    """A Prefect cache record for ``key`` holding ``result``, in this experiment's store,
    unless one is there: written for a step whose stamp proves it ran elsewhere."""
    if (cache_dir(ctx) / "keys" / key).is_file():
        return
    from prefect.filesystems import LocalFileSystem
    from prefect.results import ResultStore

    store = ResultStore(result_storage=LocalFileSystem(basepath=str(results_dir(ctx))),
                        metadata_storage=LocalFileSystem(basepath=str(cache_dir(ctx) / "keys")))
    store.write(result, key=key)


def _outputs_match(ctx: Context, step_name: str, device: str | None, key: str) -> bool:
    stamp_path = _stamp_path(ctx, step_name, device)
    try:
        stamp = read_json(stamp_path, keys=("key", "outputs"))
    except StepError:  # missing or damaged (a crash while writing it): a cache miss
        return False
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
        else:
            relocate_record(ctx, key)
            ensure_record(ctx, key, step_result(step_name, device))
        return key


def will_be_cached(ctx: Context, step_name: str, device: str | None = None) -> bool:
    """Whether a run of the step now would return its cached result (its outputs match
    the stamp of the current key, and the record and result of that key are here): what
    the flow asks before taking a device's concurrency slot, which a cached benchmark
    does not need."""
    key = input_key(ctx, step_name, device)
    return (_outputs_match(ctx, step_name, device, key)
            and (cache_dir(ctx) / "keys" / key).is_file() and (results_dir(ctx) / key).is_file())


def results_dir(ctx: Context) -> Path:
    """Where this experiment's persisted task results live (whoever runs the flow)."""
    return cache_dir(ctx) / "results"


def relocate_record(ctx: Context, key: str) -> None:
    """Make the cache record of ``key`` point into this experiment's result folder, or
    drop it when it cannot (see the module docstring)."""
    record = cache_dir(ctx) / "keys" / key
    if not record.is_file():
        return
    here = results_dir(ctx) / key
    try:
        metadata = json.loads(record.read_text(encoding="utf-8"))
        stored = Path(metadata["storage_key"])
    except (OSError, ValueError, KeyError, TypeError):
        record.unlink(missing_ok=True)  # unreadable: Prefect would fail on it too
        return
    if stored == here:
        return
    if here.is_file():
        write_json(record, {**metadata, "storage_key": str(here), "storage_block_id": None})
    else:
        record.unlink(missing_ok=True)
