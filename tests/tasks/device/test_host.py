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
