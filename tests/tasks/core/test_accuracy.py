"""Accuracy arithmetic: the Wilson interval and how an accuracy is written with it."""

from __future__ import annotations

import math

import pytest

from tasks.core.accuracy import Z_95, accuracy_interval, format_accuracy, wilson_interval


def _on_boundary(rate: float, correct: int, total: int, z: float = Z_95) -> float:
    # The Wilson bounds are the rates p at which the observed share is exactly z
    # standard errors (of p itself) away: |share - p| = z * sqrt(p (1 - p) / n).
    share = correct / total
    return abs(share - rate) - z * math.sqrt(rate * (1 - rate) / total)


@pytest.mark.parametrize("correct, total", [(37, 41), (1, 10), (356, 360), (500, 1000)])
def test_wilson_bounds_are_where_the_score_test_turns(correct: int, total: int) -> None:
    low, high = wilson_interval(correct, total)
    assert 0.0 < low < correct / total < high < 1.0
    assert _on_boundary(low, correct, total) == pytest.approx(0.0, abs=1e-9)
    assert _on_boundary(high, correct, total) == pytest.approx(0.0, abs=1e-9)


def test_wilson_is_asymmetric_near_the_edges_and_stays_in_range() -> None:
    low, high = wilson_interval(37, 41)
    assert (round(low, 4), round(high, 4)) == (0.7745, 0.9614)
    assert high - 37 / 41 < 37 / 41 - low  # squeezed towards 1, unlike share +- 1.96 se
    assert wilson_interval(0, 20) == (0.0, pytest.approx(0.1611, abs=1e-4))
    assert wilson_interval(20, 20) == (pytest.approx(0.8389, abs=1e-4), 1.0)
    assert wilson_interval(0, 0) == (0.0, 1.0)  # no images: nothing is known


def test_wilson_narrows_with_more_images() -> None:
    small, large = wilson_interval(9, 10), wilson_interval(900, 1000)
    assert large[1] - large[0] < (small[1] - small[0]) / 5


@pytest.mark.parametrize("correct, total", [(-1, 10), (11, 10)])
def test_wilson_refuses_impossible_counts(correct: int, total: int) -> None:
    with pytest.raises(ValueError, match="from 0 to total"):
        wilson_interval(correct, total)


def test_accuracy_interval_counts_the_images_behind_a_share() -> None:
    assert accuracy_interval(37 / 41, 41) == wilson_interval(37, 41)
    assert accuracy_interval(0.5, 1000) == wilson_interval(500, 1000)


@pytest.mark.parametrize("accuracy, samples, text", [
    (37 / 41, 41, "0.90 [0.77, 0.96]"),  # the example: two decimals for 41 images
    (356 / 360, 360, "0.99 [0.97, 1.00]"),
    (0.5, 10_000, "0.500 [0.490, 0.510]"),  # a narrower interval earns a decimal
    (0.5, 1_000_000, "0.5000 [0.4990, 0.5010]"),  # at most four
    (1.0, 360, "1.000 [0.989, 1.000]"),
])
def test_format_accuracy_gives_the_interval_with_meaningful_decimals(
        accuracy: float, samples: int, text: str) -> None:
    assert format_accuracy(accuracy, samples) == text


@pytest.mark.parametrize("total", [1, 7, 41, 1000, 12345])
def test_a_perfect_or_null_score_lies_inside_its_own_interval(total: int) -> None:
    assert wilson_interval(total, total)[1] == 1.0
    assert wilson_interval(0, total)[0] == 0.0
    assert accuracy_interval(1.0, total)[1] >= 1.0


def _all_counts(limit: int = 400):
    return ((correct, total) for total in range(1, limit) for correct in range(total + 1))


def check_wilson_everywhere(interval_of, z: float = Z_95) -> None:
    """``interval_of(correct, total)`` is the Wilson score interval at ``z`` for every
    count up to 399 images: its unclamped ends solve the score equation, it holds the
    share, and it touches 0 (1) exactly when none (all) of the images are right."""
    for correct, total in _all_counts():
        share = correct / total
        low, high = interval_of(correct, total)
        assert 0.0 <= low <= share <= high <= 1.0, (correct, total, low, high)
        assert (low == 0.0) == (correct == 0), (correct, total, low)
        assert (high == 1.0) == (correct == total), (correct, total, high)
        for bound in (low, high):
            if 0.0 < bound < 1.0:
                assert abs(_on_boundary(bound, correct, total, z)) <= 1e-9, (correct, total, bound)


def test_wilson_interval_solves_the_score_equation_for_every_count_below_400() -> None:
    check_wilson_everywhere(wilson_interval)


# The health check's one-sided 95% bound (tasks/device/predict.py's CHECK_Z): the interval
# at another z than the default must use that z in every term of the formula.
ONE_SIDED_Z = 1.645


def test_wilson_interval_at_another_z_solves_that_z_s_equation_for_every_count_below_400() -> None:
    check_wilson_everywhere(lambda correct, total: wilson_interval(correct, total, ONE_SIDED_Z),
                            ONE_SIDED_Z)
    # Narrower than the 95% two-sided interval inside it, for a count where both ends move.
    (low, high), (low95, high95) = wilson_interval(37, 41, ONE_SIDED_Z), wilson_interval(37, 41)
    assert low95 < low < 37 / 41 < high < high95


def test_accuracy_interval_recovers_every_count_even_when_the_share_does_not_round_trip() -> None:
    """An accuracy is a float: 1/49 * 49 is 0.999..., so a count taken back with int()
    (or floor) would be one image short; every (k, n) below 400 must give k's interval."""
    assert 1 / 49 * 49 != 1 and int(1 / 49 * 49) == 0  # such counts exist (the bug's premise)
    for correct, total in _all_counts():
        assert accuracy_interval(correct / total, total) == wilson_interval(correct, total), (
            correct, total)


def test_at_most_four_decimals_however_many_images() -> None:
    """A billion images narrow the interval below 0.0001; the figure keeps four decimals."""
    assert format_accuracy(0.5, 10**9) == "0.5000 [0.5000, 0.5000]"
    assert format_accuracy(0.75, 10**6) == "0.7500 [0.7492, 0.7508]"


@pytest.mark.parametrize(("accuracy", "reference", "drop"), [
    (0.9, 0.9, 0.0), (0.81, 0.9, 0.1), (0.45, 0.9, 0.5), (0.0, 0.8, 1.0),
    (0.95, 0.9, 0.0),   # better than the reference: no drop, never a negative one
    (0.5, 0.0, 0.0),    # no reference accuracy to lose from
])
def test_the_drop_is_relative_to_the_reference_and_never_negative(
        accuracy: float, reference: float, drop: float) -> None:
    from tasks.core.accuracy import relative_drop

    assert relative_drop(accuracy, reference) == pytest.approx(drop, abs=1e-12)


@pytest.mark.parametrize(("samples", "expected"), [
    (0, 3 / 5),   # 0: every image
    (2, 1 / 2), (3, 2 / 3), (4, 2 / 4), (5, 3 / 5),
    (9, 3 / 5),   # more than there are: all of them
])
def test_the_reference_is_the_share_correct_among_the_first_samples(
        samples: int, expected: float) -> None:
    from tasks.core.accuracy import reference_on_first

    assert reference_on_first([1, 0, 1, 0, 1], samples) == expected
    assert reference_on_first([], samples) == 0.0


def test_the_reference_is_scored_and_bounded_as_its_kind_scores_it() -> None:
    """reference.json's per-image results for a detector are its matches (JSON), scored
    as mAP@0.5 on the first N images, with the kind's own interval; an accuracy's are 1/0
    with Wilson's interval."""
    import numpy as np

    from tasks.core import device_code
    from tasks.core.accuracy import accuracy_interval, reference_interval, reference_on_first

    assert reference_on_first([1, 0, 1, 1], 0, "classification") == 0.75
    assert reference_interval([1, 0, 1, 1]) == list(accuracy_interval(0.75, 4))
    kind = device_code.task_kinds().get("detection")
    truth = [np.array([[0, 0.1, 0.1, 0.4, 0.4]]), np.array([[1, 0.5, 0.5, 0.9, 0.9]])]
    found = [np.array([[0, 0.9, 0.1, 0.1, 0.4, 0.4]]),   # class, score, box: a hit
             np.array([[0, 0.8, 0.5, 0.5, 0.9, 0.9]])]   # the wrong class: a miss
    records = [record.as_json() for record in kind.per_sample(found, truth)]
    assert reference_on_first(records, 1, "detection") == 1.0  # the first image only
    # Both images: class 0's AP is 1 (its one object found first; the false positive
    # ranks below it), class 1's is 0 (its object never found): mAP 0.5.
    assert reference_on_first(records, 0, "detection") == kind.metric(kind.per_sample(found,
                                                                                      truth))
    assert reference_on_first(records, 0, "detection") == 0.5
    low, high = reference_interval(records, "detection")
    assert low <= 0.5 <= high
