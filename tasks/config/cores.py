"""The cores a microcontroller profile may name as its ``target`` (farm.yaml): those
whose firmware edgeflow builds and runs under an emulator here, each with the emulated
board it runs on and a declared cycles-per-instruction factor.

The factor turns the instructions counted in the emulator into an *estimated* latency
(:func:`estimated_latency_ms`); it is a stated figure, not a measurement, and a device
may override it (``cpi`` in its farm.yaml entry) with one measured on its own board.
A new core is one entry here and one in :data:`tasks.targets.firmware.library.CORES`
(how TFLite Micro is built for it); a test checks that both name the same cores.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CoreProfile:
    """An emulated core: its name (farm.yaml's ``target``), the ``qemu-system-arm``
    board (``-M``) its firmware runs on, and the cycles-per-instruction factor a
    latency estimate uses unless the device declares its own, with where it comes from."""

    name: str
    board: str
    cpi: float
    cpi_source: str


CORES: dict[str, CoreProfile] = {
    # 1.25: the Cortex-M4 Technical Reference Manual's instruction timings (r0p1, 3.3):
    # data processing, MAC (SMLAD, MLA) and most multiplies take 1 cycle, a load 2 (1
    # when it follows another load or store), a taken branch 1 + 1 to 3 refill cycles.
    # CMSIS-NN's int8 inner loops are load / SMLAD sequences with a branch per several
    # MACs, so between 1.1 and 1.5 cycles per instruction from zero-wait-state memory;
    # 1.25 is that range's middle. Not measured here (qemu models no cycles): a board
    # with its DWT cycle counter gives the real factor, which the device's `cpi` takes.
    "cortex-m4": CoreProfile("cortex-m4", board="mps2-an386", cpi=1.25,
                             cpi_source="Cortex-M4 TRM instruction timings, "
                                        "CMSIS-NN int8 loops (1.1-1.5); not measured"),
}


def core_profile(name: str) -> CoreProfile:
    """The profile of core ``name``; a ValueError naming the known cores."""
    if name not in CORES:
        raise ValueError(f"unknown core {name!r} (allowed: {', '.join(sorted(CORES))})")
    return CORES[name]


def estimated_latency_ms(instructions: int, cpi: float, clock_mhz: float) -> float:
    """Milliseconds for ``instructions`` at ``cpi`` cycles each on a ``clock_mhz`` clock:
    ``instructions * cpi / (clock_mhz * 1000)``. An estimate: no caches, flash wait
    states or bus contention are modelled."""
    if instructions < 0 or cpi <= 0 or clock_mhz <= 0:
        raise ValueError(f"an estimate needs instructions >= 0, cpi > 0 and clock_mhz > 0, "
                         f"not {instructions}, {cpi}, {clock_mhz}")
    return instructions * cpi / (clock_mhz * 1000.0)
