"""flows/cli/serving.py in process (typer's CliRunner): serve and stop hand the project
and port to :mod:`flows.serve` (replaced by recorders), print its lines, and a refusal
is one line with its exit code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.flows.cli.test_plumbing import _invoke


@pytest.mark.parametrize(("argv", "port", "project"), [
    (["serve"], 4200, "."), (["serve", "--port", "4300", "--project", "p"], 4300, "p")])
def test_serve_starts_the_project_on_its_port_saying_each_part(
        monkeypatch: pytest.MonkeyPatch, argv: list[str], port: int, project: str) -> None:
    from flows import serve

    asked: list[tuple[Any, ...]] = []

    def start(folder: Path, on: int, say: Any) -> str:
        asked.append((folder, on))
        say("server: http://127.0.0.1 [running]")
        return "url"

    monkeypatch.setattr(serve, "serve", start)
    result = _invoke(*argv)
    assert (result.exit_code, result.output) == (0, "server: http://127.0.0.1 [running]\n")
    assert asked == [(Path(project), port)]


def test_stop_stops_the_project_and_a_serve_error_is_one_line_exit_1(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from flows import serve

    stopped: list[Path] = []

    def stop(folder: Path, say: Any) -> None:
        stopped.append(folder)
        say("worker: stopped")

    monkeypatch.setattr(serve, "stop", stop)
    result = _invoke("stop", "--project", "elsewhere")
    assert (result.exit_code, result.output, stopped) == (0, "worker: stopped\n",
                                                          [Path("elsewhere")])

    def refused(folder: Path, on: int, say: Any) -> str:
        raise serve.ServeError("port 4200 is taken")

    monkeypatch.setattr(serve, "serve", refused)
    result = _invoke("serve")
    assert (result.exit_code, result.output) == (1, "edgeflow: error: port 4200 is taken\n")
