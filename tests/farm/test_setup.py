"""`edgeflow farm setup` on a real SSH device: a virtualenv built offline from wheels
downloaded here for the device's platform, pushed over SSH; a second run changes
nothing; the device then runs what it has and skips, with the reason, what it lacks.
Downloads numpy and onnxruntime wheels from PyPI (the registries are reachable here)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from flows.cli import app
from tasks.config import SshDevice, load_farm
from tasks.farm.setup import (LOCK_FILE, RUNTIME_PACKAGES, SetupError, download_wheels, pinned,
                              pip_platforms, wanted_packages, wheel_platforms)
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


# What is pinned, downloaded and installed for which device: pure functions, no device.

LOCK = """# a comment
numpy==2.4.6
Pillow==13.0.0
ai_edge_litert==2.3.0
onnxruntime==1.32.0
onnxruntime-extensions==0.13.0
  openvino==2026.4.1
-e .
tflite-micro
"""


def test_pinned_pins_each_bare_name_found_in_the_lock_whatever_its_spelling(
        tmp_path: Path) -> None:
    """Names match the lock's as pip compares them (case, ``_`` for ``-``), the name is
    kept as written; a name absent from the lock, or not bare, stays as it is; each once,
    sorted."""
    lock = tmp_path / "requirements.lock"
    lock.write_text(LOCK)
    assert pinned(["pillow", "AI-Edge-LiteRT", "numpy", "numpy", "onnxruntime", "openvino",
                   "tflite-micro", "onnxruntime>=1.0", "opencv-python"], lock) == [
        "AI-Edge-LiteRT==2.3.0", "numpy==2.4.6", "onnxruntime==1.32.0", "onnxruntime>=1.0",
        "opencv-python", "openvino==2026.4.1", "pillow==13.0.0", "tflite-micro"]
    assert pinned(["onnxruntime-extensions", "ai_edge_litert"], lock) == [
        "ai_edge_litert==2.3.0", "onnxruntime-extensions==0.13.0"]
    assert pinned(["numpy", "pillow", "numpy"], tmp_path / "absent.lock") == ["numpy", "pillow"]


def ssh_device(**changes: Any) -> SshDevice:
    return SshDevice(**{"transport": "ssh", "host": "pi.local", "user": "pi", "key_file": "/k",
                        "known_hosts": "/kh", "workdir": "/home/pi/ef",
                        "python": "/usr/bin/python3", "setup": {}, **changes})


@pytest.mark.parametrize("runtime", sorted(RUNTIME_PACKAGES))
def test_each_runtime_wants_its_pinned_packages_with_numpy_and_pillow(runtime: str) -> None:
    lock = dict(line.split("==") for line in LOCK_FILE.read_text().splitlines() if "==" in line)
    wanted = wanted_packages(ssh_device(), [runtime])
    assert wanted == sorted({f"{name}=={lock[name]}" for name in
                             ("numpy", "pillow", *RUNTIME_PACKAGES[runtime])})


def test_the_devices_extra_packages_come_after_the_pinned_ones_as_written() -> None:
    device = ssh_device(setup={"extra_packages": ["opencv-python-headless==4.10.0.84",
                                                  "numpy"]})
    numpy, onnxruntime, pillow = pinned(["numpy", "onnxruntime", "pillow"])
    assert wanted_packages(device, ["onnxruntime", "openvino"]) == [
        numpy, onnxruntime, pinned(["openvino"])[0], pillow,
        "opencv-python-headless==4.10.0.84", "numpy"]
    assert RUNTIME_PACKAGES == {"tflite": ("ai-edge-litert",), "onnxruntime": ("onnxruntime",),
                                "openvino": ("openvino",), "tflm": ("tflite-micro",),
                                "edgetpu": ("ai-edge-litert",)}


@pytest.mark.parametrize(("libc_version", "accepted"), [
    ("2.17", ["manylinux_2_17_armv7l", "manylinux2014_armv7l", "linux_armv7l"]),
    ("2.19", ["manylinux_2_19_armv7l", "manylinux_2_18_armv7l", "manylinux_2_17_armv7l",
              "manylinux2014_armv7l", "linux_armv7l"]),
    ("2.16", ["linux_armv7l"]),  # older than manylinux2014: no manylinux wheel fits
    ("2.31.1", [f"manylinux_2_{minor}_armv7l" for minor in range(31, 16, -1)]
     + ["manylinux2014_armv7l", "linux_armv7l"]),
])
def test_the_wheel_platforms_a_device_accepts_are_its_glibcs_and_older(
        libc_version: str, accepted: list[str]) -> None:
    assert pip_platforms({"machine": "armv7l", "libc": ["glibc", libc_version]}) == accepted


@pytest.mark.parametrize(("libc", "named"), [(["musl", "1.2"], "musl"), (["", ""], "unknown"),
                                             (None, "unknown"), (["glibc", ""], "glibc")])
def test_a_device_without_glibc_is_told_to_let_its_own_pip_choose(libc: Any, named: str) -> None:
    with pytest.raises(SetupError) as refused:
        pip_platforms({"machine": "aarch64", "libc": libc})
    assert str(refused.value) == (
        f"libc {named} on aarch64: wheels for it cannot be chosen here (manylinux is glibc "
        "only); set setup.wheelhouse: false so the device's own pip chooses")


def test_wheel_platforms_skip_what_is_no_wheel() -> None:
    assert wheel_platforms([Path("/c/tflite_micro-0.dev1.tar.gz"),
                            Path("/c/six-1.17.0-py2.py3-none-any.whl")]) == ["any"]


@pytest.mark.parametrize("implementation", ["cpython", "pypy"])
def test_wheels_are_downloaded_for_the_devices_python_platforms_and_the_lock(
        implementation: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pip is asked for the device's Python and implementation, every accepted platform
    in order, the lock as constraints, this pip and the packages; the wheels are the
    files pip says it saved or had."""
    import subprocess as real
    from importlib.metadata import version

    import tasks.farm.setup as setup

    calls: list[list[str]] = []
    options: list[dict[str, Any]] = []
    said = ("Collecting numpy==2.4.6\n  Saved /cache/numpy-2.4.6-cp311-cp311-"
            "manylinux_2_27_aarch64.whl\n"
            "File was already downloaded /cache/pip-25.2-py3-none-any.whl\n"
            "Successfully downloaded numpy pip\n")
    monkeypatch.setattr(setup.subprocess, "run", lambda argv, **kwargs: calls.append(argv)
                        or options.append(kwargs) or real.CompletedProcess(argv, 0, said, ""))
    # Python 3.9 on the board, not this machine's: the wheels are the board's.
    facts = {"python": "3.9", "implementation": implementation, "machine": "aarch64",
             "libc": ["glibc", "2.18"]}
    wheels = download_wheels(["numpy==2.4.6"], facts, tmp_path / "cache")
    assert wheels == [Path("/cache/numpy-2.4.6-cp311-cp311-manylinux_2_27_aarch64.whl"),
                      Path("/cache/pip-25.2-py3-none-any.whl")]
    assert calls == [[sys.executable, "-m", "pip", "download", "--disable-pip-version-check",
                      "--only-binary=:all:", "--dest", str(tmp_path / "cache"),
                      "--python-version", "3.9", "--implementation",
                      "cp" if implementation == "cpython" else "py",
                      "--platform", "manylinux_2_18_aarch64",
                      "--platform", "manylinux_2_17_aarch64",
                      "--platform", "manylinux2014_aarch64", "--platform", "linux_aarch64",
                      "--constraint", str(LOCK_FILE), f"pip=={version('pip')}", "numpy==2.4.6"]]
    # pip's output is read as text: it names the wheels.
    assert options == [{"capture_output": True, "text": True, "check": False}]


def test_a_download_that_fails_or_brings_nothing_is_a_setup_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess as real

    import tasks.farm.setup as setup

    answer = real.CompletedProcess([], 1, "", "Looking in indexes\nERROR: No matching "
                                              "distribution found for openvino==2026.4.1\n")
    monkeypatch.setattr(setup.subprocess, "run", lambda argv, **kwargs: answer)
    facts = {"python": "3.9", "implementation": "cpython", "machine": "armv7l",
             "libc": ["glibc", "2.31"]}
    with pytest.raises(SetupError) as failed:
        download_wheels(["openvino==2026.4.1"], facts, tmp_path / "cache")
    assert str(failed.value) == ("pip could not download wheels for python 3.9 on armv7l: "
                                 "ERROR: No matching distribution found for openvino==2026.4.1")
    answer = real.CompletedProcess([], 0, "Nothing to do\n", "")
    with pytest.raises(SetupError) as empty:
        download_wheels(["a", "b"], facts, tmp_path / "cache")
    assert str(empty.value) == "pip downloaded nothing for a, b"


@pytest.mark.parametrize("wheelhouse", [True, False])
def test_the_install_command_rebuilds_the_venv_from_the_wheelhouse_or_the_index(
        wheelhouse: bool) -> None:
    import shlex

    from tasks.farm.setup import _install_command

    device = ssh_device(setup={"wheelhouse": wheelhouse})
    wheels = [Path("/c/numpy-2.4.6-cp311-cp311-linux_aarch64.whl"),
              Path("/c/pip-25.2-py3-none-any.whl")]
    command = _install_command(device, ["numpy==2.4.6"], wheels,
                               "/home/pi/ef/wheelhouse/list" if wheelhouse else None)
    umask, locked = command.split(" && ", 1)
    argv = shlex.split(locked)
    # Under the benchmark's lock: never while a benchmark runs in the venv.
    assert (umask, argv[:-1]) == ("umask 077", ["flock", "-w", "600", "-E", "75",
                                                "/home/pi/ef/.benchmark.lock", "sh", "-c"])
    script = argv[-1]
    venv = "/home/pi/ef/venv"
    if wheelhouse:
        install = (f"{venv}/bin/python /home/pi/ef/wheelhouse/pip-25.2-py3-none-any.whl/pip "
                   "install --no-index --find-links /home/pi/ef/wheelhouse")
        create = f"/usr/bin/python3 -m venv --without-pip {venv}"
        assert "/home/pi/ef/wheelhouse/list" in script.split(" && ")[1]
    else:
        install, create = f"{venv}/bin/python -m pip install", f"/usr/bin/python3 -m venv {venv}"
        assert "wheelhouse" not in script
    assert script.split(" && ")[0] == "umask 077"
    assert script.split(" && ")[-4:] == [
        f"rm -rf -- {venv}", create,
        f"{install} --quiet --disable-pip-version-check --no-cache-dir numpy==2.4.6",
        f"chmod -R go= -- {venv}"]


@pytest.mark.parametrize("implementation", ["cpython", "pypy"])
@pytest.mark.parametrize("libc", [["glibc", "2.31"], ["", ""]])
def test_platform_facts_of_either_implementation_and_any_libc_are_accepted(
        implementation: str, libc: list[str]) -> None:
    import json

    from tasks.farm.setup import _checked_facts

    facts = {"python": "3.11", "implementation": implementation, "machine": "aarch64",
             "libc": libc}
    assert _checked_facts(json.dumps(facts).encode()) == facts


@pytest.mark.parametrize("change", [{"implementation": "CPython"}, {"implementation": "jython"},
                                    {"machine": "../x"}, {"python": "3"},
                                    {"libc": ["glibc", "2.31/.."]}, {"libc": ["glibc"]}])
def test_platform_facts_that_could_name_no_cache_folder_are_refused(change: dict[str, Any]) -> None:
    import json

    from tasks.farm.setup import _checked_facts

    facts = {"python": "3.11", "implementation": "cpython", "machine": "aarch64",
             "libc": ["glibc", "2.31"], **change}
    with pytest.raises(SetupError) as refused:
        _checked_facts(json.dumps(facts).encode())
    assert str(refused.value).startswith("the device reported unusable platform facts: {")


def test_setup_device_builds_then_finds_the_venv_as_wanted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """setup_device over a device whose commands are answered here (no SSH): the facts
    choose the wheels, which are pushed into the workdir's wheelhouse, the venv is built
    and checked by importing numpy, PIL and the runtime's module; a second run finds the
    recorded state and the imports as wanted and changes nothing."""
    import json
    from types import SimpleNamespace

    import tasks.farm.setup as setup
    from tasks.farm.transports import LocalConnection

    workdir = tmp_path / "ef"
    venv = workdir / "venv"
    facts = {"python": "3.11", "implementation": "cpython", "machine": "aarch64",
             "libc": ["glibc", "2.31"]}
    commands: list[str] = []

    class Board(LocalConnection):
        def run(self, command: str, **kwargs: Any) -> Any:
            commands.append(command)
            if setup.PLATFORM_SCRIPT.split(";")[0] in command:
                return SimpleNamespace(ok=True, exited=0, stdout=json.dumps(facts) + "\n",
                                       stderr="")
            if command.startswith("flock") or "flock -w" in command:
                venv.mkdir()  # the install, as the device would build it
            return SimpleNamespace(ok=True, exited=0, stdout="", stderr="")

    cache = tmp_path / "cache"
    cache.mkdir()
    wheels = [cache / "numpy-2.4.6-cp311-cp311-manylinux_2_27_aarch64.whl",
              cache / "pip-25.2-py3-none-any.whl"]
    for wheel in wheels:
        wheel.write_bytes(wheel.name.encode())
    asked: list[tuple[Any, ...]] = []
    monkeypatch.setattr(setup, "connect", lambda device, name: Board())
    monkeypatch.setattr(setup, "download_wheels",
                        lambda packages, got, where: asked.append((packages, got, where))
                        or wheels)
    monkeypatch.setattr(setup, "probe_runtimes", lambda connection, device: {"onnxruntime": "1"})
    device = ssh_device(workdir=str(workdir), runtimes=["onnxruntime"])
    packages = wanted_packages(device, ["onnxruntime"])

    built = setup.setup_device("pi", device, ["onnxruntime"], tmp_path / "wheelhouses")
    assert built == setup.SetupOutcome(
        "pi", True, ("pushed 2 of 2 wheels",
                     "wheel platforms: any, manylinux_2_27_aarch64",
                     f"created {venv} with {', '.join(packages)}"), {"onnxruntime": "1"})
    assert asked == [(packages, facts, tmp_path / "wheelhouses" / "cp311-aarch64")]
    assert sorted(path.name for path in (workdir / "wheelhouse").iterdir()
                  if not path.name.startswith(".")) == sorted(wheel.name for wheel in wheels)
    imports = f"{venv}/bin/python -c 'import PIL, numpy, onnxruntime'"
    assert commands[-2] == imports  # the new venv's check, before its state is pushed
    assert json.loads((venv / setup.STATE_FILE).read_text()) == {
        **{key: facts[key] for key in ("python", "machine", "libc")}, "packages": packages,
        "wheelhouse": True, "runtimes": ["onnxruntime"]}

    commands.clear()
    again = setup.setup_device("pi", device, ["onnxruntime"], tmp_path / "wheelhouses")
    assert again == setup.SetupOutcome("pi", False, (), {"onnxruntime": "1"})
    assert commands[1:] == [imports]
