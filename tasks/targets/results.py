"""What every kind's result file starts with: the variant's identity on the device, how
the device is emulated (if it is), and the outcome of a variant convert did not
produce."""

from __future__ import annotations

from typing import Any

from tasks.core.contracts.variants import Variant


def not_produced(status: str, reason: str | None) -> dict[str, Any]:
    """The outcome of a variant convert did not produce (skipped) or refused (rejected),
    from its index entry's ``status`` and ``reason``."""
    return {"status": status, "error": f"{status} by convert: {reason}"}


def identity(variant: Variant, device_name: str) -> dict[str, Any]:
    """The fields every result record starts with."""
    return {"variant": variant.name, "device": device_name, "format": variant.format,
            "precision": variant.precision, "source": variant.source,
            "runtime": variant.runtime, "size_bytes": variant.bytes, "sha256": variant.sha256,
            "declared_execution_precision": (variant.spec or {}).get("execution_precision")}


def emulation_marks(entry: Any) -> dict[str, Any]:
    """What a result records of how its device is emulated: ``emulated`` (true) and
    ``emulation`` (its farm.yaml ``emulation``, e.g. ``qemu-user``) for an emulated board;
    nothing for a physical one, or a kind of entry that has no ``emulation``."""
    emulation = getattr(entry, "emulation", None)
    return {"emulated": True, "emulation": emulation} if emulation else {}
