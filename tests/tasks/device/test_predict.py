"""tasks/device/predict.py: a release's files are checked before the predictor runs any
other code of its package (the predictor's health check, its CLI and ``Model`` run for
real on a released model in tests/tasks/test_release.py)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
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


def checked(labels: list[int], predicted: list[int], floor: float | None,
            limit: float | None, p90: float) -> dict:
    """``Model.check`` on a model whose answers and timed p90 are known: it predicts
    ``predicted`` for the check images labelled ``labels`` and its runs' p90 is ``p90``."""
    from types import SimpleNamespace

    from tasks.device import predict
    from tasks.device.kinds.classification import KIND

    model = predict.Model.__new__(predict.Model)
    model.folder = "/release"
    model.manifest = {"check": {"folder": "check", "images": [f"{i}.png" for i in
                                                              range(len(labels))],
                                "labels": labels, "accuracy_floor": floor,
                                "max_latency_p90_ms": limit}}
    model.spec = {"input": {}}
    model.kind = KIND
    answers = {f"/release/check/{i}.png": answer for i, answer in enumerate(predicted)}
    model.prepare = lambda path: answers[path]
    model.logits = lambda answer: np.eye(3)[answer]
    model._tensors = SimpleNamespace(quantize_input=lambda x, spec: x)
    model.runner = SimpleNamespace(infer=lambda x: x)
    model._latency = SimpleNamespace(latency_summary=lambda runs: {"latency_ms": {"p90": p90}})
    return model.check()


# 17 of 20 right: accuracy 0.85, its one-sided 95% upper bound (z 1.645) 0.938.
LABELS, PREDICTED = [0, 1, 2, 0] * 5, [0, 1, 2, 0] * 4 + [0, 0, 0, 1]


def test_the_health_check_judges_the_accuracy_floor_by_the_upper_bound_reached_exactly() -> None:
    """The floor is met by the score's upper bound, not the score: a floor between the
    two passes; the bound equal to the floor passes; a floor a hair above it fails, with
    the figures in the reason."""
    from tasks.core.accuracy import wilson_interval

    upper = wilson_interval(17, 20, 1.645)[1]
    assert 0.85 < 0.9 < upper < 0.95
    between = checked(LABELS, PREDICTED, 0.9, None, 1.0)
    assert between["passed"] and between["reasons"] == []
    assert (between["accuracy"], between["accuracy_upper"], between["accuracy_floor"]) == (
        0.85, upper, 0.9)
    assert checked(LABELS, PREDICTED, upper, None, 1.0)["passed"]
    above = checked(LABELS, PREDICTED, 0.95, None, 1.0)
    assert not above["passed"]
    assert above["reasons"] == [f"accuracy 0.850 on 20 check images (95% upper bound "
                                f"{upper:.3f}) is below the floor 0.950"]
    # All right reaches a floor of 1.0 (the bound is exactly 1).
    assert checked(LABELS, LABELS, 1.0, None, 1.0)["passed"]


def test_the_health_check_floor_and_latency_limit_each_bind_alone() -> None:
    """Accuracy floor and p90 limit are separate: each one fails the check with the other
    met, a p90 equal to the limit passes, and both missing give both reasons."""
    limit_only = checked(LABELS, PREDICTED, 0.9, 5.0, 5.5)
    assert not limit_only["passed"]
    assert limit_only["reasons"] == ["p90 latency 5.500 ms is above the limit 5 ms"]
    assert (limit_only["latency_p90_ms"], limit_only["max_latency_p90_ms"]) == (5.5, 5.0)
    assert checked(LABELS, PREDICTED, 0.9, 5.0, 5.0)["passed"]
    floor_only = checked(LABELS, PREDICTED, 0.95, 5.0, 4.0)
    assert [reason.split(" ")[0] for reason in floor_only["reasons"]] == ["accuracy"]
    both = checked(LABELS, PREDICTED, 0.95, 5.0, 5.5)
    assert [reason.split(" ")[0] for reason in both["reasons"]] == ["accuracy", "p90"]
    # No floor and no limit: nothing to miss, whatever the score and the p90.
    assert checked(LABELS, [1] * 20, None, None, 1e9)["passed"]


def test_the_health_check_passes_every_count_exactly_when_its_upper_bound_reaches_the_floor(
        ) -> None:
    """For every count of right answers on 20 check images: a floor equal to the score's
    one-sided upper bound (z = CHECK_Z, not the two-sided 1.96) passes and the next float
    above it fails; the score itself, the two-sided bound or the lower one would put some
    count on the wrong side. The p90 limit likewise: equal passes, a hair below fails."""
    import math

    from tasks.core.accuracy import wilson_interval
    from tasks.device.predict import CHECK_Z

    wrong = [(label + 1) % 3 for label in LABELS]
    for correct in range(len(LABELS) + 1):
        predicted = LABELS[:correct] + wrong[correct:]
        upper = wilson_interval(correct, len(LABELS), CHECK_Z)[1]
        at = checked(LABELS, predicted, upper, 4.0, 4.0)
        assert (at["passed"], at["reasons"]) == (True, []), correct
        assert (at["accuracy"], at["accuracy_upper"]) == (correct / len(LABELS), upper)
        if upper < 1.0:
            above = math.nextafter(upper, 2.0)
            missed = checked(LABELS, predicted, above, 4.0, 4.0)
            assert missed["reasons"] == [
                f"accuracy {correct / len(LABELS):.3f} on 20 check images (95% upper bound "
                f"{upper:.3f}) is below the floor {above:.3f}"], correct
    slow = checked(LABELS, LABELS, 1.0, math.nextafter(4.0, 0.0), 4.0)
    assert slow["reasons"] == [f"p90 latency 4.000 ms is above the limit "
                               f"{math.nextafter(4.0, 0.0):g} ms"]


@pytest.mark.parametrize(("images", "runs"), [(20, 100), (100, 100), (130, 130)])
def test_the_health_check_times_at_least_its_minimum_runs_and_every_image(images: int,
                                                                         runs: int) -> None:
    """The p90 comes from the larger of CHECK_LATENCY_RUNS (100) and the number of check
    images: 20 images are timed 100 times over, 130 images once each."""
    labels = [index % 3 for index in range(images)]
    assert checked(labels, labels, None, None, 1.0)["latency_runs"] == runs
