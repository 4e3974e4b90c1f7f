"""The board kind: a device with a shell that runs the harness, on this machine
(``transport: local``) or over SSH (``transport: ssh``).

Its benchmark and its release are the steps' harness work (:attr:`BenchmarkJob.on_board`,
:attr:`ReleaseJob.on_board`), run through a connection to it; its probe is the harness's
``--probe``; its release state is what its release manager answers. Over SSH, a board
with a ``setup`` section has a virtualenv that ``edgeflow farm setup`` manages.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tasks.config import LocalDevice, SshDevice
from tasks.core.contracts.release import BoardState, ReleaseDecision
from tasks.core.layout import Layout
from tasks.farm import releases as device_releases
from tasks.farm.probe import DeviceProbe, probe_one
from tasks.farm.transports import connect
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

    def release_state(self) -> BoardState | None:
        connection = connect(self.entry, self.name)
        try:
            state: BoardState = device_releases.status(connection, self.entry)
            return state
        finally:
            connection.close()


class SshBoardTarget(BoardTarget):
    """A board over SSH: the same, and a virtualenv to manage when it has ``setup``."""

    entry: SshDevice

    def managed_setup(self) -> SshDevice | None:
        return self.entry if self.entry.setup is not None else None


register("local", BoardTarget)
register("ssh", SshBoardTarget)
