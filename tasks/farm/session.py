"""A device session: one benchmark run on one device (SSH or this machine).

:meth:`DeviceSession.start` makes the run folder ``<workdir>/runs/<run name>``, pushes
the harness and the test inputs, removes old run folders and probes the device;
:meth:`~DeviceSession.deploy` places the variants; :meth:`~DeviceSession.run` runs the
harness on one variant under the device lock and fetches its result;
:meth:`~DeviceSession.stop_harness` stops it on the device (a stop request, Ctrl-C).

An outcome is ``{"status", "error"}`` plus, when the harness returned a valid result,
that result under ``"harness"`` (checked by :mod:`tasks.farm.protocol`). A harness that
fails, hangs past the timeout or returns garbage is a ``failed`` outcome with the reason;
a lost device raises DeviceUnreachable once reconnecting fails: nothing is re-run
blindly.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from invoke.exceptions import CommandTimedOut

from tasks.core import device_code
from tasks.config import BenchmarkParams, LocalDevice, SshDevice
from tasks.core.contracts.variants import Variant
from tasks.core.files import write_json
from tasks.core.interrupt import stopping_with
from tasks.farm import stoppable
from tasks.farm.bundle import unpack_command, write_bundle
from tasks.farm.logs import log_tail, to_files
from tasks.farm.probe import probe_command, read_probe
from tasks.farm.protocol import (HARNESS_TIMED_OUT, LOCK_BUSY_EXIT, LOCK_NAME, MAX_RESULT_BYTES,
                                 parse_untrusted_json, validate_harness_result)
from tasks.farm.push import (RUNS_DIR, PhaseTimes, check_then_run, last_line, make_dirs,
                             new_run_name, place_files, remove_runs_command, stale_runs)
from tasks.farm.transports import Connection, DeviceUnreachable, owner_only

# The SSH channel closed without an exit status: the device or its SSH server went away.
NO_EXIT_STATUS = -1


def failed(error: str) -> dict[str, Any]:
    """The outcome of a variant that did not run to a result, and why."""
    return {"status": "failed", "error": error}


@dataclass
class DeviceSession:
    """One benchmark run on one device: its connection, its run folder there
    (``<workdir>/runs/<run name>``) and the wall seconds of each orchestration phase."""

    device: LocalDevice | SshDevice
    params: BenchmarkParams
    connection: Connection
    run_name: str = field(default_factory=new_run_name)
    clock: PhaseTimes = field(default_factory=PhaseTimes)
    end_to_end: bool = False  # the frames were pushed: every variant is timed end to end too

    @property
    def runs_dir(self) -> str:
        return f"{self.device.workdir}/{RUNS_DIR}"

    @property
    def run_dir(self) -> str:
        return f"{self.runs_dir}/{self.run_name}"

    @property
    def harness(self) -> str:
        return f"{self.run_dir}/harness.py"

    @property
    def lock(self) -> str:
        return f"{self.device.workdir}/{LOCK_NAME}"

    @property
    def longest_idle_seconds(self) -> float:
        """The longest a run in progress leaves its folder untouched: one variant's wait
        for the lock and its time limit (each variant touches the folder first)."""
        return self.params.lock_timeout_seconds + self.params.timeout_seconds + 60

    def variant_dir(self, variant: Variant) -> str:
        return f"{self.run_dir}/{variant.name}"

    @property
    def frames(self) -> str:
        return f"{self.run_dir}/frames.npz"

    def start(self, test_data: Path, frames: Path | None = None) -> dict[str, Any]:
        """Create the run folder, push the harness (its package, with the pre-processing
        and the kinds of task, and its launcher, as one archive: :mod:`tasks.farm.bundle`)
        and test inputs (and, for end-to-end timing, the frames), and probe the device;
        one shell command checks the pushed files, unpacks the harness, removes old run
        folders and probes (each shell start costs the device's login shell). Returns the
        probe."""
        with self.clock.phase("connect"):
            make_dirs(self.connection, self.run_dir)
            stale = stale_runs(self.connection, self.runs_dir, self.device.keep_runs,
                               self.run_name, idle_seconds=self.longest_idle_seconds)
        python = self.device.harness_python()
        with tempfile.TemporaryDirectory(prefix="edgeflow-push-") as scratch:
            # The harness's package as one archive (tasks.farm.bundle): one upload and
            # one check instead of two dozen; unpacked once its sha256 is checked.
            code = write_bundle(device_code.shipped(self.run_dir, ("harness",)), self.run_dir,
                                Path(scratch) / "device-code.tar")
            files = [code, (test_data, f"{self.run_dir}/test.npz")]
            if frames is not None:
                files.append((frames, self.frames))
                self.end_to_end = True
            with self.clock.phase("push"):
                place_files(self.connection, files)
            with self.clock.phase("check+probe"):
                result = check_then_run(
                    self.connection, files,
                    then=[unpack_command(self.run_dir),
                          *remove_runs_command(self.runs_dir, stale),
                          probe_command(python, self.harness)],
                    timeout=self.params.timeout_seconds)
        return read_probe(self.connection, result, python, self.harness)

    def deploy(self, variants: list[Variant], variants_dir: Path, staging: Path) -> None:
        """Place every variant's files and spec (no shell: the harness checks their
        sha256 before it loads them). ``staging`` holds each spec on its way."""
        with self.clock.phase("push"):
            make_dirs(self.connection, *(self.variant_dir(variant) for variant in variants))
            for variant in variants:
                spec = write_json(staging / f".{variant.name}.spec.json", variant.spec)
                try:
                    place_files(self.connection, [
                        (spec, f"{self.variant_dir(variant)}/spec.json"),
                        *((variants_dir / entry.path, f"{self.run_dir}/{entry.path}")
                          for entry in variant.files or [])])
                finally:
                    spec.unlink(missing_ok=True)

    def _harness_argv(self, variant: Variant) -> list[str]:
        device, params, run_dir = self.device, self.params, self.run_dir
        variant_dir = self.variant_dir(variant)
        argv = [device.harness_python(), self.harness,
                "--artifact", f"{run_dir}/{variant.file}",
                "--runtime", variant.runtime,
                "--data", f"{run_dir}/test.npz",
                "--spec", f"{variant_dir}/spec.json",
                "--out", f"{variant_dir}/result.json",
                "--threads", str(device.threads),
                "--warmup-runs", str(params.warmup_runs),
                "--warmup-seconds", str(params.warmup_seconds),
                "--runs", str(params.runs),
                "--seconds", str(params.seconds),
                "--max-seconds", str(params.max_seconds),
                "--interval-width", str(params.interval_width),
                "--accelerators", json.dumps(device.accelerators.model_dump(exclude_none=True)),
                "--accuracy-samples", str(params.accuracy_samples)]
        if self.end_to_end:
            argv += ["--frames", self.frames]
        if getattr(device, "energy", None) is not None:  # absent: the harness's `auto`
            argv += device.energy.harness_args()
        for entry in variant.files or []:
            argv += ["--expect-sha256", f"{run_dir}/{entry.path}={entry.sha256}"]
        return argv

    def _harness_command(self, variant: Variant) -> str:
        """The shell command that runs the harness on one variant, under the device lock.

        One benchmark at a time per device, whoever starts it (another flow run, another
        orchestrating machine): flock on a file in the device's workdir, held by the
        kernel for the harness's lifetime, released even if the harness is killed. The
        harness's own time limit is enforced on the device (coreutils timeout), apart
        from the wait for the lock; the transport's limit only catches a lost device.
        """
        variant_dir = self.variant_dir(variant)
        command = owner_only(["touch", "--", self.run_dir])  # alive: see longest_idle_seconds
        # Stoppable (tasks.farm.stoppable): `flock` while it waits for the lock, then
        # `timeout`, which passes a signal on to the harness's whole process group.
        return command + " && " + to_files(
            stoppable.locked_argv(
                variant_dir, self.lock, str(self.params.lock_timeout_seconds),
                ["timeout", "-k", "5", str(self.params.timeout_seconds),
                 *self._harness_argv(variant)]),
            f"{variant_dir}/harness.out", f"{variant_dir}/harness.log")

    def stop_harness(self, variant_dir: str) -> None:
        """Stop a variant's harness command on the device (a stop request: Ctrl-C), in
        whichever state it is: waiting for the device lock (``flock`` is signalled) or
        running (``timeout`` is signalled, and passes it to the harness's process group).
        The stop file catches the moment between the two: the command then never starts."""
        stoppable.stop(self.connection, variant_dir)

    def run(self, variant: Variant) -> dict[str, Any]:
        """Run the harness for one deployed variant and fetch its result: the outcome.
        A lost connection raises DeviceUnreachable once reconnecting fails."""
        try:
            finished = self._run_harness(variant)
        except CommandTimedOut:
            return self._timed_out()
        except DeviceUnreachable:
            raise
        except Exception as error:  # noqa: BLE001 - transport errors: the device, not the run
            return failed(f"connection to the device lost during the benchmark: "
                          f"{type(error).__name__}: {last_line(str(error))}")
        return self._refusal(finished.exited) or self._fetch_result(variant, finished)

    def _run_harness(self, variant: Variant) -> Any:
        """The finished harness command (its exit status and stderr); a stop request
        while it runs stops it on the device."""
        params, variant_dir = self.params, self.variant_dir(variant)
        with self.clock.phase("harness"), stopping_with(lambda: self.stop_harness(variant_dir)):
            try:
                return self.connection.run(self._harness_command(variant),
                                           timeout=params.timeout_seconds
                                           + params.lock_timeout_seconds + 30)
            except KeyboardInterrupt:
                # Ctrl-C in this thread (`edgeflow step benchmark`): the transport gives
                # up at once and the connection closes on the way out, before the
                # stopper's own channel could reach the device: stop it now.
                with contextlib.suppress(Exception):
                    self.stop_harness(variant_dir)
                raise

    def _timed_out(self) -> dict[str, Any]:
        return failed("harness did not finish within "
                      f"timeout_seconds={self.params.timeout_seconds}")

    def _refusal(self, exited: int) -> dict[str, Any] | None:
        """The outcome when the exit status says there is no result to fetch: the device
        went away, the harness ran out of time, or another benchmark held the device."""
        if exited == NO_EXIT_STATUS:
            return failed("connection to the device lost during the benchmark "
                          "(no exit status: the device or its SSH server went away)")
        if exited in HARNESS_TIMED_OUT:
            return self._timed_out()
        if exited == LOCK_BUSY_EXIT:
            return failed(f"device busy: another benchmark held {self.lock} for more than "
                          f"lock_timeout_seconds={self.params.lock_timeout_seconds}")
        return None

    def _fetch_result(self, variant: Variant, finished: Any) -> dict[str, Any]:
        """The harness's result file, read with a size limit and checked; when there is
        no valid one, a failure naming why and what the harness said last."""
        variant_dir = self.variant_dir(variant)
        try:
            with self.clock.phase("fetch"):
                raw = self.connection.read_file(f"{variant_dir}/result.json", MAX_RESULT_BYTES)
            document = validate_harness_result(parse_untrusted_json(raw))
        except DeviceUnreachable:
            raise
        except Exception as error:  # noqa: BLE001 - an untrusted or absent result is a failure
            return failed(f"no valid harness result ({error}); "
                          f"{self._last_words(variant_dir, finished)}")
        # An ok result has no error, whatever the device wrote there (its copy keeps it).
        error = None if document["status"] == "ok" else document["error"]
        return {"status": document["status"], "error": error, "harness": document}

    def _last_words(self, variant_dir: str, finished: Any) -> str:
        """Why a harness left no result: the signal that killed it, else its log's last
        line, its stderr's, or its exit status."""
        if finished.exited > 128:
            return f"the harness was killed by signal {finished.exited - 128}"
        return (log_tail(self.connection, f"{variant_dir}/harness.log")
                or last_line(finished.stderr) or f"exit code {finished.exited}")
