"""tasks.targets.firmware.build without a compiler: what a bundle's model_data.h gives the
firmware (the model array, kTensorArenaSize, the op resolver calls), the one-line errors
of a bundle that cannot make one, the generated resolver header, the arena buffer's
size. Building for real: test_measure.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.core.errors import ConfigError, StepError
from tasks.models.formats.tflm import c_sources
from tasks.targets.firmware.build import build_firmware, ops_header, read_bundle
from tasks.targets.firmware.library import CORES


def bundle(folder: Path, ops: list[str] | None = None, arena: int = 4672) -> Path:
    header, source = c_sources(b"\x1c\x00\x00\x00TFL3", arena, ops or ["CONV_2D", "MEAN"])
    folder.mkdir()
    (folder / "model_data.h").write_text(header, encoding="utf-8")
    (folder / "model_data.cc").write_text(source, encoding="utf-8")
    return folder


def test_the_header_tflm_writes_gives_array_arena_and_resolver_calls(tmp_path: Path) -> None:
    model = read_bundle(bundle(tmp_path / "b", ["CONV_2D", "FULLY_CONNECTED", "MAX_POOL_2D"]))
    assert model.array == "g_model_data" and model.declared_arena_bytes == 4672
    assert model.resolver_calls == ("AddConv2D", "AddFullyConnected", "AddMaxPool2D")
    header = ops_header(model.resolver_calls)
    assert "constexpr int kEdgeflowOpCount = 3;" in header
    assert "  if (resolver.AddMaxPool2D() != kTfLiteOk) return kTfLiteError;" in header


@pytest.mark.parametrize("missing", ["model_data.cc", "model_data.h"])
def test_a_bundle_without_its_model_sources_is_one_line(tmp_path: Path, missing: str) -> None:
    folder = bundle(tmp_path / "b")
    (folder / missing).unlink()
    with pytest.raises(StepError) as raised:
        read_bundle(folder)
    message = str(raised.value)
    assert "\n" not in message and message.startswith(f"firmware: {folder} lacks {missing}: ")
    assert "tflm release bundle" in message


def test_a_header_without_resolver_calls_or_arena_names_what_it_lacks(tmp_path: Path) -> None:
    folder = bundle(tmp_path / "b")
    header = (folder / "model_data.h").read_text()
    (folder / "model_data.h").write_text("\n".join(
        line for line in header.splitlines()
        if "resolver." not in line and "kTensorArenaSize =" not in line))
    with pytest.raises(StepError, match="lacks kTensorArenaSize, op resolver calls \\(written"):
        read_bundle(folder)


@pytest.mark.parametrize("arena", [0, 4100])
def test_an_arena_buffer_that_is_no_positive_multiple_of_16_is_refused(tmp_path: Path,
                                                                       arena: int) -> None:
    """The harness bisects between multiples of 16: another size would never end."""
    with pytest.raises(ConfigError, match=f"a positive multiple of 16 bytes, not {arena}$"):
        build_firmware(bundle(tmp_path / "b"), None, CORES["cortex-m4"],  # type: ignore[arg-type]
                       tmp_path / "out", arena_bytes=arena)
