"""Steps placed on the work pool of the machine that must run them (farm.yaml ``pools``):
``train`` on the trainer's pool, ``benchmark[<device>]`` on the pool of the gateway that
reaches the device. Prefect runs a task in its flow run's process, so a placed step is
a flow run of its own: :func:`step`, deployed once per pool as ``edgeflow-step/<pool>``
(prefect-pools.yaml), started by the lifecycle's task for that step with
``run_deployment`` and waited for. Every other step, and every step of a farm without
``pools``, runs in place, as before.

No disk is shared. The two machines exchange files through the DVC remote both clones
name (:mod:`flows.exchange`):

1. the lifecycle's task sends the step's inputs (its ``deps``, and a model file of the
   params) to the remote and starts the step's flow run with a :class:`PlacedWork`:
   their pointers, the text of params.yaml and farm.yaml, and the step's code manifest;
2. the flow run, in the worker's clone, refuses code that is not the orchestrator's
   (the result would be cached under the other code's key), receives the inputs into a
   scratch experiment under ``.edgeflow/placed/``, does the step's work there with the
   params resolved in this clone (a relative path in params.yaml or farm.yaml, a key
   file or the firmware's sources, means the same file of this clone), sends its
   outputs and lists their pointers in a table artifact of its flow run; the scratch
   experiment is removed;
3. the lifecycle's task receives those outputs into the experiment, each replaced
   whole (an output the step did not write is removed), then stamps them as for a step
   run in place: its cache key and stamps stay the orchestrator's.

A device's work on the gateway is a task with the device's retries (a board that does
not answer is retried there, with farm.yaml's ``task_retries``); a placed flow run that
fails fails the lifecycle's task.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.utilities.annotations import quote

from flows.code_manifests import code_manifest
from flows.exchange import ExchangeFailed, Pointer, receive, send
from flows.retries import raise_if_worth_retrying, step_retry_options
from flows.steps import STEPS, Context, Step, step_label
from flows.versioning import dvc_project
from tasks.config import Farm, Params, load_farm, load_params
from tasks.core.errors import ConfigError, EdgeflowError
from tasks.core.layout import Layout

STEP_FLOW = "edgeflow-step"
# The steps that may be placed, and the pool each takes from farm.yaml's ``pools``.
PLACED = {
    "train": lambda pools, device: pools.train,
    "benchmark": lambda pools, device: pools.devices.get(device) if device else None,
}
# Where a pointer names a file of the params (a model you bring) rather than a path of
# the experiment: ``params-file/<index>/<name>``, its index in ``Step.user_inputs``.
PARAMS_FILE = "params-file"


class PlacedStepFailed(EdgeflowError):
    """A step's flow run on another work pool did not complete."""


class PlacementUnready(ConfigError):
    """A machine is not set up to take part in a placed step: no DVC project (and so no
    remote to exchange files through), or code that is not the orchestrator's."""


@dataclass(frozen=True)
class PlacedWork:
    """What a placed step's flow run is given (its one parameter, as JSON): everything
    it needs from the orchestrator's machine, and no path of that machine."""

    step_name: str
    device: str | None
    params_text: str
    farm_text: str
    # The folders of params.yaml and farm.yaml relative to the orchestrator's DVC project
    # (POSIX), None outside it: their relative paths mean the same files of the worker's
    # clone.
    params_home: str | None
    farm_home: str | None
    inputs: dict[str, Pointer]  # by path relative to the experiment, or PARAMS_FILE/...
    code: dict[str, Any]  # the step's code manifest on the orchestrator
    store: str  # the remote the inputs were sent to (for a message)


def pool_for(farm: Farm, step_name: str, device: str | None = None) -> str | None:
    """The work pool that runs ``step_name`` (for ``device``), or None: run in place."""
    if farm.pools is None or step_name not in PLACED:
        return None
    return PLACED[step_name](farm.pools, device)


def deployment_name(pool: str) -> str:
    """The step flow's deployment on ``pool`` (one per pool, named after it)."""
    return f"{STEP_FLOW}/{pool}"


def _project(folder: Path) -> Path:
    """The DVC project whose remote carries the files: ``folder``'s, else the one this
    process runs in (a deployed run's clone); PlacementUnready in neither."""
    project = dvc_project(folder) or dvc_project(Path.cwd())
    if project is None:
        raise PlacementUnready(
            f"placed steps exchange files through a DVC remote, but neither {folder} nor "
            f"{Path.cwd()} is in a DVC project (`dvc init`, then `edgeflow remote setup "
            "URL` with the team's remote)")
    return project


def _home(folder: Path, project: Path) -> str | None:
    folder = folder.resolve()
    return folder.relative_to(project).as_posix() if folder.is_relative_to(project) else None


def _by_name(layout: Layout, paths: list[Path]) -> dict[str, Path]:
    """``paths`` of the experiment by their path relative to it (POSIX): the names both
    machines give them."""
    return {path.relative_to(layout.root).as_posix(): path for path in paths}


def _step_outputs(layout: Layout, step: Step, device: str | None) -> dict[str, Path]:
    """What the step's work writes (one device's share for a device), by name."""
    return _by_name(layout, step.device_outputs(layout, device) if device
                    else step.all_outputs(layout))


def _inputs(ctx: Context, step: Step) -> dict[str, Path]:
    """What the step's work reads: its deps, and the files of the params it names."""
    inputs = _by_name(ctx.layout, step.deps(ctx.layout))
    for index, path in enumerate(step.user_inputs(ctx.params)):
        inputs[f"{PARAMS_FILE}/{index}/{path.name}"] = path
    return inputs


# ---- on the orchestrator: the lifecycle's task -------------------------------------------


def placed_work(ctx: Context, step_name: str, device: str | None) -> PlacedWork:
    """Send the step's inputs to the remote; the work to give its flow run."""
    step, project = STEPS[step_name], _project(ctx.layout.root)
    sent = send(project, _inputs(ctx, step))
    return PlacedWork(step_name, device, ctx.params_path.read_text(encoding="utf-8"),
                      ctx.farm_path.read_text(encoding="utf-8"),
                      _home(ctx.params_path.parent, project), _home(ctx.farm_path.parent, project),
                      sent.pointers, code_manifest(step), sent.remote)


def receive_outputs(ctx: Context, step_name: str, device: str | None, flow_run_id: Any) -> None:
    """Put the outputs a completed placed flow run sent in the experiment, each replaced
    whole; an output it did not send is removed (not left here from an earlier run)."""
    outputs = _step_outputs(ctx.layout, STEPS[step_name], device)
    pointers = listed_outputs(flow_run_id)
    for name, path in outputs.items():
        if name not in pointers:
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    receive(_project(ctx.layout.root),
            {name: pointers[name] for name in outputs if name in pointers}, outputs)


def run_placed(ctx: Context, step_name: str, device: str | None, pool: str) -> Any:
    """Run ``step_name`` as a flow run of ``edgeflow-step/<pool>`` (a child of the calling
    task's run), its inputs and outputs through the DVC remote (the module's contract);
    :class:`PlacedStepFailed` unless it completed."""
    from prefect.deployments import run_deployment

    work = placed_work(ctx, step_name, device)
    flow_run = run_deployment(deployment_name(pool), poll_interval=1,
                              parameters={"work": asdict(work)})
    if flow_run.state is None or not flow_run.state.is_completed():
        state = flow_run.state.name if flow_run.state else "no state"
        message = flow_run.state.message if flow_run.state else ""
        raise PlacedStepFailed(f"{step_label(step_name, device)} on work pool {pool} (flow "
                               f"run {flow_run.name}) ended {state}: {message}")
    receive_outputs(ctx, step_name, device, flow_run.id)
    return flow_run


def listed_outputs(flow_run_id: Any) -> dict[str, Pointer]:
    """The outputs' pointers a placed flow run listed in its table artifact."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    tables = [artifact for artifact in artifacts if artifact.type == "table"]
    rows = json.loads(tables[-1].data) if tables else []
    return {row.pop("output"): {key: value for key, value in row.items() if value is not None}
            for row in rows}


# ---- on the worker: the placed flow run ---------------------------------------------------


def _check_code(work: PlacedWork, step: Step) -> None:
    """PlacementUnready naming what differs when this clone's code for the step (its
    files, the libraries they import) is not the orchestrator's."""
    here = code_manifest(step)
    if here == work.code:
        return
    names = sorted({name for name, _ in _flat(here) ^ _flat(work.code)})
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    raise PlacementUnready(f"{step_label(work.step_name, work.device)}: this clone's code "
                           f"differs from the orchestrator's ({shown}): bring both clones to "
                           "the same commit and `make install`")


def _flat(manifest: dict[str, Any]) -> set[tuple[str, str]]:
    """A code manifest as (name, value) pairs: each file's hash, each library's version."""
    pairs: set[tuple[str, str]] = set()
    for part in manifest.values():
        if isinstance(part, dict):
            pairs |= {(str(name), json.dumps(value)) for name, value in part.items()}
    return pairs


def _relocated(params: Params, moved: dict[Path, Path]) -> Params:
    """``params`` with each file it names (a model file, an image folder) that was
    received elsewhere (``moved``: where it was -> where it is) named there."""
    data = params.data.model_copy(update={
        field: moved[value] for field in ("folder", "coco_json")
        if (value := getattr(params.data, field)) in moved})
    model = params.model
    if getattr(model, "path", None) in moved:
        model = model.model_copy(update={"path": moved[model.path]})  # type: ignore[union-attr]
    return params.model_copy(update={"data": data, "model": model})


def placed_context(work: PlacedWork, project: Path, scratch: Path) -> Context:
    """The step's context in ``scratch``: params.yaml and farm.yaml written there and
    resolved against this clone's folders that stand for the orchestrator's, the inputs
    received into it, a params file received named where it was received."""
    params_path, farm_path = scratch / "params.yaml", scratch / "farm.yaml"
    params_path.write_text(work.params_text, encoding="utf-8")
    farm_path.write_text(work.farm_text, encoding="utf-8")
    def standing_for(home: str | None) -> Path:  # an experiment outside the project: none
        return project / home if home is not None else scratch

    params = load_params(params_path, standing_for(work.params_home))
    farm = load_farm(farm_path, standing_for(work.farm_home))
    received = {name: scratch / (".inputs/" + name if name.startswith(PARAMS_FILE) else name)
                for name in work.inputs}
    try:
        receive(project, work.inputs, received)
    except ExchangeFailed as failure:  # most often: the two clones name different remotes
        raise ExchangeFailed(f"{failure} (the orchestrator sent them to {work.store})") from None
    named = STEPS[work.step_name].user_inputs(params)
    moved = {named[int(name.split("/")[1])]: path for name, path in received.items()
             if name.startswith(PARAMS_FILE)}
    return Context(_relocated(params, moved), farm, Layout(scratch), params_path, farm_path)


@task(cache_policy=NO_CACHE, persist_result=False)
def device_work(ctx: Context, step_name: str, device: str) -> None:
    """One device's work, in a task: a board that did not answer is retried here, on the
    gateway, with the device's farm.yaml retries (:mod:`flows.retries`), as in place."""
    raise_if_worth_retrying(STEPS[step_name].per_device(ctx, device))  # type: ignore[misc]


@flow(name=STEP_FLOW)
def step(work: dict[str, Any]) -> str:
    """Do a :class:`PlacedWork`'s step in this worker's clone (the module's contract);
    its label."""
    from prefect.artifacts import create_table_artifact

    placed = PlacedWork(**work)
    step_def = STEPS[placed.step_name]
    label = step_label(placed.step_name, placed.device)
    _check_code(placed, step_def)
    project = _project(Path.cwd())
    (project / ".edgeflow" / "placed").mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f"{placed.step_name}-",
                                    dir=project / ".edgeflow" / "placed"))
    try:
        ctx = placed_context(placed, project, scratch)
        if placed.device is None:
            step_def.run(ctx)
        else:
            device_work.with_options(
                name=label, **step_retry_options(ctx.farm, placed.step_name, placed.device))(
                quote(ctx), placed.step_name, placed.device)
        sent = send(project, _step_outputs(ctx.layout, step_def, placed.device))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    create_table_artifact(
        table=[{"output": name, **pointer} for name, pointer in sorted(sent.pointers.items())],
        description=f"{label}: its outputs in {sent.remote}, by DVC hash")
    return label
