"""``edgeflow remote setup URL``: a DVC remote the team shares (:mod:`flows.remotes`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flows.cli.exits import guarded
from flows.cli.output import say

remote_app = typer.Typer(no_args_is_help=True,
                         help="A DVC remote the team shares (ssh:// or s3://).")


@remote_app.command()
def setup(url: Annotated[str, typer.Argument(
              help="ssh://[user@]host[:port]/path or s3://bucket[/prefix]")],
          name: Annotated[str, typer.Option("--name", help="the remote's name")] = "team",
          keyfile: Annotated[Path | None, typer.Option(
              "--keyfile", help="ssh://: your private key (kept in .dvc/config.local)")] = None,
          endpoint_url: Annotated[str | None, typer.Option(
              "--endpoint-url", help="s3://: an S3-compatible server's URL (MinIO, SeaweedFS...)")] = None,
          local: Annotated[bool, typer.Option(
              "--local", help="this clone only (.dvc/config.local), not the committed .dvc/config")] = False,
          project: Annotated[Path, typer.Option("--project", help="the DVC project's folder")] = Path("."),
          ) -> None:
    """Make URL the default DVC remote (`dvc remote add -d` and `dvc remote modify`):
    `dvc push` then shares with everyone who reaches it, `dvc pull` fetches from it."""
    from flows.remotes import PRIVATE_REMOTE, setup_remote

    done = guarded(lambda: setup_remote(project, name, url, keyfile, endpoint_url, local))
    for arguments in done.commands:
        say(f"dvc {' '.join(arguments)}")
    say(f"default remote: {done.name} ({done.url}), in "
        f"{'.dvc/config.local (this clone only)' if local else '.dvc/config (commit it)'}; "
        f"`dvc push` shares with everyone who reaches it ({PRIVATE_REMOTE}, the folder "
        "~/.cache/edgeflow/dvc-remote, stays private to you on this machine)")


def register(app: typer.Typer) -> None:
    """Add the ``remote`` group to ``app``."""
    app.add_typer(remote_app, name="remote")
