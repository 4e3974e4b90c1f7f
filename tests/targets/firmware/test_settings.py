"""tasks.targets.firmware.settings: the sources folder comes from the settings, else
EDGEFLOW_THIRD_PARTY, never a guess; the cache from the settings, the environment, else
the user's cache folder. A missing folder is one line naming the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.core.errors import ConfigError
from tasks.targets.firmware.settings import (CACHE_ENV, SOURCES_ENV, FirmwareSettings,
                                             resolve)


@pytest.fixture(autouse=True)
def _no_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(SOURCES_ENV, raising=False)
    monkeypatch.delenv(CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


def test_no_sources_named_is_one_line_saying_how_to_name_them() -> None:
    with pytest.raises(ConfigError) as raised:
        resolve(FirmwareSettings())
    message = str(raised.value)
    assert "\n" not in message and "firmware.sources" in message and SOURCES_ENV in message


def test_a_missing_sources_folder_is_one_line_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        resolve(FirmwareSettings(sources=tmp_path / "nowhere"))
    assert "\n" not in str(raised.value)
    assert str(raised.value).startswith(f"firmware sources: {tmp_path / 'nowhere'} is not a folder")


def test_the_settings_win_over_the_environment_which_wins_over_the_default(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    named, other = tmp_path / "named", tmp_path / "other"
    named.mkdir(), other.mkdir()
    monkeypatch.setenv(SOURCES_ENV, str(other))
    assert resolve(FirmwareSettings()).sources == other
    assert resolve(FirmwareSettings()).cache == tmp_path / "xdg" / "edgeflow" / "firmware"
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "env-cache"))
    assert resolve(FirmwareSettings()).cache == tmp_path / "env-cache"
    chosen = resolve(FirmwareSettings(sources=named, cache=tmp_path / "mine"))
    assert (chosen.sources, chosen.cache) == (named, tmp_path / "mine")


def test_unknown_keys_are_refused_with_the_allowed_ones() -> None:
    with pytest.raises(ValueError, match="unknown key 'source' \\(allowed: cache, sources, sources_sha256\\)"):
        FirmwareSettings.model_validate({"source": "x"})
