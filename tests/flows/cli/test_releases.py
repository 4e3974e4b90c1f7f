"""``edgeflow release DEVICE`` without ``--variant`` releases the device's recommendation;
without one it says why in one line (issue 28: an emulated board select left out names
the opt-in)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from typer.testing import CliRunner

from flows.cli.releases import _recommended
from tasks.core.contracts.release import (ReleaseDecision, ReleaseOutcome, ReleaseStatus,
                                          write_record)
from tasks.core.contracts.summary import write_summary
from tasks.core.errors import StepError
from tasks.core.layout import Layout
from tests.tasks.select.summaries import summary_of

WHY = "emulated (qemu-user): not recommended; set select.include_emulated to recommend on it"


def test_a_release_by_hand_without_a_recommendation_says_why(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    write_summary(layout.summary, summary_of(
        [], {"pi": "onnx-fp32", "slow": None, "pi5-emu": None}, excluded={"pi5-emu": WHY}))
    ctx = SimpleNamespace(layout=layout)
    assert _recommended(ctx, "pi") == "onnx-fp32"
    with pytest.raises(StepError) as emulated:
        _recommended(ctx, "pi5-emu")
    assert str(emulated.value) == (f"nothing recommended on pi5-emu: {WHY}, or name a variant "
                                   "with --variant")
    with pytest.raises(StepError) as slow:
        _recommended(ctx, "slow")
    assert str(slow.value) == "no variant passed the requirements on slow: name one with --variant"


# ------------------------------------------------------------ every status, end to end here
# Each status a release or a rollback can end as, through the command: what the record
# (release.json) keeps, the line said, and the exit code (1 exactly for the two that did
# not deploy, as the contract's table says).


@pytest.mark.parametrize("command", ["release", "rollback"])
@pytest.mark.parametrize("status", list(ReleaseStatus))
def test_every_status_is_recorded_said_and_exits_as_the_contract_says(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, status: ReleaseStatus,
        command: str) -> None:
    import tasks.release
    from flows.cli import app
    from tests.tasks.core.test_release_contract import STATUS_SEMANTICS
    from tests.tiny import TINY_PARAMS

    # readable_by not the default: the rollback must pass the experiment's on.
    (tmp_path / "params.yaml").write_text(TINY_PARAMS.replace(
        "check_images: 20}", "check_images: 20, readable_by: everyone}"), encoding="utf-8")
    (tmp_path / "farm.yaml").write_text("devices:\n  pi: {workdir: board}\n", encoding="utf-8")
    layout = Layout(tmp_path)
    earlier = ReleaseDecision(ReleaseOutcome("pi", ReleaseStatus.RELEASED, "v0", "r0", "first"),
                              {"release": "r0", "variant": "v0"}, None)
    write_record(layout, earlier)
    # A status that changed what the device runs names it; the others leave the record's.
    moved = status in (ReleaseStatus.RELEASED, ReleaseStatus.ROLLED_BACK)
    decision = ReleaseDecision(
        ReleaseOutcome("pi", status, "v1", "r1", "why it ended so", "7"),
        {"release": "r1", "variant": "v1"} if moved else None,
        {"release": "r0", "variant": "v0"} if moved else None)
    asked: list[tuple[Any, ...]] = []

    def decided(*args: Any, **kwargs: Any) -> ReleaseOutcome:
        asked.append((*args[-2:], kwargs.get("approve", lambda *_: None)("pi", "v1", "")))
        return write_record(layout, decision)

    monkeypatch.setattr(tasks.release, f"{command}_device", decided)
    argv = ([command, "pi", "--params", str(tmp_path / "params.yaml")]
            + (["--variant", "v1", "--yes"] if command == "release" else []))
    ran = CliRunner().invoke(app, argv, env={"COLUMNS": "200"})
    failed, _ = STATUS_SEMANTICS[status]
    assert ran.exit_code == (1 if failed else 0), ran.output
    assert ran.output == f"pi: {status.value}: why it ended so (MLflow version 7)\n"
    assert asked == ([("pi", "everyone", None)] if command == "rollback"
                     else [("pi", "v1", True)])  # --yes: approved without asking
    record = json.loads((tmp_path / "releases" / "pi" / "release.json").read_text())
    assert [attempt["status"] for attempt in record["attempts"]] == ["released", status.value]
    assert (record["current"], record["previous"]) == (
        ({"release": "r1", "variant": "v1"}, {"release": "r0", "variant": "v0"}) if moved
        else ({"release": "r0", "variant": "v0"}, None))


# ------------------------------------------------------------------------- status
# Exit 1 exactly when a board drifted or could not be reached, with one line naming
# each kind of problem and its devices; the drift itself said per device.


@pytest.mark.parametrize("drift, error, line", [
    ({}, {}, None),
    ({"b": "files changed"}, {}, "drift on b"),
    ({}, {"a": "unreachable"}, "unreachable: a"),
    ({"a": "x", "c": "y"}, {"b": "timed out"}, "drift on a, c; unreachable: b"),
])
def test_status_exits_1_naming_the_drifted_and_unreachable_boards(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, drift: dict[str, str],
        error: dict[str, str], line: str | None) -> None:
    import tasks.release
    import tasks.release.view
    from flows.cli import app
    from tests.tiny import write_tiny_config

    write_tiny_config(tmp_path, farm="devices:\n  a: {}\n  b: {}\n  c: {}\n")
    asked: list[str] = []

    def device_state(farm: Any, layout: Any, name: str) -> dict[str, Any]:
        asked.append(name)
        return {"device": name, "drift": drift.get(name), **(
            {"error": error[name]} if name in error else {})}

    monkeypatch.setattr(tasks.release, "device_state", device_state)
    monkeypatch.setattr(tasks.release.view, "status_table",
                        lambda states: "TABLE " + " ".join(s["device"] for s in states))
    ran = CliRunner().invoke(app, ["status", "--params", str(tmp_path / "params.yaml")],
                             env={"COLUMNS": "200"})
    assert asked == ["a", "b", "c"]
    assert ran.exit_code == (1 if line else 0), ran.output
    assert ran.stdout == "TABLE a b c\n" + "".join(
        f"drift on {name}: {drift[name]}\n" for name in sorted(drift))
    assert ran.stderr == (f"edgeflow: error: {line} (the table says why)\n" if line else "")


def test_a_release_to_be_approved_without_a_terminal_asks_for_yes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import flows.approvals
    from flows.cli.releases import _ask
    from tasks.core.errors import UsageError

    answers = iter([None, True, False])
    monkeypatch.setattr(flows.approvals, "ask_on_terminal", lambda *args: next(answers))
    with pytest.raises(UsageError) as caught:
        _ask("pi", "onnx-fp32", "new")
    assert str(caught.value) == ("releasing onnx-fp32 to pi needs an approval and there is no "
                                 "terminal to ask: pass --yes")
    assert (_ask("pi", "v", ""), _ask("pi", "v", "")) == (True, False)


def test_a_release_by_hand_of_a_device_without_results_says_to_run_first(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    write_summary(layout.summary, summary_of([], {}))
    from tasks.core.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        _recommended(SimpleNamespace(layout=layout), "pi")
    assert str(caught.value) == (f"device 'pi' has no results in {layout.summary}: run "
                                 "`edgeflow run` first")
