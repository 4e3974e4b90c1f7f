"""The regression gate of a lifecycle run (the nightly deployment's): this run's
summary against the previous finished lifecycle run's in MLflow, by
:func:`tasks.compare.compare` with the experiment's ``compare`` thresholds."""

from __future__ import annotations

from dataclasses import dataclass

from tasks.compare import Comparison, compare
from tasks.compare.sources import mark_regressed, previous_run_summary
from tasks.config import CompareParams
from tasks.core.contracts.summary import read_summary
from tasks.core.files import read_json
from tasks.core.layout import Layout


@dataclass(frozen=True)
class GateResult:
    comparison: Comparison
    against: str  # "MLflow run <id>"

    def line(self) -> str:
        """One line for the run's verdict."""
        regressions = self.comparison.regressions
        excluded = self.comparison.excluded
        # Pairs left out (emulated boards) are said, so an empty verdict is not misread.
        left_out = (f" ({len(excluded)} not gated: {'; '.join(excluded)})" if excluded else "")
        if not regressions:
            return (f"no regression against {self.against} in "
                    f"{len(self.comparison.pairs) - len(excluded)} pairs{left_out}")
        return (f"{len(regressions)} regression{'s' if len(regressions) != 1 else ''} against "
                f"{self.against}: {'; '.join(regressions)}{left_out}")


def regression_gate(layout: Layout, limits: CompareParams) -> GateResult | None:
    """This run against the newest earlier one that passed its own gate; None when there
    is none (a first run). A regression tags this run's MLflow parent run
    (:func:`~tasks.compare.sources.mark_regressed`): it is never the next baseline, so a
    regression fails every gated run until it is fixed, not only the first."""
    record = layout.tracking_record
    current = read_json(record).get("parent_run_id") if record.is_file() else None
    previous = previous_run_summary(layout, current)
    if previous is None:
        return None
    summary, against = previous
    gated = GateResult(compare(summary, read_summary(layout.summary), limits), against)
    if gated.comparison.regressions and current:
        mark_regressed(layout, current)
    return gated
