"""What the farm commands do over every target (tasks.targets.farm_commands), without a
device: a device named twice to ``edgeflow farm setup`` is set up once."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from flows.cli import app
from tasks.farm import setup as farm_setup


def test_a_device_named_twice_is_set_up_once_in_one_row(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Two setups at once on one board would race over its virtualenv: one runs."""
    key = tmp_path / "id"
    key.write_text("not a key, never read here\n")
    os.chmod(key, 0o600)
    (tmp_path / "known_hosts").write_text("")
    farm_file = tmp_path / "farm.yaml"
    farm_file.write_text(yaml.safe_dump({"devices": {"rpi4x": {
        "transport": "ssh", "host": "rpi4x.local", "user": "pi", "key_file": str(key),
        "known_hosts": str(tmp_path / "known_hosts"), "runtimes": ["onnxruntime"],
        "setup": {}}}}))
    calls: list[str] = []

    def set_up(name: str, device: Any, runtimes: list[str], cache_root: Path
               ) -> farm_setup.SetupOutcome:
        calls.append(name)
        return farm_setup.SetupOutcome(name, changed=True, actions=("built the venv",),
                                       runtimes={"onnxruntime": "1.0"})

    monkeypatch.setattr(farm_setup, "setup_device", set_up)
    result = CliRunner().invoke(app, ["farm", "setup", "rpi4x", "rpi4x", "--farm", str(farm_file)],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert calls == ["rpi4x"]
    rows = [line.split("│")[1:4] for line in result.output.splitlines() if line.startswith("│")]
    assert [[cell.strip() for cell in row] for row in rows] == [
        ["rpi4x", "changed", "built the venv"]]


def _farm(tmp_path: Path) -> Any:
    from tasks.config import load_farm

    key = tmp_path / "id"
    key.write_text("not a key, never read here\n")
    os.chmod(key, 0o600)
    (tmp_path / "known_hosts").write_text("")
    ssh = {"transport": "ssh", "user": "pi", "key_file": str(key),
           "known_hosts": str(tmp_path / "known_hosts")}
    (tmp_path / "farm.yaml").write_text(yaml.safe_dump({"devices": {
        "zeta": {**ssh, "host": "zeta.local", "setup": {}},
        "here": {"threads": 1},
        "bare": {**ssh, "host": "bare.local"},
        "alpha": {**ssh, "host": "alpha.local", "setup": {}},
        "esp32": {"transport": "mcu", "flash_kb": 4096, "ram_kb": 512}}}, sort_keys=False))
    return load_farm(tmp_path / "farm.yaml")


def _set_up_with(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    from tasks.targets import farm_commands

    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(farm_commands, "setup_devices",
                        lambda devices, runtimes, cache, max_parallel: calls.append(
                            (devices, runtimes, cache, max_parallel)) or list(devices))
    return calls


def test_setup_of_no_named_device_sets_up_every_one_with_a_setup_section(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.targets.farm_commands import setup_farm

    farm, calls = _farm(tmp_path), _set_up_with(monkeypatch)
    assert setup_farm(farm, [], ["tflite"], tmp_path / "cache") == ["zeta", "alpha"]
    [(devices, runtimes, cache, max_parallel)] = calls
    assert devices == {"zeta": farm.devices["zeta"], "alpha": farm.devices["alpha"]}
    assert (runtimes, cache) == (["tflite"], tmp_path / "cache")
    assert max_parallel == farm.parallelism.boards  # farm.yaml's bound on boards at once
    # Named: in the order first asked, once each.
    assert setup_farm(farm, ["alpha", "zeta", "alpha"], None, tmp_path) == ["alpha", "zeta"]
    assert calls[1][1] is None


@pytest.mark.parametrize("name, message", [
    ("nowhere", "no device 'nowhere' in the farm (devices: zeta, here, bare, alpha, esp32)"),
    ("bare", "device 'bare' has no `setup` section in farm.yaml: nothing to set up (add "
             "`setup: {}` to let edgeflow manage its virtualenv)"),
    ("here", "device 'here' has no `setup` section in farm.yaml: nothing to set up (add "
             "`setup: {}` to let edgeflow manage its virtualenv)"),
    ("esp32", "device 'esp32' has no `setup` section in farm.yaml: nothing to set up (add "
              "`setup: {}` to let edgeflow manage its virtualenv)"),
])
def test_setup_of_a_device_it_cannot_set_up_is_refused_before_any_is(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, message: str) -> None:
    from tasks.core.errors import ConfigError
    from tasks.targets.farm_commands import setup_farm

    calls = _set_up_with(monkeypatch)
    with pytest.raises(ConfigError) as refused:
        setup_farm(_farm(tmp_path), ["alpha", name], None, tmp_path)
    assert str(refused.value) == message and calls == []


def test_a_key_file_that_cannot_be_used_stops_setup_and_probe_before_any_device(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.core.errors import ConfigError
    from tasks.targets import farm_commands

    farm, calls = _farm(tmp_path), _set_up_with(monkeypatch)
    os.chmod(tmp_path / "id", 0o644)
    monkeypatch.setattr(farm_commands, "target_of", lambda name, entry: pytest.fail("probed"))
    with pytest.raises(ConfigError):
        farm_commands.probe_farm(farm)
    monkeypatch.undo()
    calls = _set_up_with(monkeypatch)
    with pytest.raises(ConfigError):
        farm_commands.setup_farm(farm, ["zeta"], None, tmp_path)
    assert calls == []


def test_probe_asks_every_device_and_answers_in_farm_order(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading
    import time

    from tasks.targets import farm_commands

    farm = _farm(tmp_path)
    started: list[str] = []
    lock = threading.Lock()

    class Probed:
        def __init__(self, name: str, entry: Any) -> None:
            self.name = name

        def probe(self) -> str:
            with lock:
                started.append(self.name)
            time.sleep(0.01 if self.name == "zeta" else 0)  # the first answers last
            return f"probe of {self.name}"

    monkeypatch.setattr(farm_commands, "target_of", Probed)
    assert farm_commands.probe_farm(farm) == [f"probe of {name}" for name in farm.devices]
    assert sorted(started) == sorted(farm.devices)


@pytest.mark.parametrize(("devices", "max_parallel", "workers"),
                         [(1, 16, 1), (5, 16, 5), (16, 16, 16), (20, 16, 16), (20, 3, 3)])
def test_probe_asks_up_to_max_parallel_devices_at_once(
        devices: int, max_parallel: int, workers: int, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """One thread per device, at most farm.yaml's max_parallel: the pool is as wide as the
    farm, within that bound (not the executor's default, which depends on this machine's
    cores)."""
    from concurrent.futures import ThreadPoolExecutor

    from tasks.config import load_farm
    from tasks.targets import farm_commands

    widths: list[Any] = []

    class Pool(ThreadPoolExecutor):
        def __init__(self, max_workers: Any = None, **kwargs: Any) -> None:
            widths.append(max_workers)
            super().__init__(max_workers, **kwargs)

    (tmp_path / "farm.yaml").write_text(yaml.safe_dump({"max_parallel": max_parallel, "devices": {
        f"board{number}": {"threads": 1} for number in range(devices)}}, sort_keys=False))
    monkeypatch.setattr(farm_commands, "ThreadPoolExecutor", Pool)
    monkeypatch.setattr(farm_commands, "target_of",
                        lambda name, entry: type("Probed", (), {"probe": lambda self: name})())
    farm = load_farm(tmp_path / "farm.yaml")
    assert farm_commands.probe_farm(farm) == [f"board{number}" for number in range(devices)]
    assert widths == [workers]
