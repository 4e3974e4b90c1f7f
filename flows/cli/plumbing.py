"""The DVC plumbing commands: ``code-manifests`` (what dvc.yaml's code stage runs) and
the hidden ``dvc-yaml`` (the dvc.yaml the step registry implies)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from flows.cli.arguments import ParamsOption, not_a_folder
from flows.cli.exits import guarded
from flows.cli.output import say


def code_manifests(params: ParamsOption = Path("params.yaml")) -> None:
    """Write each step's code manifest into the experiment (dvc.yaml's code stage runs
    this): DVC then re-runs a step only when its own code changed."""
    from flows.code_manifests import write_code_manifests
    from tasks.core.layout import Layout

    root = guarded(lambda: not_a_folder(params, "--params")).resolve().parent
    written = write_code_manifests(Layout(root))
    say(f"code manifests: {', '.join(written) if written else 'none changed'}")


def dvc_yaml(params: ParamsOption = Path("params.yaml")) -> None:
    """Print the dvc.yaml the step registry implies for this experiment (its params
    name the image folder prepare reads)."""
    from flows.dvc_yaml import render_dvc_yaml
    from tasks.config import load_params
    from tasks.core.layout import Layout

    loaded = guarded(lambda: load_params(params))
    sys.stdout.write(render_dvc_yaml(Layout(params.resolve().parent), loaded))


def register(app: typer.Typer) -> None:
    """Add this group's commands to ``app``."""
    app.command("code-manifests")(code_manifests)
    app.command("dvc-yaml", hidden=True)(dvc_yaml)
