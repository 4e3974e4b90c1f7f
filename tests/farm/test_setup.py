"""`edgeflow farm setup` on a real SSH device: a virtualenv built offline from wheels
downloaded here for the device's platform, pushed over SSH; a second run changes
nothing; the device then runs what it has and skips, with the reason, what it lacks.
Downloads numpy and onnxruntime wheels from PyPI (the registries are reachable here)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import yaml
from typer.testing import CliRunner

from flows.cli import app
from tasks.config import SshDevice, load_farm
from tasks.farm.setup import LOCK_FILE, pinned, pip_platforms, wheel_platforms
from tasks.targets.farm_commands import setup_farm
from tests.helpers import assert_device_tidy, bench_device, records
from tests.sshd import SshServer


def _base_python() -> str:
    """An interpreter outside edgeflow's venv: the board's bare system Python."""
    return "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys._base_executable


def test_setup_builds_a_venv_once_then_changes_nothing(tiny_project, ssh_server: SshServer,
                                                       tmp_path: Path) -> None:
    workdir = tmp_path / "board"
    entry = ssh_server.farm_entry(workdir, _base_python(), runtimes=["onnxruntime"], setup={})
    farm_file = tmp_path / "farm.yaml"
    farm_file.write_text(yaml.safe_dump({"devices": {"pi": entry}}))
    cache = tmp_path / "wheelhouse-cache"

    [first] = setup_farm(load_farm(farm_file), [], None, cache)
    assert first.error is None and first.changed
    assert any(action.startswith("pushed ") for action in first.actions)
    assert set(first.runtimes) == {"onnxruntime"}, "only what the device needs is installed"
    state = workdir / "venv" / "edgeflow-setup.json"
    assert "onnxruntime==" in state.read_text() and "pillow==" in state.read_text()
    wheels = sorted(path.name for path in (workdir / "wheelhouse").iterdir())
    assert any(name.startswith("numpy-") for name in wheels)
    assert any(name.startswith("pillow-") for name in wheels)  # the predictor decodes images
    stamp = state.stat().st_mtime_ns

    second = CliRunner().invoke(app, ["farm", "setup", "--farm", str(farm_file)],
                                env={"COLUMNS": "200"})
    assert second.exit_code == 0, second.output
    assert "nothing changed" in second.output and "onnxruntime" in second.output
    assert state.stat().st_mtime_ns == stamp
    assert sorted(path.name for path in (workdir / "wheelhouse").iterdir()) == wheels

    # Benchmarks run in the venv: what it lacks is skipped with the reason.
    unfiltered = SshDevice(**{**entry, "runtimes": None})
    results = records(bench_device(tiny_project, "pi", unfiltered, tmp_path / "results"))
    assert results["onnx-fp32"]["status"] == "ok", results["onnx-fp32"]["error"]
    assert results["onnx-fp32"]["device_facts"]["runtime.onnxruntime"] == first.runtimes["onnxruntime"]
    for name, runtime in (("tflite-fp32", "tflite"), ("openvino-fp32", "openvino")):
        assert results[name]["status"] == "skipped"
        assert results[name]["error"] == f"runtime {runtime!r} is not installed on pi"
    assert_device_tidy(workdir)


def test_runtimes_are_pinned_to_the_project_lock() -> None:
    # The lock is found from the module's place in the tree; a wrong path would silently
    # install whatever pip picks today instead of what convert checked.
    assert LOCK_FILE == Path(__file__).resolve().parents[2] / "requirements.lock"
    (numpy,) = pinned(["numpy"])
    assert numpy.startswith("numpy==") and numpy in LOCK_FILE.read_text(encoding="utf-8")


def test_wheel_platforms_are_the_tags_pip_chose_among_the_accepted() -> None:
    wheels = [Path("/cache/numpy-2.4.6-cp311-cp311-manylinux_2_27_aarch64.manylinux_2_28_aarch64.whl"),
              Path("/cache/protobuf-7.36.2-cp310-abi3-manylinux2014_aarch64.whl"),
              Path("/cache/openvino-2026.4.1-22982-cp311-cp311-manylinux_2_35_aarch64.whl"),
              Path("/cache/tqdm-4.70.1-py3-none-any.whl")]
    assert wheel_platforms(wheels) == ["any", "manylinux2014_aarch64", "manylinux_2_27_aarch64",
                                       "manylinux_2_28_aarch64", "manylinux_2_35_aarch64"]
    # A Debian bookworm board (glibc 2.36) accepts every one of those.
    accepted = pip_platforms({"machine": "aarch64", "libc": ["glibc", "2.36"]})
    assert accepted[0] == "manylinux_2_36_aarch64" and accepted[-1] == "linux_aarch64"
    assert set(wheel_platforms(wheels)) - {"any"} <= set(accepted)
    assert {"manylinux_2_17_aarch64", "manylinux2014_aarch64"} <= set(accepted)


def test_setup_refuses_devices_it_does_not_manage(ssh_server: SshServer, tmp_path: Path) -> None:
    farm_file = tmp_path / "farm.yaml"
    farm_file.write_text(yaml.safe_dump({"devices": {
        "pi": ssh_server.farm_entry(tmp_path / "board", sys.executable)}}))
    named = CliRunner().invoke(app, ["farm", "setup", "pi", "--farm", str(farm_file)])
    assert named.exit_code == 2 and "has no `setup` section" in named.output
    nothing = CliRunner().invoke(app, ["farm", "setup", "--farm", str(farm_file)])
    assert nothing.exit_code == 0 and "nothing to set up" in nothing.output
    assert not (tmp_path / "board").exists()
    shutil.rmtree(tmp_path / ".edgeflow", ignore_errors=True)
