"""A release bundle's firmware ELF for a core's board.

:func:`build_firmware`: the ELF of one bundle folder (``model_data.cc`` compiled as it
is, ``model_data.h``'s op resolver calls and model array name, the harness, the vector
table, the board's linker script: ``templates/``), compiled with the flags of the TFLM
library it links (:mod:`.library`), and its text, data and bss sizes.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from tasks.core.errors import ConfigError, StepError
from tasks.targets.firmware.library import TOOLCHAIN_PREFIX, Core, Library, require_toolchain

# The harness's arena buffer, in which it searches the smallest arena the model allocates
# in: half the board's RAM, more than any microcontroller here has, so that the arena
# measured is the model's need, never this buffer's limit.
DEFAULT_ARENA_BYTES = 2 * 1024 * 1024
# The harness's arena sizes are multiples of this (TFLM's arena alignment).
ARENA_STEP = 16
# "//   resolver.AddConv2D();" lines of model_data.h (tasks.models.formats.tflm.c_sources).
RESOLVER_CALL = re.compile(r"^//\s+resolver\.(Add[A-Za-z0-9]+)\(\);\s*$", re.MULTILINE)
MODEL_ARRAY = re.compile(r"^extern const unsigned char ([A-Za-z_][A-Za-z0-9_]*)\[\];", re.MULTILINE)
DECLARED_ARENA = re.compile(r"constexpr int kTensorArenaSize = (\d+);")
SIZE_LINE = re.compile(r"^\s*(\d+)\s+(\d+)\s+(\d+)\s+\d+\s+[0-9a-f]+\s+", re.MULTILINE)
BUNDLE_FILES = ("model_data.cc", "model_data.h")
# The harness, vector table, semihosting and linker scripts compiled into every firmware,
# in this package: declared so that they are code of every step that reaches this module
# (flows.code_deps): an edited harness re-runs the benchmark as an edited module would.
CODE_DATA = ("templates",)


@dataclass(frozen=True)
class BundleModel:
    """What the firmware takes from a bundle's ``model_data.h``."""

    array: str
    resolver_calls: tuple[str, ...]
    declared_arena_bytes: int


def read_bundle(bundle: Path) -> BundleModel:
    """The model array's name, op resolver calls and ``kTensorArenaSize`` of a bundle
    folder; a :class:`StepError` (one line) when a file or one of these is missing."""
    missing = [name for name in BUNDLE_FILES if not (bundle / name).is_file()]
    if missing:
        raise StepError(f"firmware: {bundle} lacks {' and '.join(missing)}: a firmware is built "
                        f"from a tflm release bundle (model_data.cc, model_data.h; "
                        f"`edgeflow release` writes them)")
    header = (bundle / "model_data.h").read_text(encoding="utf-8")
    array, arena = MODEL_ARRAY.search(header), DECLARED_ARENA.search(header)
    calls = tuple(RESOLVER_CALL.findall(header))
    if array is None or arena is None or not calls:
        lacking = [what for what, found in (("the model array's declaration", array),
                                            ("kTensorArenaSize", arena),
                                            ("op resolver calls", calls)) if not found]
        raise StepError(f"firmware: {bundle / 'model_data.h'} lacks {', '.join(lacking)} "
                        f"(written by edgeflow's tflm format)")
    return BundleModel(array.group(1), calls, int(arena.group(1)))


def ops_header(calls: tuple[str, ...]) -> str:
    """``edgeflow_ops.h``: the bundle's op resolver calls as one function."""
    lines = [f"  if (resolver.{call}() != kTfLiteOk) return kTfLiteError;" for call in calls]
    return "\n".join([
        "// The op resolver calls of the bundle's model_data.h (written by edgeflow).",
        "#pragma once",
        '#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"',
        "",
        f"constexpr int kEdgeflowOpCount = {len(calls)};",
        "",
        "inline TfLiteStatus EdgeflowAddOps(",
        "    tflite::MicroMutableOpResolver<kEdgeflowOpCount>& resolver) {",
        *lines,
        "  return kTfLiteOk;",
        "}",
        ""])


@dataclass(frozen=True)
class Firmware:
    """A built firmware ELF: sizes from ``arm-none-eabi-size`` (flash holds text + data,
    RAM data + bss; bss includes the harness's arena buffer)."""

    elf: Path
    core: str
    text_bytes: int
    data_bytes: int
    bss_bytes: int
    arena_buffer_bytes: int
    declared_arena_bytes: int

    @property
    def flash_bytes(self) -> int:
        return self.text_bytes + self.data_bytes


def _templates() -> Path:
    return Path(str(resources.files("tasks.targets.firmware") / CODE_DATA[0]))


def _compile(tool: str, flags: tuple[str, ...], source: Path, out: Path) -> Path:
    compiled = subprocess.run([TOOLCHAIN_PREFIX + tool, *flags, "-c", str(source), "-o", str(out)],
                              capture_output=True, text=True)
    if compiled.returncode != 0:
        detail = " ".join(compiled.stderr.split())[:400]
        raise StepError(f"firmware: {source.name} does not compile: {detail}")
    return out


def build_firmware(bundle: Path, lib: Library, core: Core, out_dir: Path,
                   arena_bytes: int = DEFAULT_ARENA_BYTES) -> Firmware:
    """``out_dir/firmware.elf`` for ``bundle`` (a tflm release folder) on ``core``'s
    board, linked with ``lib``; the harness's arena buffer is ``arena_bytes``."""
    if arena_bytes <= 0 or arena_bytes % ARENA_STEP:
        raise ConfigError(f"firmware: the arena buffer must be a positive multiple of "
                          f"{ARENA_STEP} bytes, not {arena_bytes}")
    require_toolchain()
    model = read_bundle(bundle)
    out_dir.mkdir(parents=True, exist_ok=True)
    generated = out_dir / "include"
    generated.mkdir(exist_ok=True)
    (generated / "edgeflow_ops.h").write_text(ops_header(model.resolver_calls), encoding="utf-8")
    templates = _templates()
    includes = (*lib.includes, f"-I{bundle.resolve()}", f"-I{generated}", f"-I{templates}")
    cxx = (*lib.cxxflags, *lib.optimization, *includes, f"-DEDGEFLOW_ARENA_BYTES={arena_bytes}",
           f"-DEDGEFLOW_MODEL={model.array}")
    cc = (*lib.ccflags, *lib.optimization, *includes)
    objects = [
        _compile("g++", cxx, templates / "harness.cc", out_dir / "harness.o"),
        _compile("g++", cxx, bundle / "model_data.cc", out_dir / "model_data.o"),
        _compile("gcc", cc, templates / "semihosting.c", out_dir / "semihosting.o"),
        _compile("gcc", cc, templates / "startup.c", out_dir / "startup.o"),
    ]
    elf = out_dir / "firmware.elf"
    # Our own startup (-nostartfiles), newlib-nano, and no system calls but semihosting's
    # (nosys: the library's stdio stubs fail; the harness writes through semihosting).
    linked = subprocess.run([
        f"{TOOLCHAIN_PREFIX}g++", *lib.cpu_flags, "-T", str(templates / core.linker_script),
        "-nostartfiles", "--specs=nano.specs", "--specs=nosys.specs", "-Wl,--gc-sections",
        f"-Wl,-Map={out_dir / 'firmware.map'}", *map(str, objects), str(lib.archive), "-lm",
        "-o", str(elf)], capture_output=True, text=True)
    if linked.returncode != 0:
        detail = " ".join(linked.stderr.split())[:400]
        raise StepError(f"firmware: {bundle.name}'s firmware does not link: {detail}")
    text, data, bss = elf_sizes(elf)
    return Firmware(elf, core.name, text, data, bss, arena_bytes, model.declared_arena_bytes)


def elf_sizes(elf: Path) -> tuple[int, int, int]:
    """(text, data, bss) as ``arm-none-eabi-size`` (Berkeley format) counts them."""
    sized = subprocess.run([f"{TOOLCHAIN_PREFIX}size", str(elf)], capture_output=True,
                           text=True, check=True)
    found = SIZE_LINE.search(sized.stdout)
    if found is None:
        raise StepError(f"firmware: arm-none-eabi-size gave no sizes for {elf}: {sized.stdout!r}")
    return int(found.group(1)), int(found.group(2)), int(found.group(3))
