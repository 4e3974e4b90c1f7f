"""A PyTorch export (tests/data/torch_cnn16.onnx: NCHW, batch left open) through the
whole lifecycle to both kinds of microcontroller: TFLite variants through onnx2tf, a
TFLite Micro one checked by the host interpreter, fitted on an ESP32-S3-like profile (no
emulator for its core) and built into a firmware run on the emulated Cortex-M4 of a
Nano 33 BLE-like one, then released to each (the Cortex-M4 release checks its firmware).
Marked ``arm``: it builds and runs a firmware (``make test-arm``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.tiny import TINY_PARAMS, write_tiny_config

TORCH_CNN = Path(__file__).resolve().parents[1] / "data" / "torch_cnn16.onnx"
MCU_FARM = """\
devices:
  local: {threads: 1}
  esp32: {transport: mcu, flash_kb: 4096, ram_kb: 512}
  nano: {transport: mcu, flash_kb: 1024, ram_kb: 256, target: cortex-m4, clock_mhz: 64}
"""


def pytorch_params(sources: Path) -> str:
    params = TINY_PARAMS.replace(
        "model: {architecture: small_cnn, filters: [8, 16], dropout: 0.1}",
        "model: {source: file, path: torch_cnn16.onnx}").replace(
        "formats: {tflite: [fp32], onnx: [fp32], openvino: [fp32]}",
        "formats: {tflite: [fp32, dynamic, int8], onnx: [fp32], tflm: [int8]}").replace(
        "accuracy_samples: 60, timeout_seconds: 120}",
        f"accuracy_samples: 60, timeout_seconds: 120, firmware: {{sources: {sources}}}}}")
    assert "torch_cnn16" in params and "tflm: [int8]" in params and "firmware:" in params
    return params


@pytest.fixture(scope="module")
def outcome(firmware_settings: Any, tmp_path_factory: pytest.TempPathFactory
            ) -> tuple[Path, Any]:
    from flows.lifecycle import run_lifecycle

    root = tmp_path_factory.mktemp("pytorch-to-mcus")
    write_tiny_config(root, pytorch_params(firmware_settings.sources), MCU_FARM)
    shutil.copyfile(TORCH_CNN, root / "torch_cnn16.onnx")
    return root, run_lifecycle(root / "params.yaml", root / "farm.yaml")


@pytest.mark.arm
def test_a_pytorch_export_reaches_both_microcontrollers(outcome: tuple[Path, Any]) -> None:
    root, (state, ran) = outcome
    assert state.is_completed(), state.message
    assert ran.executed == ["prepare", "train", "optimize", "convert", "benchmark[local]",
                            "benchmark[esp32]", "benchmark[nano]", "select", "track",
                            "release[local]", "release[esp32]", "release[nano]"]
    summary = json.loads((root / "reports" / "summary.json").read_text())
    rows = {(row["variant"], row["device"]): row for row in summary["results"]}
    reference = rows[("onnx-fp32", "local")]["accuracy"]
    for name in ("tflite-fp32", "tflite-dynamic", "tflite-int8", "tflm-int8"):
        row = rows[(name, "local")]
        assert row["status"] == "pass", (name, row["reasons"])
        assert abs(row["accuracy"] - reference) <= 0.05, name
    index = json.loads((root / "models" / "variants" / "index.json").read_text())
    variants = {variant["name"]: variant for variant in index["variants"]}
    for name in ("tflite-fp32", "tflite-dynamic", "tflite-int8", "tflm-int8"):
        assert variants[name]["details"]["converter"] == "onnx2tf 2.6.9", name
        assert variants[name]["spec"]["input"]["shape"] == [1, 16, 16, 1], name
    assert variants["onnx-fp32"]["spec"]["input"]["shape"] == [1, 1, 16, 16]

    fitted, emulated = rows[("tflm-int8", "esp32")], rows[("tflm-int8", "nano")]
    assert fitted["status"] == emulated["status"] == "pass"
    assert fitted["mcu"].get("target") is None and fitted["estimated_latency_ms"] is None
    assert fitted["mcu"]["not_emulated"].startswith("no emulator here for its core")
    assert emulated["mcu"]["not_emulated"] is None
    on = emulated["mcu"]["target"]
    samples = on["accuracy_samples"]
    # The same int8 model on the target build (CMSIS-NN) and on the host's TFLite Micro.
    assert abs(on["accuracy"] - rows[("tflm-int8", "local")]["accuracy"]) <= 1 / samples
    assert on["arena_bytes"] > 0 and on["instructions_per_inference"] > 0
    assert on["firmware_text_bytes"] > emulated["mcu"]["model_bytes"]
    assert emulated["estimated_latency_ms"] == pytest.approx(
        on["instructions_per_inference"] * 1.25 / (64 * 1000))

    nano = json.loads((root / "releases" / "nano" / "release.json").read_text())["current"]
    assert nano["variant"] == "tflm-int8" and nano["firmware"]["verified"] is True
    esp32 = json.loads((root / "releases" / "esp32" / "release.json").read_text())["current"]
    assert esp32["variant"] == "tflm-int8" and esp32.get("firmware") is None
