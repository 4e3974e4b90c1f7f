"""OpenVINO/NNCF telemetry: declined unless the user has chosen (tasks/models/formats/openvino.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.models.formats.openvino import decline_telemetry_unless_chosen


def test_without_a_choice_telemetry_is_declined_and_a_choice_is_kept(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from openvino_telemetry.utils.opt_in_checker import ConsentCheckResult, OptInChecker

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("CI", raising=False)  # OpenVINO's own CI switch would hide the case
    consent = tmp_path / "intel" / "openvino_telemetry"
    assert OptInChecker().check(enable_opt_in_dialog=False) == ConsentCheckResult.NO_FILE
    decline_telemetry_unless_chosen()
    assert consent.read_text() == "0"
    assert OptInChecker().check(enable_opt_in_dialog=False) == ConsentCheckResult.DECLINED
    consent.write_text("1")  # the user opted in with `opt_in_out --opt_in`
    decline_telemetry_unless_chosen()
    assert consent.read_text() == "1"
