"""tasks/core/device_code.py: the device package imported by name here, and where each of
its files goes on a board (the package under its shipped name, a launcher per entry)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.core import device_code


def test_load_imports_the_device_package_by_name() -> None:
    from tasks.device import runtimes

    assert device_code.load("runtimes") is runtimes
    assert device_code.harness().__name__ == "tasks.device.harness"
    assert device_code.predictor().__name__ == "tasks.device.predict"
    assert device_code.preprocess().__name__ == "tasks.device.preprocess"


def test_shipped_puts_the_package_under_its_board_name_and_a_launcher_per_entry() -> None:
    files = device_code.shipped("/w/run", ("harness", "predict"))
    assert files[:2] == [(device_code.LAUNCHER_PATH, "/w/run/harness.py"),
                         (device_code.LAUNCHER_PATH, "/w/run/predict.py")]
    package = {remote.removeprefix("/w/run/edgeflow_device/"): local for local, remote in files[2:]}
    assert all(remote.startswith("/w/run/edgeflow_device/") for _, remote in files[2:])
    assert {"__init__.py", "harness.py", "predict.py", "preprocess.py", "runtimes.py",
            "tensors.py", "spec.py", "kinds/__init__.py", "kinds/classification.py"} <= set(package)
    # Run by path, imported by no module: not in the package.
    assert "launch.py" not in package and "releases.py" not in package
    assert all(local == device_code.DEVICE_DIR / name for name, local in package.items())


def test_an_entry_that_is_no_module_of_the_package_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^no device module releases, nope \(known: "):
        device_code.shipped("/w", ("harness", "releases", "nope"))


def test_the_launcher_imports_the_package_device_code_ships() -> None:
    tree = ast.parse(device_code.LAUNCHER_PATH.read_text(encoding="utf-8"))
    (value,) = [node.value.value for node in tree.body if isinstance(node, ast.Assign)
                and [target.id for target in node.targets if isinstance(target, ast.Name)]
                == ["PACKAGE"]]
    assert value == device_code.SHIPPED_PACKAGE


def test_a_shipped_predictor_runs_as_a_script_and_imports_as_predict(tmp_path: Path) -> None:
    """What an application does with a release folder: ``python predict.py`` and
    ``from predict import Model``, with no edgeflow on the path."""
    placed = device_code.ship(tmp_path, ("predict",))
    assert "predict.py" in placed and "edgeflow_device/predict.py" in placed
    assert "edgeflow_device/kinds/classification.py" in placed  # the predictor answers by it
    env = {"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"}  # no PYTHONPATH: no edgeflow
    imported = subprocess.run(
        [sys.executable, "-c", "from predict import Model, RELEASE\n"
                               "print(Model.__module__, RELEASE)"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.split() == ["edgeflow_device.predict", str(tmp_path)]
    run = subprocess.run([sys.executable, str(tmp_path / "predict.py")], cwd="/", env=env,
                         capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 2 and "give image files, --serve or --check" in run.stderr
