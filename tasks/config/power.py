"""farm.yaml's energy keys per device: ``power`` (the board's declared idle and active
power, or a named board profile from :data:`BOARD_POWER`), ``battery`` (its capacity and
the frame rate it must serve) and ``energy`` (which meter the harness reads, or a user
command for an external meter).

Where a board has no meter, energy is *estimated* from ``power`` and the measured (or,
on a microcontroller, estimated) latency, and labelled so everywhere it appears
(:mod:`tasks.select.energy`).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from tasks.core.strict import StrictModel, count, number

MAX_WATTS = 1000.0


class PowerProfile(StrictModel):
    """A board's power: ``idle_w`` (doing nothing) and ``active_w`` (inferring on every
    core it uses), and where the figures come from. A microcontroller may give its
    supply ``voltage_v`` with ``active_ma`` and ``idle_ma`` instead (its datasheet's
    terms): watts = V x mA / 1000."""

    idle_w: Annotated[float, number(0, MAX_WATTS, unit="W")] | None = None
    active_w: Annotated[float, number(0, MAX_WATTS, above=True, unit="W")] | None = None
    voltage_v: Annotated[float, number(0, 60, above=True, unit="V")] | None = None
    active_ma: Annotated[float, number(0, 100_000, above=True, unit="mA")] | None = None
    idle_ma: Annotated[float, number(0, 100_000, unit="mA")] | None = None
    source: str = Field(default="declared in farm.yaml", min_length=1, max_length=300,
                        description="where the figures come from (a datasheet, a measurement)")

    @model_validator(mode="after")
    def _watts_or_current(self) -> PowerProfile:
        watts = self.idle_w is not None and self.active_w is not None
        current = (self.voltage_v is not None and self.active_ma is not None
                   and self.idle_ma is not None)
        if watts == current:
            raise ValueError("give idle_w and active_w, or (a microcontroller) voltage_v, "
                             "active_ma and idle_ma")
        if self.idle_watts > self.active_watts:
            raise ValueError(f"idle power {self.idle_watts:g} W is above active power "
                             f"{self.active_watts:g} W")
        return self

    @property
    def idle_watts(self) -> float:
        return float(self.idle_w if self.idle_w is not None
                     else self.voltage_v * self.idle_ma / 1000.0)  # type: ignore[operator]

    @property
    def active_watts(self) -> float:
        return float(self.active_w if self.active_w is not None
                     else self.voltage_v * self.active_ma / 1000.0)  # type: ignore[operator]


# Default profiles for the seed's boards, named in farm.yaml as ``power: <name>``. Each
# figure is the vendor's where the vendor publishes one (cited); a full-load figure no
# vendor publishes is marked as a typical measurement. Replace them with your board's
# (or give it a meter): an estimate is only as good as these.
BOARD_POWER: dict[str, PowerProfile] = {
    # Raspberry Pi documentation, "Power supply" table: typical bare-board active current
    # 600 mA at 5 V (Pi 4 B) = 3.0 W, taken as idle; no full-load figure is published:
    # 6.4 W is a typical 4-core stress reading (1.28 A at 5 V).
    "raspberry-pi-4": PowerProfile(idle_w=3.0, active_w=6.4, source=(
        "Raspberry Pi 4 B: 600 mA x 5 V typical bare-board current (Raspberry Pi power "
        "supply documentation); active: typical 4-core stress reading")),
    # Same table: Pi 5 typical bare-board active current 800 mA at 5 V = 4.0 W; full
    # load: a typical 4-core stress reading of ~1.6 A at 5 V.
    "raspberry-pi-5": PowerProfile(idle_w=4.0, active_w=8.0, source=(
        "Raspberry Pi 5: 800 mA x 5 V typical bare-board current (Raspberry Pi power "
        "supply documentation); active: typical 4-core stress reading")),
    # NVIDIA Jetson Nano module data sheet: power modes 5 W and 10 W (MAXN); idle of the
    # module ~1.25 W at 5 V (NVIDIA Jetson Nano developer kit user guide, power section).
    "jetson-nano": PowerProfile(idle_w=1.25, active_w=10.0, source=(
        "Jetson Nano module data sheet: 10 W (MAXN) power mode; idle ~1.25 W")),
    # NVIDIA Jetson Orin Nano 8GB module data sheet: 7 W to 15 W power modes; 7 W (the
    # lowest mode's budget) taken as idle, 15 W as active.
    "jetson-orin-nano": PowerProfile(idle_w=7.0, active_w=15.0, source=(
        "Jetson Orin Nano 8GB module data sheet: 7 W to 15 W power modes")),
    # Coral Dev Board data sheet: 5 V 2-3 A supply; the Edge TPU does 4 TOPS at 2 W
    # (0.5 W per TOPS, Coral Edge TPU performance page); i.MX 8M SoM idle ~2.5 W.
    "coral-dev-board": PowerProfile(idle_w=2.5, active_w=4.5, source=(
        "Coral Dev Board data sheet (5 V supply) + Edge TPU 2 W at 4 TOPS; SoM idle ~2.5 W")),
    # ESP32-S3 series data sheet, current consumption: ~91.7 mA with both cores at 240 MHz
    # running (modem sleep, radio off) at 3.3 V; light sleep 240 uA.
    "esp32-s3": PowerProfile(voltage_v=3.3, active_ma=91.7, idle_ma=0.24, source=(
        "ESP32-S3 data sheet: ~91.7 mA at 240 MHz dual-core (radio off), 240 uA light "
        "sleep, 3.3 V")),
    # nRF52840 product specification: CPU running from flash at 64 MHz with the DC/DC
    # regulator, 3.3 mA at 3 V; System ON idle with full RAM retention and RTC ~3.16 uA.
    # The Nano 33 BLE board's LED and regulator draw more: the MCU's figure only.
    "nano33-ble": PowerProfile(voltage_v=3.0, active_ma=3.3, idle_ma=0.00316, source=(
        "nRF52840 product specification: 3.3 mA CPU at 64 MHz (DC/DC), 3.16 uA System ON "
        "idle, 3 V; the MCU only, not the board's LED and regulator")),
}


def board_power(name: str) -> PowerProfile:
    """The default profile ``name``; a ValueError listing the known ones."""
    if name not in BOARD_POWER:
        raise ValueError(f"unknown board power profile {name!r} (known: "
                         f"{', '.join(BOARD_POWER)}; or give {{idle_w, active_w}})")
    return BOARD_POWER[name]


def _profile(value: Any) -> Any:
    """``power: raspberry-pi-5`` is that board's default profile."""
    return board_power(value) if isinstance(value, str) else value


class Battery(StrictModel):
    """The battery a device runs on and the frame rate it must serve: a variant's
    battery life there is :func:`tasks.select.energy.battery_hours`."""

    capacity_mwh: Annotated[float, number(0, 1e9, above=True, unit="mWh")]
    fps: Annotated[float, number(0, 100_000, above=True, unit="fps")]


METER_NAME = re.compile(r"^(auto|none|command|rapl|pi5-pmic|hwmon(:[A-Za-z0-9_.-]{1,64})?)$")


class EnergyMeter(StrictModel):
    """Which meter the harness reads on a board: ``auto`` (the first it finds: RAPL,
    hwmon, the Pi 5 PMIC), ``none``, a meter's name (``rapl``, ``hwmon:ina3221``,
    ``pi5-pmic``), or ``command``: an external USB or bench meter whose ``command``
    prints its cumulative energy in ``unit``, read before and after each window."""

    meter: str = "auto"
    command: str | None = Field(default=None, min_length=1, max_length=4096)
    unit: Literal["mJ", "J", "uJ"] = "mJ"
    windows: Annotated[int, count(2, 100)] = Field(
        default=5, description="idle baseline + inference windows: the interval's samples")
    window_seconds: Annotated[float, number(0, 600, above=True, unit="seconds")] = Field(
        default=1.0, description="each window's length (extended to 20 meter updates)")

    @field_validator("meter")
    @classmethod
    def _known_meter(cls, value: str) -> str:
        if not METER_NAME.match(value):
            raise ValueError(f"unknown meter {value!r} (allowed: auto, none, command, rapl, "
                             "pi5-pmic, hwmon or hwmon:<chip name>)")
        return value

    @model_validator(mode="before")
    @classmethod
    def _command_is_a_meter(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("command") and "meter" not in data:
            return {**data, "meter": "command"}
        return data

    @model_validator(mode="after")
    def _command_with_command(self) -> EnergyMeter:
        if (self.meter == "command") != (self.command is not None):
            raise ValueError("meter: command needs `command` (and only it takes one)")
        return self

    def harness_args(self) -> list[str]:
        """The harness's arguments for this choice."""
        args = ["--energy-meter", self.meter, "--energy-windows", str(self.windows),
                "--energy-window-seconds", str(self.window_seconds)]
        if self.command is not None:
            args += ["--energy-command", self.command, "--energy-unit", self.unit]
        return args


PowerField = Annotated[PowerProfile | None, BeforeValidator(_profile), Field(
    description="the board's idle and active power ({idle_w, active_w}, or "
                              f"a profile: {', '.join(BOARD_POWER)}): energy is estimated "
                              "from it where the board has no meter")]
