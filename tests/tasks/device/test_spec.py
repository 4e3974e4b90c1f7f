"""tasks/device/spec.py: the variant spec the orchestrator writes is the one the device
code declares, key for key."""

from __future__ import annotations

from typing import Any

from tasks.device.spec import Normalization, QuantizationSpec, TensorSpec, VariantSpec
from tests.helpers import index_entries


def _keys(kind: Any) -> set[str]:
    return set(kind.__required_keys__ | kind.__optional_keys__)


def test_every_spec_convert_writes_has_only_the_declared_keys(tiny_project: Any) -> None:
    specs = [entry["spec"] for entry in index_entries(tiny_project.layout.variants)
             if entry.get("spec")]
    assert len(specs) == 3
    for spec in specs:
        assert set(VariantSpec.__required_keys__) <= set(spec) <= _keys(VariantSpec), spec
        for tensor in (spec["input"], spec.get("output") or {}):
            assert set(tensor) <= _keys(TensorSpec), tensor
            if tensor.get("quantization"):
                assert set(tensor["quantization"]) == _keys(QuantizationSpec)
            if tensor.get("normalize"):
                assert set(tensor["normalize"]) == _keys(Normalization)
        assert set(spec["input"]) >= {"dtype", "shape", "layout", "quantization"}

