"""Step ``benchmark``: deploy each variant to a device, run the harness there, fetch
and validate its result.

Reads params ``benchmark``, the device's entry in ``farm.yaml``,
``models/variants/`` (:mod:`tasks.core.contracts.variants`) and
``data/prepared/test.npz``. Writes ``results/<device>/<variant>.json``
(:mod:`tasks.core.contracts.results`): the variant's identity, ``status`` (``ok``,
``failed`` or ``skipped``), ``emulated`` and ``emulation`` for a board farm.yaml says is
emulated, ``error`` and the harness result under ``harness`` (with
``runtime.execution_precision``, what the runtime computed in); an error too long to show
whole is kept in ``results/<device>/<variant>.error.txt`` beside it, and every timed
latency in ``results/<device>/<variant>.latencies.npz`` (:func:`keep_raw_latencies`).

The device is reached through a :class:`~tasks.farm.session.DeviceSession` (a per-run
folder, sha256-verified pushes, owner-only modes, old runs pruned, the device lock). The
device is probed first (host facts, importable runtimes); a variant whose runtime the
device lacks is ``skipped`` with that reason, and so is one whose execution precision the
device lacks natively (bf16 on a CPU without it), as the harness reports. A harness that
fails, hangs past the timeout or returns garbage gives a ``failed`` result with the
reason; the other variants still run. A lost connection fails the variant that was
running; the next one reconnects (retried with backoff) or, if the device is gone, every
remaining variant fails with that reason. Results from the device are untrusted:
size-limited and checked (:mod:`tasks.farm.protocol`), and every text in them is made
visible and capped (:mod:`tasks.farm.untrusted`) before it is written.

What a device can do is its kind of target's to say (:mod:`tasks.targets`): a board runs
the harness as above (:func:`run_harness`); a microcontroller, which has no shell, has
its ``tflm`` variants checked against its flash and RAM budgets instead
(:func:`tasks.targets.mcu.check_fit`).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from tasks.core import notices
from tasks.config import BenchmarkParams, LocalDevice, SshDevice
from tasks.core.contracts.prepared import read_meta
from tasks.core.contracts.results import ResultRecord, write_result
from tasks.core.contracts.variants import Variant, read_variant_index
from tasks.core.errors import StepError
from tasks.core.files import atomic_output_dir
from tasks.core.interrupt import raise_if_stopped
from tasks.farm.frames import write_frames
from tasks.farm.protocol import decode_latencies
from tasks.farm.push import last_line
from tasks.farm.session import DeviceSession, failed
from tasks.farm.transports import BoardNotAnswering, Connection, DeviceUnreachable, connect
from tasks.farm.untrusted import ERROR_LIMIT, contained, contained_strings
from tasks.targets import BenchmarkJob, DeviceRun, target_of
from tasks.targets.results import emulation_marks, identity, not_produced

__all__ = ["DeviceRun", "benchmark_device", "identity", "not_produced", "run_harness"]

# Beside results/<device>/<variant>.json; not .json: select reads every *.json there.
FULL_ERROR_SUFFIX = ".error.txt"
RAW_LATENCIES_SUFFIX = ".latencies.npz"


def _why_not_runnable(variant: Variant, device: LocalDevice | SshDevice, device_name: str,
                      facts: dict[str, Any]) -> dict[str, Any] | None:
    """The outcome of a variant the device will not run (with the reason), else None."""
    runtime = variant.runtime
    if not variant.runnable:
        return not_produced(variant.status, variant.reason)
    if device.runtimes is not None and runtime not in device.runtimes:
        return {"status": "skipped",
                "error": f"runtime {runtime!r} is not in {device_name}'s runtimes in farm.yaml"}
    if runtime not in facts.get("runtimes", {}):
        return {"status": "skipped",
                "error": f"runtime {runtime!r} is not installed on {device_name}"}
    return None


def _check_local_inputs(variants: list[Variant], variants_dir: Path, prepared: Path) -> None:
    """Missing inputs here are this machine's problem, not the device's: fail the step."""
    needed = [prepared / "test.npz", *(variants_dir / entry.path for variant in variants
                                       if variant.runnable for entry in variant.files or [])]
    for path in needed:
        if not path.is_file():
            step = "prepare" if path.name == "test.npz" else "convert"
            raise StepError(f"{path} is missing: run the {step} step again")


def device_facts(probe: dict[str, Any]) -> dict[str, Any]:
    """What a result records about its device (and MLflow tags): the host facts and the
    version of every runtime found there."""
    return {**probe.get("host", {}),
            **{f"runtime.{name}": version
               for name, version in probe.get("runtime_versions", {}).items()}}


def contained_outcome(outcome: dict[str, Any], staging: Path, out_dir: Path,
                      variant: str) -> dict[str, Any]:
    """An outcome as its result file keeps it: every text the device could have written
    (the error, which quotes its logs; the harness result's strings) made visible and
    capped. An error too long to show whole is kept in ``<variant>.error.txt`` beside
    the result (written into ``staging``, which becomes ``out_dir``)."""
    kept = contained_strings(outcome)
    if isinstance(outcome.get("error"), str):
        name = f"{variant}{FULL_ERROR_SUFFIX}"
        kept["error"] = contained(outcome["error"], ERROR_LIMIT, overflow=staging / name,
                                  shown_as=f"{out_dir.parent.name}/{out_dir.name}/{name}")
    return kept


def keep_raw_latencies(outcome: dict[str, Any], staging: Path, variant: str) -> dict[str, Any]:
    """The raw latencies an ``ok`` outcome carries (checked by the protocol) moved out of
    it into ``<variant>.latencies.npz`` beside the result (``latency_ns``, int64,
    compressed); the result names that file and the count."""
    harness = outcome.get("harness")
    latencies = decode_latencies(harness) if outcome["status"] == "ok" and harness else None
    if latencies is None:
        return outcome
    name = f"{variant}{RAW_LATENCIES_SUFFIX}"
    with (staging / name).open("wb") as handle:
        np.savez_compressed(handle, latency_ns=latencies)
    return {**outcome, "harness": {**harness, "latencies": {"file": name,
                                                            "count": int(latencies.size)}}}


def _device_failure(error: Exception) -> str:
    """Why every variant still to run on a device fails."""
    if isinstance(error, DeviceUnreachable):
        return f"device unreachable: {last_line(str(error))}"
    return f"device not usable: {type(error).__name__}: {last_line(str(error))}"


@dataclass
class _Progress:
    """A device's run so far: its probe, the outcome of each variant decided, and the
    reason the device failed, once it has (every later variant fails with it)."""

    probe: dict[str, Any] = field(default_factory=dict)
    outcomes: dict[str, dict[str, Any]] = field(default_factory=dict)
    device_error: str | None = None
    not_answering: bool = False  # the device error may pass (BoardNotAnswering)

    def fail_device(self, error: Exception) -> None:
        self.device_error = _device_failure(error)
        self.not_answering = isinstance(error, BoardNotAnswering)


def _set_up(session: DeviceSession, device_name: str, variants: list[Variant],
            variants_dir: Path, test_data: Path, staging: Path, progress: _Progress,
            frames: Path | None = None) -> None:
    """Start the session (push, probe), decide what the device will not run, and deploy
    the rest; a device that fails here fails every variant, it does not stop the step."""
    try:
        progress.probe = session.start(test_data, frames)
        for variant in variants:
            reason = _why_not_runnable(variant, session.device, device_name, progress.probe)
            if reason is not None:
                progress.outcomes[variant.name] = reason
        session.deploy([variant for variant in variants if variant.name not in progress.outcomes],
                       variants_dir, staging)
    except Exception as error:  # noqa: BLE001 - the device fails, the run goes on
        progress.fail_device(error)


def _run_each(session: DeviceSession, variants: list[Variant], progress: _Progress,
              counter: notices.Counter) -> None:
    """Run every variant not decided yet, one after another; each variant is counted
    done once its outcome is known (measured, skipped or failed)."""
    for variant in variants:
        # A stop request (Ctrl-C) ends the device's run here: nothing of it is written
        # (the staging folder is discarded), the results of its last complete run stay,
        # and the next run measures it again.
        raise_if_stopped()
        if variant.name not in progress.outcomes:
            progress.outcomes[variant.name] = _run_one(session, variant, progress)
        counter.advance(variant.name, progress.outcomes[variant.name]["status"])
    raise_if_stopped()  # the last variant's harness may have been stopped


def _run_one(session: DeviceSession, variant: Variant, progress: _Progress) -> dict[str, Any]:
    """One variant's outcome; a device lost here fails it and every later variant."""
    if progress.device_error is not None:
        return failed(progress.device_error)
    try:
        return session.run(variant)
    except DeviceUnreachable as error:
        progress.fail_device(error)
        return failed(progress.device_error)


def benchmark_device(device_name: str, device: Any, params: BenchmarkParams,
                     variants_dir: Path, prepared: Path, out_dir: Path,
                     connect_to: Callable[..., Connection] = connect) -> DeviceRun:
    """Benchmark every variant on one device (farm entry ``device``) as its kind of target
    does (:mod:`tasks.targets`): on a board, :func:`run_harness`. Every variant gets a
    result file, whatever happens to the device."""
    job = BenchmarkJob(params, variants_dir, prepared, out_dir,
                       on_board=partial(run_harness, device_name, params=params,
                                        variants_dir=variants_dir, prepared=prepared,
                                        out_dir=out_dir, connect_to=connect_to))
    return target_of(device_name, device).benchmark(job)


def run_harness(device_name: str, device: LocalDevice | SshDevice, params: BenchmarkParams,
                variants_dir: Path, prepared: Path, out_dir: Path,
                connect_to: Callable[..., Connection] = connect) -> DeviceRun:
    """Benchmark every variant on a board, one after another.

    Deploys the harness and test inputs into a new run folder on the device, probes it,
    places the variants it can run, runs each under the device lock, and fetches each
    result. The newest ``keep_runs`` run folders stay on the device.
    """
    variants = read_variant_index(variants_dir).variants
    _check_local_inputs(variants, variants_dir, prepared)
    session = DeviceSession(device, params, connect_to(device, device_name))
    progress = _Progress()
    counter = notices.Counter(f"benchmark[{device_name}]", len(variants))
    with atomic_output_dir(out_dir) as staging, tempfile.TemporaryDirectory() as scratch:
        try:
            # Pushed to the device, never a result: made in a scratch folder.
            frames = (write_frames(prepared / "test.npz", Path(scratch) / "frames.npz",
                                   params.end_to_end, read_meta(prepared).fit)
                      if params.end_to_end else None)
            _set_up(session, device_name, variants, variants_dir, prepared / "test.npz", staging,
                    progress, frames)
            _run_each(session, variants, progress, counter)
        finally:
            session.connection.close()
        facts = device_facts(progress.probe)
        paths = [write_result(staging / f"{variant.name}.json", ResultRecord(
            **identity(variant, device_name), threads=device.threads, device_facts=facts,
            device_run_dir=session.run_dir, **emulation_marks(device),
            **contained_outcome(keep_raw_latencies(progress.outcomes[variant.name], staging,
                                                   variant.name),
                                staging, out_dir, variant.name)))
            for variant in variants]
    return DeviceRun(device_name, tuple(out_dir / path.name for path in paths), progress.probe,
                     session.run_dir, session.clock.as_dict(),
                     progress.device_error if progress.not_answering else None)
