"""The registry of lifecycle steps: one entry per step, used by every way of running it.

Each :class:`Step` names the params sections it reads, the module its work starts in
(its code dependencies are derived from it: :func:`code_dependencies`), the files it
reads and writes, and how to call its ``tasks/<step>.py`` function from a
:class:`Context`. From this one table come the Prefect tasks and their cache keys
(``flows/lifecycle.py``), ``edgeflow step NAME`` (what ``dvc.yaml`` runs), each step's
code manifest (:mod:`flows.code_manifests`) and ``dvc.yaml`` itself
(:mod:`flows.dvc_yaml`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flows.code_deps import CodeClosure, module_closure
from tasks.config import Farm, Params, check_key_files, load_farm, load_params
from tasks.core.errors import UsageError
from tasks.core.layout import Layout


@dataclass(frozen=True)
class Context:
    """Everything a step may read: the validated config and where files live."""

    params: Params
    farm: Farm
    layout: Layout
    params_path: Path
    farm_path: Path

    @classmethod
    def load(cls, params_path: Path, farm_path: Path) -> "Context":
        params_path, farm_path = Path(params_path).resolve(), Path(farm_path).resolve()
        params, farm = load_params(params_path), load_farm(farm_path)
        return cls(params, farm, Layout(params_path.parent), params_path, farm_path)

    def section(self, key: str) -> Any:
        """A params section (or dotted key) as plain JSON data."""
        value: Any = self.params.model_dump(mode="json")
        for part in key.split("."):
            value = value[part]
        return value

    def params_dump(self) -> dict[str, Any]:
        return self.params.model_dump(mode="json")


@dataclass(frozen=True)
class Step:
    name: str
    params: tuple[str, ...]
    # The module the step's work starts in (``tasks.train``): what its code is follows
    # from it (:func:`code_dependencies`), never from a hand-kept list.
    entry: str
    deps: Callable[[Layout], list[Path]]
    outs: Callable[[Layout], list[Path]]
    run: Callable[[Context], Any]
    # The farm.yaml is an input of the steps that talk to devices or judge them.
    reads_farm: bool = False
    metrics: Callable[[Layout], list[Path]] = field(default=lambda layout: [])
    # Small outputs kept in git rather than the DVC cache (plot data, run ids).
    records: Callable[[Layout], list[Path]] = field(default=lambda layout: [])
    # Files or folders of the user's that the params name (the image folder): inputs as
    # much as ``deps``, wherever they are.
    user_inputs: Callable[[Params], list[Path]] = field(default=lambda params: [])
    # A step done once per device (benchmark, release): the work for one device, and
    # what it writes (the flow caches and stamps each device's task on its own).
    per_device: Callable[[Context, str], Any] | None = None
    device_outputs: Callable[[Layout, str], list[Path]] = field(
        default=lambda layout, device: [])
    # Outputs that DVC must not delete before running the stage (a record it appends to).
    persist: bool = False
    # Whether a device's work, just done, may be reused by a later run with the same
    # inputs (its cache stamp kept); not a release waiting for an approval, or one that
    # failed: the next run tries it again.
    settled: Callable[[Layout, str], bool] = field(default=lambda layout, device: True)
    # Where outside the experiment the step's work lands (track: the MLflow store), as
    # text without credentials: an input of its cache key as much as its files, so a run
    # against another store does the work there too instead of finding it cached.
    destination: Callable[[Layout], dict[str, str]] = field(default=lambda layout: {})

    def all_outputs(self, layout: Layout) -> list[Path]:
        return self.outs(layout) + self.metrics(layout) + self.records(layout)


def _data_folder(params: Params) -> list[Path]:
    """The image folder of a ``folder`` source and its COCO JSON file, if any; none for
    ``digits`` (scikit-learn ships it: its version is in the key with the other
    libraries')."""
    data = params.data
    folder = [data.folder] if data.source == "folder" and data.folder is not None else []
    return folder + ([data.coco_json] if data.coco_json is not None else [])


def _model_file(params: Params) -> list[Path]:
    """The model file (or SavedModel folder) of a model you bring: its content is in
    train's key, so replacing it re-runs from train and touching it runs nothing."""
    path = getattr(params.model, "path", None)
    return [path] if path is not None else []


def _prepare(ctx: Context) -> Any:
    from tasks.prepare import prepare
    return prepare(ctx.params.data, ctx.layout.prepared)


def _train(ctx: Context) -> Any:
    from tasks.train import train
    return train(ctx.params.model, ctx.params.train, ctx.layout.prepared, ctx.layout.base_model,
                 ctx.layout.train_metrics.parent, ctx.params.data.decoding)


def _optimize(ctx: Context) -> Any:
    from tasks.optimize import optimize
    return optimize(ctx.params.optimize, ctx.layout.base_model, ctx.layout.prepared,
                    ctx.layout.pruned, seed=ctx.params.train.seed,
                    decoding=ctx.params.data.decoding)


def _convert(ctx: Context) -> Any:
    from tasks.convert import ConvertInputs, convert
    return convert(ctx.params.formats, ctx.params.convert, ctx.params.quantization,
                   ctx.params.requirements.max_accuracy_drop,
                   ConvertInputs(ctx.layout.base_model, ctx.layout.pruned, ctx.layout.prepared),
                   ctx.layout.variants, ctx.params.data.decoding)


def benchmark_one_device(ctx: Context, device_name: str) -> Any:
    from tasks.benchmark import benchmark_device
    return benchmark_device(device_name, ctx.farm.devices[device_name], ctx.params.benchmark,
                            ctx.layout.variants, ctx.layout.prepared,
                            ctx.layout.device_results(device_name))


def release_one_device(ctx: Context, device_name: str, approve: Any = None) -> Any:
    """Release to one device by the experiment's policy (:mod:`tasks.release`)."""
    from tasks.release import release_device
    return release_device(ctx.params, ctx.farm, ctx.layout, device_name, approve=approve)


def remove_stale_results(ctx: Context) -> None:
    """Drop results of devices no longer in the farm: DVC versions ``results/`` whole."""
    import shutil

    if ctx.layout.results.is_dir():
        for stale in ctx.layout.results.iterdir():
            if stale.is_dir() and stale.name not in ctx.farm.devices:
                shutil.rmtree(stale)


def _benchmark(ctx: Context) -> Any:
    """Every device (``edgeflow step benchmark``, ``dvc repro``), at most farm.yaml's
    ``max_parallel`` at once as the flow does: one after another, a hundred boards
    took a hundred times one board. Runs in farm.yaml order."""
    from concurrent.futures import ThreadPoolExecutor

    check_key_files(ctx.farm)  # every device's, before the first is benchmarked
    width = max(1, min(ctx.farm.parallelism.boards, len(ctx.farm.devices)))
    with ThreadPoolExecutor(max_workers=width) as pool:
        runs = list(pool.map(lambda name: benchmark_one_device(ctx, name), ctx.farm.devices))
    remove_stale_results(ctx)
    return runs


def _release(ctx: Context) -> Any:
    """Every device (``edgeflow step release``, ``dvc repro``): with policy ``approve``
    a release needs an approval this path cannot ask for, so it is skipped with that
    reason (``edgeflow run`` or ``edgeflow release`` ask). A ``ReleaseRun``."""
    from tasks.release import ReleaseRun
    return ReleaseRun(tuple(release_one_device(ctx, name) for name in ctx.farm.devices))


def _release_settled(layout: Layout, device: str) -> bool:
    from tasks.release.outcome import last_settled
    return last_settled(layout, device)


def _select(ctx: Context) -> Any:
    from tasks.select import select
    return select(ctx.params.requirements, ctx.farm, ctx.layout.results,
                  ctx.layout.base_model / "reference.json", ctx.layout.reports,
                  ctx.layout.train_metrics.parent, ctx.params.select)


def _tracking_store(layout: Layout) -> dict[str, str]:
    """The MLflow store track logs into (``MLFLOW_TRACKING_URI`` or the experiment's own),
    minus credentials; the experiment's own store relative to it, so that a moved or
    copied experiment keeps its key."""
    from tasks.core.mlflow_store import public_uri, tracking_uri
    return {"tracking_uri": public_uri(tracking_uri(layout.root), layout.root)}


def _track(ctx: Context) -> Any:
    from tasks.track import track
    return track(ctx.params_dump(), ctx.layout)


STEPS: dict[str, Step] = {step.name: step for step in (
    Step("prepare", params=("data",), entry="tasks.prepare",
         deps=lambda lay: [], outs=lambda lay: [lay.prepared], run=_prepare,
         user_inputs=_data_folder),
    # train, optimize and convert read data.detection (a detector's decoding): `data`
    # whole, as DVC refuses a listed key that a classification params.yaml lacks; any
    # other data key changes data/prepared, a dep of all three, anyway.
    Step("train", params=("model", "train", "data"), entry="tasks.train",
         deps=lambda lay: [lay.prepared],
         outs=lambda lay: [lay.base_model],
         metrics=lambda lay: [lay.train_metrics],
         records=lambda lay: [lay.train_metrics.with_name("train_history.json")],
         run=_train, user_inputs=_model_file),
    Step("optimize", params=("optimize", "train.seed", "data"), entry="tasks.optimize",
         deps=lambda lay: [lay.base_model, lay.prepared], outs=lambda lay: [lay.pruned],
         run=_optimize),
    Step("convert", params=("formats", "convert", "quantization", "requirements.max_accuracy_drop",
                            "data"),
         entry="tasks.convert",
         deps=lambda lay: [lay.base_model, lay.pruned, lay.prepared],
         outs=lambda lay: [lay.variants], run=_convert),
    Step("benchmark", params=("benchmark",), entry="tasks.benchmark",
         deps=lambda lay: [lay.variants, lay.prepared / "test.npz"],
         outs=lambda lay: [lay.results], reads_farm=True, run=_benchmark,
         per_device=benchmark_one_device,
         device_outputs=lambda lay, device: [lay.device_results(device)]),
    Step("select", params=("requirements", "select"), entry="tasks.select",
         deps=lambda lay: [lay.results, lay.base_model / "reference.json"],
         # The PNGs and the HTML report (they embedded) go to the DVC cache; the summary,
         # Markdown report and plot points are small text that git versions, so `dvc plots
         # diff`/`exp show` can read any commit.
         outs=lambda lay: [lay.reports / "plots", lay.reports / "report.html"],
         metrics=lambda lay: [lay.train_metrics.with_name("benchmark.json")],
         records=lambda lay: [lay.summary, lay.reports / "report.md",
                              lay.reports / "points.json"],
         reads_farm=True, run=_select),
    # Track logs every section but the release policy and the regression thresholds,
    # which change no measurement.
    Step("track", params=tuple(name for name in Params.model_fields
                               if name not in ("release", "compare")),
         entry="tasks.track",
         deps=lambda lay: [lay.reports, lay.results, lay.variants, lay.prepared, lay.train_metrics,
                           lay.train_metrics.with_name("train_history.json")],
         outs=lambda lay: [], records=lambda lay: [lay.tracking_record], run=_track,
         destination=_tracking_store),
    # A device's release task has no outputs of its own to check: a release or rollback
    # by hand since must not make the next run release again; new inputs (a new
    # recommendation, params, code) do.
    # The whole benchmark section, not only its firmware settings (what a Cortex-M4
    # release builds with): DVC refuses a params key that params.yaml lacks, and
    # benchmark.firmware may be absent where benchmark is not.
    Step("release", params=("release", "benchmark"), entry="tasks.release",
         deps=lambda lay: [lay.summary, lay.variants, lay.prepared, lay.tracking_record],
         outs=lambda lay: [], records=lambda lay: [lay.releases], reads_farm=True,
         run=_release, per_device=release_one_device, persist=True,
         settled=_release_settled),
)}


def step_label(step_name: str, device: str | None = None) -> str:
    """A step's task and flow-run name: ``train``, or ``benchmark[pi5]`` for one device."""
    return step_name if device is None else f"{step_name}[{device}]"


def known_steps(names: Iterable[str] | None) -> list[str]:
    """``names`` as given, if every one is a step; else a UsageError listing the steps
    (``edgeflow step NAME`` and ``edgeflow run --rerun NAME`` alike)."""
    names = list(names or [])
    for name in names:
        if name not in STEPS:
            raise UsageError(f"unknown step {name!r} (allowed: {', '.join(STEPS)})")
    return names


def code_dependencies(step: Step) -> CodeClosure:
    """The project files ``step``'s work can run (repo-relative, sorted) and the
    third-party libraries they import: the closure of its entry module
    (:mod:`flows.code_deps`). The cache key and ``dvc.yaml`` both come from it."""
    return module_closure(step.entry)
