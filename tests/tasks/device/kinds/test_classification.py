"""tasks/device/kinds/classification.py: one row of class scores per image, the top class
its prediction, top-1 accuracy with its Wilson interval, the predictor's answer."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.core import device_code
from tasks.core.accuracy import Z_95, wilson_interval
from tasks.device.predict import CHECK_Z


@pytest.fixture
def kind():
    return device_code.task_kinds().get("classification")


def test_classification_decodes_the_top_class_and_scores_each_image(kind) -> None:
    outputs = np.array([[0.1, 2.0, -1.0], [3.0, 0.0, 0.5], [0.0, 0.2, 0.1]], np.float32)
    predicted = [kind.decode(row) for row in outputs]
    assert predicted == [1, 0, 1]
    per_sample = kind.per_sample(predicted, np.array([1, 2, 1]))
    assert per_sample.tolist() == [1.0, 0.0, 1.0]
    assert kind.metric(per_sample) == pytest.approx(2 / 3)
    assert kind.agreement(predicted, [1, 0, 2]) == pytest.approx(2 / 3)
    answer = kind.answer(np.array([0.0, np.log(3.0)]), ["cat", "dog"])
    assert answer == {"class": "dog", "index": 1, "score": 0.75}


def test_classification_interval_is_the_wilson_score_interval(kind) -> None:
    for correct, total in ((37, 41), (0, 12), (12, 12), (5, 60)):
        per_sample = np.array([1.0] * correct + [0.0] * (total - correct))
        assert kind.interval(per_sample) == pytest.approx(wilson_interval(correct, total),
                                                          abs=1e-12)
    low, high = kind.interval(np.array([1.0] * 37 + [0.0] * 4))
    assert (round(low, 2), round(high, 2)) == (0.77, 0.96)
    assert kind.interval(np.array([])) == (0.0, 1.0)


def test_classification_refuses_an_output_that_is_not_one_row_of_scores(kind) -> None:
    x = np.zeros((1, 8, 8, 1))
    kind.check_output(x, np.zeros((1, 10)), {})
    for shape in ((0, 10), (1, 0), ()):
        with pytest.raises(ValueError, match="not one row of class scores"):
            kind.check_output(x, np.zeros(shape), {})


@pytest.mark.parametrize("z", [Z_95, CHECK_Z], ids=["two-sided-95", "health-check"])
def test_classification_interval_is_the_orchestrators_exactly_for_every_count_below_400(
        kind, z: float) -> None:
    """The board's copy of the Wilson interval (it cannot import tasks.core) gives the
    orchestrator's figures to the last bit for every (k, n) with n < 400, at the default z
    and at the health check's one-sided z, so it solves that z's score equation, holds the
    share and reaches 0 and 1 exactly at none and all right (a perfect check score inside
    its own interval, a floor of 1.0 reachable)."""
    from tests.tasks.core.test_accuracy import check_wilson_everywhere

    # Every per-sample vector is a view of this one: ``total - correct`` wrong then
    # ``correct`` right (no array built per count keeps the 80,000 counts cheap).
    scores = np.concatenate([np.zeros(400), np.ones(400)])

    def board(correct: int, total: int) -> tuple[float, float]:
        found = kind.interval(scores[400 - (total - correct):400 + correct], z)
        assert found == wilson_interval(correct, total, z), (correct, total)
        return found

    check_wilson_everywhere(board, z)
    assert kind.interval(np.ones(50), CHECK_Z)[1] == 1.0


def test_classification_labels_in_json_are_class_indices_and_it_places_nothing(kind) -> None:
    labels = [kind.json_label(label) for label in np.array([3, 0, 7], np.int64)]
    assert labels == [3, 0, 7] and all(type(label) is int for label in labels)

    def place(boxes: np.ndarray) -> np.ndarray:
        raise AssertionError("a classifier has no boxes to place")

    assert kind.answer(np.array([0.0, np.log(3.0)]), ["cat", "dog"], place=place) == {
        "class": "dog", "index": 1, "score": 0.75}
    assert (kind.locates, kind.metric_name) == (False, "accuracy")
