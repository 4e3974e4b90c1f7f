"""Emulated ARM boards (:mod:`tests.arm_boards`) reached through the farm's own SSH
transport: both are aarch64, and each has the CPU features of the model it emulates,
as the kernel interface runtimes read them (HWCAP from the auxiliary vector) and as
/proc/cpuinfo names them. The first run on a machine builds the arm64 root filesystem
(minutes); later runs reuse it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tasks.config import SshDevice, load_farm
from tasks.farm.probe import probe_one
from tasks.targets.farm_commands import setup_farm
from tasks.farm.transports import connect
from tests import arm_boards
from tests.arm_boards import ArmBoard, feature_names, start_board, stop_board

REPO = Path(__file__).resolve().parents[2]
BOARD_SCRIPT = (
    "import json, platform, ctypes; g = ctypes.CDLL(None).getauxval; g.restype = ctypes.c_ulong; "
    "info = open('/proc/cpuinfo').read(); "
    "print(json.dumps({'machine': platform.machine(), 'hwcap': g(16), 'hwcap2': g(26), "
    "'features': [line.split(':', 1)[1].split() for line in info.splitlines() "
    "if line.startswith('Features')][0], 'part': [line.split(':', 1)[1].strip() "
    "for line in info.splitlines() if line.startswith('CPU part')][0]}))")



def _on_board(board: ArmBoard, tmp_path: Path) -> dict[str, object]:
    device = SshDevice.model_validate(board.farm_entry(workdir="/root/edgeflow"))
    connection = connect(device, board.cpu)
    try:
        result = connection.run(f"python3 -c {json.dumps(BOARD_SCRIPT)}", timeout=120)
    finally:
        connection.close()
    assert result.ok, result.stderr
    return json.loads(result.stdout)


@pytest.mark.arm
def test_boards_are_aarch64_with_their_cpu_features(emulated_boards: dict[str, ArmBoard],
                                                    tmp_path: Path) -> None:
    a76, a72 = (_on_board(emulated_boards[cpu], tmp_path) for cpu in ("cortex-a76", "cortex-a72"))
    assert a76["machine"] == a72["machine"] == "aarch64"
    a76_caps = set(feature_names(a76["hwcap"], a76["hwcap2"]))
    a72_caps = set(feature_names(a72["hwcap"], a72["hwcap2"]))
    # Pi 5's core has half-precision arithmetic and dot products; Pi 4's has neither.
    assert {"fphp", "asimdhp", "asimddp"} <= a76_caps
    assert not {"fphp", "asimdhp", "asimddp"} & a72_caps
    assert {"fp", "asimd"} <= a76_caps & a72_caps
    # /proc/cpuinfo says what HWCAP says (a mismatch makes LiteRT hit SIGILL), and names
    # the core (Cortex-A76 is part 0xd0b, Cortex-A72 0xd08).
    assert a76["features"] == feature_names(a76["hwcap"], a76["hwcap2"])
    assert a72["features"] == feature_names(a72["hwcap"], a72["hwcap2"])
    assert (a76["part"], a72["part"]) == ("0xd0b", "0xd08")


@pytest.mark.arm
def test_farm_setup_installs_aarch64_wheels_offline_then_probe_sees_them(
        emulated_boards: dict[str, ArmBoard], tmp_path: Path) -> None:
    runtimes = ["onnxruntime", "openvino", "tflite"]
    farm_file = tmp_path / "farm.yaml"
    farm_file.write_text(yaml.safe_dump({"devices": {
        cpu: board.farm_entry("/root/setup-test", runtimes=runtimes, setup={})
        for cpu, board in emulated_boards.items()}}))
    farm = load_farm(farm_file)
    outcomes = setup_farm(farm, [], None, tmp_path / "wheelhouse-cache")
    for outcome in outcomes:
        assert outcome.error is None and outcome.changed, outcome
        assert sorted(outcome.runtimes) == runtimes  # each imports in the board's venv
        [chosen] = [action for action in outcome.actions if action.startswith("wheel platforms: ")]
        tags = chosen.removeprefix("wheel platforms: ").split(", ")
        assert "any" in tags and all(tag == "any" or tag.endswith("_aarch64") for tag in tags)
    [cache] = (tmp_path / "wheelhouse-cache").glob("cp3*-aarch64")
    assert any(wheel.name.startswith("onnxruntime-") for wheel in cache.glob("*aarch64*.whl"))
    rows = {cpu: probe_one(cpu, farm.devices[cpu]) for cpu in emulated_boards}
    for cpu, row in rows.items():
        assert row.reachable, row.error
        assert row.facts["arch"] == "aarch64"
        assert set(row.runtimes) == set(runtimes)
    # The core by name and its features from HWCAP, as every result records them.
    assert rows["cortex-a76"].facts["cpu"] == "Cortex-A76"
    assert rows["cortex-a72"].facts["cpu"] == "Cortex-A72"
    assert {"asimdhp", "asimddp"} <= set(rows["cortex-a76"].facts["cpu_features"].split())
    assert not {"asimdhp", "asimddp"} & set(rows["cortex-a72"].facts["cpu_features"].split())


@pytest.mark.arm
def test_a_stopped_board_leaves_no_process_and_no_mount(
        tmp_path: Path, emulated_boards: dict[str, ArmBoard]) -> None:
    board = start_board(tmp_path / "short-lived", "cortex-a72",
                        emulated_boards["cortex-a76"].client_key)
    assert arm_boards.board_processes(board)  # sshd at least, in its own namespace
    stop_board(board)
    assert arm_boards.board_processes(board) == []
    assert not Path(f"/proc/{board.pid}").exists()
    assert arm_boards.mounted_under(tmp_path) == []
    # The cached root filesystem was not written: the board's files are in its upper layer.
    assert (tmp_path / "short-lived/upper/etc/edgeflow-board/sshd_config").is_file()
    assert not (arm_boards.rootfs() / "etc/edgeflow-board").exists()


def test_recipe_key_names_what_the_root_filesystem_is_built_from() -> None:
    base = arm_boards.Recipe()
    assert base.key() == arm_boards.Recipe(packages=tuple(reversed(base.packages))).key()
    changed = [arm_boards.Recipe(suite="trixie"), arm_boards.Recipe(arch="armhf"),
               arm_boards.Recipe(mirror="http://mirror.example/debian"),
               arm_boards.Recipe(packages=(*base.packages, "curl"))]
    assert len({base.key(), *(recipe.key() for recipe in changed)}) == 5


def test_host_mirror_is_the_first_debian_archive_of_apt(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    assert arm_boards.host_mirror(tmp_path) == arm_boards.DEFAULT_MIRROR
    (tmp_path / "sources.list.d/debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n\n"
        "Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm\n")
    assert arm_boards.host_mirror(tmp_path) == "http://mirror.example/debian"
    (tmp_path / "sources.list").write_text(
        "deb [arch=amd64] http://other.example/debian bookworm main\n")
    assert arm_boards.host_mirror(tmp_path) == "http://other.example/debian"


def test_cpuinfo_is_linux_arm64_format_from_the_hwcap_bits() -> None:
    # fp (bit 0), asimd (1), asimddp (20) in AT_HWCAP; i8mm (13) in AT_HWCAP2.
    features = feature_names(1 | 2 | 1 << 20, 1 << 13)
    assert features == ["fp", "asimd", "asimddp", "i8mm"]
    text = arm_boards.cpuinfo_text("cortex-a76", features, 2)
    cores = text.strip().split("\n\n")
    assert len(cores) == 2 and cores[1].startswith("processor\t: 1\n")
    fields = dict(line.split(":", 1) for line in cores[0].splitlines())
    assert {key.strip(): value.strip() for key, value in fields.items()} == {
        "processor": "0", "BogoMIPS": "108.00", "Features": "fp asimd asimddp i8mm",
        "CPU implementer": "0x41", "CPU architecture": "8", "CPU variant": "0x4",
        "CPU part": "0xd0b", "CPU revision": "1"}
    a72 = arm_boards.cpuinfo_text("cortex-a72", ["fp"], 1)
    assert "CPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n" in a72


FAKE_MMDEBSTRAP = """#!/bin/sh
# Counts its builds; fails when asked to; makes the target folder (its 6th argument:
# --mode --arch --variant --include SUITE TARGET MIRROR) after a while, as the real one
# does after minutes.
echo build >> "$COUNT"
[ -n "$FAIL" ] && { echo "E: no network" >&2; exit 1; }
sleep 1
mkdir -p "$6/usr/bin"
"""


def _fake_mmdebstrap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "mmdebstrap").write_text(FAKE_MMDEBSTRAP)
    (bin_dir / "mmdebstrap").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("COUNT", str(tmp_path / "count"))
    monkeypatch.setenv(arm_boards.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "count"


def test_two_builders_build_the_root_filesystem_once(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    count = _fake_mmdebstrap(tmp_path, monkeypatch)
    build = ("import sys; from tests import arm_boards; "
             "print(arm_boards.rootfs(arm_boards.Recipe(), log=sys.stdout))")
    builders = [subprocess.Popen([sys.executable, "-c", build], stdout=subprocess.PIPE,
                                 text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
                for _ in range(2)]
    outputs = [builder.communicate(timeout=60)[0] for builder in builders]
    assert [builder.returncode for builder in builders] == [0, 0]
    assert count.read_text() == "build\n"
    folder = tmp_path / "cache" / arm_boards.Recipe().key()
    assert {output.splitlines()[-1] for output in outputs} == {str(folder / "rootfs")}
    assert (folder / "rootfs/usr/bin").is_dir()
    assert json.loads((folder / "recipe.json").read_text())["packages"] == list(
        arm_boards.Recipe().packages)
    assert arm_boards.rootfs(arm_boards.Recipe()) == folder / "rootfs"  # reused: no build
    assert count.read_text() == "build\n"


def test_a_failed_build_leaves_nothing_that_is_used(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    count = _fake_mmdebstrap(tmp_path, monkeypatch)
    monkeypatch.setenv("FAIL", "1")
    with pytest.raises(RuntimeError, match="mmdebstrap failed.*no network"):
        arm_boards.rootfs(arm_boards.Recipe())
    assert not (tmp_path / "cache" / arm_boards.Recipe().key()).exists()
    monkeypatch.delenv("FAIL")
    assert arm_boards.rootfs(arm_boards.Recipe()).is_dir()  # the next try builds it
    assert count.read_text() == "build\nbuild\n"


def test_boards_are_unavailable_with_the_reason(monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    monkeypatch.setattr(arm_boards.os, "geteuid", lambda: 1000)
    assert arm_boards.unavailable() == "emulated ARM boards need root (chroot, mounts, mmdebstrap)"
    monkeypatch.setattr(arm_boards.os, "geteuid", lambda: 0)
    monkeypatch.setenv("PATH", str(tmp_path))  # no mmdebstrap, unshare or chroot there
    assert arm_boards.unavailable() == (
        "mmdebstrap not installed (make system-deps installs it as root)")


def test_start_board_refuses_a_cpu_it_has_no_cpuinfo_for(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown CPU model 'max': one of cortex-a76, cortex-a72"):
        start_board(tmp_path / "board", "max", root=tmp_path)
    assert not (tmp_path / "board").exists()


@pytest.mark.arm
def test_the_readmes_up_and_down(emulated_boards: dict[str, ArmBoard], tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    """``python -m tests.arm_boards up DIR`` writes a farm.yaml edgeflow reads, whose
    board answers over the farm's transport; ``down DIR`` stops it, leaving nothing."""
    assert arm_boards.main(["up", str(tmp_path), "--cpu", "cortex-a72"]) == 0
    farm = load_farm(tmp_path / "farm.yaml")
    [(name, device)] = farm.devices.items()
    assert name == "pi4-emulated" and device.setup is not None
    assert device.tags == {"cpu": "cortex-a72"} and device.emulation == "qemu-user"
    [entry] = json.loads((tmp_path / "boards.json").read_text())
    connection = connect(device, name)
    try:
        assert connection.run("uname -m", timeout=60).stdout.strip() == "aarch64"
    finally:
        connection.close()
    assert arm_boards.main(["down", str(tmp_path)]) == 0
    assert not Path(f"/proc/{entry['pid']}").exists()
    assert arm_boards.mounted_under(tmp_path) == [] and not (tmp_path / "boards.json").exists()
    assert "stopped the boards of" in capsys.readouterr().out
