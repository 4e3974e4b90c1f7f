"""The statistics of timed runs: distribution-free intervals of percentiles, their
widths, the latency summary a result reports, and the raw latencies' encoding (any
statistic can be recomputed from them).
"""

from __future__ import annotations

from typing import Any

import numpy as np

CONFIDENCE = 0.95
# The percentiles whose intervals size a run, by name in ``latency_ms``.
SIZED_PERCENTILES = {"p50": 0.5, "p90": 0.9}


def quantile_interval(ordered: np.ndarray, q: float,
                      confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """The distribution-free ``confidence`` interval of the ``q``-quantile from the sorted
    samples ``ordered``: order statistics X(j) <= X(k) (1-based) with equal tails, where
    P(j <= B <= k-1) >= ``confidence`` for B ~ Binomial(n, q), the number of samples
    below the quantile. None when n is too small for it (fewer than 36 runs for p90 at
    95%)."""
    n = int(ordered.size)
    if n == 0:
        return None
    # log P(B = c) for c = 0..n, by the ratio of consecutive terms (no factorials).
    counts = np.arange(n)
    first = n * np.log1p(-q)
    ratios = np.log((n - counts) / (counts + 1)) + np.log(q) - np.log1p(-q)
    cdf = np.cumsum(np.exp(np.concatenate(([first], first + np.cumsum(ratios)))))
    tail = (1 - confidence) / 2
    j = int(np.searchsorted(cdf, tail, side="right"))  # the largest j: P(B <= j-1) <= tail
    k_minus_1 = int(np.searchsorted(cdf, 1 - tail, side="left"))  # smallest: >= 1 - tail
    if j < 1 or k_minus_1 > n - 1:
        return None
    return float(ordered[j - 1]), float(ordered[k_minus_1])


def percentile_intervals(latencies_ms: np.ndarray) -> dict[str, list[float] | None]:
    """``{"p50": [low, high], "p90": [...]}`` in ms (None where too few runs)."""
    ordered = np.sort(np.asarray(latencies_ms, dtype=float))
    intervals = {name: quantile_interval(ordered, q) for name, q in SIZED_PERCENTILES.items()}
    return {name: list(bounds) if bounds else None for name, bounds in intervals.items()}


def relative_widths(latencies_ms: np.ndarray) -> dict[str, float | None]:
    """Each sized percentile's interval width over the percentile (None: no interval)."""
    latencies = np.asarray(latencies_ms, dtype=float)
    widths: dict[str, float | None] = {}
    for name, bounds in percentile_intervals(latencies).items():
        point = float(np.percentile(latencies, SIZED_PERCENTILES[name] * 100))
        widths[name] = None if bounds is None else (
            (bounds[1] - bounds[0]) / point if point > 0 else 0.0)
    return widths


def latency_summary(latencies_ms: list[float]) -> dict[str, Any]:
    """The timed runs' statistics as a result reports them: the number of runs, their
    total in seconds, the latency distribution in ms (percentiles by numpy's default
    linear interpolation, population standard deviation), the 95% intervals of p50 and
    p90 (:func:`percentile_intervals`) and the throughput."""
    latencies = np.asarray(latencies_ms)
    return {
        "runs": int(latencies.size),
        "timed_seconds": float(latencies.sum() / 1e3),
        "latency_ms": {
            "p50": float(np.percentile(latencies, 50)),
            "p90": float(np.percentile(latencies, 90)),
            "p99": float(np.percentile(latencies, 99)),
            "mean": float(latencies.mean()),
            "std": float(latencies.std()),
            "min": float(latencies.min()),
            "max": float(latencies.max()),
        },
        # Distribution-free 95% intervals of p50 and p90 (order statistics).
        "latency_ci95_ms": percentile_intervals(latencies),
        # Sequential batch-1 throughput: what one camera stream gets from one process.
        "throughput_fps": float(latencies.size / (latencies.sum() / 1e3)),
    }


RAW_ENCODING = "int64-le-ns+zlib+base64"


def encode_latencies(latencies_ns: list[int]) -> dict[str, Any]:
    """The raw latencies as a result carries them: int64 little-endian nanoseconds,
    zlib-compressed, base64 text (any statistic can be recomputed from them)."""
    import base64
    import zlib

    raw = np.asarray(latencies_ns, dtype="<i8").tobytes()
    return {"encoding": RAW_ENCODING, "count": len(latencies_ns),
            "data": base64.b64encode(zlib.compress(raw, 6)).decode("ascii")}
