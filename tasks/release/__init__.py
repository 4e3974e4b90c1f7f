"""Step ``release``: put a device's chosen variant on it as the application's model.

Reads params ``release`` (policy, keep, check images, check timeout) and
``benchmark.firmware`` (a microcontroller's firmware build), the device's entry
in ``farm.yaml`` (its ``on_release``), ``reports/summary.json`` (the recommendation and
the requirements per device), ``models/variants/`` (the artifact), ``data/prepared/``
(classes, input shape, the check images) and ``metrics/mlflow_run.json`` (the model and
run track logged). Writes ``releases/<device>/release.json``: what the device runs, what
it ran before, and the last release attempts.

Per device, by policy: ``auto`` releases the recommended variant when it differs from
what the device runs (and not one a person rolled back from: that waits for a release by
hand); ``approve`` asks first; ``off`` releases nothing. A device without a
recommendation (none passed, or an emulated board select left out: ``select.
include_emulated``) gets nothing, said in one line. ``edgeflow release DEVICE
[--variant V]`` releases by hand. A release is built here (:mod:`tasks.release.bundle`),
registered in MLflow (:mod:`tasks.release.registry`), pushed and made current on the
device only once its health check passes there (:mod:`tasks.farm.releases`); the
device's MLflow alias then moves to it. A device that cannot be reached, a failed check
or a failed ``on_release`` leave the device on its previous release, with the reason.

How a device is released is its kind of target's (:mod:`tasks.targets`): a board runs
the release through its harness as above (:func:`_release_on_board`), a microcontroller
gets a firmware bundle (:mod:`tasks.targets.mcu`). Every path returns a
:class:`~tasks.core.contracts.release.ReleaseDecision`; one function records it
(:func:`_recorded`).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from tasks.core import notices
from tasks.config import Farm, LocalDevice, Params, SshDevice
from tasks.core.contracts.prepared import read_meta
from tasks.core.contracts.release import BoardState
from tasks.core.contracts.summary import read_summary
from tasks.core.contracts.variants import Variant, read_variant_index
from tasks.core.errors import ConfigError, DeviceError, StepError
from tasks.core.interrupt import raise_if_stopped, stop_requested
from tasks.core.layout import Layout
from tasks.farm import releases as device_releases
from tasks.farm.transports import connect
from tasks.release import registry
from tasks.release.bundle import accuracy_floor, build_bundle
from tasks.release.outcome import (FAILED, REFUSED, RELEASED, ROLLED_BACK, SKIPPED, UNCHANGED,
                                   ReleaseDecision, ReleaseOutcome, ReleaseRun, read_record,
                                   record_path, write_record)
from tasks.targets import ReleaseJob, target_of

__all__ = ["ReleaseOutcome", "ReleaseRun", "alias_drift", "device_state", "drift", "proposal",
           "read_record", "record_path", "release_device", "require_device", "rollback_device"]

Approver = Callable[[str, str, str], bool]  # (device, variant, what changes) -> approved
DRIFT_FILES_NAMED = 5  # a drift names this many changed files, then counts the rest

def _variant(layout: Layout, name: str) -> Variant:
    index = read_variant_index(layout.variants)
    found = [variant for variant in index.variants if variant.name == name]
    if not found:
        raise ConfigError(f"variant {name!r} is not in {layout.variants_index} (produced: "
                          f"{', '.join(v.name for v in index.variants if v.runnable) or 'none'})")
    if not found[0].runnable:
        raise ConfigError(f"variant {name!r} was not produced ({found[0].status}: "
                          f"{found[0].reason})")
    return found[0]


def _chosen(layout: Layout, device: str, variant: str | None) -> str | None:
    """The variant to release: the one named, else the recommendation (None when the
    device has none: no variant passed there, or it is an emulated board select left
    out)."""
    if variant is not None:
        return variant
    summary = read_summary(layout.summary)
    if device not in summary.recommendations:
        raise ConfigError(f"device {device!r} has no results in {layout.summary} "
                          f"(devices: {', '.join(summary.recommendations)})")
    return summary.recommendations[device]


def _why_nothing(layout: Layout, device: str) -> str:
    """Why nothing is released to ``device`` by policy, in one line: select left it out
    (an emulated board), else no variant passed there."""
    excluded = read_summary(layout.summary).excluded_reason(device)
    return (f"nothing released to {device}: {excluded}" if excluded
            else f"no variant passed the requirements on {device}")


def _runs_it(state: dict[str, Any], variant: Variant) -> bool:
    """Whether the board's current release is ``variant``, its files as released (a
    file changed on the board since is not the release: it is pushed again)."""
    current = state.get("current") or {}
    return (current.get("variant") == variant.name and current.get("sha256") == variant.sha256
            and current.get("files_intact") is not False)


def _checked_against_record(layout: Layout, device: str,
                            state: dict[str, Any]) -> dict[str, Any]:
    """The board's ``state``, its current release marked changed when its manifest is not
    the one edgeflow recorded for that release: ``manifest.json`` rewritten on the board
    together with ``manifest.sha256`` passes the board's own check, never this one."""
    current = state.get("current") or {}
    recorded = read_record(layout, device).get("current") or {}
    if (current and recorded.get("release") == current.get("release")
            and recorded.get("manifest_sha256")
            and current.get("manifest_sha256") != recorded["manifest_sha256"]):
        changed = [*(current.get("changed") or []), "manifest.json"]
        return {**state, "current": {**current, "files_intact": False, "changed": changed}}
    return state


def _damaged(state: dict[str, Any]) -> bool:
    return (state.get("current") or {}).get("files_intact") is False


def _rolled_back_from(state: dict[str, Any], variant: Variant) -> dict[str, Any] | None:
    return next((entry for entry in state.get("rolled_back") or []
                 if entry and entry.get("variant") == variant.name
                 and entry.get("sha256") == variant.sha256), None)


def require_device(farm: Farm, device: str, farm_file: str = "farm.yaml") -> None:
    """ConfigError unless ``device`` is in the farm (read from ``farm_file``)."""
    if device not in farm.devices:
        raise ConfigError(f"unknown device {device!r} ({farm_file} has: "
                          f"{', '.join(farm.devices)})")


def release_device(params: Params, farm: Farm, layout: Layout, device: str,
                   variant: str | None = None, approve: Approver | None = None) -> ReleaseOutcome:
    """Release to ``device`` by policy (``variant`` None) or by hand (``variant`` named:
    the policy's ``off`` and rollback memory do not apply). ``approve`` answers whether a
    release may go ahead, asked by hand and under policy ``approve`` (None: nobody can
    approve, so those releases are skipped). Never raises for what a device does: the
    outcome says it, and the device's record keeps it (:func:`_recorded`)."""
    require_device(farm, device)
    read_record(layout, device)  # a damaged record is refused here, before the board changes
    return _recorded(layout, _release_decision(params, farm, layout, device, variant, approve))


def _recorded(layout: Layout, decision: ReleaseDecision) -> ReleaseOutcome:
    """The one place a release's or a rollback's decision is persisted (the device's
    ``release.json``). A stop requested while a board's switch was under way ends the
    run here, once the board, the record and the alias agree."""
    outcome = write_record(layout, decision)
    if decision.stop_point:
        if stop_requested():
            notices.warn(f"release: {outcome.line()} (its switch was under way when the stop "
                         "came)")
        raise_if_stopped()
    return outcome


def _release_decision(params: Params, farm: Farm, layout: Layout, device: str,
                      variant: str | None, approve: Approver | None) -> ReleaseDecision:
    """What releasing to ``device`` ends as (:func:`release_device`), not yet recorded."""
    if variant is None and params.release.policy == "off":
        return ReleaseDecision(ReleaseOutcome(device, SKIPPED, None, None,
                                              "release.policy is off"))
    chosen = _chosen(layout, device, variant)
    if chosen is None:
        return ReleaseDecision(ReleaseOutcome(device, SKIPPED, None, None,
                                              _why_nothing(layout, device)))
    target = _variant(layout, chosen)
    job = ReleaseJob(layout, params.release, target,
                     register=partial(registry.register, layout, target.name, device),
                     alias_moved=partial(_alias_moved, device=device),
                     on_board=partial(_release_on_board, params, layout, device, target,
                                      by_hand=variant is not None, approve=approve),
                     firmware=params.benchmark.firmware,
                     accuracy_floor=lambda: accuracy_floor(read_summary(layout.summary), device))
    return target_of(device, farm.devices[device]).release(job)


def _release_on_board(params: Params, layout: Layout, device: str, target: Variant,
                      entry: LocalDevice | SshDevice, by_hand: bool,
                      approve: Approver | None) -> ReleaseDecision:
    """A release through a board's harness (its kind's :attr:`ReleaseJob.on_board`)."""
    try:
        return _release_harness_device(params, layout, device, entry, target,
                                       by_hand=by_hand, approve=approve)
    except device_releases.ConnectionLost as error:  # it may have switched before
        return ReleaseDecision(ReleaseOutcome(device, FAILED, target.name, None,
                                              f"whether {device} switched is unknown: {error}"))
    except DeviceError as error:
        return ReleaseDecision(ReleaseOutcome(device, FAILED, target.name, None,
                                              f"{device} keeps its release: {error}"))


def _decision(device: str, state: dict[str, Any], target: Variant,
              by_hand: bool) -> ReleaseOutcome | str:
    """What the board's ``state`` says of releasing ``target``: an outcome when nothing
    is to be done (it runs it already; auto does not undo a rollback), else the change
    (``running -> target``)."""
    if _runs_it(state, target):
        return ReleaseOutcome(device, UNCHANGED, target.name, state["current"]["release"],
                              f"{device} already runs {target.name}")
    rolled = _rolled_back_from(state, target)
    if rolled is not None and not by_hand:
        return ReleaseOutcome(
            device, SKIPPED, target.name, None,
            f"{target.name} was rolled back on {device} (release {rolled['release']}): "
            f"release it by hand to use it again (edgeflow release {device} "
            f"--variant {target.name})")
    running = (state.get("current") or {}).get("variant") or "nothing"
    if _damaged(state):
        running += " (its files changed on the board)"
    return f"{running} -> {target.name}"


def proposal(params: Params, farm: Farm, layout: Layout, device: str) -> tuple[str, str] | None:
    """The release the policy would make on ``device`` now, as ``(variant, change)``;
    None when it would make none (what it would say instead is the release's to say)."""
    chosen = _chosen(layout, device, None) if params.release.policy != "off" else None
    if chosen is None:
        return None
    unreachable = False
    try:
        board = target_of(device, farm.devices[device]).release_state(
            partial(_board_state, device))
    except DeviceError:
        board, unreachable = None, True
    if board is None and not unreachable:  # a kind without a state of its own: no proposal,
        return None                        # whatever its variant (its release says that)
    target = _variant(layout, chosen)  # a variant missing is a ConfigError, reachable or not
    if board is None:
        return None  # the release itself reports the device
    decided = _decision(device, _checked_against_record(layout, device, board), target,
                        by_hand=False)
    return None if isinstance(decided, ReleaseOutcome) else (target.name, decided)


def _board_state(device: str, entry: LocalDevice | SshDevice) -> BoardState:
    """What a board's release manager says of its releases (its kind's
    :meth:`~tasks.targets.Target.release_state` reading); DeviceError when unreachable."""
    connection = connect(entry, device)
    try:
        state: BoardState = device_releases.status(connection, entry)
        return state
    finally:
        connection.close()


def _release_harness_device(params: Params, layout: Layout, device: str,
                            entry: LocalDevice | SshDevice, target: Variant, by_hand: bool,
                            approve: Approver | None) -> ReleaseDecision:
    connection = connect(entry, device)
    try:
        state = _checked_against_record(layout, device, device_releases.status(connection, entry))
        decided = _decision(device, state, target, by_hand)
        if isinstance(decided, ReleaseOutcome):
            if decided.status == UNCHANGED:
                return _reconciled(layout, decided, state)
            return ReleaseDecision(decided)
        if by_hand or params.release.policy == "approve":
            if approve is None:
                return ReleaseDecision(ReleaseOutcome(
                    device, SKIPPED, target.name, None,
                    f"release.policy is approve and nobody can approve here: release "
                    f"{target.name} with `edgeflow release {device}`, `edgeflow run`, or a "
                    "deployed run in the Prefect UI", pending=True))
            if not approve(device, target.name, decided):
                return ReleaseDecision(ReleaseOutcome(
                    device, SKIPPED, target.name, None,
                    f"release of {target.name} to {device} ({decided}) not approved",
                    pending=True))
        # Two stages on the console: built and registered here, then pushed, checked on
        # the board and made current (the health check is most of a release's time).
        counter = notices.Counter(f"release[{device}]", 2)
        mlflow = registry.register(layout, target.name, device)
        staging = Path(tempfile.mkdtemp(prefix=".release-", dir=_staging_root(layout)))
        try:
            bundle = build_bundle(staging, device, entry, target, layout.variants,
                                  layout.prepared, read_meta(layout.prepared),
                                  read_summary(layout.summary), params.release, mlflow)
            counter.advance(target.name, "built")
            answer = device_releases.push_and_activate(connection, entry, bundle.folder,
                                                       bundle.release_id, bundle.files,
                                                       params.release,
                                                       params.benchmark.lock_timeout_seconds)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        counter.advance(target.name, str(answer.get("status", "no answer")))
        # A stop requested once the switch was under way: its outcome is recorded (the
        # board, the record and the alias agree) and said, and the run stops there.
        return replace(_outcome(device, target, bundle.release_id, answer, mlflow, connection,
                                entry, replaced_damaged=_damaged(state)), stop_point=True)
    finally:
        connection.close()


def _reconciled(layout: Layout, unchanged: ReleaseOutcome,
                state: BoardState) -> ReleaseDecision:
    """The board already runs the release: edgeflow's record and the device's MLflow
    alias are made to agree with it where they do not (a release interrupted after its
    switch, a rollback by another machine), and the outcome says what was repaired."""
    device, current = unchanged.device, state["current"]
    repaired = []
    recorded = (read_record(layout, device).get("current") or {}).get("release")
    if recorded != current["release"]:
        repaired.append(f"edgeflow's record (it said {recorded or 'none'})")
    mlflow, unchecked = current.get("mlflow"), ""
    try:
        elsewhere = _alias_elsewhere(mlflow, device)
    except ConfigError as error:  # the tracking server does not answer: the record still
        elsewhere, unchecked = None, (f"; the MLflow alias {registry.alias(device)} was not "
                                      f"checked: {error}")
    if elsewhere:
        unchecked = _alias_moved(mlflow, device)
        if not unchecked:
            repaired.append(f"the MLflow alias {registry.alias(device)} (it pointed at "
                            f"{elsewhere})")
    message = (unchanged.message + (f"; repaired {' and '.join(repaired)}" if repaired else "")
               + unchecked)
    version = str(mlflow["version"]) if mlflow else None
    return ReleaseDecision(replace(unchanged, message=message, mlflow_version=version),
                           current, state.get("previous"))


def _alias_elsewhere(mlflow: dict[str, Any] | None, device: str) -> str | None:
    """What ``device``'s alias points at (``version N``, ``no version``) when it is not
    the version in ``mlflow`` (a manifest's record); None when they agree or there is no
    store to ask. ConfigError when the tracking server does not answer."""
    if not mlflow or not registry.store_exists(mlflow):
        return None
    pointed = registry.pointed_version(mlflow, device)
    if pointed == str(mlflow["version"]):
        return None
    return f"version {pointed}" if pointed else "no version"


def _alias_moved(mlflow: dict[str, Any] | None, device: str) -> str:
    """Point ``device``'s alias at ``mlflow``'s version (:func:`registry.point_alias`):
    ``""``, or why it was not moved as a clause for the outcome's message. Never raises:
    the board has switched, and a tracking server that stopped answering mid-release
    must not keep edgeflow's record from saying so."""
    from mlflow.exceptions import MlflowException

    try:
        registry.point_alias(mlflow, device)
    except (ConfigError, MlflowException) as error:
        return f"; the MLflow alias {registry.alias(device)} was not moved: {error}"
    return ""


def _staging_root(layout: Layout) -> Path:
    root = layout.state / "release-staging"
    root.mkdir(parents=True, exist_ok=True)
    return root


def _outcome(device: str, target: Variant, release_id: str, answer: dict[str, Any],
             mlflow: dict[str, Any] | None, connection: Any, entry: LocalDevice | SshDevice,
             replaced_damaged: bool = False) -> ReleaseDecision:
    status = answer.get("status")
    message = str(answer.get("message", ""))[:500]
    version = str(mlflow["version"]) if mlflow else None
    if status == "hook_failed" and (answer.get("restored_hook") or {}).get("ok") is False:
        # Switched back, but the application did not start there either: the device
        # runs nothing healthy, which is a failure, not a refusal it survived.
        return ReleaseDecision(ReleaseOutcome(device, FAILED, target.name, release_id, message,
                                              version))
    if status in ("released", "already_current"):
        if status == "released" and replaced_damaged:
            message += " (replacing a release whose files had changed on the board)"
        state = device_releases.status(connection, entry)
        message += _alias_moved(mlflow, device)
        return ReleaseDecision(ReleaseOutcome(
            device, RELEASED if status == "released" else UNCHANGED, target.name, release_id,
            message, version), state.get("current"), state.get("previous"))
    if status in ("unhealthy", "hook_failed"):
        return ReleaseDecision(ReleaseOutcome(device, REFUSED, target.name, release_id,
                                              f"{device} keeps its release: {message}", version))
    raise StepError(f"release to {device}: unexpected answer from the device: {message or status}")


def rollback_device(farm: Farm, layout: Layout, device: str,
                    readable_by: str = "group") -> ReleaseOutcome:
    """Switch ``device`` back to its previous healthy release; its alias follows. What
    the board's manager writes is as readable as ``readable_by`` (``release.readable_by``).
    ConfigError for a kind of target that cannot roll back."""
    require_device(farm, device)
    read_record(layout, device)  # a damaged record is refused here, before the board changes
    return _recorded(layout, target_of(device, farm.devices[device]).rollback(
        layout, partial(_rollback_on_board, device, readable_by=readable_by)))


def _rollback_on_board(device: str, entry: LocalDevice | SshDevice,
                       readable_by: str) -> ReleaseDecision:
    """A rollback through a board's release manager, not yet recorded."""
    connection = connect(entry, device)
    try:
        answer = device_releases.rollback(connection, entry, readable_by=readable_by)
        status = answer.get("status")
        message = str(answer.get("message", ""))[:500]
        if status != "rolled_back":
            return ReleaseDecision(ReleaseOutcome(device, REFUSED, None, answer.get("current"),
                                                  f"{device} was not rolled back: {message}"))
        state = device_releases.status(connection, entry)
        current = state.get("current") or {}
        version = (current.get("mlflow") or {}).get("version")
        message += _alias_moved(current.get("mlflow"), device)
        return ReleaseDecision(ReleaseOutcome(device, ROLLED_BACK, current.get("variant"),
                                              current.get("release"), message,
                                              str(version) if version else None),
                               state.get("current"), state.get("previous"))
    finally:
        connection.close()


def device_state(farm: Farm, layout: Layout, device: str) -> dict[str, Any]:
    """What ``edgeflow status`` shows for one device: the board's own state and what
    edgeflow recorded, with ``drift`` naming any difference (None when they agree)."""
    target = target_of(device, farm.devices[device])
    record = read_record(layout, device)
    try:
        board = target.release_state(partial(_board_state, device))
    except DeviceError as error:  # one board down: the others are still shown
        return {"device": device, "kind": target.kind, "record": record, "board": None,
                "drift": None, "error": str(error)}
    if board is None:  # a kind without a state of its own: its record is what it runs
        return {"device": device, "kind": target.kind, "record": record, "board": None,
                "drift": None}
    return {"device": device, "kind": target.kind, "record": record, "board": board,
            "drift": drift(record, board) or alias_drift(board, device)}


def drift(record: dict[str, Any], board: dict[str, Any]) -> str | None:
    """How the board differs from what edgeflow recorded (a hand edit, a rollback by
    another machine, changed files), None when it does not. Every file of a release
    counts (the board checks each against its manifest, the manifest against its digest
    file), and the manifest's sha256 against the one recorded when it was released: a
    manifest rewritten together with its digest file is drift too."""
    recorded = (record.get("current") or {}).get("release")
    actual = board.get("current") or {}
    if actual.get("release") != recorded:
        return (f"the board runs {actual.get('release') or 'no release'}, edgeflow recorded "
                f"{recorded or 'none'}")
    if actual and not actual.get("variant"):
        # `current` names a release whose folder (or manifest) is gone: nothing to load.
        return (f"the board's current release {recorded} is missing (its folder or its "
                "manifest is gone)")
    if actual and actual.get("files_intact") is False:
        changed = [str(name) for name in actual.get("changed") or []]
        named = ", ".join(changed[:DRIFT_FILES_NAMED]) + (
            f" and {len(changed) - DRIFT_FILES_NAMED} more" if len(changed) > DRIFT_FILES_NAMED
            else "")
        return (f"the files of {recorded} on the board changed since it was released"
                + (f": {named}" if named else ""))
    recorded_manifest = (record.get("current") or {}).get("manifest_sha256")
    if actual and recorded_manifest and actual.get("manifest_sha256") != recorded_manifest:
        return (f"the manifest of {recorded} on the board changed since it was released "
                "(manifest.json rewritten with its digest file)")
    return None


def alias_drift(board: dict[str, Any], device: str) -> str | None:
    """How the device's MLflow alias differs from the version the board runs (the
    registry named in its manifest), None when they agree or it names none."""
    mlflow = (board.get("current") or {}).get("mlflow")
    try:
        elsewhere = _alias_elsewhere(mlflow, device)
    except ConfigError as error:  # the tracking server does not answer
        return f"the MLflow alias {registry.alias(device)} could not be read: {error}"
    if elsewhere is None or mlflow is None:
        return None
    return (f"the MLflow alias {registry.alias(device)} points at {elsewhere}, the board "
            f"runs version {mlflow['version']}")
