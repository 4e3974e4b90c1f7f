"""What the board is: its architecture, CPU, cores, OS, Python and NumPy versions, the
installed version of a runtime's distribution, this process's peak memory, and numbers
read from the board's files (``/proc``, ``/sys``). Standard library only.
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


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def host_facts() -> dict[str, Any]:
    return {
        "arch": platform.machine(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "numpy": _distribution_version("numpy"),
    }


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
