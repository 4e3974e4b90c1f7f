"""The registry of kinds of target (tasks.targets.base) and the two built-in kinds'
answers that need no device: which kind each farm.yaml entry is, what a microcontroller
profile says instead of a probe or a rollback, and a kind registered with its own
farm.yaml entry model (then forgotten)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest

from tasks.config import load_farm
from tasks.config.params import Requirements
from tasks.core.errors import ConfigError
from tasks.core.layout import Layout
from tasks.core.strict import StrictModel
from tasks.targets import KINDS, register, target_of, unregister
from tasks.targets.board import BoardTarget, SshBoardTarget
from tasks.targets.mcu import McuTarget

FARM = """\
devices:
  here: {threads: 1}
  pi: {transport: ssh, host: pi.local, user: pi, key_file: id, known_hosts: kh, setup: {}}
  pi-bare: {transport: ssh, host: pi2.local, user: pi, key_file: id, known_hosts: kh}
  esp32: {transport: mcu, flash_kb: 4096, ram_kb: 512, tags: {board: s3}}
"""


def _farm(tmp_path: Path, text: str = FARM):
    (tmp_path / "farm.yaml").write_text(text, encoding="utf-8")
    return load_farm(tmp_path / "farm.yaml")


def test_each_entry_is_the_target_of_its_kind(tmp_path: Path) -> None:
    farm = _farm(tmp_path)
    targets = {name: target_of(name, entry) for name, entry in farm.devices.items()}
    assert [type(target) for target in targets.values()] == [
        BoardTarget, SshBoardTarget, SshBoardTarget, McuTarget]
    assert [target.kind for target in targets.values()] == ["board", "board", "board", "mcu"]
    assert targets["pi"].managed_setup() is farm.devices["pi"]
    assert [targets[name].managed_setup() for name in ("here", "pi-bare", "esp32")] == [
        None, None, None]


def test_a_microcontroller_is_described_not_probed_and_cannot_roll_back(tmp_path: Path) -> None:
    esp32 = target_of("esp32", _farm(tmp_path).devices["esp32"])
    probe = esp32.probe()
    assert (probe.reachable, probe.facts, probe.error, probe.failure) == (
        False, {"class": "mcu", "flash_kb": 4096, "ram_kb": 512, "board": "s3"},
        "microcontroller profile: no shell to probe", None)
    assert esp32.release_state(lambda entry: pytest.fail("a board's state was read")) is None
    layout = Layout(tmp_path)
    with pytest.raises(ConfigError, match=r"esp32 is a microcontroller: flash its previous "
                                          r"bundle from .*releases/esp32 \(see the README\)"):
        esp32.rollback(layout, lambda entry: pytest.fail("a board's rollback was asked"))


def test_an_entry_of_an_unregistered_transport_has_no_target(tmp_path: Path) -> None:
    entry = _farm(tmp_path).devices["here"].model_copy(update={"transport": "pigeon"})
    with pytest.raises(ConfigError, match=r"device 'here': no kind of target for transport "
                                          r"'pigeon' \(known: local, ssh, mcu"):
        target_of("here", entry)


class PigeonDevice(StrictModel):
    transport: Literal["pigeon"]
    loft: str
    requirements: Requirements | None = None  # every entry has it: select reads it


class PigeonTarget(BoardTarget):
    kind = "pigeon"


def test_a_registered_kind_is_a_farm_entry_until_it_is_unregistered(tmp_path: Path) -> None:
    text = "devices:\n  coo: {transport: pigeon, loft: roof}\n"
    register("pigeon", PigeonTarget, PigeonDevice)
    try:
        entry = _farm(tmp_path, text).devices["coo"]
        assert isinstance(entry, PigeonDevice) and entry.loft == "roof"
        assert target_of("coo", entry).kind == "pigeon"
        with pytest.raises(ConfigError, match=r"devices\.coo\.loft: Field required"):
            _farm(tmp_path, "devices:\n  coo: {transport: pigeon}\n")
    finally:
        unregister("pigeon")
    assert "pigeon" not in KINDS
    with pytest.raises(ConfigError) as refused:
        _farm(tmp_path, text)
    assert str(refused.value).endswith(
        "devices.coo.transport: 'pigeon' is not allowed (allowed: 'local', 'ssh', 'mcu')")


class RequirementlessDevice(StrictModel):
    transport: Literal["pigeon"]
    loft: str


class UntaggedDevice(StrictModel):
    transport: str
    requirements: Requirements | None = None


def test_an_entry_model_without_the_fields_every_entry_has_is_refused(tmp_path: Path) -> None:
    """select applies each device's requirement overrides: an entry model without
    ``requirements`` would load, then fail there; it is refused when registered."""
    with pytest.raises(ConfigError) as refused:
        register("pigeon", PigeonTarget, RequirementlessDevice)
    assert str(refused.value) == (
        "farm.yaml entry model RequirementlessDevice has no `requirements` field: every kind "
        "of entry has `transport` (a Literal of its one tag) and `requirements` "
        "(Requirements | None, the device's overrides)")
    assert "pigeon" not in KINDS
    with pytest.raises(ConfigError, match=r"^farm.yaml entry model UntaggedDevice: its "
                                          r"`transport` field is not a Literal of one tag$"):
        register("pigeon", PigeonTarget, UntaggedDevice)
    assert "pigeon" not in KINDS
    with pytest.raises(ConfigError, match=r"'pigeon' is not allowed"):
        _farm(tmp_path, "devices:\n  coo: {transport: pigeon, loft: roof}\n")


@pytest.mark.parametrize("name", ["here", "pi", "pi-bare"])
def test_a_board_hands_its_own_entry_to_each_piece_of_the_steps_work(
        tmp_path: Path, name: str) -> None:
    """benchmark, release, rollback and release_state are the steps' harness work, run
    with this board's farm.yaml entry (not another's, not the job's)."""
    from types import SimpleNamespace

    farm = _farm(tmp_path)
    target = target_of(name, farm.devices[name])
    assert target.name == name

    def answer(what: str) -> object:
        return lambda entry: (what, entry)

    entry = farm.devices[name]
    assert target.benchmark(SimpleNamespace(on_board=answer("benchmark"))) == ("benchmark", entry)
    assert target.release(SimpleNamespace(on_board=answer("release"))) == ("release", entry)
    assert target.rollback(Layout(tmp_path), answer("rollback")) == ("rollback", entry)
    assert target.release_state(answer("state")) == ("state", entry)

