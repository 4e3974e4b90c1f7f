"""flows/lifecycle.py's per-device fan-out (and the benchmark step outside Prefect, in
flows/steps.py) keeps to farm.yaml's ``max_parallel``: six
stand-in boards (this machine, each board's harness interpreter a script that records
when it starts and ends and sleeps) benchmarked by the flow's real fan-out with
``max_parallel: 3`` are never more than three at work at once, and three at the peak."""

from __future__ import annotations

import json
import logging
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

BOARDS, MAX_PARALLEL, SLEEP = 6, 3, 3.0


def real_probe(folder: Path) -> Path:
    """The real harness's probe of this machine, run once: what every stand-in answers
    (six probes importing every runtime at once would stagger the boards' starts)."""
    from tasks.core import device_code

    device_code.ship(folder, ("harness",))
    answer = subprocess.run([sys.executable, str(folder / "harness.py"), "--probe"],
                            capture_output=True, check=True, timeout=300).stdout
    (folder / "probe.json").write_bytes(answer)
    return folder / "probe.json"


def stand_in(path: Path, log: Path, probe: Path) -> Path:
    """A board's harness interpreter (farm.yaml ``python``): answers the probe with
    ``probe``; a benchmark appends ``<start> <end>`` to ``log`` around its sleep and
    writes no result (the variant fails: only when it ran matters here)."""
    path.write_text(f"""#!/bin/sh
for arg in "$@"; do [ "$arg" = --probe ] && exec cat {shlex.quote(str(probe))}; done
start=$(date +%s.%N)
sleep {SLEEP}
echo "$start $(date +%s.%N)" >> {shlex.quote(str(log))}
""", encoding="utf-8")
    path.chmod(0o755)
    return path


def experiment(root: Path, tiny: Path, python: Path, max_parallel: int) -> Path:
    """An experiment folder on the tiny project's data and its onnx-fp32 variant alone,
    with BOARDS local boards whose interpreter is ``python``."""
    from tasks.core.contracts.variants import read_variant_index, write_variant_index
    from tests.tiny import TINY_PARAMS

    variants = root / "models" / "variants"
    index = read_variant_index(tiny / "models" / "variants")
    chosen = [variant for variant in index.variants if variant.name == "onnx-fp32"]
    for entry in chosen[0].files or []:
        (variants / entry.path).parent.mkdir(parents=True, exist_ok=True)
        (variants / entry.path).symlink_to(tiny / "models" / "variants" / entry.path)
    write_variant_index(variants, index.model_copy(update={"variants": chosen}))
    (root / "data").mkdir()
    (root / "data" / "prepared").symlink_to(tiny / "data" / "prepared")
    (root / "params.yaml").write_text(TINY_PARAMS.replace(
        "formats: {tflite: [fp32], onnx: [fp32], openvino: [fp32]}", "formats: {onnx: [fp32]}"))
    devices = {f"b{index}": {"transport": "local", "workdir": f"boards/b{index}",
                             "python": str(python), "threads": 1} for index in range(BOARDS)}
    (root / "farm.yaml").write_text(json.dumps({"max_parallel": max_parallel,
                                                "devices": devices}))
    return root


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    """The most intervals open at one moment (an end before a start at a tie)."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    open_now = peak = 0
    for _, change in events:
        open_now += change
        peak = max(peak, open_now)
    return peak


def test_most_at_once_counts_overlaps() -> None:
    assert most_at_once([(0, 2), (1, 3), (2.5, 4)]) == 2
    assert most_at_once([(0, 1), (1, 2)]) == 1
    assert most_at_once([(0, 5), (1, 2), (1.5, 3)]) == 3


def test_max_parallel_bounds_the_boards_benchmarked_at_once(tiny_project: Any,
                                                             tmp_path: Path) -> None:
    from prefect import flow
    from prefect.testing.utilities import prefect_test_harness

    from flows.lifecycle import LifecycleOutcome, _per_device
    from flows.steps import Context

    log = tmp_path / "harness-times.txt"
    root = experiment(tmp_path / "experiment", tiny_project.layout.root,
                      stand_in(tmp_path / "stand-in", log, real_probe(tmp_path / "probe")),
                      MAX_PARALLEL)

    @flow
    def fan_out() -> list[str]:
        outcome = LifecycleOutcome()
        _per_device(Context.load(root / "params.yaml", root / "farm.yaml"), "benchmark",
                    ["benchmark"], outcome)
        return outcome.executed

    said: list[str] = []
    heard = logging.Handler()
    heard.emit = lambda record: said.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("prefect.flow_runs").addHandler(heard)
    try:
        with prefect_test_harness(server_startup_timeout=180):
            executed = fan_out()
    finally:
        logging.getLogger("prefect.flow_runs").removeHandler(heard)
    assert sorted(executed) == sorted(f"benchmark[b{index}]" for index in range(BOARDS))
    intervals = [tuple(map(float, line.split())) for line in log.read_text().splitlines()]
    assert len(intervals) == BOARDS
    assert most_at_once(intervals) == MAX_PARALLEL  # never more, and all of them at the peak
    assert (f"benchmark: {BOARDS} devices, at most {MAX_PARALLEL} boards at once "
            f"(farm.yaml max_parallel: {MAX_PARALLEL})") in said


def test_the_step_outside_prefect_keeps_to_max_parallel_too(tiny_project: Any,
                                                           tmp_path: Path) -> None:
    """``edgeflow step benchmark`` and ``dvc repro`` run the step's own loop: the same
    bound, and every board benchmarked (one after another before: six boards, six times
    one board's wall)."""
    from flows.steps import STEPS, Context

    log = tmp_path / "harness-times.txt"
    root = experiment(tmp_path / "experiment", tiny_project.layout.root,
                      stand_in(tmp_path / "stand-in", log, real_probe(tmp_path / "probe")),
                      MAX_PARALLEL)
    runs = STEPS["benchmark"].run(Context.load(root / "params.yaml", root / "farm.yaml"))
    assert [run.device for run in runs] == [f"b{index}" for index in range(BOARDS)]
    intervals = [tuple(map(float, line.split())) for line in log.read_text().splitlines()]
    assert len(intervals) == BOARDS
    assert most_at_once(intervals) == MAX_PARALLEL
