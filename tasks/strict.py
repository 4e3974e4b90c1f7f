"""The pydantic base of every configuration model: unknown keys are errors that list
the allowed keys, values are validated on assignment, models are immutable."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

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
