"""What the board is: its architecture, CPU (an Arm core by name), its CPU features
(arm64: from HWCAP), cores, OS, Python and NumPy versions, the installed version of a
runtime's distribution, this process's peak memory, and numbers read from the board's
files (``/proc``, ``/sys``). Standard library only.
"""

from __future__ import annotations

import functools
import os
import platform
import resource
import sys
from typing import Any


def peak_rss_mb() -> float:
    """Peak resident memory of this process, in MB.

    Linux's ``ru_maxrss`` survives ``exec``: a harness started from a large parent (the
    orchestrator with TensorFlow loaded) would report the parent's peak. ``VmHWM`` is
    the high-water mark of this process's own address space.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports kilobytes, macOS bytes.
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


CPUINFO = "/proc/cpuinfo"
# Arm's cores by the "CPU part" of an arm64 /proc/cpuinfo, which names no model (a
# Raspberry Pi 4's says at most "Hardware: BCM2835", its SoC's ancestor): the core is
# what decides which kernels a runtime may pick (fp16 arithmetic, dot products).
ARM_IMPLEMENTER = 0x41
ARM_CORES = {0xD03: "Cortex-A53", 0xD04: "Cortex-A35", 0xD05: "Cortex-A55",
             0xD07: "Cortex-A57", 0xD08: "Cortex-A72", 0xD09: "Cortex-A73",
             0xD0A: "Cortex-A75", 0xD0B: "Cortex-A76", 0xD0C: "Neoverse-N1",
             0xD0D: "Cortex-A77", 0xD41: "Cortex-A78", 0xD42: "Cortex-A78AE",
             0xD44: "Cortex-X1", 0xD46: "Cortex-A510", 0xD47: "Cortex-A710",
             0xD48: "Cortex-X2", 0xD49: "Neoverse-N2", 0xD4B: "Cortex-A78C",
             0xD80: "Cortex-A520", 0xD81: "Cortex-A720"}
# Linux's arm64 hwcap names (arch/arm64/kernel/cpuinfo.c) by bit of AT_HWCAP, then of
# AT_HWCAP2: /proc/cpuinfo's "Features" order.
HWCAP_NAMES = ("fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid "
               "asimdrdm jscvt fcma lrcpc dcpop sha3 sm3 sm4 asimddp sha512 sve asimdfhm "
               "dit uscat ilrcpc flagm ssbs sb paca pacg").split()
HWCAP2_NAMES = ("dcpodp sve2 sveaes svepmull svebitperm svesha3 svesm4 flagm2 frint "
                "svei8mm svef32mm svef64mm svebf16 i8mm bf16 dgh rng bti mte").split()
AT_HWCAP, AT_HWCAP2 = 16, 26


def _cpuinfo_fields(cpuinfo: str) -> dict[str, str]:
    """The first value of each field of /proc/cpuinfo (lower-case names)."""
    fields: dict[str, str] = {}
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                key, colon, value = line.partition(":")
                if colon:
                    fields.setdefault(key.strip().lower(), value.strip())
    except OSError:
        pass
    return fields


def _cpu_model(cpuinfo: str = CPUINFO) -> str:
    fields = _cpuinfo_fields(cpuinfo)
    try:
        core = (ARM_CORES.get(int(fields["cpu part"], 16))
                if int(fields["cpu implementer"], 16) == ARM_IMPLEMENTER else None)
    except (KeyError, ValueError):
        core = None
    if core:
        return core
    for key in ("model name", "hardware", "cpu model"):
        if key in fields:
            return fields[key]
    return platform.processor() or "unknown"


def hwcap_features(hwcap: int, hwcap2: int) -> list[str]:
    """The arm64 feature names of these AT_HWCAP / AT_HWCAP2 bits, in the kernel's order."""
    return [*(name for bit, name in enumerate(HWCAP_NAMES) if hwcap >> bit & 1),
            *(name for bit, name in enumerate(HWCAP2_NAMES) if hwcap2 >> bit & 1)]


def cpu_features() -> str | None:
    """An arm64 Linux board's CPU features as the kernel gives them to programs (the
    auxiliary vector's HWCAP, which runtimes read to pick kernels; /proc/cpuinfo is a
    text that may disagree, under an emulator for one); None elsewhere."""
    if sys.platform != "linux" or platform.machine() != "aarch64":
        return None
    import ctypes  # only here: the probe of every other board never needs it

    try:
        getauxval = ctypes.CDLL(None).getauxval
    except (OSError, AttributeError):
        return None
    getauxval.restype = ctypes.c_ulong
    getauxval.argtypes = [ctypes.c_ulong]
    return " ".join(hwcap_features(getauxval(AT_HWCAP), getauxval(AT_HWCAP2)))


def host_facts() -> dict[str, Any]:
    facts = {
        "arch": platform.machine(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "numpy": _distribution_version("numpy"),
    }
    features = cpu_features()
    if features is not None:
        facts["cpu_features"] = features
    return facts


def first_number(path: str, prefix: str = "") -> float | None:
    try:
        with open(path, encoding="ascii") as handle:
            for line in handle:
                if line.startswith(prefix):
                    return float(line[len(prefix):].split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return None


# The pip distributions that may provide each runtime module (looked up by name: scanning
# every installed distribution costs most of a second on a big environment).
MODULE_DISTRIBUTIONS: dict[str, tuple[str, ...]] = {
    "ai_edge_litert": ("ai-edge-litert", "ai-edge-litert-nightly"),
    "tflite_runtime": ("tflite-runtime",),
    "tensorflow": ("tensorflow-cpu", "tensorflow", "tensorflow-aarch64"),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino",
                    "onnxruntime-qnn"),
    "openvino": ("openvino",),
    "tflite_micro": ("tflite-micro",),
}


@functools.lru_cache(maxsize=1)
def _installed_distributions() -> dict[str, str]:
    """Installed distribution -> version, from the ``<name>-<version>.dist-info`` folder
    names on sys.path (listed once): importlib.metadata costs a tenth of a second to
    import, which a small board pays on every probe."""
    found: dict[str, str] = {}
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for name in names:
            if name.endswith(".dist-info"):
                distribution, _, version = name[:-len(".dist-info")].partition("-")
                found.setdefault(distribution.lower(), version)
    return found


def _distribution_version(*distributions: str) -> str:
    """The installed version of the first of ``distributions`` found."""
    found = _installed_distributions()
    wanted = [name.replace("-", "_").lower() for name in distributions]
    return next((found[name] for name in wanted if name in found), "missing")


def module_version(module: str) -> str:
    return _distribution_version(*MODULE_DISTRIBUTIONS.get(module, ()))
