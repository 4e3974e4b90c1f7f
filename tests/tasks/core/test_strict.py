"""tasks.core.strict's bounds, built at test time (the schema builds its validators at
import, so a wrong bound in :func:`count`/:func:`number` must be seen here): each bound
accepted at it and refused just past it, with the exact message."""

from __future__ import annotations

import math
from typing import Annotated, Any

import pydantic
import pytest

from tasks.core.strict import StrictModel, count, number


def model(bound: Any, kind: type) -> type[StrictModel]:
    return pydantic.create_model("Bounded", __base__=StrictModel,
                                 value=(Annotated[kind, bound], ...))


def refusal(bounded: type[StrictModel], value: Any) -> str:
    with pytest.raises(pydantic.ValidationError) as caught:
        bounded(value=value)
    [error] = caught.value.errors()
    return str(error["msg"]).removeprefix("Value error, ")


# The validators are made in the test (not at collection), where a mutation run sees them.
@pytest.mark.parametrize(("make", "kind", "accepted", "refused", "message"), [
    (lambda: count(2, 7), int, [2, 7], [1, 8, True],
     "must be an integer from 2 to 7"),
    (lambda: count(2, 7, unit="runs"), int, [2, 7], [1, 8],
     "must be an integer from 2 to 7 (runs)"),
    (lambda: number(0.5, 3), float, [0.5, 3.0], [math.nextafter(0.5, 0), math.nextafter(3, 4)],
     "must be a number from 0.5 to 3"),
    (lambda: number(0.5, 3, above=True, unit="s"), float, [math.nextafter(0.5, 1), 3.0],
     [0.5, 0.25, math.nextafter(3, 4)], "must be a number above 0.5 and at most 3 (s)"),
])
def test_each_bound_is_kept_at_its_edge_with_the_range_in_the_message(
        make: Any, kind: type, accepted: list[Any], refused: list[Any], message: str) -> None:
    bounded = model(make(), kind)
    assert [bounded(value=value).value for value in accepted] == accepted
    assert [refusal(bounded, value) for value in refused] == [
        f"{message}, got {value!r}" for value in refused]
