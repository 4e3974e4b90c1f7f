"""tasks/config/power.py: farm.yaml's power profiles (declared or named), battery and
energy meter choice."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tasks.config.farm import Farm
from tasks.config.power import BOARD_POWER, EnergyMeter, PowerProfile


def farm(**entry: object) -> Farm:
    return Farm.model_validate({"devices": {"pi": entry}})


def test_a_named_profile_is_that_boards_default_with_its_source() -> None:
    device = farm(power="raspberry-pi-5", battery={"capacity_mwh": 37000, "fps": 2}).devices["pi"]
    assert (device.power.idle_watts, device.power.active_watts) == (4.0, 8.0)
    assert "800 mA x 5 V" in device.power.source
    assert (device.battery.capacity_mwh, device.battery.fps) == (37000, 2)


def test_every_seed_board_has_a_profile_citing_its_source() -> None:
    assert set(BOARD_POWER) == {"raspberry-pi-4", "raspberry-pi-5", "jetson-nano",
                                "jetson-orin-nano", "coral-dev-board", "esp32-s3", "nano33-ble"}
    assert all(profile.source != "declared in farm.yaml" for profile in BOARD_POWER.values())


def test_a_microcontroller_profile_in_its_datasheets_terms() -> None:
    profile = PowerProfile(voltage_v=3.0, active_ma=3.3, idle_ma=0.5)
    assert (profile.active_watts, profile.idle_watts) == (pytest.approx(0.0099),
                                                          pytest.approx(0.0015))


@pytest.mark.parametrize(("power", "message"), [
    ("pi9", "unknown board power profile 'pi9' (known: raspberry-pi-4"),
    ({"idle_w": 2.0}, "give idle_w and active_w, or (a microcontroller)"),
    ({"idle_w": 5.0, "active_w": 3.0}, "idle power 5 W is above active power 3 W"),
])
def test_bad_power_says_what_is_allowed(power: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        farm(power=power)


def test_energy_meter_choice() -> None:
    assert EnergyMeter.model_validate({"command": "m", "unit": "J"}).meter == "command"
    assert EnergyMeter(meter="hwmon:ina3221").harness_args()[:2] == ["--energy-meter",
                                                                     "hwmon:ina3221"]
    with pytest.raises(ValidationError, match="unknown meter 'watts'"):
        EnergyMeter(meter="watts")
    with pytest.raises(ValidationError, match="meter: command needs `command`"):
        EnergyMeter(meter="command")
