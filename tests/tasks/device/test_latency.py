"""tasks/device/latency.py: the statistics of timed runs (percentiles, their distribution-free
intervals) and the raw latencies' encoding."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest

from tasks.device.latency import (encode_latencies, latency_summary, percentile_intervals,
                                   quantile_interval)


def linear_percentile(values: list[float], q: float) -> float:
    """numpy's default ("linear") percentile written out, to check the harness against:
    the value at rank (n - 1) * q / 100 of the sorted values, interpolated between the
    two values around it."""
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


# Shuffled, so nothing depends on the order the runs came in. Every statistic differs
# from every other one, so one computed as another (p90 as p50, p99 as max, the mean as
# the median) gives a wrong number: 1..10 ms and a 100 ms outlier (odd count: p50 and
# p90 fall on values, p99 between two); four runs (even count: all three in between).
@pytest.mark.parametrize(("latencies", "p50", "p90", "p99"), [
    ([7.0, 3.0, 100.0, 1.0, 9.0, 5.0, 2.0, 10.0, 4.0, 8.0, 6.0], 6.0, 10.0, 91.0),
    ([4.0, 1.0, 3.0, 2.0], 2.5, 3.7, 3.97),
])
def test_latency_summary_reports_each_statistic_of_the_timed_runs(
        latencies: list[float], p50: float, p90: float, p99: float) -> None:
    summary = latency_summary(latencies)
    assert set(summary) == {"runs", "timed_seconds", "latency_ms", "latency_ci95_ms",
                            "throughput_fps"}
    latency = summary["latency_ms"]
    assert set(latency) == {"p50", "p90", "p99", "mean", "std", "min", "max"}
    for q, expected in ((50, p50), (90, p90), (99, p99)):
        assert latency[f"p{q}"] == pytest.approx(expected, rel=1e-12)
        assert latency[f"p{q}"] == pytest.approx(linear_percentile(latencies, q), rel=1e-12)
    assert latency["mean"] == pytest.approx(sum(latencies) / len(latencies), rel=1e-12)
    # The population standard deviation: the timed runs are all the runs there are.
    assert latency["std"] == pytest.approx(statistics.pstdev(latencies), rel=1e-12)
    assert (latency["min"], latency["max"]) == (min(latencies), max(latencies))
    assert summary["runs"] == len(latencies)
    assert summary["timed_seconds"] == pytest.approx(sum(latencies) / 1000, rel=1e-12)
    # Sequential batch 1: runs per second of summed latency.
    assert summary["throughput_fps"] == pytest.approx(len(latencies) * 1000 / sum(latencies),
                                                      rel=1e-12)
    # 11 runs: the median's 95% interval is X(2)..X(10) (P(B <= 1) = 12/2048 <= 0.025 <
    # P(B <= 2), P(B <= 8) < 0.975 <= P(B <= 9)); too few runs for p90's. 4 runs: none.
    assert summary["latency_ci95_ms"] == ({"p50": [2.0, 10.0], "p90": None}
                                          if len(latencies) == 11 else {"p50": None, "p90": None})
    # Plain floats and ints: the result is written with json.dump.
    assert all(type(value) is float for value in latency.values())
    assert type(summary["runs"]) is int
    assert type(summary["timed_seconds"]) is type(summary["throughput_fps"]) is float



@pytest.mark.parametrize(("n", "q"), [(100, 0.5), (45, 0.9), (60, 0.9), (1000, 0.9), (257, 0.5)])
def test_quantile_interval_ranks_are_the_exact_binomial_ones(n: int, q: float) -> None:
    from scipy.stats import binom

    ordered = np.arange(1.0, n + 1)  # X(i) = i: the interval shows its ranks
    low, high = quantile_interval(ordered, q)
    # Equal tails: the largest j with P(B <= j-1) <= 2.5%, the smallest k with
    # P(B <= k-1) >= 97.5%.
    j = max(j for j in range(1, n + 1) if binom.cdf(j - 1, n, q) <= 0.025)
    k = min(k for k in range(1, n + 1) if binom.cdf(k - 1, n, q) >= 0.975)
    assert (low, high) == (j, k)
    assert binom.cdf(k - 1, n, q) - binom.cdf(j - 1, n, q) >= 0.95
    if (n, q) == (100, 0.5):
        assert (low, high) == (40, 61)  # the textbook median interval of 100 samples


def test_quantile_interval_is_none_when_too_few_runs_for_95_percent() -> None:
    # P(B <= n-1) = 1 - 0.9^n reaches 97.5% at n = 36 (n >= ln 0.025 / ln 0.9 = 35.01).
    assert quantile_interval(np.arange(1.0, 36), 0.9) is None  # 35 runs
    assert quantile_interval(np.arange(1.0, 37), 0.9) is not None
    assert quantile_interval(np.arange(1.0, 6), 0.5) is None
    assert quantile_interval(np.array([]), 0.5) is None


def test_quantile_intervals_cover_the_true_percentile_95_percent_of_the_time() -> None:
    """On skewed data (latencies are), without assuming any distribution: each tail is
    missed at most about 2.5% of the time."""
    rng = np.random.default_rng(7)
    truth = {"p50": np.exp(0.0), "p90": np.exp(1.2815515655446004 * 0.6)}  # lognormal(0, .6)
    missed = {(name, side): 0 for name in truth for side in ("low", "high")}
    trials = 3000
    for _ in range(trials):
        intervals = percentile_intervals(rng.lognormal(0.0, 0.6, size=80))
        for name, (low, high) in intervals.items():
            missed[(name, "low")] += truth[name] < low
            missed[(name, "high")] += truth[name] > high
    for (name, side), count in missed.items():
        assert count / trials <= 0.035, (name, side, count / trials)
    for name in truth:
        assert 0.93 <= 1 - (missed[(name, "low")] + missed[(name, "high")]) / trials <= 0.995



def test_raw_latencies_round_trip_through_their_encoding() -> None:
    import base64
    import zlib

    latencies = [1_234_567, 987, 10**12, 0]
    encoded = encode_latencies(latencies)
    assert (encoded["encoding"], encoded["count"]) == ("int64-le-ns+zlib+base64", 4)
    raw = zlib.decompress(base64.b64decode(encoded["data"]))
    assert np.frombuffer(raw, dtype="<i8").tolist() == latencies
