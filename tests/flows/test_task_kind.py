"""A kind of task registered from a test module (tests/flows/parity_kind.py) runs the
tiny lifecycle end to end: the seams, not production code.

How the kind gets everywhere: the test registers its file in the registry
(``device_code.task_kinds().register_file``), in this process, where the flow's steps
run; the config accepts ``data.task: parity`` because the registry knows it; prepare
records it in meta.json, convert in each variant's spec (``"task"``); the device package
ships every known kind's file (``edgeflow_device/kinds/parity.py``) in the benchmark's run
folder and in the release, where the harness and the predictor, in processes of their
own, find it by the spec's name.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

from tests.tiny import TINY_PARAMS, write_tiny_config

REPO = Path(__file__).resolve().parents[2]
PARITY = Path(__file__).with_name("parity_kind.py")
BIN = Path(sys.executable).parent
ALL_STEPS = ["prepare", "train", "optimize", "convert", "benchmark[local]", "select", "track",
             "release[local]"]


@pytest.fixture(scope="module")
def parity_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Any, Any]]:
    """A fresh tiny project whose task is the toy kind, run once: (root, state, outcome)."""
    from flows.lifecycle import run_lifecycle
    from tasks.core import device_code

    registry = device_code.task_kinds()
    registry.register_file(str(PARITY))
    try:
        root = tmp_path_factory.mktemp("parity-project")
        for name in ("tasks", "flows"):
            shutil.copytree(REPO / name, root / name,
                            ignore=shutil.ignore_patterns("__pycache__"))
        for name in ("dvc.yaml", "requirements.lock"):
            shutil.copy(REPO / name, root / name)
        params = TINY_PARAMS.replace("calibration_size: 32}", "calibration_size: 32, task: parity}")
        assert "task: parity" in params
        write_tiny_config(root, params=params)
        env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
        subprocess.run([str(BIN / "dvc"), "init", "--no-scm", "--quiet"], cwd=root, env=env,
                       check=True)
        state, outcome = run_lifecycle(root / "params.yaml", root / "farm.yaml")
        yield root, state, outcome
    finally:
        registry.forget("parity")


def _json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def test_a_toy_kind_runs_the_lifecycle_and_its_metric_is_what_is_reported(parity_run) -> None:
    from tasks.core import device_code

    root, state, outcome = parity_run
    assert state.is_completed(), state.message
    assert outcome.executed == ALL_STEPS
    assert _json(root / "data" / "prepared" / "meta.json")["task"] == "parity"

    runtimes, tensors = device_code.load("runtimes"), device_code.load("tensors")
    with np.load(root / "data" / "prepared" / "test.npz") as data:
        images, labels = data["x"][:60], data["y"][:60]
    summary = {row["variant"]: row for row in _json(root / "reports" / "summary.json")["results"]}
    index = _json(root / "models" / "variants" / "index.json")
    parities, digits = {}, {}
    for variant in index["variants"]:
        assert variant["spec"]["task"] == "parity"
        runner = runtimes.load_runner(variant["runtime"],
                                      str(root / "models" / "variants" / variant["file"]))
        predicted = np.argmax(tensors.predict(runner, images, variant["spec"]), axis=1)
        parities[variant["name"]] = float(np.mean(predicted % 2 == labels % 2))
        digits[variant["name"]] = float(np.mean(predicted == labels))
        measured = _json(root / "results" / "local" / f"{variant['name']}.json")["harness"]
        # The harness, in its own process, scored with the toy kind: parity, not digits.
        assert measured["accuracy"] == pytest.approx(parities[variant["name"]])
        assert summary[variant["name"]]["accuracy"] == pytest.approx(parities[variant["name"]])
        # Its further measures and its own interval (the normal approximation, not the
        # binomial Wilson one) reach the results and the summary from the device.
        share = parities[variant["name"]]
        half = 1.96 * np.sqrt(share * (1 - share) / 60)  # the toy's default z
        assert measured["task_scores"] == {"odd_share": pytest.approx(share)}
        assert measured["accuracy_interval"] == pytest.approx([max(0.0, share - half),
                                                               min(1.0, share + half)])
        assert summary[variant["name"]]["accuracy_interval"] == measured["accuracy_interval"]
    assert parities != digits  # the toy's metric is not classification's


def test_the_release_carries_the_toy_kind_and_its_predictor_answers_with_it(parity_run) -> None:
    root, state, _ = parity_run
    assert state.is_completed(), state.message
    app = root / ".edgeflow" / "devices" / "local" / "app" / "current"
    manifest = _json(app / "manifest.json")
    assert "edgeflow_device/kinds/parity.py" in {entry["path"] for entry in manifest["files"]}
    assert manifest["spec"]["task"] == "parity"
    # The health check ran on the device (its own process) with the toy kind: parities
    # predicted, scored against the labels' parity.
    health = _json(app / "health.json")
    labels = np.asarray(manifest["check"]["labels"])
    assert set(health["predicted"]) <= {0, 1} and labels.max() > 1
    assert health["accuracy"] == pytest.approx(
        float(np.mean(np.asarray(health["predicted"]) == labels % 2)))
    answered = subprocess.run(
        [sys.executable, str(app / "predict.py"),
         str(app / "check" / manifest["check"]["images"][0])],
        capture_output=True, text=True, timeout=120, check=True)
    answer = json.loads(answered.stdout)
    assert answer["parity"] == ("even", "odd")[health["predicted"][0]]
    assert "class" not in answer and answer["latency_ms"] > 0
