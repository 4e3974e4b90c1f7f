"""flows/cli/compare.py in-process: an out-of-range threshold is a one-line usage error
that names the option as it is typed (tests/flows/test_compare_cli.py runs the command)."""

from __future__ import annotations

import pytest

from flows.cli.compare import _validated
from tasks.config import CompareParams
from tasks.core.errors import UsageError

NUMBERS = [name for name, field in CompareParams.model_fields.items()
           if field.annotation is float]


def test_every_numeric_threshold_is_covered() -> None:
    assert NUMBERS == ["latency_increase", "accuracy_drop", "size_increase"]


@pytest.mark.parametrize("name", NUMBERS)
def test_a_threshold_out_of_range_names_its_option(name: str) -> None:
    with pytest.raises(UsageError) as refused:
        _validated(CompareParams, {**CompareParams().model_dump(), name: -1.0})
    option = "--" + name.replace("_", "-")
    assert str(refused.value).startswith(f"{option}: ")
    assert "\n" not in str(refused.value)
    assert str(refused.value).endswith("must be a number from 0 to "
                                       f"{1 if name == 'accuracy_drop' else 100}, got -1.0")


def test_thresholds_in_range_are_the_model() -> None:
    values = {**CompareParams().model_dump(), "accuracy_drop": 0.25}
    assert _validated(CompareParams, values) == CompareParams(accuracy_drop=0.25)
