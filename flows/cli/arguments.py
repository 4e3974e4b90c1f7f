"""The options the commands share and what they resolve to: the farm file beside the
params file, the experiment's validated configuration, a file that must not be a
folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from flows.cli.exits import guarded
from tasks.core.errors import ConfigError

ParamsOption = Annotated[Path, typer.Option("--params", help="experiment file (params.yaml)")]
FarmOption = Annotated[Path | None, typer.Option(
    "--farm", help="device inventory; default: farm.yaml beside the params file")]
VerboseOption = Annotated[bool, typer.Option(
    "--verbose", "-v", help="also show what the libraries print (TensorFlow, Prefect, NNCF...); "
                            "by default it goes only to the run's log in .edgeflow/logs/")]
DeviceArgument = Annotated[str, typer.Argument(help="device name in farm.yaml")]
FarmFileOption = Annotated[Path, typer.Option("--farm", help="device inventory")]


def farm_path(params: Path, farm: Path | None) -> Path:
    """``--farm``, else farm.yaml beside the params file."""
    return farm if farm is not None else params.resolve().parent / "farm.yaml"


def context(params: Path, farm: Path | None) -> Any:
    """The experiment's validated configuration; a bad file is a one-line error."""
    from flows.steps import Context

    return guarded(lambda: Context.load(params, farm_path(params, farm)))


def not_a_folder(path: Path, option: str) -> Path:
    """``path``, unless it names a folder where a file is meant (a ConfigError)."""
    if path.is_dir():
        raise ConfigError(f"{option} {path} is a folder, not a file")
    return path
