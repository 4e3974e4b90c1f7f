"""The ``benchmark.firmware`` options (params.yaml): where a firmware build finds the
third-party source archives (TFLite Micro and the libraries its Makefile downloads),
which set of archives it must be (pinned by their sha256), and where unpacked trees and
built libraries are cached. Resolved into folders by
:func:`tasks.targets.firmware.settings.resolve`.

In params.yaml, not farm.yaml: which TFLite Micro a microcontroller's figures come from
is part of the experiment (the benchmark step's cache key, MLflow's params), as the
runtimes' versions are. Relative paths are relative to params.yaml.

Of the three, only the pin is part of the benchmark step's cache key and of the params
MLflow records (``sources`` and ``cache`` are left out of the model's dumps): where the
archives and the cache lie is this machine's business, and an experiment moved or
copied elsewhere (a relative ``sources`` then names another absolute folder) keeps its
cache. Without a pin, other archives in the same place are not seen by the cache.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from tasks.core.strict import StrictModel

SOURCES_ENV = "EDGEFLOW_THIRD_PARTY"
CACHE_ENV = "EDGEFLOW_FIRMWARE_CACHE"


class FirmwareSettings(StrictModel):
    """Where sources and cache are, and the archives' pinned digest."""

    sources: Path | None = Field(default=None, exclude=True, description=(
        f"folder of the third-party source archives (default: ${SOURCES_ENV})"))
    sources_sha256: str | None = Field(
        default=None, pattern=r"^[0-9a-f]{64}$",
        description="the archives' digest (sha256 of each archive's sha256, by name; "
                    "`edgeflow firmware` prints it): other archives are refused; "
                    "null: any")
    cache: Path | None = Field(default=None, exclude=True, description=(
        f"folder for unpacked trees and built libraries (default: ${CACHE_ENV}, "
        "else ~/.cache/edgeflow/firmware)"))
