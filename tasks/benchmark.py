"""Step ``benchmark``: deploy each variant to a device, run the harness there, fetch
and validate its result.

Reads params ``benchmark``, the device's entry in ``farm.yaml``,
``models/variants/`` and ``data/prepared/test.npz``. Writes
``results/<device>/<variant>.json``: the variant's identity, ``status`` (``ok``,
``failed`` or ``skipped``), ``error`` and the harness result under ``harness`` (with
``runtime.execution_precision``, what the runtime computed in); an error too long to show
whole is kept in ``results/<device>/<variant>.error.txt`` beside it.

Files reach the device through :mod:`tasks.farm.push` (a per-run folder, sha256-verified
pushes, owner-only modes, old runs pruned). The device is probed first (host facts,
importable runtimes); a variant whose runtime the device lacks is ``skipped`` with that
reason, and so is one whose execution precision the device lacks natively (bf16 on a CPU
without it), as the harness reports. A harness that fails, hangs past the timeout or returns garbage gives a
``failed`` result with the reason; the other variants still run. A lost connection fails
the variant that was running; the next one reconnects (retried with backoff) or, if the
device is gone, every remaining variant fails with that reason. Results from the device
are untrusted: size-limited and checked (types, and ranges: an impossible number fails
the result with the reason), and every text in them is made visible and capped
(:mod:`tasks.farm.untrusted`) before it is written.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from invoke.exceptions import CommandTimedOut

from tasks.core import device_code
from tasks.core.config import BenchmarkParams, LocalDevice, McuDevice, SshDevice
from tasks.convert import read_index
from tasks.farm.push import (RUNS_DIR, PhaseTimes, check_then_run, last_line as tail, make_dirs,
                          new_run_name, place_files, push_files, remove_runs_command,
                          stale_runs)
from tasks.core.errors import StepError
from tasks.farm.transports import (ON_DEVICE_TIMEOUT_EXITS, Connection, DeviceUnreachable, connect,
                           owner_only, quote_command)
from tasks.core.files import atomic_output_dir, write_json
from tasks.core.interrupt import raise_if_stopped, stopping_with
from tasks.farm.untrusted import ERROR_LIMIT, contained, contained_strings

MAX_RESULT_BYTES = 1 << 20
# Beside results/<device>/<variant>.json; not .json: select reads every *.json there.
FULL_ERROR_SUFFIX = ".error.txt"
LOCK_NAME = ".benchmark.lock"
LOCK_BUSY_EXIT = 75  # EX_TEMPFAIL: flock's exit status when the lock was not taken in time
HARNESS_TIMED_OUT = ON_DEVICE_TIMEOUT_EXITS
REQUIRED_OK_FIELDS = {"latency_ms": dict, "throughput_fps": float, "accuracy": float,
                      "peak_rss_mb": float, "load_ms": float, "first_inference_ms": float,
                      "runs": int, "accuracy_samples": int, "runtime": dict}
FACT_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")  # facts become MLflow tag names
# skipped: the device cannot run the variant's execution precision natively.
HARNESS_STATUSES = ("ok", "failed", "skipped")
LATENCY_FIELDS = ("p50", "p90", "p99", "mean", "std", "min", "max")
LATENCY_ORDER = ("min", "p50", "p90", "p99", "max")


@dataclass(frozen=True)
class Range:
    """The values a measurement can take: from ``low`` (excluded when ``low_open``) to
    ``high`` (included)."""

    low: float
    high: float = math.inf
    low_open: bool = False

    def __contains__(self, value: float) -> bool:
        return (value > self.low if self.low_open else value >= self.low) and value <= self.high

    def __str__(self) -> str:
        high = "inf)" if self.high == math.inf else f"{self.high:g}]"
        return f"{'(' if self.low_open else '['}{self.low:g}, {high}"


NOT_NEGATIVE = Range(0.0)
# A device is checked for what its numbers can be, not just their type: a board that
# claims accuracy 7.5 or -5 ms must not be recommended. Keys name nested fields by dots.
OK_RANGES: dict[str, Range] = {
    "accuracy": Range(0.0, 1.0), "throughput_fps": Range(0.0, low_open=True),
    "peak_rss_mb": NOT_NEGATIVE, "load_ms": NOT_NEGATIVE, "first_inference_ms": NOT_NEGATIVE,
    "runs": Range(1), "accuracy_samples": Range(1),  # accuracy on no image is no accuracy
    **{f"latency_ms.{key}": NOT_NEGATIVE for key in LATENCY_FIELDS}}


@dataclass(frozen=True)
class DeviceRun:
    """What one device produced: the result files, the probe facts, where the run's
    files stay on the device, and the wall seconds of each orchestration phase."""

    device: str
    results: tuple[Path, ...]
    probe: dict[str, Any]
    remote_run_dir: str | None = None
    phase_seconds: dict[str, float] = field(default_factory=dict)


LOG_TAIL_BYTES = 4096
STOP_TIMEOUT_SECONDS = 10.0


def _beside(remote_harness: str, name: str) -> str:
    return f"{remote_harness.rsplit('/', 1)[0]}/{name}"


def to_files(argv: list[str], out: str, err: str) -> str:
    """A quoted command whose output goes to files on the device, read back with a size
    limit: nothing a device prints is taken in whole."""
    return f"{quote_command(argv)} > {shlex.quote(out)} 2> {shlex.quote(err)}"


def probe_command(python: str, remote_harness: str) -> str:
    return to_files([python, remote_harness, "--probe"], _beside(remote_harness, "probe.json"),
                    _beside(remote_harness, "probe.log"))


def probe_device(connection: Connection, python: str, remote_harness: str,
                 timeout: float) -> dict[str, Any]:
    """Host facts and importable runtimes of the device (the harness's ``--probe``)."""
    result = connection.run(probe_command(python, remote_harness), timeout=timeout)
    return read_probe(connection, result, python, remote_harness)


def log_tail(connection: Connection, remote: str) -> str:
    """The last line of a log on the device ('' when there is none)."""
    try:
        return tail(connection.read_file(remote, LOG_TAIL_BYTES, tail=True).decode(errors="replace"))
    except (OSError, ValueError):
        return ""


def read_probe(connection: Connection, result: Any, python: str,
               remote_harness: str) -> dict[str, Any]:
    """The probe the command of :func:`probe_command` wrote, checked."""
    if result.exited == 127:
        raise RuntimeError(f"interpreter {python!r} (or coreutils `timeout`) not found on the "
                           "device")
    if result.exited in ON_DEVICE_TIMEOUT_EXITS:
        raise RuntimeError("probe did not finish in time and was stopped on the device")
    if not result.ok:
        reason = log_tail(connection, _beside(remote_harness, "probe.log")) or tail(result.stderr)
        raise RuntimeError(f"probe failed (exit {result.exited}): {reason}")
    raw = connection.read_file(_beside(remote_harness, "probe.json"), MAX_RESULT_BYTES + 1)
    return validate_probe(parse_untrusted_json(raw))


def validate_probe(document: dict[str, Any]) -> dict[str, Any]:
    """The probe's shape, as the orchestrator uses it; ValueError names what is wrong.
    Facts are flat (name -> text or number): they become MLflow tags. Returns a copy whose
    texts are :func:`~tasks.farm.untrusted.contained` (visible, capped)."""
    host = document.get("host")
    if not isinstance(host, dict) or not all(
            FACT_NAME.match(key) and isinstance(value, (str, int, float, type(None)))
            for key, value in host.items()):
        raise ValueError("probe field 'host' is not a flat object of named facts")
    for field_name in ("runtimes", "runtime_versions"):
        value = document.get(field_name)
        if not isinstance(value, dict) or not all(
                FACT_NAME.match(key) and isinstance(text, str) for key, text in value.items()):
            raise ValueError(f"probe field {field_name!r} is not an object of texts")
    return contained_strings(document)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"device returned a non-finite number ({name})")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 parses to inf
        raise ValueError(f"device returned a non-finite number ({text[:20]})")
    return value


def parse_untrusted_json(raw: bytes) -> dict[str, Any]:
    """A JSON object from a device, refused when too large or not an object."""
    if len(raw) > MAX_RESULT_BYTES:
        raise ValueError(f"device returned {len(raw)} bytes, more than {MAX_RESULT_BYTES}")
    document = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant,
                          parse_float=_finite_float)
    if not isinstance(document, dict):
        raise ValueError("device returned JSON that is not an object")
    return document


def _a(kind: type) -> str:
    return f"{'an' if kind.__name__[0] in 'aeiou' else 'a'} {kind.__name__}"


def _dotted(document: dict[str, Any], name: str) -> Any:
    for key in name.split("."):
        document = document[key]
    return document


def _check_ok_numbers(document: dict[str, Any]) -> None:
    """The measurements of an ``ok`` result (types already checked) are possible ones."""
    for name, allowed in OK_RANGES.items():
        value = _dotted(document, name)
        try:
            finite = math.isfinite(float(value))
        except OverflowError:  # a 400-digit JSON integer: no float holds it
            finite = False
        if not finite:
            raise ValueError(f"device returned {name} {str(value)[:20]}... outside {allowed}")
        if value not in allowed:
            raise ValueError(f"device returned {name} {value!r} outside {allowed}")
    latency = document["latency_ms"]
    ordered = [latency[key] for key in LATENCY_ORDER]
    if ordered != sorted(ordered):
        shown = ", ".join(f"{key} {latency[key]!r}" for key in LATENCY_ORDER)
        raise ValueError(f"device returned latency_ms out of order ({shown}): "
                         f"{' <= '.join(LATENCY_ORDER)} must hold")


def validate_harness_result(document: dict[str, Any]) -> dict[str, Any]:
    """Check the fields the report relies on, their types and, for an ``ok`` result,
    their ranges (:data:`OK_RANGES`, latencies ordered min <= p50 <= p90 <= p99 <= max);
    raise ValueError naming the first bad one."""
    status = document.get("status")
    if status not in HARNESS_STATUSES:
        raise ValueError(f"harness result has status {status!r} "
                         f"(expected {', '.join(map(repr, HARNESS_STATUSES))})")
    if status == "ok":
        for key, kind in REQUIRED_OK_FIELDS.items():
            value = document.get(key)
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                continue
            if not isinstance(value, kind) or isinstance(value, bool):
                raise ValueError(f"harness result field {key!r} is missing or not {_a(kind)}")
        for key in LATENCY_FIELDS:
            value = document["latency_ms"].get(key)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise ValueError(f"harness result field latency_ms.{key} is missing")
        _check_ok_numbers(document)
    elif not isinstance(document.get("error"), str):
        raise ValueError(f"a {status} harness result has no 'error' text")
    return document


def install_harness(connection: Connection, directory: str) -> str:
    """Create an owner-only folder on the device and push the harness into it, verified;
    returns the harness's path there."""
    make_dirs(connection, directory)
    push_files(connection, [(device_code.HARNESS_PATH, f"{directory}/harness.py")])
    return f"{directory}/harness.py"


def _control_files(variant_dir: str) -> tuple[str, str, str]:
    """The harness's pid, the lock wait's pid and the stop request, in its folder."""
    return (f"{variant_dir}/harness.pid", f"{variant_dir}/wait.pid", f"{variant_dir}/stop")


def _failed(error: str) -> dict[str, Any]:
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
    def longest_idle_seconds(self) -> float:
        """The longest a run in progress leaves its folder untouched: one variant's wait
        for the lock and its time limit (each variant touches the folder first)."""
        return self.params.lock_timeout_seconds + self.params.timeout_seconds + 60

    def start(self, test_data: Path) -> dict[str, Any]:
        """Create the run folder, push the harness and test inputs, and probe the device;
        one shell command checks the pushed files, removes old run folders and probes
        (each shell start costs the device's login shell). Returns the probe."""
        with self.clock.phase("connect"):
            make_dirs(self.connection, self.run_dir)
            stale = stale_runs(self.connection, self.runs_dir, self.device.keep_runs,
                               self.run_name, idle_seconds=self.longest_idle_seconds)
        python = self.device.harness_python()
        files = [(device_code.HARNESS_PATH, self.harness), (test_data, f"{self.run_dir}/test.npz")]
        with self.clock.phase("push"):
            place_files(self.connection, files)
        with self.clock.phase("check+probe"):
            result = check_then_run(
                self.connection, files,
                then=[*remove_runs_command(self.runs_dir, stale), probe_command(python, self.harness)],
                timeout=self.params.timeout_seconds)
        return read_probe(self.connection, result, python, self.harness)

    def deploy(self, variants: list[dict[str, Any]], variants_dir: Path, staging: Path) -> None:
        """Place every variant's files and spec (no shell: the harness checks their
        sha256 before it loads them)."""
        with self.clock.phase("push"):
            make_dirs(self.connection, *(f"{self.run_dir}/{variant['name']}" for variant in variants))
            for variant in variants:
                spec = write_json(staging / f".{variant['name']}.spec.json", variant["spec"])
                try:
                    place_files(self.connection, [
                        (spec, f"{self.run_dir}/{variant['name']}/spec.json"),
                        *((variants_dir / entry["path"], f"{self.run_dir}/{entry['path']}")
                          for entry in variant["files"])])
                finally:
                    spec.unlink(missing_ok=True)

    def _harness_argv(self, variant: dict[str, Any]) -> list[str]:
        device, params, run_dir = self.device, self.params, self.run_dir
        variant_dir = f"{run_dir}/{variant['name']}"
        argv = [device.harness_python(), self.harness,
                "--artifact", f"{run_dir}/{variant['file']}",
                "--runtime", variant["runtime"],
                "--data", f"{run_dir}/test.npz",
                "--spec", f"{variant_dir}/spec.json",
                "--out", f"{variant_dir}/result.json",
                "--threads", str(device.threads),
                "--warmup-runs", str(params.warmup_runs),
                "--warmup-seconds", str(params.warmup_seconds),
                "--runs", str(params.runs),
                "--seconds", str(params.seconds),
                "--accelerators", json.dumps(device.accelerators.model_dump(exclude_none=True)),
                "--accuracy-samples", str(params.accuracy_samples)]
        for entry in variant["files"]:
            argv += ["--expect-sha256", f"{run_dir}/{entry['path']}={entry['sha256']}"]
        return argv

    def stop_harness(self, variant_dir: str) -> None:
        """Stop a variant's harness command on the device (a stop request: Ctrl-C), in
        whichever state it is: waiting for the device lock (``flock`` is signalled) or
        running (``timeout`` is signalled, and passes it to the harness's process group).
        The stop file catches the moment between the two: the command then never starts."""
        self.connection.run(quote_command([
            "sh", "-c", 'touch "$2"; kill -TERM "$(cat "$0" 2>/dev/null)" 2>/dev/null '
                        '|| kill -TERM "$(cat "$1" 2>/dev/null)" 2>/dev/null; true',
            *_control_files(variant_dir)]), timeout=STOP_TIMEOUT_SECONDS)

    def run(self, variant: dict[str, Any]) -> dict[str, Any]:
        """Run the harness for one deployed variant and fetch its result. A lost
        connection raises DeviceUnreachable once reconnecting fails; nothing is re-run
        blindly."""
        params = self.params
        # One benchmark at a time per device, whoever starts it (another flow run, another
        # orchestrating machine): flock on a file in the device's workdir, held by the
        # kernel for the harness's lifetime, released even if the harness is killed. The
        # harness's own time limit is enforced on the device (coreutils timeout), apart
        # from the wait for the lock; the transport's limit only catches a lost device.
        lock = f"{self.device.workdir}/{LOCK_NAME}"
        variant_dir = f"{self.run_dir}/{variant['name']}"
        pid_file, wait_pid_file, stop_file = _control_files(variant_dir)
        command = owner_only(["touch", "--", self.run_dir])  # alive: see longest_idle_seconds
        # Each stage records its pid for a stop request (sh execs into the next command,
        # keeping its pid): `flock` while it waits for the lock, then `timeout`, which
        # passes a signal on to the harness's whole process group. A stop file written
        # in between keeps the harness from starting at all.
        command += " && " + to_files(
            ["sh", "-c", 'echo $$ > "$0"; exec "$@"', wait_pid_file,
             "flock", "-w", str(params.lock_timeout_seconds), "-E", str(LOCK_BUSY_EXIT), lock,
             "sh", "-c", 'test -e "$1" && exit 143; echo $$ > "$0"; shift; exec "$@"',
             pid_file, stop_file,
             "timeout", "-k", "5", str(params.timeout_seconds), *self._harness_argv(variant)],
            f"{variant_dir}/harness.out", f"{variant_dir}/harness.log")
        timed_out = _failed(f"harness did not finish within timeout_seconds={params.timeout_seconds}")
        try:
            with self.clock.phase("harness"), \
                    stopping_with(lambda: self.stop_harness(variant_dir)):
                try:
                    outcome = self.connection.run(command, timeout=params.timeout_seconds
                                                  + params.lock_timeout_seconds + 30)
                except KeyboardInterrupt:
                    # Ctrl-C in this thread (`edgeflow step benchmark`): the transport
                    # gives up at once and the connection closes on the way out, before
                    # the stopper's own channel could reach the device: stop it now.
                    with contextlib.suppress(Exception):
                        self.stop_harness(variant_dir)
                    raise
        except CommandTimedOut:
            return timed_out
        except DeviceUnreachable:
            raise
        except Exception as error:  # noqa: BLE001 - transport errors: the device, not the run
            return _failed(f"connection to the device lost during the benchmark: "
                           f"{type(error).__name__}: {tail(str(error))}")
        if outcome.exited == -1:  # the SSH channel closed without an exit status
            return _failed("connection to the device lost during the benchmark "
                           "(no exit status: the device or its SSH server went away)")
        if outcome.exited in HARNESS_TIMED_OUT:
            return timed_out
        if outcome.exited == LOCK_BUSY_EXIT:
            return _failed(f"device busy: another benchmark held {lock} for more than "
                           f"lock_timeout_seconds={params.lock_timeout_seconds}")
        try:
            with self.clock.phase("fetch"):
                raw = self.connection.read_file(f"{variant_dir}/result.json",
                                                MAX_RESULT_BYTES + 1)
            document = validate_harness_result(parse_untrusted_json(raw))
        except DeviceUnreachable:
            raise
        except Exception as error:  # noqa: BLE001 - an untrusted or absent result is a failure
            if outcome.exited > 128:
                detail = f"the harness was killed by signal {outcome.exited - 128}"
            else:
                detail = (log_tail(self.connection, f"{variant_dir}/harness.log")
                          or tail(outcome.stderr) or f"exit code {outcome.exited}")
            return _failed(f"no valid harness result ({error}); {detail}")
        return {"status": document["status"], "error": document.get("error"), "harness": document}


def _why_not_runnable(variant: dict[str, Any], device: LocalDevice | SshDevice,
                      device_name: str, facts: dict[str, Any]) -> dict[str, Any] | None:
    """The outcome of a variant the device will not run (with the reason), else None."""
    runtime = variant["runtime"]
    if variant.get("status", "ok") != "ok":
        return not_produced(variant)
    if device.runtimes is not None and runtime not in device.runtimes:
        return {"status": "skipped",
                "error": f"runtime {runtime!r} is not in {device_name}'s runtimes in farm.yaml"}
    if runtime not in facts.get("runtimes", {}):
        return {"status": "skipped", "error": f"runtime {runtime!r} is not installed on {device_name}"}
    return None


def not_produced(variant: dict[str, Any]) -> dict[str, Any]:
    """The result of a variant convert did not produce (skipped) or refused (rejected)."""
    return {"status": variant["status"], "error": f"{variant['status']} by convert: {variant['reason']}"}


def identity(variant: dict[str, Any], device_name: str) -> dict[str, Any]:
    """The fields every result record starts with."""
    return {"variant": variant["name"], "device": device_name, "format": variant["format"],
            "precision": variant["precision"], "source": variant["source"],
            "runtime": variant["runtime"], "size_bytes": variant.get("bytes"),
            "sha256": variant.get("sha256"),
            "declared_execution_precision": (variant.get("spec") or {}).get("execution_precision")}


def check_mcu_fit(device_name: str, device: McuDevice, variants_dir: Path,
                  out_dir: Path) -> DeviceRun:
    """An MCU has no shell: its ``tflm`` variants are checked against flash and RAM
    budgets (capacity minus margin); accuracy is the host TFLite Micro interpreter's,
    measured by convert on the whole test split. Other runtimes are skipped."""
    flash_budget = int(device.flash_kb * 1024 * (1 - device.flash_margin))
    ram_budget = int(device.ram_kb * 1024 * (1 - device.ram_margin))
    with atomic_output_dir(out_dir) as staging:
        paths = []
        for variant in read_index(variants_dir):
            record: dict[str, Any] = {**identity(variant, device_name), "threads": None,
                                      "device_facts": {"class": "mcu", **device.tags}}
            if variant.get("status", "ok") != "ok":
                record.update(not_produced(variant))
            elif variant["runtime"] != "tflm":
                record.update(status="skipped", error=f"{device_name} is a microcontroller: it "
                              "runs TensorFlow Lite Micro (tflm) variants only")
            else:
                details = variant["details"]
                record.update(status="ok", error=None, mcu={
                    "model_bytes": details["model_bytes"], "arena_bytes": details["arena_bytes"],
                    "flash_bytes": device.flash_kb * 1024, "ram_bytes": device.ram_kb * 1024,
                    "flash_budget_bytes": flash_budget, "ram_budget_bytes": ram_budget,
                    "accuracy": variant["accuracy"], "accuracy_samples": variant["check"]["samples"],
                    "ops": details.get("ops", [])})
            paths.append(write_json(staging / f"{variant['name']}.json", record))
    return DeviceRun(device_name, tuple(out_dir / path.name for path in paths), {})


def _check_local_inputs(variants: list[dict[str, Any]], variants_dir: Path, prepared: Path) -> None:
    """Missing inputs here are this machine's problem, not the device's: fail the step."""
    needed = [prepared / "test.npz", *(variants_dir / entry["path"] for variant in variants
                                       if variant.get("status", "ok") == "ok"
                                       for entry in variant["files"])]
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


def benchmark_device(device_name: str, device: LocalDevice | SshDevice | McuDevice,
                     params: BenchmarkParams, variants_dir: Path, prepared: Path, out_dir: Path,
                     connect_to: Callable[..., Connection] = connect) -> DeviceRun:
    """Benchmark every variant on one device, one after another.

    Deploys the harness and test inputs into a new run folder on the device, probes it,
    places the variants it can run, runs each under the device lock, and fetches each
    result. The newest ``keep_runs`` run folders stay on the
    device. Every variant gets a result file, whatever happens to the device.
    """
    if isinstance(device, McuDevice):
        return check_mcu_fit(device_name, device, variants_dir, out_dir)
    variants = read_index(variants_dir)
    _check_local_inputs(variants, variants_dir, prepared)
    session = DeviceSession(device, params, connect_to(device, device_name))
    probe: dict[str, Any] = {}
    outcomes: dict[str, dict[str, Any]] = {}
    device_error: str | None = None
    with atomic_output_dir(out_dir) as staging:
        try:
            try:
                probe = session.start(prepared / "test.npz")
                for variant in variants:
                    reason = _why_not_runnable(variant, device, device_name, probe)
                    if reason is not None:
                        outcomes[variant["name"]] = reason
                session.deploy([variant for variant in variants if variant["name"] not in outcomes],
                               variants_dir, staging)
            except DeviceUnreachable as error:
                device_error = f"device unreachable: {tail(str(error))}"
            except Exception as error:  # noqa: BLE001 - the device fails, the run goes on
                device_error = f"device not usable: {type(error).__name__}: {tail(str(error))}"
            for variant in variants:
                # A stop request (Ctrl-C) ends the device's run here: nothing of it is
                # written (the staging folder is discarded), the results of its last
                # complete run stay, and the next run measures it again.
                raise_if_stopped()
                if variant["name"] in outcomes:
                    continue
                if device_error is not None:
                    outcomes[variant["name"]] = _failed(device_error)
                    continue
                try:
                    outcomes[variant["name"]] = session.run(variant)
                except DeviceUnreachable as error:
                    device_error = f"device unreachable: {tail(str(error))}"
                    outcomes[variant["name"]] = _failed(device_error)
            raise_if_stopped()  # the last variant's harness may have been stopped
        finally:
            session.connection.close()
        facts = device_facts(probe)
        paths = [write_json(staging / f"{variant['name']}.json", {
            **identity(variant, device_name), "threads": device.threads, "device_facts": facts,
            "device_run_dir": session.run_dir,
            **contained_outcome(outcomes[variant["name"]], staging, out_dir, variant["name"])})
            for variant in variants]
    return DeviceRun(device_name, tuple(out_dir / path.name for path in paths), probe,
                     session.run_dir, session.clock.as_dict())
