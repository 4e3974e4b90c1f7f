"""Emulated boards in selection: their rows are marked, and kept out of the
recommendation unless the experiment opts in (``select.include_emulated``).

An emulated board (farm.yaml ``emulation``, e.g. ``qemu-user``) runs the real runtimes
on the real instruction set, so what it says of accuracy and of what runs at all holds;
its timings are the emulator's (30 to 500 times slower than the host, in no fixed ratio
to any real board), so a variant ranked by them would be released for a reason that is
not true of the hardware. Without the opt-in such a device gets no recommendation, and
so no release, and the summary says why (:func:`excluded_devices`).
"""

from __future__ import annotations

from typing import Any

from tasks.config import SelectParams
from tasks.core.contracts.results import ResultRecord
from tasks.core.contracts.summary import SummaryRow

OPT_IN = "select.include_emulated"


def row_marks(record: ResultRecord) -> dict[str, Any]:
    """A summary row's ``emulated`` and ``emulation``, as its result record has them
    (nothing for a physical board, so its row stays as it was)."""
    if not record.emulated:
        return {}
    return {"emulated": True, "emulation": record.emulation}


def emulated_note(row: SummaryRow) -> str | None:
    """The note an emulated row carries in every view of the report."""
    if not row.emulated:
        return None
    return (f"emulated ({row.emulation}): its timings are the emulator's, not the "
            "hardware's")


def not_recommended(emulation: str | None) -> str:
    """Why an emulated device has no recommendation, in one line."""
    return f"emulated ({emulation}): not recommended; set {OPT_IN} to recommend on it"


def excluded_devices(rows: list[SummaryRow], params: SelectParams) -> dict[str, str]:
    """Every device (in row order) whose rows are emulated and so get no recommendation,
    with the reason; none when ``params`` opts in."""
    if params.include_emulated:
        return {}
    return {row.device: not_recommended(row.emulation) for row in rows if row.emulated}
