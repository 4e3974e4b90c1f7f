"""Where a firmware build finds its third-party sources and keeps what it unpacks and
builds.

The options are :class:`tasks.config.firmware.FirmwareSettings` (params.yaml's
``benchmark.firmware``; ``edgeflow firmware --sources/--cache``).
``sources``: the folder of source archives (``tflite-micro.tar.gz`` and the libraries
its Makefile downloads, :data:`tasks.targets.firmware.sources.ARCHIVES`); without it,
the environment variable ``EDGEFLOW_THIRD_PARTY``. There is no default: a build never
reaches the internet, and a folder picked by guess would hide a missing one.
``cache``: where unpacked trees and built libraries are kept between runs; without it,
``EDGEFLOW_FIRMWARE_CACHE``, else ``$XDG_CACHE_HOME/edgeflow/firmware`` (or
``~/.cache/edgeflow/firmware``). Both are resolved once, by :func:`resolve`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from tasks.config.firmware import CACHE_ENV, SOURCES_ENV, FirmwareSettings
from tasks.core.errors import ConfigError

__all__ = ["CACHE_ENV", "SOURCES_ENV", "FirmwarePaths", "FirmwareSettings", "default_cache",
           "resolve"]


@dataclass(frozen=True)
class FirmwarePaths:
    """The resolved folders: ``sources`` exists; ``cache`` is created on first use."""

    sources: Path
    cache: Path


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgeflow" / "firmware"


def resolve(settings: FirmwareSettings | None = None) -> FirmwarePaths:
    """The settings' folders, else the environment's, else the default cache; a
    :class:`ConfigError` (one line) where no sources folder is named or it is missing."""
    settings = settings or FirmwareSettings()
    named = settings.sources or (Path(os.environ[SOURCES_ENV]) if os.environ.get(SOURCES_ENV)
                                 else None)
    if named is None:
        raise ConfigError(f"firmware sources: no folder named: set benchmark.firmware.sources in "
                          f"params.yaml (`edgeflow firmware --sources`) or {SOURCES_ENV} to the "
                          f"folder of "
                          f"the TFLite Micro source archives (tflite-micro.tar.gz and the "
                          f"libraries it downloads)")
    if not named.is_dir():
        raise ConfigError(f"firmware sources: {named} is not a folder: set "
                          f"benchmark.firmware.sources or {SOURCES_ENV} to the folder of the "
                          f"TFLite Micro source archives")
    cache = settings.cache or (Path(os.environ[CACHE_ENV]) if os.environ.get(CACHE_ENV)
                               else default_cache())
    return FirmwarePaths(named.resolve(), cache.expanduser().resolve())
