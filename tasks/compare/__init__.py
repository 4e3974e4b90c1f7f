"""Two lifecycle runs compared per (variant, device): the regression gate.

For each pair measured in both runs, accuracy, size, and p50 and p90 latency, with the
95% intervals each run reports. A change is a *regression* only when it exceeds its
threshold (:class:`~tasks.config.CompareParams`) and, where both runs give an
interval, the intervals do not overlap: a difference inside the noise is never one, and
a real but negligible one neither. A pair that passed its requirements before and does
not now is a regression whatever its numbers. Pairs found in one run only are listed,
never regressions (the farm or the variants changed).

Emulated boards (their rows' ``emulated``): a pair measured on an emulated board in one
run and on a physical one (or another emulation) in the other is never compared, only
listed as not comparable, with the reason; a pair emulated in both is compared and shown,
but its regressions fail the gate only with ``compare.include_emulated`` (the emulator's
timings move with the machine that runs it, not with the model).

Works on summaries (:mod:`tasks.core.contracts.summary`); where they come from (a file,
an MLflow run) is :mod:`tasks.compare.sources`'s business.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from tasks.config import CompareParams
from tasks.core.contracts.summary import RowStatus, Summary, SummaryRow

Interval = tuple[float, float]


@dataclass(frozen=True)
class Measure:
    """How one measure is read from a row, and when its change is a regression."""

    value: Callable[[SummaryRow], float | None]
    interval: Callable[[SummaryRow], Interval | None]
    higher_is_better: bool
    # The threshold the change must exceed: relative to the earlier value, or absolute.
    threshold: Callable[[CompareParams], float]
    relative: bool
    unit: str


def _latency(name: str) -> Measure:
    def value(row: SummaryRow) -> float | None:
        return getattr(row.latency_ms, name) if row.latency_ms else None

    def interval(row: SummaryRow) -> Interval | None:
        bounds = (row.latency_ci95_ms or {}).get(name)
        return (bounds[0], bounds[1]) if bounds else None

    return Measure(value, interval, higher_is_better=False,
                   threshold=lambda limits: limits.latency_increase, relative=True, unit="ms")


def _accuracy_interval(row: SummaryRow) -> Interval | None:
    bounds = row.accuracy_interval
    return (bounds[0], bounds[1]) if bounds else None


MEASURES: dict[str, Measure] = {
    "accuracy": Measure(lambda row: row.accuracy, _accuracy_interval, higher_is_better=True,
                        threshold=lambda limits: limits.accuracy_drop, relative=False, unit=""),
    "size": Measure(lambda row: row.size_bytes, lambda row: None, higher_is_better=False,
                    threshold=lambda limits: limits.size_increase, relative=True, unit="B"),
    "p50": _latency("p50"),
    "p90": _latency("p90"),
}


@dataclass(frozen=True)
class Change:
    """One measure of one pair in both runs, and the verdict on it."""

    measure: str
    before: float
    after: float
    before_interval: Interval | None
    after_interval: Interval | None
    regression: str | None  # why it is one, None when it is not

    @property
    def relative(self) -> float | None:
        """after / before - 1 (None when before is 0)."""
        return self.after / self.before - 1 if self.before else None


@dataclass(frozen=True)
class PairComparison:
    variant: str
    device: str
    status_before: RowStatus
    status_after: RowStatus
    changes: list[Change]
    regressions: list[str]  # every reason, "p90 +20.3% ..." or "status pass -> fail"
    # Why the pair is left out of the verdict (emulated, or not comparable), else None.
    excluded: str | None = None

    @property
    def regressed(self) -> bool:
        """Whether the pair has regressions the verdict counts (it is not excluded)."""
        return bool(self.regressions) and self.excluded is None


@dataclass(frozen=True)
class Comparison:
    pairs: list[PairComparison]
    only_before: list[str] = field(default_factory=list)  # "variant@device"
    only_after: list[str] = field(default_factory=list)

    @property
    def regressions(self) -> list[str]:
        """Every regression of the pairs the verdict counts (not the excluded ones)."""
        return [f"{pair.variant}@{pair.device}: {reason}"
                for pair in self.pairs if pair.regressed for reason in pair.regressions]

    @property
    def excluded(self) -> list[str]:
        """Every pair left out of the verdict, with why: ``variant@device: reason``."""
        return [f"{pair.variant}@{pair.device}: {pair.excluded}"
                for pair in self.pairs if pair.excluded is not None]


def _worse_by(measure: Measure, before: float, after: float) -> float:
    """How much worse ``after`` is than ``before`` (negative: better), in the unit the
    measure's threshold is in."""
    worse = before - after if measure.higher_is_better else after - before
    return worse / before if measure.relative and before else worse


def _apart(measure: Measure, before: Interval | None, after: Interval | None) -> bool | None:
    """Whether the intervals say ``after`` is worse (they do not overlap, in the worse
    direction); None when either run gives no interval."""
    if before is None or after is None:
        return None
    return after[1] < before[0] if measure.higher_is_better else after[0] > before[1]


def judge(name: str, before_row: SummaryRow, after_row: SummaryRow,
          limits: CompareParams) -> Change | None:
    """The change of measure ``name`` between two rows; None when either run lacks it."""
    measure = MEASURES[name]
    before, after = measure.value(before_row), measure.value(after_row)
    if before is None or after is None:
        return None
    before_interval, after_interval = measure.interval(before_row), measure.interval(after_row)
    worse = _worse_by(measure, float(before), float(after))
    threshold = measure.threshold(limits)
    apart = _apart(measure, before_interval, after_interval)
    regression = None
    # Past the threshold, not at it: 1.1 ms after 1.0 is +10.000000000000009% in floats.
    if worse > threshold + 1e-12 and apart is not False:
        amount = f"{worse:+.1%}" if measure.relative else f"{after - before:+.4f}"
        unit = f" {measure.unit}" if measure.unit else ""
        regression = (f"{name} {amount} ({before:g} -> {after:g}{unit}"
                      f"; threshold {threshold:g}"
                      f"{', intervals apart' if apart else ', no intervals to check'})")
    return Change(name, float(before), float(after), before_interval, after_interval, regression)


def _board(row: SummaryRow) -> str:
    return f"emulated ({row.emulation})" if row.emulated else "physical"


def _not_comparable(before: SummaryRow, after: SummaryRow) -> str | None:
    """Why the two rows cannot be compared (one emulated, the other physical or emulated
    another way), None when they can."""
    if (bool(before.emulated), before.emulation) != (bool(after.emulated), after.emulation):
        return f"not comparable: {_board(before)} before, {_board(after)} after"
    return None


def _not_gated(after: SummaryRow, limits: CompareParams) -> str | None:
    """Why a comparable pair's regressions do not fail the gate, None when they do."""
    if after.emulated and not limits.include_emulated:
        return f"{_board(after)}: not gated; set compare.include_emulated to gate it"
    return None


def compare_pair(before: SummaryRow, after: SummaryRow, limits: CompareParams) -> PairComparison:
    """One pair compared; an emulated board's against a physical one's is not (no
    changes, no regressions, ``excluded`` says why)."""
    not_comparable = _not_comparable(before, after)
    if not_comparable is not None:
        return PairComparison(before.variant, before.device, before.status, after.status, [],
                              [], not_comparable)
    changes = [change for name in MEASURES if (change := judge(name, before, after, limits))]
    regressions = [change.regression for change in changes if change.regression]
    if before.status is RowStatus.PASS and after.status is not RowStatus.PASS:
        why = "; ".join(after.reasons)[:300]
        regressions.insert(0, f"status pass -> {after.status}" + (f" ({why})" if why else ""))
    return PairComparison(before.variant, before.device, before.status, after.status, changes,
                          regressions, _not_gated(after, limits))


def compare(before: Summary, after: Summary, limits: CompareParams) -> Comparison:
    """Every (variant, device) pair of ``before`` and ``after`` compared, in ``after``'s
    order; pairs found in one run only are listed apart."""
    earlier = {(row.variant, row.device): row for row in before.results}
    later = {(row.variant, row.device): row for row in after.results}
    pairs = [compare_pair(earlier[key], row, limits)
             for key, row in later.items() if key in earlier]
    return Comparison(pairs,
                      only_before=[f"{v}@{d}" for (v, d) in earlier if (v, d) not in later],
                      only_after=[f"{v}@{d}" for (v, d) in later if (v, d) not in earlier])
