"""tasks.targets.results: what every kind's result record starts with, field by field
(each from its own variant field, on a variant whose fields all differ)."""

from __future__ import annotations

import pytest

from tasks.config import LocalDevice, McuDevice
from tasks.config.farm import EMULATIONS
from tasks.targets.results import emulation_marks, identity, not_produced
from tests.targets.test_mcu import tflm_variant


def test_a_records_identity_is_each_variant_field_under_its_name() -> None:
    # Every field differs from the others: the file's bytes from the model's own count,
    # the format from the runtime, the precision from the declared execution precision.
    variant = tflm_variant("onnx-int8", model_bytes=20_000, sha256="ef" * 32).model_copy(
        update={"source": "pruned", "format": "onnx", "runtime": "onnxruntime",
                "bytes": 20_480, "spec": {"execution_precision": "i8"}})
    assert identity(variant, "esp32") == {
        "variant": "onnx-int8", "device": "esp32", "format": "onnx", "precision": "int8",
        "source": "pruned", "runtime": "onnxruntime", "size_bytes": 20_480,
        "sha256": "ef" * 32, "declared_execution_precision": "i8"}
    assert identity(variant.model_copy(update={"spec": None}), "esp32")[
        "declared_execution_precision"] is None


@pytest.mark.parametrize("status", ["skipped", "rejected"])
def test_an_unproduced_variant_says_what_convert_did_and_why(status: str) -> None:
    assert not_produced(status, "no int8 kernel") == {
        "status": status, "error": f"{status} by convert: no int8 kernel"}


@pytest.mark.parametrize("emulation", [*EMULATIONS, None])
def test_only_an_emulated_board_is_marked_and_with_how(emulation: str | None) -> None:
    marks = emulation_marks(LocalDevice(emulation=emulation))
    assert marks == ({"emulated": True, "emulation": emulation} if emulation else {})
    assert emulation_marks(McuDevice(transport="mcu", flash_kb=1, ram_kb=1)) == {}
