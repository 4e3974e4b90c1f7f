"""Who approves a release under ``release.policy: approve``.

A run started from a terminal (``edgeflow run``) asks there (``--yes`` approves every
release); a deployed run, which no terminal watches, pauses in Prefect with a form, the
flow run page's "Resume" button, whose ``approve`` box a person ticks (Prefect's own
human-in-the-loop: ``pause_flow_run(wait_for_input=...)``). A pause that nobody answers
within ``release.approval_timeout_seconds`` is a release not approved.
"""

from __future__ import annotations

from collections.abc import Callable

from prefect.input import RunInput

Approver = Callable[[str, str, str], bool]  # (device, variant, what changes) -> approved
_installed: list[Approver] = []  # set by the CLI for the run it starts in this process


class ReleaseApproval(RunInput):
    """The form of a paused run: approve the release or not, and why."""

    approve: bool = False
    note: str = ""


def ask_on_terminal(device: str, variant: str, change: str) -> bool | None:
    """The answer typed on the controlling terminal (the console's output may be going
    to the run's log); None when there is no terminal to ask."""
    try:
        with open("/dev/tty", "r+", encoding="utf-8") as tty:
            tty.write(f"release {variant} to {device} ({change})? [y/N] ")
            tty.flush()
            return tty.readline().strip().lower() in {"y", "yes"}
    except OSError:
        return None


def terminal_approver(yes: bool) -> Approver:
    """The CLI's approver: every release with ``yes``, else the terminal's answer (no
    terminal: not approved)."""
    def approve(device: str, variant: str, change: str) -> bool:
        return yes or bool(ask_on_terminal(device, variant, change))
    return approve


def install(approver: Approver | None) -> None:
    """Use ``approver`` for the runs of this process (None: Prefect's pause)."""
    _installed[:] = [approver] if approver is not None else []


def in_prefect(timeout_seconds: float) -> Approver:
    """Pause the flow run until a person answers the form (or the timeout passes)."""
    def approve(device: str, variant: str, change: str) -> bool:
        from prefect.exceptions import FlowPauseTimeout
        from prefect.flow_runs import pause_flow_run

        form = ReleaseApproval.with_initial_data(
            description=f"Release **{variant}** to **{device}** ({change})? Tick approve "
                        "and resume; resuming without it keeps the device as it is.",
            approve=False)
        try:
            answer = pause_flow_run(wait_for_input=form, timeout=int(timeout_seconds),
                                    key=f"release-{device}")
        except FlowPauseTimeout:
            return False
        return bool(answer is not None and answer.approve)
    return approve


def current(timeout_seconds: float) -> Approver:
    """The approver for a run in this process: the CLI's, else Prefect's pause."""
    return _installed[0] if _installed else in_prefect(timeout_seconds)
