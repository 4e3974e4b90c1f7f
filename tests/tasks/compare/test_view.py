"""tasks.compare.view's cells: each measure with its interval where it has one and
nothing added where it has none, its change (absolute for accuracy, relative for the
rest), red when it is a regression."""

from __future__ import annotations

import pytest

from tasks.compare import Change
from tasks.compare.view import change_cell


@pytest.mark.parametrize(("measure", "before", "after", "intervals", "cell"), [
    ("accuracy", 0.7, 0.75, ((0.52, 0.83), (0.6, 0.86)),
     "0.700 [0.520, 0.830] -> 0.750 [0.600, 0.860] (+0.050)"),
    ("accuracy", 0.7, 0.75, (None, None), "0.700 -> 0.750 (+0.050)"),
    ("accuracy", 0.7, 0.75, ((0.52, 0.83), None), "0.700 [0.520, 0.830] -> 0.750 (+0.050)"),
    ("latency", 0.02, 0.025, ((0.019, 0.021), (0.024, 0.026)),
     "0.02±5.0% -> 0.025±4.0% (+25.0%)"),
    ("latency", 0.02, 0.025, (None, None), "0.02 -> 0.025 (+25.0%)"),
    ("latency", 0.0, 0.025, (None, (0.024, 0.026)), "0 -> 0.025±4.0%"),
])
def test_a_change_shows_each_runs_interval_only_where_it_has_one(
        measure: str, before: float, after: float,
        intervals: tuple[tuple[float, float] | None, tuple[float, float] | None],
        cell: str) -> None:
    assert change_cell(Change(measure, before, after, *intervals, None)) == cell
    assert change_cell(Change(measure, before, after, *intervals, "slower")) == \
        f"[bold red]{cell}[/]"


def test_no_change_is_an_empty_cell() -> None:
    assert change_cell(None) == ""
