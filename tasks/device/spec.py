"""The variant spec: how the harness and the predictor feed a variant and read its output.

The orchestrator writes it (the convert step, into the variant index; ``spec.json``
beside each variant on a board; ``spec`` in a release's manifest and in a tracked
model's ``serving.json``), and the device code reads it: one definition for both sides,
standard library only, so it ships to boards with the rest of this folder.
A spec is JSON: these are dictionaries, typed, not classes.
"""

from __future__ import annotations

from typing import List, Optional, TypedDict

# typing's List/Optional rather than list[...] / X | None: TypedDict evaluates its
# annotations at class creation on the oldest Pythons a board may have (3.8).


class QuantizationSpec(TypedDict):
    """An integer tensor's affine quantisation: real = (integer - zero_point) * scale."""

    scale: float
    zero_point: int


class Normalization(TypedDict):
    """The model's own per-channel input normalisation: (pixel - mean) / std."""

    mean: List[float]
    std: List[float]


class TensorSpec(TypedDict, total=False):
    """One tensor as the runtime takes or gives it: its ``dtype`` (a NumPy dtype name,
    "float32" when absent) and ``quantization`` (None or absent: the tensor is float).
    An input also says its ``shape`` (batch 1 first), ``layout`` ("NHWC", or "NCHW":
    channels first) and, for models trained on normalised pixels, ``normalize``."""

    dtype: str
    quantization: Optional[QuantizationSpec]
    shape: List[int]
    layout: str
    normalize: Optional[Normalization]


class _VariantSpec(TypedDict):
    input: TensorSpec


class VariantSpec(_VariantSpec, total=False):
    """What the device code needs to feed a variant: its ``input`` and ``output``
    tensors, the precision its float arithmetic must run in (``execution_precision``:
    "f32", "bf16", "f16"; "f32" when absent), for a microcontroller's model, the
    tensor arena it needs (``arena_bytes``), and the kind of task its outputs are read
    as (``task``: a name of the registry ``kinds/``; classification when absent)."""

    output: TensorSpec
    execution_precision: str
    arena_bytes: Optional[int]
    task: str
