"""A ``tflm`` variant against a microcontroller's budgets as the host measured it: the
model's bytes and the host TFLite Micro interpreter's arena and accuracy (convert's),
against flash and RAM less their margins. What every microcontroller's result starts
from; :mod:`tasks.targets.mcu_emulated` adds the target's figures where the core is
emulated."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tasks.config import McuDevice
from tasks.config.cores import CORES
from tasks.core import notices
from tasks.core.contracts.results import McuFit, ResultRecord, write_result
from tasks.core.contracts.variants import Variant
from tasks.core.files import atomic_output_dir
from tasks.targets.results import identity, not_produced

KB = 1024


def host_outcome(variant: Variant, device_name: str, device: McuDevice,
                 not_emulated: str | None = None) -> dict[str, Any]:
    """The outcome of ``variant`` on ``device`` from the host's figures: ``ok`` with its
    :class:`McuFit` for a produced ``tflm`` variant (``not_emulated``: why the device has
    no target figures, if it has none), else ``skipped`` with the reason."""
    if not variant.runnable:
        return not_produced(variant.status, variant.reason)
    if variant.runtime != "tflm":
        return {"status": "skipped", "error": f"{device_name} is a microcontroller: it runs "
                "TensorFlow Lite Micro (tflm) variants only"}
    details, check = variant.details, variant.check  # set on every produced variant
    return {"status": "ok", "error": None, "mcu": McuFit(
        model_bytes=details["model_bytes"], arena_bytes=details["arena_bytes"],
        flash_bytes=device.flash_kb * KB, ram_bytes=device.ram_kb * KB,
        flash_budget_bytes=int(device.flash_kb * KB * (1 - device.flash_margin)),
        ram_budget_bytes=int(device.ram_kb * KB * (1 - device.ram_margin)),
        accuracy=variant.accuracy, accuracy_samples=check.samples,
        ops=details.get("ops", []), not_emulated=not_emulated,
        # The host run's per-image results gave the kind's own interval (a detector's
        # bootstrap over images): the row shows it, not a binomial one of the mAP.
        **({"accuracy_interval": check.accuracy_interval}
           if check.accuracy_interval is not None else {}))}


def no_emulator(device_name: str, device: McuDevice) -> str:
    """Why a device without ``target`` gets the host's figures only, in one line."""
    arch = device.tags.get("arch")
    core = f" ({arch})" if arch else ""
    return (f"no emulator here for its core{core}: farm.yaml gives {device_name} no target "
            f"(emulated cores: {', '.join(CORES)})")


def host_fit_text(fit: McuFit) -> str:
    """The host's fit check in words: model and arena against the budgets."""
    return (f"model {fit.model_bytes / KB:.1f} of {fit.flash_budget_bytes / KB:.0f} KB flash "
            f"budget, arena {fit.arena_bytes / KB:.1f} of {fit.ram_budget_bytes / KB:.0f} KB "
            f"RAM budget, accuracy {fit.accuracy:.4f} (TFLite Micro on the host)")


def write_outcomes(device_name: str, variants: list[Variant], out_dir: Path,
                   facts: dict[str, Any], outcome_of: Callable[[Variant], dict[str, Any]]
                   ) -> tuple[Path, ...]:
    """Each variant's result record on a microcontroller, from ``outcome_of(variant)``,
    written in ``out_dir`` all at once (atomically), the progress counted per variant;
    the paths of the records."""
    counter = notices.Counter(f"benchmark[{device_name}]", len(variants))
    names = []
    with atomic_output_dir(out_dir) as staging:
        for variant in variants:
            outcome = outcome_of(variant)
            names.append(write_result(staging / f"{variant.name}.json", ResultRecord(
                **identity(variant, device_name), threads=None, device_facts=facts,
                **outcome)).name)
            counter.advance(variant.name, outcome["status"])
    return tuple(out_dir / name for name in names)
