"""tasks.core.contracts.release: the record a release decision changes, written as the
file always was (every key of the board's answer kept, in its order), and the statuses
as their words."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.core.contracts.release import (HISTORY_KEPT, UNSUCCESSFUL, ReleaseDecision,
                                          ReleaseOutcome, ReleaseStatus, last_outcome,
                                          read_record, record_path, with_attempt, write_record)
from tasks.core.errors import StepError
from tasks.core.layout import Layout
from tasks.release.outcome import ReleaseRun, last_attempt, last_settled, unsuccessful


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


# Each status: whether the step ends non-zero (unsuccessful) and whether a later run may
# reuse the attempt (settled). A refusal and a failure are the two that did not happen.
STATUS_SEMANTICS = {
    ReleaseStatus.RELEASED: (False, True),
    ReleaseStatus.ROLLED_BACK: (False, True),
    ReleaseStatus.UNCHANGED: (False, True),
    ReleaseStatus.SKIPPED: (False, True),
    ReleaseStatus.REFUSED: (True, False),
    ReleaseStatus.FAILED: (True, False),
}


def test_every_status_is_unsuccessful_and_settled_exactly_as_it_says() -> None:
    assert set(STATUS_SEMANTICS) == set(ReleaseStatus)
    assert set(UNSUCCESSFUL) == {ReleaseStatus.REFUSED, ReleaseStatus.FAILED}
    for status, (failed, settled) in STATUS_SEMANTICS.items():
        outcome = ReleaseOutcome("pi", status, None, None, "why")
        assert (status in UNSUCCESSFUL, outcome.settled) == (failed, settled), status
        # Waiting for an approval is never settled, whatever the status.
        assert not ReleaseOutcome("pi", status, None, None, "why", pending=True).settled


@pytest.mark.parametrize("status", list(ReleaseStatus))
def test_a_run_and_a_record_name_exactly_the_refused_and_failed_devices(
        tmp_path: Path, status: ReleaseStatus) -> None:
    failed, settled = STATUS_SEMANTICS[status]
    outcome = ReleaseOutcome("pi", status, "v", None, "boom")
    assert ReleaseRun((outcome,)).problem() == (
        f"release {status.value} on pi (the lines above say why)" if failed else None)
    layout = Layout(tmp_path)
    assert unsuccessful(layout, ["pi"]) == [] and last_settled(layout, "pi") is True
    write_record(layout, ReleaseDecision(outcome))
    assert unsuccessful(layout, ["pi", "other"]) == ([f"{status.value} on pi"] if failed else [])
    assert last_settled(layout, "pi") is settled
    assert last_attempt(layout, "pi") == f"pi: {status.value}: boom"


def test_a_failed_release_among_others_is_the_runs_problem() -> None:
    run = ReleaseRun((ReleaseOutcome("pi", ReleaseStatus.FAILED, None, None, "boom"),
                      ReleaseOutcome("jetson", ReleaseStatus.RELEASED, "v", "r1", "ok"),
                      ReleaseOutcome("esp", ReleaseStatus.REFUSED, "v", None, "no")))
    assert run.problem() == "release failed on pi, refused on esp (the lines above say why)"
    assert run.describe() == "pi failed, jetson released, esp refused"


def test_a_rollback_decision_sets_previous_to_its_own_not_the_records_current() -> None:
    """A rollback names what the device runs now (r0) and what it ran before as the
    board says it: the record's ``current`` (r1) is not its ``previous``."""
    record = {"device": "pi", "current": {"release": "r1"}, "previous": {"release": "r0"},
              "attempts": []}
    rolled_back = ReleaseDecision(
        ReleaseOutcome("pi", ReleaseStatus.ROLLED_BACK, "v0", "r0", "back"),
        {"release": "r0"}, {"release": "r-older"})
    changed = with_attempt(record, rolled_back, 3.0)
    assert changed["current"] == {"release": "r0"}
    assert changed["previous"] == {"release": "r-older"}
    no_previous = ReleaseDecision(
        ReleaseOutcome("pi", ReleaseStatus.RELEASED, "v2", "r2", "ok"), {"release": "r2"}, None)
    assert with_attempt(record, no_previous, 4.0)["previous"] is None


def test_the_last_outcome_is_the_newest_attempt_not_the_first(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    write_record(layout, ReleaseDecision(
        ReleaseOutcome("pi", ReleaseStatus.SKIPPED, None, None, "policy off")))
    released = ReleaseOutcome("pi", ReleaseStatus.RELEASED, "tflite-int8", "r1", "switched", "4")
    write_record(layout, ReleaseDecision(released, {"release": "r1"}, None))
    record = read_record(layout, "pi")
    assert [attempt["status"] for attempt in record["attempts"]] == ["skipped", "released"]
    last = last_outcome(record)
    assert last == released and last.status is ReleaseStatus.RELEASED
    assert last_attempt(layout, "pi") == "pi: released: switched (MLflow version 4)"


def test_the_committed_record_names_the_mlflow_store_without_credentials_or_this_machine(
        tmp_path: Path) -> None:
    """What the board's manifest holds reaches the store from here (an absolute sqlite
    path, a server with its password); release.json is committed: neither goes in it."""
    layout = Layout(tmp_path / "exp")
    own = f"sqlite:///{(tmp_path / 'exp' / 'mlflow' / 'mlflow.db').resolve()}"
    entry = {"release": "r2", "variant": "v",
             "mlflow": {"registered_model": "edgeflow-exp", "version": "3", "tracking_uri": own}}
    before = {"release": "r1", "mlflow": {"version": "2",
                                          "tracking_uri": "https://bob:pw@mlflow.lan/?token=x"}}
    outcome = ReleaseOutcome("pi", ReleaseStatus.RELEASED, "v", "r2", "ok", "3")
    write_record(layout, ReleaseDecision(outcome, entry, before))
    text = record_path(layout, "pi").read_text(encoding="utf-8")
    record = json.loads(text)
    assert record["current"]["mlflow"] == {"registered_model": "edgeflow-exp", "version": "3",
                                           "tracking_uri": "sqlite:///mlflow/mlflow.db"}
    assert record["previous"]["mlflow"]["tracking_uri"] == "https://mlflow.lan/"
    assert str(tmp_path) not in text and "pw" not in text and "token" not in text
    assert entry["mlflow"]["tracking_uri"] == own  # the board's answer itself is not changed
