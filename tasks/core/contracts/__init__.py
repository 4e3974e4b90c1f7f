"""Typed file contracts: the files steps hand each other, one pydantic model each, with
the one function that writes that file and the one that reads it.

- :mod:`~tasks.core.contracts.prepared`: ``data/prepared/`` (prepare -> train, optimize,
  convert)
- :mod:`~tasks.core.contracts.variants`: ``models/variants/index.json`` (convert ->
  benchmark, track)
- :mod:`~tasks.core.contracts.results`: ``results/<device>/<variant>.json`` (benchmark ->
  select, track)
- :mod:`~tasks.core.contracts.summary`: ``reports/summary.json`` (select -> the report,
  the CLI, the flow, track)

A reader raises :class:`~tasks.core.errors.StepError`, one line naming the file, when it
is missing, not JSON, or not of its contract's shape: files are the interface between
steps, and a broken one is fixed by running the step that writes it again. A writer
validates what it writes: a step that breaks its own contract is a bug (pydantic's
ValidationError), not a file for the next step to trip on.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from tasks.core.errors import StepError
from tasks.core.files import read_json, write_json


class Contract(BaseModel):
    """A JSON document of a fixed shape: unknown keys are errors, and types are strict
    (a count is never a bool, a number never a string); an int is a valid float."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    def document(self) -> dict[str, Any]:
        """The JSON document: the fields that were given, in declaration order (an
        optional key that was absent stays absent, one given as None is null)."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)


class OpenContract(Contract):
    """A document whose keys beyond the declared ones are kept as they are: what a device
    reports of itself (free-form facts, newer harness fields)."""

    model_config = ConfigDict(extra="allow")


C = TypeVar("C", bound=Contract)


def require_file(path: Path, written_by: str) -> Path:
    """``path``, or a StepError saying which step to run when it is missing."""
    if not path.is_file():
        raise StepError(f"{path} is missing: run the {written_by} step first")
    return path


def read_contract(path: Path, model: type[C], keys: Sequence[str], written_by: str) -> C:
    """The document in ``path`` as ``model``. Missing, unreadable, not JSON or not an
    object with ``keys`` (which tell a different kind of file): the errors of
    :func:`~tasks.core.files.read_json`; another shape than ``model``'s: a StepError
    naming the first problem and the step that writes the file."""
    document = read_json(require_file(path, written_by), keys=keys)
    try:
        return model.model_validate(document)
    except ValidationError as error:
        raise damaged(path, first_problem(error), written_by) from None


def damaged(path: Path, detail: str, written_by: str) -> StepError:
    """The error for a file that is there but not what its contract says."""
    return StepError(f"{path} is damaged ({detail}): run `edgeflow step {written_by}` again")


def first_problem(error: ValidationError) -> str:
    """The first thing wrong in a document, said as reading it would say it: a missing
    key is ``KeyError: 'results.0.device'``, anything else ``ValueError: <where>: <why>``."""
    problem = error.errors()[0]
    where = ".".join(map(str, problem["loc"])) or "the document"
    if problem["type"] == "missing":
        return f"KeyError: {where!r}"
    return f"ValueError: {where}: {problem['msg']}"


def write_contract(path: Path, document: Contract) -> Path:
    """Write ``document`` as JSON, atomically; returns ``path``."""
    return write_json(path, document.document())
