"""Step ``benchmark``: deploy each variant to a device, run the harness there, fetch
and validate its result.

Reads params ``benchmark``, the device's entry in ``farm.yaml``,
``models/variants/`` and ``data/prepared/test.npz``. Writes
``results/<device>/<variant>.json``: the variant's identity, ``status`` (``ok``,
``failed`` or ``skipped``), ``error`` and the raw harness result under ``harness``.

The device is probed first (host facts, importable runtimes); a variant whose runtime
the device lacks is ``skipped`` with that reason. A harness that fails, hangs past the
timeout or returns garbage gives a ``failed`` result with the reason; the other
variants still run. Results from the device are untrusted: size-limited and checked.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from invoke.exceptions import CommandTimedOut

from tasks import harness
from tasks.config import BenchmarkParams, LocalDevice, McuDevice, SshDevice
from tasks.convert import read_index
from tasks.devices import Connection, connect, device_python, quote_command
from tasks.files import atomic_output_dir, write_json

MAX_RESULT_BYTES = 1 << 20
LOCK_NAME = ".benchmark.lock"
LOCK_BUSY_EXIT = 75  # EX_TEMPFAIL: flock's exit status when the lock was not taken in time
HARNESS_TIMED_OUT = {124, 137}  # coreutils timeout: TERM sent / KILL needed
HARNESS_PATH = Path(harness.__file__)
REQUIRED_OK_FIELDS = {"latency_ms": dict, "throughput_fps": float, "accuracy": float,
                      "peak_rss_mb": float, "load_ms": float, "runtime": dict}


@dataclass(frozen=True)
class DeviceRun:
    """What one device produced: the result files and the probe facts."""

    device: str
    results: tuple[Path, ...]
    probe: dict[str, Any]


def tail(text: str, limit: int = 300) -> str:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return (lines[-1] if lines else "")[-limit:]


def probe_device(connection: Connection, python: str, remote_harness: str,
                 timeout: float) -> dict[str, Any]:
    result = connection.run(quote_command([python, remote_harness, "--probe"]), timeout=timeout)
    if not result.ok:
        raise RuntimeError(f"probe failed (exit {result.exited}): {tail(result.stderr)}")
    return parse_untrusted_json(result.stdout.encode())


def _reject_constant(name: str) -> Any:
    raise ValueError(f"device returned a non-finite number ({name})")


def parse_untrusted_json(raw: bytes) -> dict[str, Any]:
    """A JSON object from a device, refused when too large or not an object."""
    if len(raw) > MAX_RESULT_BYTES:
        raise ValueError(f"device returned {len(raw)} bytes, more than {MAX_RESULT_BYTES}")
    document = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    if not isinstance(document, dict):
        raise ValueError("device returned JSON that is not an object")
    return document


def validate_harness_result(document: dict[str, Any]) -> dict[str, Any]:
    """Check the fields the report relies on; raise ValueError naming the first bad one."""
    status = document.get("status")
    if status not in {"ok", "failed"}:
        raise ValueError(f"harness result has status {status!r} (expected 'ok' or 'failed')")
    if status == "ok":
        for key, kind in REQUIRED_OK_FIELDS.items():
            value = document.get(key)
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                continue
            if not isinstance(value, kind) or isinstance(value, bool):
                raise ValueError(f"harness result field {key!r} is missing or not a {kind.__name__}")
        for key in ("p50", "p90", "p99", "mean"):
            value = document["latency_ms"].get(key)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise ValueError(f"harness result field latency_ms.{key} is missing")
    return document


def _harness_argv(python: str, remote_harness: str, run_dir: str, variant: dict[str, Any],
                  device: LocalDevice | SshDevice, params: BenchmarkParams) -> list[str]:
    variant_dir = f"{run_dir}/{variant['name']}"
    return [python, remote_harness,
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
            "--accuracy-samples", str(params.accuracy_samples)]


def push(connection: Connection, local: Path, remote: str) -> None:
    # A temporary name then a rename: a reader never sees half a file.
    connection.put(local, remote + ".part")
    moved = connection.run(quote_command(["mv", "-f", remote + ".part", remote]))
    if not moved.ok:
        raise RuntimeError(f"cannot place {remote} on the device: {tail(moved.stderr)}")


def install_harness(connection: Connection, directory: str) -> str:
    """Create an owner-only folder on the device and push the harness into it; returns
    the harness's path there."""
    connection.run(quote_command(["mkdir", "-p", "-m", "700", directory]))
    push(connection, HARNESS_PATH, f"{directory}/harness.py")
    return f"{directory}/harness.py"


def _run_variant(connection: Connection, python: str, remote_harness: str, run_dir: str,
                 variant: dict[str, Any], variants_dir: Path, device: LocalDevice | SshDevice,
                 params: BenchmarkParams, staging: Path) -> dict[str, Any]:
    variant_dir = f"{run_dir}/{variant['name']}"
    connection.run(quote_command(["mkdir", "-p", variant_dir]))
    for entry in variant["files"]:
        push(connection, variants_dir / entry["path"], f"{run_dir}/{entry['path']}")
    spec_file = staging / f".{variant['name']}.spec.json"
    write_json(spec_file, variant["spec"])
    push(connection, spec_file, f"{variant_dir}/spec.json")
    spec_file.unlink()

    # One benchmark at a time per device, whoever starts it (another flow run, another
    # orchestrating machine): flock on a file in the device's workdir, held by the kernel
    # for the harness's lifetime, released even if the harness is killed. The harness's
    # own time limit is enforced on the device (coreutils timeout), apart from the wait
    # for the lock; the transport's limit only catches a lost device.
    lock = f"{device.workdir}/{LOCK_NAME}"
    command = quote_command(["flock", "-w", str(params.lock_timeout_seconds), "-E",
                             str(LOCK_BUSY_EXIT), lock,
                             "timeout", "-k", "5", str(params.timeout_seconds),
                             *_harness_argv(python, remote_harness, run_dir, variant, device, params)])
    timed_out = {"status": "failed",
                 "error": f"harness did not finish within timeout_seconds={params.timeout_seconds}"}
    try:
        outcome = connection.run(command, timeout=params.timeout_seconds
                                 + params.lock_timeout_seconds + 30)
    except CommandTimedOut:
        return timed_out
    except Exception as error:  # noqa: BLE001 - transport errors: the device, not the run
        return {"status": "failed", "error": f"harness did not finish: {type(error).__name__}: "
                                             f"{tail(str(error))}"}
    if outcome.exited in HARNESS_TIMED_OUT:
        return timed_out
    if outcome.exited == LOCK_BUSY_EXIT:
        return {"status": "failed",
                "error": f"device busy: another benchmark held {lock} for more than "
                         f"lock_timeout_seconds={params.lock_timeout_seconds}"}
    fetched = staging / f".{variant['name']}.result.json"
    try:
        connection.get(f"{variant_dir}/result.json", fetched)
        document = validate_harness_result(parse_untrusted_json(fetched.read_bytes()))
    except Exception as error:  # noqa: BLE001 - an untrusted or absent result is a failure
        detail = tail(outcome.stderr) or f"exit code {outcome.exited}"
        return {"status": "failed", "error": f"no valid harness result ({error}); {detail}"}
    finally:
        fetched.unlink(missing_ok=True)
    return {"status": document["status"], "error": document.get("error"), "harness": document}


def _run_or_skip(connection: Connection, python: str, remote_harness: str, run_dir: str,
                 variant: dict[str, Any], variants_dir: Path, device: LocalDevice | SshDevice,
                 device_name: str, params: BenchmarkParams, staging: Path,
                 facts: dict[str, Any]) -> dict[str, Any]:
    runtime = variant["runtime"]
    if variant.get("status", "ok") != "ok":
        return not_produced(variant)
    if runtime not in facts.get("runtimes", {}):
        return {"status": "skipped", "error": f"runtime {runtime!r} is not installed on {device_name}"}
    if device.runtimes is not None and runtime not in device.runtimes:
        return {"status": "skipped",
                "error": f"runtime {runtime!r} is not in {device_name}'s runtimes in farm.yaml"}
    return _run_variant(connection, python, remote_harness, run_dir, variant, variants_dir,
                        device, params, staging)


def not_produced(variant: dict[str, Any]) -> dict[str, Any]:
    """The result of a variant convert did not produce (skipped) or refused (rejected)."""
    return {"status": variant["status"], "error": f"{variant['status']} by convert: {variant['reason']}"}


def identity(variant: dict[str, Any], device_name: str) -> dict[str, Any]:
    """The fields every result record starts with."""
    return {"variant": variant["name"], "device": device_name, "format": variant["format"],
            "precision": variant["precision"], "source": variant["source"],
            "runtime": variant["runtime"], "size_bytes": variant.get("bytes"),
            "sha256": variant.get("sha256")}


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


def benchmark_device(device_name: str, device: LocalDevice | SshDevice | McuDevice,
                     params: BenchmarkParams, variants_dir: Path, prepared: Path, out_dir: Path,
                     connect_to: Callable[[Any], Connection] = connect) -> DeviceRun:
    """Benchmark every variant on one device, one after another."""
    if isinstance(device, McuDevice):
        return check_mcu_fit(device_name, device, variants_dir, out_dir)
    variants = read_index(variants_dir)
    test_data = prepared / "test.npz"
    python = device_python(device)
    run_dir = f"{device.workdir}/runs/{uuid.uuid4().hex[:12]}"
    connection = connect_to(device)
    records: list[tuple[str, dict[str, Any]]] = []
    with atomic_output_dir(out_dir) as staging:
        try:
            try:
                remote_harness = install_harness(connection, run_dir)
                push(connection, test_data, f"{run_dir}/test.npz")
                facts = probe_device(connection, python, remote_harness, params.timeout_seconds)
                device_error = None
            except Exception as error:  # noqa: BLE001 - the device fails, the run goes on
                facts, device_error = {}, f"device not usable: {type(error).__name__}: {tail(str(error))}"
            for variant in variants:
                outcome = (_run_or_skip(connection, python, remote_harness, run_dir, variant,
                                        variants_dir, device, device_name, params, staging, facts)
                           if device_error is None else {"status": "failed", "error": device_error})
                records.append((variant["name"], {
                    **identity(variant, device_name), "threads": device.threads,
                    "device_facts": facts.get("host", {}), **outcome}))
        finally:
            try:
                connection.run(quote_command(["rm", "-rf", run_dir]))
            except Exception:  # noqa: BLE001 - cleanup on a lost device is best effort
                pass
            connection.close()
        paths = [write_json(staging / f"{name}.json", record) for name, record in records]
    return DeviceRun(device_name, tuple(out_dir / path.name for path in paths), facts)
