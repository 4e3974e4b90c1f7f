"""The seam of tasks.targets: a kind of target defined and registered by this test module
(nothing in tasks/ or flows/ names it) runs the tiny lifecycle, prepare to release.

The toy kind is an emulated board: its benchmark runs the step's harness work on this
machine (what an emulated ARM board does through its emulator), and its release is a
file in its own folder (its ``released.json``), recorded by the release step as any
kind's is. It keeps no release state of its own to show.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import pytest

from tasks.config import LocalDevice
from tasks.config.params import Requirements
from tasks.core.contracts.release import (BoardState, ReleaseDecision, ReleaseOutcome,
                                          ReleaseStatus)
from tasks.core.files import read_json, write_json
from tasks.core.layout import Layout
from tasks.core.strict import StrictModel
from tasks.farm.probe import DeviceProbe
from tasks.targets import BenchmarkJob, DeviceRun, ReleaseJob, register, unregister
from tests.tiny import TINY_PARAMS, write_tiny_config

REPO = Path(__file__).resolve().parents[2]
CALLS: list[str] = []


class ToyDevice(StrictModel):
    """farm.yaml's entry of the toy kind."""

    transport: Literal["toy"]
    folder: Path
    requirements: Requirements | None = None


class ToyTarget:
    kind = "toy"

    def __init__(self, name: str, entry: ToyDevice) -> None:
        self.name, self.entry = name, entry

    def _board(self) -> LocalDevice:
        return LocalDevice(workdir=self.entry.folder / "board")

    def probe(self, timeout: float = 60.0) -> DeviceProbe:
        return DeviceProbe(self.name, False, {"class": "toy"}, error="a toy")

    def managed_setup(self) -> None:
        return None

    def benchmark(self, job: BenchmarkJob) -> DeviceRun:
        CALLS.append("benchmark")
        return job.on_board(self._board())

    def release(self, job: ReleaseJob) -> ReleaseDecision:
        CALLS.append("release")
        released = self.entry.folder / "released.json"
        now = {"variant": job.variant.name, "sha256": job.variant.sha256}
        if released.is_file() and read_json(released) == now:
            return ReleaseDecision(ReleaseOutcome(self.name, ReleaseStatus.UNCHANGED,
                                                  job.variant.name, None, "already"))
        write_json(released, now)
        return ReleaseDecision(
            ReleaseOutcome(self.name, ReleaseStatus.RELEASED, job.variant.name,
                           f"toy-{job.variant.name}", f"written to {released}"),
            {"release": f"toy-{job.variant.name}", **now}, None)

    def rollback(self, layout: Layout, on_board: Callable[[Any], ReleaseDecision]
                 ) -> ReleaseDecision:
        raise AssertionError("not asked in this test")

    def release_state(self, on_board: Callable[[Any], BoardState]) -> BoardState | None:
        return None


@pytest.fixture
def toy_kind() -> Iterator[None]:
    CALLS.clear()
    register("toy", ToyTarget, ToyDevice)
    try:
        yield
    finally:
        unregister("toy")


def test_a_kind_registered_by_a_test_runs_the_tiny_lifecycle(toy_kind: None,
                                                              tmp_path: Path) -> None:
    from flows.lifecycle import run_lifecycle
    from tasks.config import load_farm
    from tasks.release import device_state, read_record

    root = tmp_path / "project"
    for name in ("tasks", "flows"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", "requirements.lock"):
        shutil.copy(REPO / name, root / name)
    folder = tmp_path / "toy"
    write_tiny_config(root, TINY_PARAMS, f"devices:\n  toy: {{transport: toy, folder: {folder}}}\n")

    state, outcome = run_lifecycle(root / "params.yaml", root / "farm.yaml")

    assert state.is_completed(), state.message
    assert "benchmark[toy]" in outcome.executed and "release[toy]" in outcome.executed
    assert CALLS == ["benchmark", "release"]
    layout = Layout(root)
    results = sorted(path.name for path in layout.device_results("toy").glob("*.json"))
    assert results == ["onnx-fp32.json", "openvino-fp32.json", "tflite-fp32.json"]
    for name in results:
        record = read_json(layout.device_results("toy") / name)
        assert record["device"] == "toy" and record["status"] == "ok", record
    # The harness ran in the toy's own folder, through the step's board work.
    assert (folder / "board").is_dir()
    chosen = read_json(layout.summary)["recommendations"]["toy"]
    assert read_json(folder / "released.json")["variant"] == chosen
    record = read_record(layout, "toy")
    assert record["current"] == {"release": f"toy-{chosen}", "variant": chosen,
                                 "sha256": read_json(folder / "released.json")["sha256"]}
    assert record["attempts"][-1]["status"] == "released"
    assert outcome.releases == [f"toy: released: written to {folder / 'released.json'}"]
    shown = device_state(load_farm(root / "farm.yaml"), layout, "toy")
    assert (shown["kind"], shown["board"], shown["drift"]) == ("toy", None, None)
