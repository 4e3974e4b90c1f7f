"""What a kind of target is: the :class:`Target` protocol, what the steps hand a target
(:class:`BenchmarkJob`, :class:`ReleaseJob`), what a benchmark of one device produced
(:class:`DeviceRun`), and the registry of kinds by the ``transport`` of their farm.yaml
entry (:func:`register`, :func:`target_of`).

A target is one device of the farm, of one kind; each kind decides what the device can
do (Olive's ``OliveSystem``: the work is the step's, how and whether it runs on the
device is the target's). A board runs the step's harness work through its connection; a
microcontroller profile checks fit and writes a firmware bundle instead. A new kind is
one module that implements the protocol and registers itself: no step names a kind.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tasks.config import BenchmarkParams, ReleaseParams, SshDevice
from tasks.config.farm import register_device_kind, unregister_device_kind
from tasks.config.firmware import FirmwareSettings
from tasks.core.contracts.release import BoardState, ReleaseDecision
from tasks.core.contracts.variants import Variant
from tasks.core.errors import ConfigError
from tasks.core.layout import Layout
from tasks.farm.probe import DeviceProbe


@dataclass(frozen=True)
class DeviceRun:
    """What one device produced: the result files, the probe facts, where the run's
    files stay on the device, and the wall seconds of each orchestration phase.
    ``not_answering``: why the board was never reached, when a later try may reach it
    (:class:`tasks.farm.transports.BoardNotAnswering`); None otherwise."""

    device: str
    results: tuple[Path, ...]
    probe: dict[str, Any]
    remote_run_dir: str | None = None
    phase_seconds: dict[str, float] = field(default_factory=dict)
    not_answering: str | None = None


@dataclass(frozen=True)
class BenchmarkJob:
    """The benchmark step's work on one device: every variant in ``variants_dir`` gets a
    result file in ``out_dir``. ``on_board``: the step's harness run, for a target with
    a shell (called with its farm entry)."""

    params: BenchmarkParams
    variants_dir: Path
    prepared: Path
    out_dir: Path
    on_board: Callable[[Any], DeviceRun]


@dataclass(frozen=True)
class ReleaseJob:
    """The release step's work on one device: release ``variant`` (produced, chosen by
    policy or by hand). ``register`` registers it as the device's MLflow model version
    (the version's record, or None without a tracking store); ``alias_moved`` points the
    device's alias at a version (``""``, or why not, as a clause); ``on_board``: the
    step's release through the harness, for a target with a shell (called with its farm
    entry). ``firmware``: where a firmware build finds its sources and cache (params
    ``benchmark.firmware``), for a kind that builds one; ``accuracy_floor``: the least
    accuracy the release's check allows (None: none), asked only by a kind that checks
    the release itself."""

    layout: Layout
    params: ReleaseParams
    variant: Variant
    register: Callable[[], dict[str, Any] | None]
    alias_moved: Callable[[dict[str, Any] | None], str]
    on_board: Callable[[Any], ReleaseDecision]
    firmware: FirmwareSettings | None = None
    accuracy_floor: Callable[[], float | None] = lambda: None


class Target(Protocol):
    """One device of the farm, of one kind (``kind``: what ``edgeflow status`` calls it).

    Every method answers for its own device and never raises for what the device does
    (an unreachable device is a :class:`~tasks.core.errors.DeviceError` only where said).
    """

    name: str
    kind: str

    def probe(self, timeout: float = 60.0) -> DeviceProbe:
        """What the device is and can run (``edgeflow farm probe``'s row)."""
        ...

    def managed_setup(self) -> SshDevice | None:
        """The entry ``edgeflow farm setup`` manages (a virtualenv on the board), None when
        there is nothing to set up."""
        ...

    def benchmark(self, job: BenchmarkJob) -> DeviceRun:
        """A result file for every variant (measured, checked, skipped or failed)."""
        ...

    def release(self, job: ReleaseJob) -> ReleaseDecision:
        """Put ``job.variant`` on the device, or say why not (the step persists it)."""
        ...

    def rollback(self, layout: Layout, on_board: Callable[[Any], ReleaseDecision]
                 ) -> ReleaseDecision:
        """Switch back to the previous release (``on_board``: the step's rollback through
        the harness); ConfigError for a kind that cannot."""
        ...

    def release_state(self, on_board: Callable[[Any], BoardState]) -> BoardState | None:
        """The device's own release state (``on_board``: the step's reading of it through
        the harness's release manager), None for a kind that keeps none (edgeflow's
        record is all there is); DeviceError when the device cannot be reached."""
        ...


TargetFactory = Callable[[str, Any], Target]
KINDS: dict[str, TargetFactory] = {}
_ENTRIES_ADDED: set[str] = set()  # kinds whose farm.yaml entry model register() added


def register(transport: str, factory: TargetFactory, entry_model: type | None = None) -> None:
    """Make ``transport`` a kind of target: farm.yaml entries with that ``transport``
    become ``factory(name, entry)``. ``entry_model``: the entry's pydantic model, for a
    kind farm.yaml does not know yet; it must have the fields every entry has (its
    ``transport`` a ``Literal`` of the tag, and ``requirements: Requirements | None``,
    which select reads of every device), else a ConfigError and nothing is registered
    (:func:`tasks.config.farm.register_device_kind`)."""
    if entry_model is not None:
        register_device_kind(entry_model)
        _ENTRIES_ADDED.add(transport)
    KINDS[transport] = factory


def unregister(transport: str) -> None:
    """Undo :func:`register` (with the farm.yaml entry model it added, if any)."""
    KINDS.pop(transport, None)
    if transport in _ENTRIES_ADDED:
        _ENTRIES_ADDED.discard(transport)
        unregister_device_kind(transport)


def target_of(name: str, entry: Any) -> Target:
    """The target of farm entry ``entry`` (named ``name``)."""
    factory = KINDS.get(entry.transport)
    if factory is None:
        raise ConfigError(f"device {name!r}: no kind of target for transport "
                          f"{entry.transport!r} (known: {', '.join(KINDS)})")
    return factory(name, entry)
