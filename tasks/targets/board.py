"""The board kind: a device with a shell that runs the harness, on this machine
(``transport: local``) or over SSH (``transport: ssh``).

Its benchmark, its release and its release state are the steps' harness work
(:attr:`BenchmarkJob.on_board`, :attr:`ReleaseJob.on_board`, the release step's reading of
its release manager), handed its farm entry: the steps connect, so this module brings
neither step the other's device code. Its probe is the harness's ``--probe``. Over SSH, a board
with a ``setup`` section has a virtualenv that ``edgeflow farm setup`` manages.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tasks.config import LocalDevice, SshDevice
from tasks.core.contracts.release import BoardState, ReleaseDecision
from tasks.core.layout import Layout
from tasks.farm.probe import DeviceProbe, probe_one
from tasks.targets.base import BenchmarkJob, DeviceRun, ReleaseJob, register


class BoardTarget:
    """A board that runs the harness (:mod:`tasks.targets.base` has the contract)."""

    kind = "board"

    def __init__(self, name: str, entry: LocalDevice | SshDevice) -> None:
        self.name, self.entry = name, entry

    def probe(self, timeout: float = 60.0) -> DeviceProbe:
        return probe_one(self.name, self.entry, timeout)

    def managed_setup(self) -> SshDevice | None:
        return None

    def benchmark(self, job: BenchmarkJob) -> DeviceRun:
        return job.on_board(self.entry)

    def release(self, job: ReleaseJob) -> ReleaseDecision:
        return job.on_board(self.entry)

    def rollback(self, layout: Layout, on_board: Callable[[Any], ReleaseDecision]
                 ) -> ReleaseDecision:
        return on_board(self.entry)

    def release_state(self, on_board: Callable[[Any], BoardState]) -> BoardState | None:
        return on_board(self.entry)


class SshBoardTarget(BoardTarget):
    """A board over SSH: the same, and a virtualenv to manage when it has ``setup``."""

    entry: SshDevice

    def managed_setup(self) -> SshDevice | None:
        return self.entry if self.entry.setup is not None else None


register("local", BoardTarget)
register("ssh", SshBoardTarget)
