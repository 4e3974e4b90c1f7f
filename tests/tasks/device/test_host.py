"""tasks/device/host.py: what a board is, as the probe and every result report it: an
Arm core named from its /proc/cpuinfo part number, its features from HWCAP bits."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.device import host

PI5_CPUINFO = """processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x4
CPU part\t: 0xd0b
CPU revision\t: 1

Revision\t: c04170
Model\t\t: Raspberry Pi 5 Model B Rev 1.0
"""


@pytest.mark.parametrize(("text", "model"), [
    (PI5_CPUINFO, "Cortex-A76"),
    # A Pi 4's kernel names the SoC's ancestor: the core says more.
    (PI5_CPUINFO.replace("0xd0b", "0xd08") + "Hardware\t: BCM2835\n", "Cortex-A72"),
    # A core this table does not know (NVIDIA's Carmel): what the kernel names.
    (PI5_CPUINFO.replace("0x41", "0x4e") + "Hardware\t: NVIDIA Jetson Xavier NX\n",
     "NVIDIA Jetson Xavier NX"),
    ("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) 8480+\n"
     "flags\t\t: fpu avx2\n", "Intel(R) Xeon(R) 8480+"),
])
def test_cpu_model_names_the_core(tmp_path: Path, text: str, model: str) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(text)
    assert host._cpu_model(str(cpuinfo)) == model


def test_cpu_model_without_cpuinfo_is_what_python_knows(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(host.platform, "processor", lambda: "")
    assert host._cpu_model(str(tmp_path / "absent")) == "unknown"


def test_hwcap_bits_name_the_features_in_the_kernels_order() -> None:
    # A Cortex-A76 as qemu models it: fp asimd aes pmull sha1 sha2 crc32 atomics fphp
    # asimdhp cpuid asimdrdm lrcpc dcpop asimddp (bits 0-1, 3-12, 15, 16, 20).
    hwcap = sum(1 << bit for bit in (0, 1, *range(3, 13), 15, 16, 20))
    assert host.hwcap_features(hwcap, 0) == (
        "fp asimd aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc "
        "dcpop asimddp").split()
    assert host.hwcap_features(0, 1 << 13 | 1 << 14) == ["i8mm", "bf16"]
    assert host.hwcap_features(1 << 63, 1 << 63) == []  # bits no kernel names yet


def test_cpu_features_are_a_fact_of_arm64_boards_only(monkeypatch) -> None:
    monkeypatch.setattr(host.platform, "machine", lambda: "x86_64")
    assert host.cpu_features() is None
    assert "cpu_features" not in host.host_facts()


def test_host_facts_are_what_python_and_the_board_say(monkeypatch) -> None:
    monkeypatch.setattr(host.platform, "machine", lambda: "aarch64")
    monkeypatch.setattr(host.platform, "platform", lambda: "Linux-6.6-aarch64")
    monkeypatch.setattr(host.platform, "python_version", lambda: "3.11.2")
    monkeypatch.setattr(host.os, "cpu_count", lambda: 4)
    monkeypatch.setattr(host, "_cpu_model", lambda: "Cortex-A76")
    monkeypatch.setattr(host, "_distribution_version",
                        lambda *names: "1.26.4" if names == ("numpy",) else "?")
    monkeypatch.setattr(host, "cpu_features", lambda: "fp asimd")
    assert host.host_facts() == {"arch": "aarch64", "cpu": "Cortex-A76", "cores": 4,
                                 "os": "Linux-6.6-aarch64", "python": "3.11.2",
                                 "numpy": "1.26.4", "cpu_features": "fp asimd"}
    # An arm64 board whose kernel sets no HWCAP bit still says so: no features.
    monkeypatch.setattr(host, "cpu_features", lambda: "")
    assert host.host_facts()["cpu_features"] == ""


def test_first_number_reads_the_first_line_with_the_prefix(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:        8039524 kB\nMemFree:  100 kB\n"
                       "MemAvailable:    6512344 kB\nMemAvailable: 1 kB\n")
    assert host.first_number(str(meminfo), "MemTotal:") == 8039524.0
    assert host.first_number(str(meminfo), "MemAvailable:") == 6512344.0
    assert host.first_number(str(meminfo), "Cached:") is None
    temp = tmp_path / "temp"
    temp.write_text("48312\n")
    assert host.first_number(str(temp)) == 48312.0
    temp.write_text("n/a\n")
    assert host.first_number(str(temp)) is None
    temp.write_text("MemTotal:\n")
    assert host.first_number(str(temp), "MemTotal:") is None
    assert host.first_number(str(tmp_path / "absent")) is None
    # The kernel's files are ASCII: one that is not (here UTF-8 text) is not read.
    temp.write_text("48312 °C\n", encoding="utf-8")
    assert host.first_number(str(temp)) is None


class _Status:
    def __init__(self, text: str) -> None:
        self.lines = text.splitlines(keepends=True)

    def __enter__(self) -> list[str]:
        return self.lines

    def __exit__(self, *exc: object) -> None:
        return None


def test_peak_rss_is_the_high_water_mark_of_this_process(monkeypatch) -> None:
    opened: list[str] = []

    def fake_open(path: str, encoding: str = "") -> _Status:
        opened.append(path)
        return _Status("Name:\tpython\nVmPeak:\t 999999 kB\nVmHWM:\t  51200 kB\nVmRSS:\t 1 kB\n")

    monkeypatch.setattr(host, "open", fake_open, raising=False)
    assert host.peak_rss_mb() == 50.0
    assert opened == ["/proc/self/status"]


@pytest.mark.parametrize(("platform", "maxrss", "mb"), [("linux", 3072, 3.0),
                                                         ("darwin", 3 * 1024 * 1024, 3.0)])
def test_peak_rss_without_proc_is_getrusage_in_the_platforms_unit(
        monkeypatch, platform: str, maxrss: int, mb: float) -> None:
    def no_proc(*args: object, **kwargs: object) -> None:
        raise OSError("no /proc")

    monkeypatch.setattr(host, "open", no_proc, raising=False)
    monkeypatch.setattr(host.sys, "platform", platform)
    monkeypatch.setattr(host.resource, "getrusage",
                        lambda who: type("Usage", (), {"ru_maxrss": maxrss})())
    assert host.peak_rss_mb() == mb


@pytest.fixture
def site(tmp_path: Path, monkeypatch) -> list[Path]:
    """Two site folders on sys.path (and one that is not there), the cache emptied."""
    first, second = tmp_path / "a", tmp_path / "b"
    (first / "onnxruntime_gpu-1.20.0.dist-info").mkdir(parents=True)
    (first / "NumPy-2.1.0.dist-info").mkdir()
    (first / "onnxruntime.py").write_text("")
    (second / "numpy-1.0.0.dist-info").mkdir(parents=True)
    (second / "openvino-2025.1.0.dist-info").mkdir()
    (second / "tflite_runtime-2.14.0.dist-info").mkdir()
    here = tmp_path / "cwd"  # "" on sys.path: the working folder
    (here / "tflite_micro-0.1.dist-info").mkdir(parents=True)
    monkeypatch.chdir(here)
    monkeypatch.setattr(host.sys, "path", [str(first), str(tmp_path / "absent"), "", str(second)])
    host._installed_distributions.cache_clear()
    yield [first, second]
    host._installed_distributions.cache_clear()


def test_installed_distributions_are_the_first_dist_info_of_each_name(site) -> None:
    assert host._installed_distributions() == {
        "onnxruntime_gpu": "1.20.0", "numpy": "2.1.0", "openvino": "2025.1.0",
        "tflite_runtime": "2.14.0", "tflite_micro": "0.1"}


def test_module_version_is_the_first_distribution_found_that_provides_it(site) -> None:
    assert host.module_version("onnxruntime") == "1.20.0"  # onnxruntime-gpu
    assert host.module_version("openvino") == "2025.1.0"
    assert host.module_version("tflite_runtime") == "2.14.0"  # tflite-runtime: - is _
    assert host.module_version("tensorflow") == "missing"
    assert host.module_version("no_such_module") == "missing"
    assert host._distribution_version("numpy") == "2.1.0"
    assert host._distribution_version("absent", "openvino", "numpy") == "2025.1.0"


def test_every_runtime_module_has_its_distributions() -> None:
    from tasks.device.runtimes import RUNTIME_MODULES

    assert {module for modules in RUNTIME_MODULES.values() for module in modules} == set(
        host.MODULE_DISTRIBUTIONS)


@pytest.mark.parametrize("module", sorted(host.MODULE_DISTRIBUTIONS))
def test_every_runtime_module_is_found_by_each_of_its_distributions(
        tmp_path: Path, monkeypatch, module: str) -> None:
    for rank, distribution in enumerate(host.MODULE_DISTRIBUTIONS[module]):
        folder = tmp_path / distribution
        (folder / f"{distribution.replace('-', '_')}-{rank}.5.dist-info").mkdir(parents=True)
        monkeypatch.setattr(host.sys, "path", [str(folder)])
        host._installed_distributions.cache_clear()
        assert host.module_version(module) == f"{rank}.5"
    host._installed_distributions.cache_clear()
