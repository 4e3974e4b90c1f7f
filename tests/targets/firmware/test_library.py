"""tasks.targets.firmware.library without building: the cores known, how the flags TFLM's
Makefile prints become the firmware's (quotes as the shell reads them, include folders
made absolute), and the make command (the system's cross compiler, the core's
variables). Building for real: the m4_library fixture (tests/conftest.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tasks.core.errors import ConfigError
from tasks.targets.firmware.library import CORES, _make_command, _printed, core_named

PRINTED = """\
some make chatter
CXXFLAGS=-std=c++17 -DCMSIS_DEVICE_ARM_CORTEX_M_XX_HEADER_FILE=\\""ARMCM4".h\\" -mcpu=cortex-m4
  origin = command line
INCLUDES=-I. -Itensorflow/lite/micro/tools/make/downloads/cmsis/Device/"ARMCM4"/Include -I/abs
"""


def test_an_unknown_core_lists_the_known_ones() -> None:
    assert core_named("cortex-m4") is CORES["cortex-m4"]
    with pytest.raises(ConfigError, match=r"unknown core 'esp32-s3' \(known: cortex-m4\)"):
        core_named("esp32-s3")


def test_printed_flags_are_split_as_the_shell_splits_them_and_includes_made_absolute(
        tmp_path: Path) -> None:
    assert _printed(PRINTED, "CXXFLAGS", tmp_path) == (
        "-std=c++17", '-DCMSIS_DEVICE_ARM_CORTEX_M_XX_HEADER_FILE="ARMCM4.h"', "-mcpu=cortex-m4")
    assert _printed(PRINTED, "INCLUDES", tmp_path) == (
        f"-I{tmp_path}",
        f"-I{tmp_path}/tensorflow/lite/micro/tools/make/downloads/cmsis/Device/ARMCM4/Include",
        "-I/abs")


def test_make_builds_for_the_core_with_the_systems_cross_compiler() -> None:
    command = _make_command(CORES["cortex-m4"], 2, "microlite")
    assert command[:4] == ["make", "-f", "tensorflow/lite/micro/tools/make/Makefile", "-j2"]
    assert {"TARGET=cortex_m_generic", "TARGET_ARCH=cortex-m4+fp", "OPTIMIZED_KERNEL_DIR=cmsis_nn",
            "BUILD_TYPE=release"} <= set(command) and command[-1] == "microlite"
    compiler = shutil.which("arm-none-eabi-gcc")
    if compiler:  # without it the Makefile would download Arm's toolchain
        assert f"TARGET_TOOLCHAIN_ROOT={Path(compiler).parent}/" in command
