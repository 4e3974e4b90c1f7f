"""TFLite Micro's static library for a core, and a release bundle's firmware ELF.

:func:`library`: ``libtensorflow-microlite.a`` built by TFLM's own Makefile in the
unpacked tree (:mod:`.sources`) with the core's make variables (:data:`CORES`), copied
with the compiler flags that Makefile used into ``<cache>/microlite-<key>/``; ``key`` is
the sha256 of the tree's key, the make variables and the compiler's version. A cold
build of the Cortex-M4 library (TFLM + CMSIS-NN kernels) takes minutes; a cached one is
found at once. Built under a lock and moved into place when complete.

:func:`build_firmware`: the ELF of one bundle folder (``model_data.cc`` compiled as it
is, ``model_data.h``'s op resolver calls and model array name, the harness, the vector
table, the board's linker script: ``templates/``) and its text, data and bss sizes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from tasks.core.errors import ConfigError, StepError
from tasks.core.locks import file_lock
from tasks.targets.firmware.sources import SourceTree

MAKEFILE = "tensorflow/lite/micro/tools/make/Makefile"
LIBRARY_NAME = "libtensorflow-microlite.a"
TOOLCHAIN_PREFIX = "arm-none-eabi-"
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
# What a cached library folder holds (flags.json's keys): part of its key, so that a
# folder written by an older edgeflow is not read as a newer one.
LIBRARY_FORMAT = 2


@dataclass(frozen=True)
class Core:
    """A core TFLM is built for: its make variables, and the emulated board and linker
    script its firmware runs on."""

    name: str
    make_variables: tuple[tuple[str, str], ...]
    machine: str
    linker_script: str


CORES: dict[str, Core] = {
    # Hard float (cortex-m4+fp: -mcpu=cortex-m4 -mfloat-abi=hard, gcc's FPU for it is
    # fpv4-sp-d16), CMSIS-NN kernels; `release` strips the log strings, as shipped.
    "cortex-m4": Core("cortex-m4", (("TARGET", "cortex_m_generic"),
                                    ("TARGET_ARCH", "cortex-m4+fp"),
                                    ("OPTIMIZED_KERNEL_DIR", "cmsis_nn"),
                                    ("BUILD_TYPE", "release")),
                      machine="mps2-an386", linker_script="mps2_an386.ld"),
}


def core_named(name: str) -> Core:
    if name not in CORES:
        raise ConfigError(f"firmware: unknown core {name!r} (known: {', '.join(sorted(CORES))})")
    return CORES[name]


@dataclass(frozen=True)
class Library:
    """A built TFLM library and the flags its objects were compiled with (the firmware's
    own sources must use the same: TF_LITE_STATIC_MEMORY changes struct layouts)."""

    archive: Path
    cxxflags: tuple[str, ...]
    ccflags: tuple[str, ...]
    includes: tuple[str, ...]
    optimization: tuple[str, ...]
    build_seconds: float

    @property
    def cpu_flags(self) -> tuple[str, ...]:
        """The flags that pick the core, float ABI and FPU (and so the multilib)."""
        return tuple(flag for flag in self.cxxflags
                     if flag.startswith(("-mcpu=", "-mfpu=", "-mfloat-abi=", "-mthumb")))


def require_toolchain() -> None:
    """A :class:`StepError` naming the Debian packages when a build tool is missing."""
    missing = [tool for tool in ("make", *(TOOLCHAIN_PREFIX + name for name in
                                           ("gcc", "g++", "ar", "size")))
               if shutil.which(tool) is None]
    if missing:
        raise StepError(f"firmware: {', '.join(missing)} not found: install Debian's make, "
                        f"gcc-arm-none-eabi, libnewlib-arm-none-eabi and "
                        f"libstdc++-arm-none-eabi-newlib")


def compiler_version() -> str:
    return subprocess.run([f"{TOOLCHAIN_PREFIX}gcc", "--version"], capture_output=True,
                          text=True, check=True).stdout.splitlines()[0]


def _make_command(core: Core, jobs: int, *goals: str) -> list[str]:
    toolchain_root = str(Path(shutil.which(f"{TOOLCHAIN_PREFIX}gcc") or "").parent) + "/"
    return ["make", "-f", MAKEFILE, f"-j{jobs}",
            *(f"{name}={value}" for name, value in core.make_variables),
            # The system's arm-none-eabi-gcc: without it the Makefile downloads Arm's.
            f"TARGET_TOOLCHAIN_ROOT={toolchain_root}", *goals]


def _make_environment() -> dict[str, str]:
    # The Makefile runs `python3` while it reads itself (generate_cc_arrays.py for the
    # examples' data, which imports PIL and NumPy): this interpreter's, which has both.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**os.environ, "PATH": path}


def _run_make(tree: SourceTree, core: Core, jobs: int, *goals: str) -> str:
    made = subprocess.run(_make_command(core, jobs, *goals), cwd=tree.root,
                          env=_make_environment(), capture_output=True, text=True)
    if made.returncode != 0:
        detail = " ".join((made.stderr or made.stdout).split())[-400:]
        raise StepError(f"firmware: TFLM's make {' '.join(goals)} failed for {core.name}: {detail}")
    return made.stdout


def _printed(output: str, name: str, root: Path) -> tuple[str, ...]:
    """The value of ``make print-NAME`` as arguments; relative -I paths made absolute."""
    line = next(line for line in output.splitlines() if line.startswith(f"{name}="))
    words = shlex.split(line[len(name) + 1:])
    return tuple(f"-I{(root / word[2:]).resolve()}" if word.startswith("-I")
                 and not os.path.isabs(word[2:]) else word for word in words)


def library_key(tree: SourceTree, core: Core) -> str:
    digest = hashlib.sha256(f"{LIBRARY_FORMAT}\n{tree.key}\n{core.make_variables}\n"
                            f"{compiler_version()}\n".encode())
    return digest.hexdigest()


def library(tree: SourceTree, cache: Path, core: Core, jobs: int = 2) -> Library:
    """The TFLM library of ``core`` for ``tree``: built the first time (``jobs`` parallel
    compiles), found in ``cache`` after (:mod:`module docs <tasks.targets.firmware.build>`)."""
    require_toolchain()
    folder = cache / f"microlite-{library_key(tree, core)[:16]}"
    if not (folder / "flags.json").is_file():
        cache.mkdir(parents=True, exist_ok=True)
        with file_lock(cache / f".{folder.name}.lock", wait_seconds=None):
            if not (folder / "flags.json").is_file():
                _build_library(tree, core, jobs, folder)
    flags = json.loads((folder / "flags.json").read_text(encoding="utf-8"))
    return Library(folder / LIBRARY_NAME, tuple(flags["cxxflags"]), tuple(flags["ccflags"]),
                   tuple(flags["includes"]), tuple(flags["optimization"]),
                   float(flags["build_seconds"]))


def _build_library(tree: SourceTree, core: Core, jobs: int, folder: Path) -> None:
    started = time.monotonic()
    _run_make(tree, core, jobs, "microlite")
    seconds = time.monotonic() - started
    # The Makefile adds the optimisation level per kind of source, outside CXXFLAGS;
    # the firmware's own sources take the level of TFLM's core (-Os, or -Oz for size).
    printed = _run_make(tree, core, 1, "print-CXXFLAGS", "print-CCFLAGS", "print-INCLUDES",
                        "print-CORE_OPTIMIZATION_LEVEL", "print-MICROLITE_LIB_PATH")
    built = tree.root / _printed(printed, "MICROLITE_LIB_PATH", tree.root)[0]
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        shutil.copyfile(built, staging / LIBRARY_NAME)
        (staging / "flags.json").write_text(json.dumps({
            "core": core.name, "make_variables": dict(core.make_variables),
            "compiler": compiler_version(), "tree": tree.key, "build_seconds": round(seconds, 1),
            "cxxflags": _printed(printed, "CXXFLAGS", tree.root),
            "ccflags": _printed(printed, "CCFLAGS", tree.root),
            "includes": _printed(printed, "INCLUDES", tree.root),
            "optimization": _printed(printed, "CORE_OPTIMIZATION_LEVEL", tree.root)},
            indent=1), encoding="utf-8")
        shutil.rmtree(folder, ignore_errors=True)
        staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


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
    return Path(str(resources.files("tasks.targets.firmware") / "templates"))


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
