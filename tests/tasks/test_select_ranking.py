"""Preference orders (tasks/select/ranking.py): the first measure decides unless the best
cannot be told apart on it, then the next; each measure's own rule for "cannot be told
apart"; per-device orders; and the frame-rate requirement (tasks/select)."""

from __future__ import annotations

from typing import get_args

import pytest

from tasks.config import RankKey, Requirements
from tasks.core.contracts.summary import SummaryRow
from tasks.select.ranking import RANK_MEASURES, choose, recommend, why_recommended
from tests.tasks.select.summaries import judge as evaluate
from tests.tasks.select.summaries import summary_row
from tests.tasks.test_select import ok_record


def timed(variant: str, p90: float, interval: tuple[float, float] | None = None,
          accuracy: float = 0.95, size: int = 100_000, device: str = "local",
          fps: float = 100.0, rss: float = 50.0) -> SummaryRow:
    return summary_row(variant, device, "pass", accuracy=accuracy,
                       latency_ms={"p50": p90 / 2, "p90": p90, "p99": p90 * 2, "mean": p90 / 2},
                       latency_ci95_ms={"p50": None, "p90": list(interval) if interval else None},
                       size_bytes=size, throughput_fps=fps, peak_rss_mb=rss)


ORDER = ("latency_p90_ms", "accuracy")


def test_overlapping_latency_intervals_hand_the_choice_to_the_next_measure() -> None:
    quick = timed("quick", 1.00, (0.97, 1.04), accuracy=0.94)
    accurate = timed("accurate", 1.03, (1.01, 1.06), accuracy=0.96)
    choice = choose([quick, accurate], ORDER)
    assert choice is not None and choice.winner is accurate
    assert (choice.decided_by, choice.tied_on, choice.runner_up) == ("accuracy", (
        "latency_p90_ms",), quick)
    assert why_recommended([quick, accurate], ORDER) == {
        "local": "best accuracy among 2 passing variants: 0.9600 against 0.9400 for quick, the "
                 "runner-up (2.1% better), after a tie on latency_p90_ms"}


def test_apart_intervals_let_latency_decide_even_against_accuracy() -> None:
    quick = timed("quick", 1.00, (0.97, 1.00), accuracy=0.94)
    accurate = timed("accurate", 1.03, (1.01, 1.06), accuracy=0.96)
    choice = choose([accurate, quick], ORDER)
    assert choice is not None and choice.winner is quick and choice.decided_by == "latency_p90_ms"
    assert choice.tied_on == ()


@pytest.mark.parametrize(("key", "winner", "decided_by"), [
    ("latency_p50_ms", "accurate", "accuracy"),  # p50 intervals touch at 1.01: a tie
    ("latency_p90_ms", "quick", "latency_p90_ms"),  # p90 intervals apart
])
def test_each_percentile_is_told_apart_by_its_own_interval_touching_ends_a_tie(
        key: str, winner: str, decided_by: str) -> None:
    """Each percentile's tie is its own interval's (p50's overlap, p90's do not), and
    intervals whose ends touch overlap."""
    def row(variant: str, p50: tuple[float, float], p90: tuple[float, float],
            accuracy: float) -> SummaryRow:
        return summary_row(variant, "local", "pass", accuracy=accuracy, size_bytes=100_000,
                           latency_ms={"p50": sum(p50) / 2, "p90": sum(p90) / 2,
                                       "p99": 5.0, "mean": 1.0},
                           latency_ci95_ms={"p50": list(p50), "p90": list(p90)})

    quick = row("quick", (0.97, 1.01), (1.50, 1.60), accuracy=0.94)
    accurate = row("accurate", (1.01, 1.06), (1.61, 1.70), accuracy=0.96)
    for rows in ([quick, accurate], [accurate, quick]):
        choice = choose(rows, (key, "accuracy"))
        assert choice is not None
        assert (choice.winner.variant, choice.decided_by) == (winner, decided_by)


def test_without_intervals_latencies_within_two_percent_are_a_tie() -> None:
    base = timed("base", 1.00, accuracy=0.94)
    close = timed("close", 1.019, accuracy=0.96)  # 1.9% slower: indistinguishable
    apart = timed("apart", 1.021, accuracy=0.96)  # 2.1% slower: measurably slower
    assert recommend([base, close], ORDER) == {"local": "close"}
    assert recommend([base, apart], ORDER) == {"local": "base"}


def test_a_tie_on_every_measure_goes_to_the_smaller_variant() -> None:
    big = timed("big", 1.00, (0.9, 1.1), size=200_000)
    small = timed("small", 1.05, (1.0, 1.2), size=100_000)
    assert recommend([big, small], ORDER) == {"local": "small"}
    assert why_recommended([big, small], ORDER)["local"] == (
        "ties with big on latency_p90_ms, accuracy (0.9500) and is smaller (97.7 vs 195.3 KB)")
    assert why_recommended([big, small], ("latency_p90_ms",))["local"] == (
        "ties with big on latency_p90_ms (1.05 ms against 1 ms, indistinguishable) and is "
        "smaller (97.7 vs 195.3 KB)")


@pytest.mark.parametrize(("order", "winner"), [
    (("throughput_fps",), "fast"),        # higher frame rate is better
    (("peak_rss_mb", "accuracy"), "accurate"),  # 52 vs 50 MB: within 5%, accuracy decides
    (("peak_rss_mb",), "lean"),           # alone, the lower one (then size) wins
    (("size_bytes",), "lean"),
    (("accuracy", "size_bytes"), "accurate"),
])
def test_each_measure_ranks_its_own_way(order: tuple[str, ...], winner: str) -> None:
    rows = [timed("fast", 1.0, fps=120.0, rss=60.0, accuracy=0.93, size=150_000),
            timed("accurate", 1.5, fps=80.0, rss=52.0, accuracy=0.97, size=120_000),
            timed("lean", 1.5, fps=80.0, rss=50.0, accuracy=0.93, size=90_000)]
    assert recommend(rows, order) == {"local": winner}


RANK_KEYS = list(get_args(RankKey))


def best_on_one_each() -> list[SummaryRow]:
    """One row per rank measure, ``best-<measure>``, the best on that measure and no other:
    on measure m, row i is (i - m) mod n steps of 10% worse than the best (no two within a
    tie rule's 2% or 5%), so whichever field a measure wrongly read would pick another row."""
    def step(row: int, key: str) -> int:
        return (row - RANK_KEYS.index(key)) % len(RANK_KEYS)

    rows = []
    for index, key in enumerate(RANK_KEYS):
        worse = {measure: 1 + 0.1 * step(index, measure) for measure in RANK_KEYS}
        rows.append(summary_row(
            f"best-{key}", "local", "pass",
            latency_ms={"p50": worse["latency_p50_ms"], "p90": 3 * worse["latency_p90_ms"],
                        "p99": 6 * worse["latency_p99_ms"], "mean": 2.0},
            throughput_fps=100 / worse["throughput_fps"],
            accuracy=0.99 - 0.01 * step(index, "accuracy"),
            size_bytes=int(100_000 * worse["size_bytes"]), peak_rss_mb=50 * worse["peak_rss_mb"],
            energy_mj=2.0 * worse["energy_mj"], energy_source="estimated"))
    return rows


@pytest.mark.parametrize("key", RANK_KEYS)
def test_every_rank_measure_picks_the_row_best_on_its_own_field(key: str) -> None:
    """Each measure a preference order may name (the params model's RankKey, so a new one
    joins) ranks by its own field, the right way up, in either row order."""
    assert key in RANK_MEASURES, f"rank_by accepts {key} but ranking has no measure for it"
    rows = best_on_one_each()
    for ordered in (rows, rows[::-1]):
        choice = choose(ordered, (key,))
        assert choice is not None
        assert (choice.winner.variant, choice.decided_by) == (f"best-{key}", key)


def test_frame_rates_within_two_percent_are_a_tie() -> None:
    rows = [timed("a", 1.0, fps=100.0, accuracy=0.94), timed("b", 1.0, fps=98.5, accuracy=0.96)]
    assert recommend(rows, ("throughput_fps", "accuracy")) == {"local": "b"}
    rows[1] = rows[1].model_copy(update={"throughput_fps": 97.0})
    assert recommend(rows, ("throughput_fps", "accuracy")) == {"local": "a"}


def test_each_device_ranks_by_its_own_order() -> None:
    rows = [timed("quick", 1.0, size=200_000, device="gateway"),
            timed("small", 3.0, size=50_000, device="gateway"),
            timed("quick", 1.0, size=200_000, device="sensor"),
            timed("small", 3.0, size=50_000, device="sensor")]
    orders = {"gateway": ["latency_p90_ms"], "sensor": ["size_bytes", "latency_p90_ms"]}
    assert recommend(rows, orders) == {"gateway": "quick", "sensor": "small"}
    assert why_recommended(rows, orders)["sensor"].startswith(
        "best size_bytes among 2 passing variants: 48.8 KB against 195.3 KB for quick")


def test_a_frame_rate_below_the_requirement_fails_with_both_numbers() -> None:
    record = ok_record(mean=20.0)  # 50 fps
    slow = evaluate(record, Requirements(max_accuracy_drop=None, min_fps=60), 0.9)
    assert slow.status == "fail"
    assert slow.reasons == ["throughput 50.0 fps < min_fps 60.0"]
    fast = evaluate(record, Requirements(max_accuracy_drop=None, min_fps=50), 0.9)
    assert fast.status == "pass" and fast.reasons == []


def test_energies_with_overlapping_intervals_hand_the_choice_to_the_next_measure() -> None:
    """Energy per inference ranks lowest first; overlapping 95% intervals are a tie."""
    frugal = timed("frugal", 2.0, accuracy=0.93).model_copy(update={
        "energy_mj": 1.0, "energy_interval": [0.9, 1.1], "energy_source": "measured"})
    hungry = timed("hungry", 1.0, accuracy=0.97).model_copy(update={
        "energy_mj": 1.5, "energy_interval": [1.4, 1.6], "energy_source": "measured"})
    assert recommend([hungry, frugal], ("energy_mj", "accuracy")) == {"local": "frugal"}
    hungry = hungry.model_copy(update={"energy_interval": [1.05, 1.6]})
    assert recommend([hungry, frugal], ("energy_mj", "accuracy")) == {"local": "hungry"}
    assert "best energy_mj among 2 passing variants: 1 mJ against 1.5 mJ" in why_recommended(
        [frugal, hungry.model_copy(update={"energy_interval": [1.4, 1.6]})],
        ("energy_mj",))["local"]
