"""The registry of kinds of task (tasks/device/kinds/__init__.py), as the orchestrator
(device_code.task_kinds), the harness and the predictor see it: kinds found by name, a
kind registered from a file shipped with the device package and found by name on a
board."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tasks.core import device_code
from tasks.device import tensors

PARITY = Path(__file__).resolve().parents[3] / "flows" / "parity_kind.py"
REPO = Path(__file__).resolve().parents[4]


@pytest.fixture
def registry():
    return device_code.task_kinds()


@pytest.fixture
def parity(registry):
    kind = registry.register_file(str(PARITY))
    yield kind
    registry.forget("parity")


def test_the_registry_is_the_device_packages_own(registry) -> None:
    """One module: a kind registered through device_code is the harness's and the
    predictor's too."""
    from tasks.device import kinds

    assert registry is kinds and registry.__name__ == "tasks.device.kinds"
    assert registry.get("classification").name == "classification"
    assert sys.modules["tasks.device.kinds.classification"].KIND is registry.get("classification")


def test_the_registry_loads_without_numpy() -> None:
    """The configuration validates data.task against it: no NumPy for that."""
    listed = subprocess.run(
        [sys.executable, "-c", "import sys; sys.modules['numpy'] = None\n"
                               "from tasks.device import kinds; print(kinds.names())"],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.strip() == "['classification', 'detection']"


def test_an_unknown_kind_is_refused_naming_the_known_ones(registry) -> None:
    with pytest.raises(ValueError) as caught:
        registry.get("segmentation")
    assert str(caught.value) == ("unknown task kind 'segmentation': one of classification, "
                                 "detection")
    with pytest.raises(ValueError, match="unknown task kind '../x'"):
        registry.get("../x")  # a name, never a path


def test_a_spec_without_a_task_is_classification(registry, parity) -> None:
    assert registry.of_spec({"input": {}}).name == "classification"
    assert registry.of_spec({"task": "parity"}) is parity


def test_a_kind_registered_from_a_file_ships_in_the_package_and_is_found_on_a_board(
        registry, parity, tmp_path: Path) -> None:
    assert registry.names() == ["classification", "detection", "parity"]
    assert registry.source("parity") == str(PARITY)
    assert registry.registered() == {"parity": str(PARITY)}  # built-in ones ship as modules
    files = device_code.package_files()
    assert (PARITY, "kinds/parity.py") in files
    assert (device_code.DEVICE_DIR / "kinds" / "__init__.py", "kinds/__init__.py") in files
    assert (device_code.DEVICE_DIR / "kinds" / "classification.py",
            "kinds/classification.py") in files
    placed = device_code.ship(tmp_path / "board", ("harness",))
    assert {"edgeflow_device/kinds/__init__.py", "edgeflow_device/kinds/classification.py",
            "edgeflow_device/kinds/parity.py"} <= set(placed)
    # On the board, in a process that registered nothing and has no edgeflow: found by
    # name in the shipped package.
    env = {"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"}
    found = subprocess.run(
        [sys.executable, "-c", "from edgeflow_device import kinds\n"
                               "kind = kinds.get('parity')\n"
                               "print(kinds.names(), kind.decode([0.0, 0.0, 0.0, 5.0]),"
                               " type(kind).__module__)"],
        cwd=tmp_path / "board", env=env, capture_output=True, text=True, timeout=60,
        check=False)
    assert found.returncode == 0, found.stderr
    assert found.stdout.split() == ["['classification',", "'detection',", "'parity']", "1",
                                    "edgeflow_device.kinds.parity"]


def test_a_forgotten_kind_no_longer_ships(registry, parity) -> None:
    registry.forget("parity")
    assert "parity" not in registry.names() and registry.registered() == {}
    assert not [inside for _, inside in device_code.package_files() if inside == "kinds/parity.py"]


def test_a_second_file_under_a_known_name_is_refused(registry, parity, tmp_path: Path) -> None:
    copy = tmp_path / "other.py"
    copy.write_text(PARITY.read_text(encoding="utf-8"), encoding="utf-8")
    with pytest.raises(ValueError, match="'parity' is already registered from"):
        registry.register_file(str(copy))
    # A built-in kind's name too, asked for or not.
    impostor = tmp_path / "impostor.py"
    impostor.write_text(PARITY.read_text(encoding="utf-8")
                        .replace('name = "parity"', 'name = "classification"'), encoding="utf-8")
    with pytest.raises(ValueError, match="'classification' is already registered from .*"
                                         "kinds/classification.py"):
        registry.register_file(str(impostor))
    registry.forget("parity")
    assert "parity" not in registry.names()


def test_the_harness_checks_outputs_as_the_spec_kind_says(parity) -> None:
    x = np.zeros((1, 8, 8, 1), np.float32)
    spec = {"input": {"shape": [1, 8, 8, 1]}, "task": "parity"}
    tensors.check_shapes(x, np.zeros((1, 2)), spec)
    with pytest.raises(ValueError, match="parity reads a row of at least two scores"):
        tensors.check_shapes(x, np.zeros((1, 1)), spec)
    # Classification accepts what parity refuses: the check is the kind's.
    tensors.check_shapes(x, np.zeros((1, 1)), {"input": {"shape": [1, 8, 8, 1]}})
