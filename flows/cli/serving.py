"""``edgeflow serve`` and ``stop``: a local Prefect server, this project's deployments
and a worker in the background, and stopping them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flows.cli.exits import guarded
from flows.cli.output import say

ProjectOption = Annotated[Path, typer.Option(
    "--project", help="the project folder (prefect.yaml); its .edgeflow/serve/ keeps pids and logs")]


def serve(port: Annotated[int, typer.Option("--port", help="the server's port on 127.0.0.1")] = 4200,
          project: ProjectOption = Path(".")) -> None:
    """Start a local Prefect server, the work pool, this project's deployments and a worker
    in the background (`make serve`); what is already running is reused."""
    from flows.serve import serve as start

    guarded(lambda: start(project, port, say=say))


def stop(project: ProjectOption = Path(".")) -> None:
    """Stop the worker and the server `edgeflow serve` started (by their recorded pids)."""
    from flows.serve import stop as stop_all

    guarded(lambda: stop_all(project, say=say))


def register(app: typer.Typer) -> None:
    """Add this group's commands to ``app``."""
    for command in (serve, stop):
        app.command()(command)
