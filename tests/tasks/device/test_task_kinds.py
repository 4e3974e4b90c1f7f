"""The registry of kinds of task (tasks/device/kinds/__init__.py) and classification
(tasks/device/kinds/classification.py), as the harness, the predictor and the
orchestrator see them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tasks.core import device_code, task_kinds
from tasks.core.accuracy import wilson_interval

PARITY = Path(__file__).resolve().parents[2] / "flows" / "parity_kind.py"


@pytest.fixture
def registry():
    return task_kinds.registry()


@pytest.fixture
def parity(registry):
    kind = registry.register_file(str(PARITY))
    yield kind
    registry.forget("parity")


def test_classification_decodes_the_top_class_and_scores_each_image(registry) -> None:
    kind = registry.get("classification")
    outputs = np.array([[0.1, 2.0, -1.0], [3.0, 0.0, 0.5], [0.0, 0.2, 0.1]], np.float32)
    predicted = [kind.decode(row) for row in outputs]
    assert predicted == [1, 0, 1]
    per_sample = kind.per_sample(predicted, np.array([1, 2, 1]))
    assert per_sample.tolist() == [1.0, 0.0, 1.0]
    assert kind.metric(per_sample) == pytest.approx(2 / 3)
    assert kind.agreement(predicted, [1, 0, 2]) == pytest.approx(2 / 3)
    answer = kind.answer(np.array([0.0, np.log(3.0)]), ["cat", "dog"])
    assert answer == {"class": "dog", "index": 1, "score": 0.75}


def test_classification_interval_is_the_wilson_score_interval(registry) -> None:
    kind = registry.get("classification")
    for correct, total in ((37, 41), (0, 12), (12, 12), (5, 60)):
        per_sample = np.array([1.0] * correct + [0.0] * (total - correct))
        assert kind.interval(per_sample) == pytest.approx(wilson_interval(correct, total),
                                                          abs=1e-12)
    low, high = kind.interval(np.array([1.0] * 37 + [0.0] * 4))
    assert (round(low, 2), round(high, 2)) == (0.77, 0.96)
    assert kind.interval(np.array([])) == (0.0, 1.0)


def test_classification_refuses_an_output_that_is_not_one_row_of_scores(registry) -> None:
    kind, x = registry.get("classification"), np.zeros((1, 8, 8, 1))
    kind.check_output(x, np.zeros((1, 10)), {})
    for shape in ((0, 10), (1, 0), ()):
        with pytest.raises(ValueError, match="not one row of class scores"):
            kind.check_output(x, np.zeros(shape), {})


def test_an_unknown_kind_is_refused_naming_the_known_ones(registry) -> None:
    with pytest.raises(ValueError) as caught:
        registry.get("detection")
    assert str(caught.value) == "unknown task kind 'detection': one of classification"
    with pytest.raises(ValueError, match="unknown task kind '../x'"):
        registry.get("../x")  # a name, never a path


def test_a_spec_without_a_task_is_classification(registry, parity) -> None:
    assert registry.of_spec({"input": {}}).name == "classification"
    assert registry.of_spec({"task": "parity"}) is parity


def test_a_kind_registered_from_a_file_ships_with_the_harness(registry, parity,
                                                                tmp_path: Path) -> None:
    assert registry.names() == ["classification", "parity"]
    assert registry.source("parity") == str(PARITY)
    assert (PARITY, "kinds/parity.py") in device_code.task_kind_files()
    assert (task_kinds.REGISTRY_PATH, "kinds/__init__.py") in device_code.task_kind_files()
    harness = device_code.place_harness(tmp_path / "board")
    # On the board, in a process that registered nothing: found by name beside it.
    found = subprocess.run(
        [sys.executable, "-c",
         "import importlib.util, sys; spec = importlib.util.spec_from_file_location("
         "'kinds', sys.argv[1]); module = importlib.util.module_from_spec(spec); "
         "spec.loader.exec_module(module); kind = module.get('parity'); "
         "print(module.names(), kind.decode([0.0, 0.0, 0.0, 5.0]))",
         str(harness.parent / "kinds" / "__init__.py")],
        capture_output=True, text=True, timeout=60, check=True)
    assert found.stdout.split("]")[-1].strip() == "1"
    assert "'classification', 'parity'" in found.stdout


def test_a_second_file_under_a_known_name_is_refused(registry, parity, tmp_path: Path) -> None:
    copy = tmp_path / "other.py"
    copy.write_text(PARITY.read_text(encoding="utf-8"), encoding="utf-8")
    with pytest.raises(ValueError, match="'parity' is already registered from"):
        registry.register_file(str(copy))
    registry.forget("parity")
    assert "parity" not in registry.names()


def test_the_harness_checks_outputs_as_the_spec_kind_says(parity) -> None:
    harness = device_code.harness()
    x = np.zeros((1, 8, 8, 1), np.float32)
    spec = {"input": {"shape": [1, 8, 8, 1]}, "task": "parity"}
    harness.check_shapes(x, np.zeros((1, 2)), spec)
    with pytest.raises(ValueError, match="parity reads a row of at least two scores"):
        harness.check_shapes(x, np.zeros((1, 1)), spec)
