"""The pydantic base of every configuration model: unknown keys are errors that list
the allowed keys, values are validated on assignment, models are immutable, floats are
finite. :func:`count` and :func:`number` bound a field on both sides and say the range
when a value is outside it."""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, WrapValidator, model_validator


class StrictModel(BaseModel):
    # allow_inf_nan=False: `.inf` and `.nan` are valid YAML floats, and an infinite time
    # limit overflows the thread and socket timeouts it reaches.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _reject_unknown_keys(cls, data: Any) -> Any:
        # pydantic's own message ("Extra inputs are not permitted") does not say what
        # *is* permitted; a user fixing a typo needs the list.
        if isinstance(data, dict):
            allowed = set(cls.model_fields)
            unknown = sorted(str(key) for key in data if key not in allowed)
            if unknown:
                raise ValueError(
                    f"unknown key {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})")
        return data


def _show(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else repr(bound)


def _bounded(kind: str, low: float, high: float, above: bool, unit: str) -> WrapValidator:
    lowest = f"above {_show(low)} and at most" if above else f"from {_show(low)} to"
    allowed = f"must be {kind} {lowest} {_show(high)}{f' ({unit})' if unit else ''}"

    def validate(value: Any, handler: Any) -> Any:
        # YAML's `true` would pass as 1 (pydantic's lax mode): a count is never a bool.
        if isinstance(value, bool):
            raise ValueError(f"{allowed}, got {value!r}")
        try:
            parsed = handler(value)
        except ValidationError:
            raise ValueError(f"{allowed}, got {value!r}") from None
        if not (math.isfinite(parsed) and (parsed > low if above else parsed >= low)
                and parsed <= high):
            raise ValueError(f"{allowed}, got {value!r}")
        return parsed

    return WrapValidator(validate)


def count(low: int, high: int, unit: str = "") -> WrapValidator:
    """For ``Annotated[int, count(1, 1000)]``: an integer from ``low`` to ``high``;
    anything else fails with one message stating that range and the value given."""
    return _bounded("an integer", low, high, False, unit)


def number(low: float, high: float, *, above: bool = False, unit: str = "") -> WrapValidator:
    """For ``Annotated[float, number(0, 86400)]``: a finite number from ``low`` (or, with
    ``above``, greater than ``low``) to ``high``; else one message stating that range."""
    return _bounded("a number", low, high, above, unit)
