"""Contract of ``models/variants/index.json``: written by convert, read by benchmark and
track (and the benchmarks/ scripts).

One :class:`Variant` per (source model, format, precision) in params order: produced and
checked (``ok``), produced but too far from its model (``rejected``, kept with its numbers,
never benchmarked), not produced here (``skipped``, with the reason), or whose export or
check raised (``failed``, with the error: one variant's failure is its own row, as in
benchmark, and the variants that converted are kept).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import JsonValue, model_validator

from tasks.core.contracts import Contract, read_contract, write_contract

INDEX_NAME = "index.json"
# What every produced (ok or rejected) variant has, and a skipped or failed one has not.
PRODUCED_STATUSES = ("ok", "rejected")
PRODUCED_FIELDS = ("file", "files", "bytes", "sha256", "spec", "accuracy", "details", "check")


class VariantFile(Contract):
    """One file of a variant: its path relative to ``models/variants/``."""

    path: str
    bytes: int
    sha256: str


class VariantCheck(Contract):
    """The artifact run in its own runtime against its Keras model on the test images:
    argmax agreement, the largest logit difference, accuracies, and what failed."""

    samples: int
    agreement: float
    max_abs_logit_diff: float
    accuracy: float
    reference_accuracy: float
    passed: bool
    failures: list[str]
    execution_precision: str = "f32"  # what the check's float arithmetic ran in
    note: str | None = None
    # The kind's own 95% interval of ``accuracy`` where it is not the binomial one of the
    # accuracy and ``samples`` (a detector's bootstrap over images); absent otherwise.
    accuracy_interval: list[float] | None = None


class Variant(Contract):
    """A variant's identity and status; a produced one (``ok`` or ``rejected``) also has
    its files, size, the spec the harness feeds it by (input/output, quantisation,
    execution precision), format-specific details and its check."""

    name: str
    format: str
    precision: str
    source: str
    runtime: str
    status: Literal["ok", "skipped", "rejected", "failed"]
    reason: str | None
    file: str | None = None  # the artifact the runtime loads
    files: list[VariantFile] | None = None
    bytes: int | None = None
    gzip_bytes: int | None = None
    extras: list[str] | None = None
    sha256: str | None = None  # the first file's
    spec: dict[str, JsonValue] | None = None
    accuracy: float | None = None
    accuracy_interval: list[float] | None = None
    accuracy_drop: float | None = None
    details: dict[str, JsonValue] | None = None
    check: VariantCheck | None = None
    export_and_check_seconds: float | None = None

    @model_validator(mode="after")
    def _produced_has_artifact(self) -> Variant:
        missing = [name for name in PRODUCED_FIELDS if getattr(self, name) is None]
        if self.status in PRODUCED_STATUSES and missing:
            raise ValueError(f"variant {self.name!r} ({self.status}) has no {', '.join(missing)}")
        return self

    @property
    def runnable(self) -> bool:
        """Produced and checked: a device may benchmark it."""
        return self.status == "ok"


class VariantSource(Contract):
    """A model the variants were converted from: its file relative to models/ (a
    ``.keras`` file, or a model you brought: a SavedModel folder or an ONNX file) and its
    input shape without the batch, in its input's layout."""

    keras: str
    input_shape: list[int]


class VariantIndex(Contract):
    reference_accuracy: float  # the base model's, on the images convert checked
    sources: dict[str, VariantSource]
    variants: list[Variant]


def write_variant_index(variants_dir: Path, index: VariantIndex) -> Path:
    return write_contract(variants_dir / INDEX_NAME, index)


def read_variant_index(variants_dir: Path) -> VariantIndex:
    return read_contract(variants_dir / INDEX_NAME, VariantIndex, keys=("variants",),
                         written_by="convert")
