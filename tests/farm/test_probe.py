"""tasks.farm.probe without a board: the probe's command line, why there is no probe (each
exit the device can give), and a device's row when probing it raised."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tasks.core.errors import ConfigError, DeviceError
from tasks.farm import probe as farm_probe
from tasks.farm.probe import probe_command, read_probe
from tasks.farm.protocol import MAX_RESULT_BYTES
from tasks.farm.transports import ON_DEVICE_TIMEOUT_EXITS

PROBE = b'{"host": {"arch": "aarch64"}, "runtimes": {}, "runtime_versions": {"tflite": "2.3"}}'


@dataclass
class Exited:
    exited: int
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.exited == 0


class Board:
    """The files a probe left on a device, read as a transport reads them."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files, self.asked = files, []

    def read_file(self, remote: str, limit: int, tail: bool = False) -> bytes:
        self.asked.append((remote, limit, tail))
        if remote not in self.files:
            raise FileNotFoundError(remote)
        return self.files[remote]


def test_the_probe_writes_its_answer_and_log_beside_the_harness() -> None:
    assert probe_command("/opt/py 3", "/w/probe-1/harness.py") == (
        "'/opt/py 3' /w/probe-1/harness.py --probe > /w/probe-1/probe.json "
        "2> /w/probe-1/probe.log")


def test_a_probe_that_finished_is_read_from_beside_the_harness_within_the_limit() -> None:
    board = Board({"/w/p/probe.json": PROBE})
    assert read_probe(board, Exited(0), "python3", "/w/p/harness.py") == {  # type: ignore[arg-type]
        "host": {"arch": "aarch64"}, "runtimes": {}, "runtime_versions": {"tflite": "2.3"}}
    assert board.asked == [("/w/p/probe.json", MAX_RESULT_BYTES, False)]


@pytest.mark.parametrize("exited, reason", [
    (127, "interpreter 'python3' (or coreutils `timeout`) not found on the device"),
    *((code, "probe did not finish in time and was stopped on the device")
      for code in sorted(ON_DEVICE_TIMEOUT_EXITS)),
    (1, "probe failed (exit 1): ImportError: no numpy"),
    (126, "probe failed (exit 126): ImportError: no numpy"),
])
def test_each_way_a_probe_can_end_without_an_answer_says_why(exited: int, reason: str) -> None:
    board = Board({"/w/p/probe.log": b"Traceback ...\nImportError: no numpy\n",
                   "/w/p/probe.json": PROBE})
    with pytest.raises(RuntimeError) as caught:
        read_probe(board, Exited(exited, "stderr line\n"), "python3",  # type: ignore[arg-type]
                   "/w/p/harness.py")
    assert str(caught.value) == reason


def test_a_failed_probe_without_a_log_quotes_its_stderr() -> None:
    with pytest.raises(RuntimeError) as caught:
        read_probe(Board({}), Exited(2, "warning\nsh: bad option\n\n"), "python3",  # type: ignore[arg-type]
                   "/w/p/harness.py")
    assert str(caught.value) == "probe failed (exit 2): sh: bad option"


@pytest.mark.parametrize("error, failure", [
    (DeviceError("board gone\nsecond line"), DeviceError),
    (ConfigError("bad key"), ConfigError),
    (ValueError("probe field 'host' is not a flat object of named facts"), DeviceError),
])
def test_a_device_that_cannot_be_probed_is_a_row_naming_why_and_its_class(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, error: Exception,
        failure: type) -> None:
    closed: list[bool] = []

    class Connection:
        def close(self) -> None:
            closed.append(True)

    def fail(connection: Any, device: Any, timeout: float) -> dict[str, Any]:
        raise error

    monkeypatch.setattr(farm_probe, "connect", lambda device, name: Connection())
    monkeypatch.setattr(farm_probe, "probe_remote", fail)
    row = farm_probe.probe_one("pi", object())
    last = str(error).splitlines()[-1]
    assert row == farm_probe.DeviceProbe("pi", False, {}, {},
                                         f"{type(error).__name__}: {last}", failure)
    assert closed == [True]


def test_a_probed_device_is_a_row_of_its_host_facts_and_runtime_versions(
        monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[float] = []

    class Connection:
        def close(self) -> None:
            pass

    def probed(connection: Any, device: Any, timeout: float) -> dict[str, Any]:
        seen.append(timeout)
        return {"host": {"arch": "aarch64"}, "runtimes": {"tflite": "ai_edge_litert"},
                "runtime_versions": {"tflite": "2.3"}}

    monkeypatch.setattr(farm_probe, "connect", lambda device, name: Connection())
    monkeypatch.setattr(farm_probe, "probe_remote", probed)
    assert farm_probe.probe_one("pi", object(), timeout=7.0) == farm_probe.DeviceProbe(
        "pi", True, {"arch": "aarch64"}, {"tflite": "2.3"})
    assert seen == [7.0]


def test_the_probe_folder_is_removed_after_a_probe_that_failed(tmp_path: Path) -> None:
    from tasks.config import LocalDevice
    from tasks.farm.transports import LocalConnection

    python = tmp_path / "python"
    python.write_text("#!/bin/sh\necho 'no numpy here' >&2\nexit 4\n", encoding="utf-8")
    python.chmod(0o700)
    device = LocalDevice(workdir=tmp_path / "board", python=str(python))
    (tmp_path / "board").mkdir()
    limits: list[float | None] = []

    class Timed(LocalConnection):
        def run(self, command: str, *, timeout: float | None = None, **options: Any) -> Any:
            limits.append(timeout)
            return super().run(command, timeout=timeout, **options)

    with pytest.raises(RuntimeError, match=r"^probe failed \(exit 4\): no numpy here$"):
        farm_probe.probe_remote(Timed(), device, timeout=30)
    assert list((tmp_path / "board").iterdir()) == []
    # The check of the pushed harness (the transport's own limit), the probe, the cleanup.
    assert limits[-2:] == [30, 30]


def test_probe_meter_names_show_each_meters_update_period() -> None:
    from tasks.farm.probe import meter_names

    assert meter_names([{"name": "rapl", "update_period_s": 0.001, "period_assumed": False},
                        {"name": "hwmon:ina3221", "update_period_s": 0.1,
                         "period_assumed": True}, "junk"]) == (
        "rapl (every 0.001 s)", "hwmon:ina3221 (every 0.1 s, assumed)")
    assert meter_names(None) == ()
