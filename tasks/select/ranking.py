"""Choosing among the variants that pass on a device: a preference order of measures
(``rank_by``), the reason the winner won, and the Pareto frontier.

A preference order is read the way a team states it ("p90 first; if two are
indistinguishable there, the more accurate; then the smaller"): the first measure decides
unless the best variants cannot be told apart on it, then the next one decides among
those, and size breaks whatever tie is left. When two values cannot be told apart is each
measure's own rule (:data:`RANK_MEASURES`): latencies whose 95% intervals overlap (2% when
no interval was measured), energies likewise (measured or estimated), frame rates
within 2%, peak memory within 5% (RSS is noisy),
accuracy and size only when equal (every variant is checked on the same test images).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from tasks.core.contracts.summary import RowStatus, SummaryRow

Row = SummaryRow

# How close two measurements must be to count as the same when nothing better (an
# interval) says so: relative to the larger one.
LATENCY_TIE = 0.02
THROUGHPUT_TIE = 0.02
MEMORY_TIE = 0.05
ENERGY_TIE = 0.02


def _relatively_close(a: float, b: float, tolerance: float) -> bool:
    return abs(a - b) <= tolerance * max(abs(a), abs(b))


@dataclass(frozen=True)
class RankMeasure:
    """One measure variants are ranked by. ``value``: smaller is better (accuracy and
    frame rate negated), None where the device did not measure it; ``same``: the two
    rows' values cannot be told apart; ``text``: a value as the reason reads it."""

    value: Callable[[Row], float | None]
    same: Callable[[Row, Row], bool]
    text: Callable[[float], str]


def _latency(percentile: str) -> RankMeasure:
    def value(row: Row) -> float | None:
        return getattr(row.latency_ms, percentile) if row.latency_ms else None

    def same(a: Row, b: Row) -> bool:
        first, second = ((row.latency_ci95_ms or {}).get(percentile) for row in (a, b))
        if first and second:
            return first[0] <= second[1] and second[0] <= first[1]
        return _relatively_close(float(value(a)), float(value(b)), LATENCY_TIE)

    return RankMeasure(value, same, lambda v: f"{v:.4g} ms")


def _exact(key: str, sign: float = 1.0) -> Callable[[Row], float | None]:
    def value(row: Row) -> float | None:
        measured = getattr(row, key)
        return None if measured is None else sign * float(measured)
    return value


def _close(key: str, tolerance: float) -> Callable[[Row, Row], bool]:
    return lambda a, b: _relatively_close(float(getattr(a, key)), float(getattr(b, key)),
                                          tolerance)


RANK_MEASURES: dict[str, RankMeasure] = {
    "latency_p50_ms": _latency("p50"),
    "latency_p90_ms": _latency("p90"),
    "latency_p99_ms": _latency("p99"),
    "throughput_fps": RankMeasure(_exact("throughput_fps", -1.0),
                                  _close("throughput_fps", THROUGHPUT_TIE),
                                  lambda v: f"{-v:.4g} fps"),
    "accuracy": RankMeasure(_exact("accuracy", -1.0),
                            lambda a, b: a.accuracy == b.accuracy,
                            lambda v: f"{-v:.4f}"),
    "size_bytes": RankMeasure(_exact("size_bytes"),
                              lambda a, b: a.size_bytes == b.size_bytes,
                              lambda v: f"{v / 1024:.1f} KB"),
    "peak_rss_mb": RankMeasure(_exact("peak_rss_mb"), _close("peak_rss_mb", MEMORY_TIE),
                               lambda v: f"{v:.4g} MB"),
}

def _same_energy(a: Row, b: Row) -> bool:
    """Energies whose 95% intervals overlap (2% apart when either has none)."""
    if a.energy_interval and b.energy_interval:
        return (a.energy_interval[0] <= b.energy_interval[1]
                and b.energy_interval[0] <= a.energy_interval[1])
    return _relatively_close(float(a.energy_mj), float(b.energy_mj), ENERGY_TIE)


# Energy per inference, measured or estimated (the reason says which).
RANK_MEASURES["energy_mj"] = RankMeasure(_exact("energy_mj"), _same_energy,
                                         lambda v: f"{v:.4g} mJ")

UNMEASURED = float("inf")


def rank_value(row: Row, rank_by: str) -> tuple[float, float]:
    """(the measure, the size): smaller is better; what the device did not measure (an
    MCU's latency) is infinite, ranked last."""
    value = RANK_MEASURES[rank_by].value(row)
    return (UNMEASURED if value is None else float(value), float(row.size_bytes or 0))


@dataclass(frozen=True)
class Choice:
    """The variant a preference order picks among one device's passing rows.

    ``decided_by`` is the measure that set it apart from ``runner_up`` (the best of the
    rest on that measure), or ``size_bytes`` when it tied on every measure, or None when
    it was the only passing one; ``tied_on`` are the measures before it on which the best
    could not be told apart; ``unmeasured`` those no candidate had measured."""

    winner: Row
    runner_up: Row | None
    decided_by: str | None
    tied_on: tuple[str, ...]
    unmeasured: tuple[str, ...]


def _size(row: Row) -> float:
    return float(row.size_bytes or 0)


def choose(passing: Sequence[Row], order: Sequence[str]) -> Choice | None:
    """The :class:`Choice` among ``passing`` by ``order`` (see the module's doc); None
    when nothing passes. Equal rows keep their order: the first listed wins."""
    if not passing:
        return None
    candidates = list(passing)
    tied: list[str] = []
    unmeasured: list[str] = []
    for key in order:
        measure = RANK_MEASURES[key]

        def value(row: Row, measure: RankMeasure = measure) -> float:
            measured = measure.value(row)
            return UNMEASURED if measured is None else float(measured)

        best = min(candidates, key=value)
        if value(best) == UNMEASURED:
            unmeasured.append(key)
            continue
        kept = [row for row in candidates
                if row is best or (value(row) != UNMEASURED and measure.same(row, best))]
        if len(kept) == 1:
            rest = [row for row in candidates if row is not best]
            runner_up = min(rest, key=value) if rest else None
            return Choice(best, runner_up, key if rest else None, tuple(tied), tuple(unmeasured))
        tied.append(key)
        candidates = kept
    best = min(candidates, key=_size)
    rest = [row for row in candidates if row is not best]
    return Choice(best, min(rest, key=_size) if rest else None, "size_bytes" if rest else None,
                  tuple(tied), tuple(unmeasured))


def passing_by_device(rows: list[Row]) -> dict[str, list[Row]]:
    """Every device of ``rows`` (in row order) with its passing rows (maybe none)."""
    return {device: [row for row in rows if row.device == device and row.status is RowStatus.PASS]
            for device in dict.fromkeys(row.device for row in rows)}


RankBy = str | Sequence[str] | Mapping[str, Sequence[str]]


def order_for(rank_by: RankBy, device: str) -> tuple[str, ...]:
    """The preference order for ``device``: one measure, one order for every device, or
    each device's own (a mapping by device name)."""
    if isinstance(rank_by, str):
        return (rank_by,)
    if isinstance(rank_by, Mapping):
        return tuple(rank_by[device])
    return tuple(rank_by)


def choices(rows: list[Row], rank_by: RankBy) -> dict[str, Choice | None]:
    """Per device (in row order), the :class:`Choice` among its passing rows."""
    return {device: choose(passing, order_for(rank_by, device))
            for device, passing in passing_by_device(rows).items()}


def recommend(rows: list[Row], rank_by: RankBy) -> dict[str, str | None]:
    """The chosen variant per device (None when none passes)."""
    return {device: choice.winner.variant if choice else None
            for device, choice in choices(rows, rank_by).items()}


def _text(key: str, row: Row) -> str:
    return RANK_MEASURES[key].text(rank_value(row, key)[0])


def _reason(choice: Choice, order: Sequence[str], passing: int, candidates: list[Row]) -> str:
    best, second, key = choice.winner, choice.runner_up, choice.decided_by
    missing = (f": none has {', '.join(choice.unmeasured)} measured here"
               if choice.unmeasured else "")
    if second is None or key is None:
        first = next((k for k in order if rank_value(best, k)[0] != UNMEASURED), None)
        return (f"the only variant of {len(candidates)} that meets every requirement"
                + (f" ({first} {_text(first, best)})" if first else ""))
    if key == "size_bytes" and choice.tied_on:
        tie = choice.tied_on[-1]
        ours, theirs = _text(tie, best), _text(tie, second)
        return (f"ties with {second.variant} on {', '.join(choice.tied_on)} ("
                + (ours if ours == theirs else f"{ours} against {theirs}, indistinguishable")
                + ") and "
                + (f"is smaller ({_size(best) / 1024:.1f} vs {_size(second) / 1024:.1f} KB)"
                   if _size(best) < _size(second) else "on size, and is listed first"))
    if key == "size_bytes" and choice.unmeasured and "size_bytes" not in choice.unmeasured:
        return (f"the smallest of {passing} passing variants "
                f"({_size(best) / 1024:.1f} KB){missing}")
    ours, theirs = rank_value(best, key)[0], rank_value(second, key)[0]
    after = f", after a tie on {', '.join(choice.tied_on)}" if choice.tied_on else ""
    if theirs == UNMEASURED:  # the runner-up was not measured on it (an MCU's latency)
        return (f"best {key} among {passing} passing variants: {_text(key, best)}; the others "
                f"have no {key} here{after}")
    margin = abs(theirs - ours) / abs(theirs) if theirs else 0.0
    return (f"best {key} among {passing} passing variants: {_text(key, best)} against "
            f"{_text(key, second)} for {second.variant}, the runner-up ({margin:.1%} "
            f"better){after}")


def why_recommended(rows: list[Row], rank_by: RankBy) -> dict[str, str]:
    """Per device, one line on why its chosen variant won: the measure that decided, by
    how much over the runner-up, and the ties before it; or what stopped every variant
    when none passed."""
    why: dict[str, str] = {}
    for device, choice in choices(rows, rank_by).items():
        candidates = [row for row in rows if row.device == device]
        order = order_for(rank_by, device)
        if choice is None:
            failed = [row for row in candidates if row.status is RowStatus.FAIL]
            why[device] = (f"none of {len(candidates)} variants meets the requirements"
                           + (f"; closest misses: {'; '.join(failed[0].reasons)}"
                              if failed else ""))
            continue
        passing = sum(row.status is RowStatus.PASS for row in candidates)
        why[device] = _reason(choice, order, passing, candidates)
    return why


# The measures a variant is worth choosing on, and which way is better: the frontier is
# every passing variant no other passing variant beats on all of them.
PARETO_MEASURES: dict[str, Callable[[Row], float]] = {
    "accuracy": lambda row: -float(row.accuracy or 0),
    "latency_p90_ms": lambda row: row.latency_ms.p90 if row.latency_ms else UNMEASURED,
    "size_bytes": _size,
}


def _dominates(a: Row, b: Row) -> bool:
    """``a`` is at least as good as ``b`` on every measure and better on one."""
    pairs = [(measure(a), measure(b)) for measure in PARETO_MEASURES.values()]
    return all(x <= y for x, y in pairs) and any(x < y for x, y in pairs)


def pareto_front(rows: list[Row]) -> dict[str, list[str]]:
    """Per device, its passing variants no other passing variant dominates (accuracy,
    p90 latency, size), in row order."""
    return {device: [row.variant for row in passing
                     if not any(_dominates(other, row) for other in passing)]
            for device, passing in passing_by_device(rows).items()}
