"""``dvc.yaml`` as the step registry implies it (``edgeflow dvc-yaml > dvc.yaml``; a test
keeps the committed one equal): a code stage writing each step's code manifest
(:mod:`flows.code_manifests`), one stage per step with the params keys it reads, its
deps and outs, and the plots."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from flows.code_deps import PACKAGE_ROOT
from flows.code_manifests import LOCK_FILE, manifest_path
from flows.steps import STEPS, Step, code_dependencies
from tasks.config import Params
from tasks.core.layout import Layout

# The dvc.yaml stage that writes each step's code manifest
# (:func:`flows.code_manifests.write_code_manifests`).
CODE_STAGE = "code"
# The Vega-Lite template of the per-variant plots, in the DVC project's .dvc/plots/.
PLOT_TEMPLATE = "variants_scatter"


def dvc_path(path: Path, root: Path) -> str:
    """``path`` as ``dvc.yaml`` names it: relative to the project ``root`` when inside it
    (a relative path is taken as such), absolute otherwise."""
    path = root / path
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else path.as_posix()


def code_path(path: Path, root: Path) -> str:
    """A project file (``tasks/train/__init__.py``, relative to the code's folder) as the
    ``dvc.yaml`` of the experiment at ``root`` names it; DVC reads a ``dvc.yaml``'s paths
    relative to its own folder. An experiment that carries a copy of the code beside its
    params (the repo itself, the tests' projects) names that copy (``tasks/train/__init__.py``);
    one in a subfolder of the code's tree names it through ``..``; one elsewhere names the
    installed code by its absolute path (DVC hashes such a dependency where it is)."""
    root = root.resolve()
    if (root / path).is_file():
        return path.as_posix()
    if root.is_relative_to(PACKAGE_ROOT):
        return Path(os.path.relpath(PACKAGE_ROOT / path, root)).as_posix()
    return (PACKAGE_ROOT / path).as_posix()


def code_stage(layout: Layout) -> dict[str, Any]:
    """The ``dvc.yaml`` stage that turns the project's code into one manifest per step:
    every file of any step's closure and the lock file in, the manifests out. A step's
    stage depends on its manifest instead of its code files: a third of the deps DVC
    checks on every ``dvc repro``, and a step runs again only when its own code did."""
    files = sorted({path for step in STEPS.values() for path in code_dependencies(step).files})
    return {"cmd": "edgeflow code-manifests",
            "deps": [code_path(path, layout.root) for path in [*files, Path(LOCK_FILE)]],
            "outs": [{manifest_path(layout, name).relative_to(layout.root).as_posix():
                      {"cache": False}} for name in STEPS]}


def dvc_stage(step: Step, layout: Layout, params: Params) -> dict[str, Any]:
    """The ``dvc.yaml`` stage this registry entry implies for an experiment with
    ``params`` (the test compares them)."""
    def rel(path: Path) -> str:
        return path.relative_to(layout.root).as_posix()

    deps = [rel(manifest_path(layout, step.name))]
    deps += [rel(p) for p in step.deps(layout)]
    deps += [dvc_path(p, layout.root) for p in step.user_inputs(params)]
    if step.reads_farm:
        deps.append("farm.yaml")
    stage: dict[str, Any] = {"cmd": f"edgeflow step {step.name}", "deps": deps,
                             "params": list(step.params)}
    outs: list[Any] = [rel(p) for p in step.outs(layout)]
    outs += [{rel(p): {"cache": False, **({"persist": True} if step.persist else {})}}
             for p in step.records(layout)]
    if outs:
        stage["outs"] = outs
    if step.metrics(layout):
        stage["metrics"] = [{rel(p): {"cache": False}} for p in step.metrics(layout)]
    return stage


def render_dvc_yaml(layout: Layout, params: Params) -> str:
    """The ``dvc.yaml`` of the experiment at ``layout`` whose params are ``params``."""
    stages = {CODE_STAGE: code_stage(layout),
              **{name: dvc_stage(step, layout, params) for name, step in STEPS.items()}}
    history = layout.train_metrics.with_name("train_history.json")

    def rel_to(path: Path) -> str:
        return path.relative_to(layout.root).as_posix()

    points = rel_to(layout.reports / "points.json")
    # One point per (variant, device) result, coloured by variant and shaped by device
    # (DVC's own templates colour by revision only); the template is .dvc/plots/'s.
    plots = [
        {rel_to(history): {"x": "epoch", "y": ["accuracy", "val_accuracy"],
                           "title": "Training accuracy per epoch"}},
        {"training_loss": {"x": "epoch", "y": {rel_to(history): ["loss", "val_loss"]},
                           "title": "Training loss per epoch (val: inference mode)"}},
        {"accuracy_vs_latency": {"x": "latency_p50_ms", "y": {points: "accuracy"},
                                 "template": PLOT_TEMPLATE,
                                 "title": "Accuracy against p50 latency, per variant and device"}},
        {"accuracy_vs_size": {"x": "size_bytes", "y": {points: "accuracy"},
                              "template": PLOT_TEMPLATE,
                              "title": "Accuracy against size, per variant and device"}},
        # Every image under it (the heat map, accuracy against size, and each device's
        # Pareto plot and latency distributions under devices/<device>/).
        rel_to(layout.reports / "plots"),
    ]
    header = ("# Generated from flows/dvc_yaml.py (`edgeflow dvc-yaml > dvc.yaml`); a test keeps\n"
              "# them equal. Each stage lists only the params keys its step reads, and depends\n"
              "# on its code through the manifest the code stage writes (code-manifests/).\n")
    return header + yaml.safe_dump({"stages": stages, "plots": plots}, sort_keys=False)
