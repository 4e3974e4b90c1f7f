"""``edgeflow farm probe|setup|trust`` in this process (the subprocess tests of
tests/flows/test_cli.py are invisible to mutation testing): what reaches the farm
commands, the exit code of each mix of failures, the exact lines said, and each standing
of a host key walked through ``trust``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

import tasks.farm.trust
import tasks.targets.farm_commands
from flows.cli import app
from tasks.core.errors import ConfigError, DeviceError, EdgeflowError, StepError
from tasks.farm.probe import DeviceProbe
from tasks.farm.setup import SetupOutcome
from tasks.farm.trust import HostKeyOffer

SSH = "{transport: ssh, host: 10.0.0.2, user: pi, key_file: k, known_hosts: kh}"


def invoke(*argv: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(app, list(argv), env={"COLUMNS": "300"}, input=stdin)


@pytest.fixture
def farm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "farm.yaml"
    path.write_text(f"devices:\n  a: {{workdir: wa}}\n  b: {{workdir: wb}}\n  pi: {SSH}\n",
                    encoding="utf-8")
    return path


# ------------------------------------------------------------------------------ probe

FAILURES: list[dict[str, type[EdgeflowError] | None]] = [
    {"a": None, "b": None, "pi": None},
    {"a": DeviceError, "b": None, "pi": None},
    {"a": None, "b": ConfigError, "pi": DeviceError},
    {"a": StepError, "b": DeviceError, "pi": None},
]


def _code(failures: dict[str, type[EdgeflowError] | None]) -> int:
    return max((failure.exit_code for failure in failures.values() if failure), default=0)


@pytest.mark.parametrize("failures", FAILURES)
def test_probe_shows_every_device_and_exits_with_the_highest_code_of_its_failures(
        farm: Path, monkeypatch: pytest.MonkeyPatch,
        failures: dict[str, type[EdgeflowError] | None]) -> None:
    probed: list[Any] = []

    def probe_farm(inventory: Any) -> list[DeviceProbe]:
        probed.append(inventory)
        return [DeviceProbe(name, failure is None, {"arch": f"arch-{name}"},
                            error=f"{name} broke" if failure else None, failure=failure)
                for name, failure in failures.items()]

    monkeypatch.setattr(tasks.targets.farm_commands, "probe_farm", probe_farm)
    ran = invoke("farm", "probe", "--farm", "farm.yaml")
    assert [list(inventory.devices) for inventory in probed] == [["a", "b", "pi"]]
    assert probed[0].devices["a"].workdir == farm.parent / "wa"  # load_farm's, resolved
    assert ran.exit_code == _code(failures), ran.output
    failed = [name for name, failure in failures.items() if failure]
    for name in failures:
        assert f"arch-{name}" in ran.stdout
    assert ran.stderr == (f"edgeflow: error: {', '.join(failed)}: could not be probed (the "
                          "table says why)\n" if failed else "")


def test_a_device_not_probed_without_a_failure_fails_nothing(
        farm: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A microcontroller profile is not probed (no shell): unreachable, but no failure."""
    monkeypatch.setattr(tasks.targets.farm_commands, "probe_farm", lambda inventory: [
        DeviceProbe("a", True), DeviceProbe("mcu", False, error="not probed: no shell")])
    ran = invoke("farm", "probe", "--farm", "farm.yaml")
    assert (ran.exit_code, ran.stderr) == (0, "")
    assert "no: not probed: no shell" in ran.stdout


def test_probe_of_a_bad_farm_is_one_line_and_exit_2(farm: Path) -> None:
    farm.write_text("devices: {a: {threads: 0}}\n")
    ran = invoke("farm", "probe", "--farm", str(farm))
    assert (ran.exit_code, ran.stdout) == (2, "")
    assert ran.stderr.startswith(f"edgeflow: error: {farm}: devices.a.threads: ")


# ------------------------------------------------------------------------------ setup


def _recording_setup(monkeypatch: pytest.MonkeyPatch,
                     outcomes: list[SetupOutcome]) -> list[tuple[Any, ...]]:
    calls: list[tuple[Any, ...]] = []

    def setup_farm(inventory: Any, devices: list[str], runtimes: Any, cache: Path) -> Any:
        calls.append((sorted(inventory.devices), devices, runtimes, cache))
        return outcomes

    monkeypatch.setattr(tasks.targets.farm_commands, "setup_farm", setup_farm)
    return calls


def test_setup_asks_for_the_named_devices_the_experiments_runtimes_and_the_wheelhouse(
        farm: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (farm.parent / "exp.yaml").write_text(
        "formats: {onnx: [fp32], tflite: [fp32, int8], openvino: [fp32]}\n")
    calls = _recording_setup(monkeypatch, [SetupOutcome("b", changed=True, actions=("venv",))])
    ran = invoke("farm", "setup", "b", "a", "--farm", "farm.yaml", "--params", "exp.yaml")
    assert ran.exit_code == 0, ran.output
    assert calls == [(["a", "b", "pi"], ["b", "a"], ["onnxruntime", "openvino", "tflite"],
                      farm.parent / ".edgeflow" / "wheelhouse")]
    assert "changed" in ran.stdout and "venv" in ran.stdout and ran.stderr == ""


def test_setup_reads_the_params_beside_the_farm_and_none_when_there_is_none(
        farm: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _recording_setup(monkeypatch, [SetupOutcome("a")])
    assert invoke("farm", "setup", "--farm", "farm.yaml").exit_code == 0
    (farm.parent / "params.yaml").write_text("formats: {onnx: [fp32]}\n")
    assert invoke("farm", "setup", "--farm", "farm.yaml").exit_code == 0
    assert [(devices, runtimes) for _, devices, runtimes, _ in calls] == [
        ([], None), ([], ["onnxruntime"])]


def test_setup_without_a_device_to_set_up_says_so_and_exits_0(
        farm: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _recording_setup(monkeypatch, [])
    ran = invoke("farm", "setup", "--farm", "farm.yaml")
    assert (ran.exit_code, ran.stdout, ran.stderr) == (
        0, "farm.yaml: no device has a `setup` section: nothing to set up\n", "")


@pytest.mark.parametrize("failures", FAILURES)
def test_setup_exits_with_the_highest_code_of_its_failures_naming_the_devices(
        farm: Path, monkeypatch: pytest.MonkeyPatch,
        failures: dict[str, type[EdgeflowError] | None]) -> None:
    _recording_setup(monkeypatch, [
        SetupOutcome(name, error="it broke" if failure else None, failure=failure)
        for name, failure in failures.items()])
    ran = invoke("farm", "setup", "--farm", "farm.yaml")
    assert ran.exit_code == _code(failures), ran.output
    failed = [name for name, failure in failures.items() if failure]
    assert ran.stderr == (f"edgeflow: error: {', '.join(failed)}: could not be set up (the "
                          "table says why)\n" if failed else "")


def test_setup_with_an_absent_named_params_file_is_refused(
        farm: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _recording_setup(monkeypatch, [])
    ran = invoke("farm", "setup", "--farm", "farm.yaml", "--params", "absent.yaml")
    assert (ran.exit_code, ran.stderr, calls) == (
        2, "edgeflow: error: absent.yaml: file not found\n", [])


# ------------------------------------------------------------------------------ trust


class Key:
    def get_name(self) -> str:
        return "ssh-ed25519"

    def asbytes(self) -> bytes:
        return b"key"


FINGERPRINT = "SHA256:LHDhK3oGRvkiefQnx7OOczTY5Tic/xZ6HcMOc/gmtoM"  # of b"key"


@pytest.fixture
def offered(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Set what the device offers; returns the list of offers ``record`` was given."""
    recorded: list[Any] = []

    def offer(standing: str) -> None:
        monkeypatch.setattr(tasks.farm.trust, "examine", lambda device: HostKeyOffer(
            f"{device.host}", Key(), standing, "SHA256:old" if standing == "changed" else None))

    monkeypatch.setattr(tasks.farm.trust, "record",
                        lambda device, offer: recorded.append((device.host, offer.standing)))
    offer.recorded = recorded  # type: ignore[attr-defined]
    return offer


@pytest.mark.parametrize("name, message", [
    ("nosuch", "farm.yaml: no device 'nosuch' (devices: a, b, pi)"),
    ("a", "farm.yaml: 'a' is a local device: only ssh devices have host keys to trust"),
])
def test_trust_of_a_device_without_a_host_key_is_refused(farm: Path, name: str,
                                                         message: str) -> None:
    ran = invoke("farm", "trust", name, "--farm", "farm.yaml", "--yes")
    assert (ran.exit_code, ran.stderr) == (2, f"edgeflow: error: {message}\n")


def test_a_trusted_key_changes_nothing(farm: Path, offered: Any) -> None:
    offered("trusted")
    ran = invoke("farm", "trust", "pi", "--farm", "farm.yaml", "--yes")
    assert ran.exit_code == 0 and offered.recorded == []
    assert ran.stdout == (f"pi (10.0.0.2) offers ssh-ed25519 key {FINGERPRINT}\n"
                          f"already trusted in {farm.parent / 'kh'}: nothing changed\n")


@pytest.mark.parametrize("answer, code, recorded", [("y\n", 0, [("10.0.0.2", "unknown")]),
                                                    ("n\n", 1, []), ("\n", 1, [])])
def test_an_unknown_key_is_recorded_only_when_confirmed(farm: Path, offered: Any, answer: str,
                                                        code: int, recorded: list[Any]) -> None:
    offered("unknown")
    ran = invoke("farm", "trust", "pi", "--farm", "farm.yaml", stdin=answer)
    assert ran.exit_code == code and offered.recorded == recorded
    assert ("edgeflow: not trusted: nothing recorded\n" in ran.stderr) == (code == 1)
    assert (f"recorded in {farm.parent / 'kh'}" in ran.stdout) == (code == 0)


def test_yes_records_an_unknown_key_without_asking(farm: Path, offered: Any) -> None:
    offered("unknown")
    ran = invoke("farm", "trust", "pi", "--farm", "farm.yaml", "--yes")
    assert ran.exit_code == 0 and offered.recorded == [("10.0.0.2", "unknown")]
    assert "Record it" not in ran.stdout


def test_a_changed_key_is_refused_unless_replace(farm: Path, offered: Any) -> None:
    offered("changed")
    ran = invoke("farm", "trust", "pi", "--farm", "farm.yaml", "--yes")
    assert (ran.exit_code, offered.recorded) == (1, [])
    assert ran.stderr == ("edgeflow: error: host key changed; not replaced (check it on the "
                          "device, then run again with --replace)\n")
    assert (f"this differs from the key recorded in {farm.parent / 'kh'} (SHA256:old): the "
            "device was re-imaged, or someone is impersonating it") in ran.stdout
    replaced = invoke("farm", "trust", "pi", "--farm", "farm.yaml", "--yes", "--replace")
    assert replaced.exit_code == 0 and offered.recorded == [("10.0.0.2", "changed")]
