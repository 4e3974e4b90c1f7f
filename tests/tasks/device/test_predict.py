"""tasks/device/predict.py: a release's files are checked before the predictor runs any
other code of its package (the predictor's health check, its CLI and ``Model`` run for
real on a released model in tests/tasks/test_release.py)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import release_folder

# No PYTHONPATH: the release's own code, as an application on a board runs it.
BOARD_ENV = {"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"}
RUNTIMES = "edgeflow_device/runtimes.py"


def missing(folder: Path) -> None:
    (folder / RUNTIMES).unlink()


def ran_before_the_check(folder: Path) -> None:
    # Code that would say so, were it run before the check that refuses it.
    path = folder / RUNTIMES
    path.write_text('raise RuntimeError("ran before the check")\n' + path.read_text())


DAMAGES = {"missing": (missing, r"is missing \(the release is incomplete\)"),
           "altered": (ran_before_the_check, r"is not the released file \(sha256 ")}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_a_missing_or_altered_module_of_the_package_is_named_before_any_is_run(
        tmp_path: Path, damage: str) -> None:
    """``python predict.py IMAGE``: one line naming the file, exit 2, no traceback;
    ``Model(folder)`` through the launcher: the ValueError naming it."""
    folder = release_folder(tmp_path / "release")
    subprocess.run([sys.executable, str(folder / "predict.py"), "--help"], env=BOARD_ENV,
                   capture_output=True, check=True, timeout=60)  # intact: it starts
    damage_of, says = DAMAGES[damage]
    damage_of(folder)
    expected = rf"{RUNTIMES} in {re.escape(str(folder))} {says}"
    run = subprocess.run([sys.executable, str(folder / "predict.py"), "image.png"], cwd="/",
                         env=BOARD_ENV, capture_output=True, text=True, timeout=60, check=False)
    assert (run.returncode, run.stdout) == (2, ""), run.stderr
    assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr, run.stderr
    assert re.match(rf"predict.py: {expected}", run.stderr), run.stderr
    loaded = subprocess.run(
        [sys.executable, "-c", "from predict import Model\n"
                               f"try:\n    Model({str(folder)!r})\n"
                               "except ValueError as error:\n    print(error)\n"],
        cwd=folder, env=BOARD_ENV, capture_output=True, text=True, timeout=60, check=False)
    assert loaded.returncode == 0 and loaded.stderr == "", loaded.stderr
    assert re.match(expected, loaded.stdout), loaded.stdout


def test_the_names_of_the_pre_processing_load_when_asked_for_through_the_launcher(
        tmp_path: Path) -> None:
    """``from predict import ImageError`` works as it did, though the pre-processing is
    no longer imported at the predictor's load."""
    folder = release_folder(tmp_path / "release")
    said = subprocess.run(
        [sys.executable, "-c", "import sys, predict\n"
                               "print('edgeflow_device.preprocess' in sys.modules)\n"
                               "from predict import ImageError, to_model_input\n"
                               "print(ImageError.__module__, to_model_input.__module__)\n"],
        cwd=folder, env=BOARD_ENV, capture_output=True, text=True, timeout=60, check=False)
    assert said.returncode == 0, said.stderr
    assert said.stdout.split() == ["False", "edgeflow_device.preprocess",
                                   "edgeflow_device.preprocess"]
