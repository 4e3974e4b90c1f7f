"""tasks.core.contracts.release: the record a release decision changes, written as the
file always was (every key of the board's answer kept, in its order), and the statuses
as their words."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.core.contracts.release import (HISTORY_KEPT, ReleaseDecision, ReleaseOutcome,
                                          ReleaseStatus, last_outcome, read_record,
                                          record_path, with_attempt, write_record)
from tasks.core.errors import StepError
from tasks.core.layout import Layout


def test_a_status_is_written_and_shown_as_its_word() -> None:
    outcome = ReleaseOutcome("pi", ReleaseStatus.ROLLED_BACK, "onnx-fp32", "r1", "back")
    assert json.dumps({"status": outcome.status}) == '{"status": "rolled back"}'
    assert outcome.line() == "pi: rolled back: back"
    assert not ReleaseOutcome("pi", ReleaseStatus.REFUSED, None, None, "no").settled
    assert ReleaseOutcome("pi", ReleaseStatus.SKIPPED, None, None, "off").settled


def test_a_decision_appends_its_attempt_and_keeps_what_the_board_said() -> None:
    board_entry = {"release": "r2", "variant": "v", "newer_field": [1, 2], "sha256": "ab"}
    record = {"device": "pi", "current": {"release": "r1"}, "previous": None,
              "attempts": [{"device": "pi", "status": "released", "at": 1.0}] * HISTORY_KEPT}
    released = ReleaseDecision(ReleaseOutcome("pi", ReleaseStatus.RELEASED, "v", "r2", "ok", "3"),
                               board_entry, {"release": "r1"})
    changed = with_attempt(record, released, 5.0)
    assert list(changed) == ["device", "current", "previous", "attempts"]
    assert changed["current"] is board_entry and list(changed["current"]) == [
        "release", "variant", "newer_field", "sha256"]
    assert changed["previous"] == {"release": "r1"}
    assert len(changed["attempts"]) == HISTORY_KEPT
    assert changed["attempts"][-1] == {"device": "pi", "status": "released", "variant": "v",
                                       "release_id": "r2", "message": "ok",
                                       "mlflow_version": "3", "pending": False, "at": 5.0}
    skipped = ReleaseDecision(ReleaseOutcome("pi", ReleaseStatus.SKIPPED, None, None, "off"))
    kept = with_attempt(changed, skipped, 6.0)
    assert kept["current"] is board_entry and kept["previous"] == {"release": "r1"}
    assert record["attempts"][-1]["at"] == 1.0  # the record read is not changed


def test_the_record_file_round_trips_to_the_last_outcome(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    assert read_record(layout, "esp32") == {"device": "esp32", "current": None,
                                            "previous": None, "attempts": []}
    assert last_outcome(read_record(layout, "esp32")) is None
    outcome = ReleaseOutcome("esp32", ReleaseStatus.UNCHANGED, "tflm-int8", "r1", "same",
                             pending=False)
    assert write_record(layout, ReleaseDecision(outcome)) is outcome
    text = record_path(layout, "esp32").read_text(encoding="utf-8")
    assert text.startswith('{\n  "device": "esp32",\n  "current": null,') and text.endswith("}\n")
    last = last_outcome(read_record(layout, "esp32"))
    assert last == outcome and last.status is ReleaseStatus.UNCHANGED


def test_a_record_with_a_status_outside_the_allowed_ones_is_one_step_error_naming_it(
        tmp_path: Path) -> None:
    """A hand-edited or damaged record: read at its file boundary, refused there in one
    line that names the file and the statuses allowed (not a ValueError from the enum)."""
    layout = Layout(tmp_path)
    path = record_path(layout, "pi")
    path.parent.mkdir(parents=True)
    attempts = [{"device": "pi", "status": "released", "at": 1.0},
                {"device": "pi", "status": "exploded", "at": 2.0}]
    path.write_text(json.dumps({"device": "pi", "current": None, "previous": None,
                                "attempts": attempts}), encoding="utf-8")
    with pytest.raises(StepError) as raised:
        read_record(layout, "pi")
    assert str(raised.value) == (
        f"{path} is damaged (attempt 2 has status 'exploded', not one of 'released', "
        "'rolled back', 'unchanged', 'skipped', 'refused', 'failed'): fix or delete it")
    path.write_text(json.dumps({"device": "pi", "attempts": ["released"]}), encoding="utf-8")
    with pytest.raises(StepError, match=r"is damaged \(attempt 1 has status None, not one of"):
        read_record(layout, "pi")
