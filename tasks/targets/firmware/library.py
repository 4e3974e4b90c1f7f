"""TFLite Micro's static library for a core, built once and cached.

:func:`library`: ``libtensorflow-microlite.a`` built by TFLM's own Makefile in the
unpacked tree (:mod:`.sources`) with the core's make variables (:data:`CORES`), copied
with the compiler flags that Makefile used into ``<cache>/microlite-<key>/``; ``key`` is
the sha256 of the tree's key, the make variables and the compiler's version. A cold
build of the Cortex-M4 library (TFLM + CMSIS-NN kernels) takes 5-6 minutes on two busy
cores (320 s measured); a cached one is found at once. Built under a lock and moved into
place when complete. The firmware's own sources are compiled with the same flags
(:class:`Library`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tasks.config.cores import CORES as PROFILES
from tasks.core.errors import ConfigError, StepError
from tasks.core.locks import file_lock
from tasks.targets.firmware.sources import SourceTree

MAKEFILE = "tensorflow/lite/micro/tools/make/Makefile"
LIBRARY_NAME = "libtensorflow-microlite.a"
TOOLCHAIN_PREFIX = "arm-none-eabi-"
# What a cached library folder holds (flags.json's keys): part of its key, so that a
# folder written by an older edgeflow is not read as a newer one.
LIBRARY_FORMAT = 2


@dataclass(frozen=True)
class Core:
    """A core TFLM is built for: its make variables, and the emulated board (its
    :data:`tasks.config.cores.CORES` profile's) and linker script its firmware runs on."""

    name: str
    make_variables: tuple[tuple[str, str], ...]
    machine: str
    linker_script: str
    # The flags that pick the core's multilib (what the firmware links against): for
    # checking, before any build, that newlib's libraries for it are installed.
    multilib_flags: tuple[str, ...] = ()


CORES: dict[str, Core] = {
    # Hard float (cortex-m4+fp: -mcpu=cortex-m4 -mfloat-abi=hard, gcc's FPU for it is
    # fpv4-sp-d16), CMSIS-NN kernels; `release` strips the log strings, as shipped.
    "cortex-m4": Core("cortex-m4", (("TARGET", "cortex_m_generic"),
                                    ("TARGET_ARCH", "cortex-m4+fp"),
                                    ("OPTIMIZED_KERNEL_DIR", "cmsis_nn"),
                                    ("BUILD_TYPE", "release")),
                      machine=PROFILES["cortex-m4"].board, linker_script="mps2_an386.ld",
                      multilib_flags=("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard",
                                      "-mfpu=fpv4-sp-d16")),
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


# What the firmware links of newlib for its core (--specs=nano.specs), and its package.
NEWLIB_LIBRARIES = (("libc_nano.a", "libnewlib-arm-none-eabi"),
                    ("libstdc++_nano.a", "libstdc++-arm-none-eabi-newlib"))


def require_newlib(core: Core) -> None:
    """A :class:`StepError` naming the Debian package when newlib's C or C++ library for
    ``core``'s multilib is missing (the toolchain itself: :func:`require_toolchain`).
    The compiler prints a library's full path when it finds it, its bare name if not."""
    for name, package in NEWLIB_LIBRARIES:
        found = subprocess.run([f"{TOOLCHAIN_PREFIX}g++", *core.multilib_flags,
                                f"-print-file-name={name}"], capture_output=True, text=True)
        if not Path(found.stdout.strip()).is_absolute():
            raise StepError(f"firmware: {name} for {core.name} not found: install Debian's "
                            f"{package}")


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
