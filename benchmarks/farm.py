"""What the farm's orchestration costs per device, for fleets of 1, 4 and 16 SSH devices.

Starts one real OpenSSH server per device on loopback (``tests/sshd.py``), each device
with its own workdir and this machine's interpreter as the board's, and benchmarks the
default variants (tflite, onnx and openvino fp32 of the base model) on N devices at
once, one thread per device as the Prefect flow's ThreadPoolTaskRunner does. Prints per
fleet size its wall time and ratio against the first size, and each device's
orchestration overhead against the 2 s target: ``connect`` (SSH handshake, run folder),
``push`` (harness, test data and artifacts over SFTP, each under a temporary name then
renamed) and ``fetch`` (results back, size-limited). ``check+probe`` is the one device
command before the first benchmark (sha256 of the pushed inputs, old runs removed, the
probe): a login shell and an interpreter on the device; ``+ovh max`` adds it. Harness
commands are not overhead; of their time, ``launch`` is what the device spends before
measuring (login shell, interpreter, imports). ``shell`` is the wall time of one
``true`` run on all N devices at once: their login shells starting together.
``cpu/dev`` is the orchestrator process's own CPU seconds per device (SSH crypto, SFTP,
hashing, parsing): on a real farm the devices' work runs on the devices, here all N
"devices" share this machine's cores. Uses ``models/variants`` and ``data/prepared``
under ``--root`` (made by ``make run``), else trains a tiny model in a scratch folder.
Needs root and sshd. The harness protocol is short on purpose: orchestration is measured.

    .venv/bin/python benchmarks/farm.py [--root .] [--sizes 1 4 16] [--seconds 0.05]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tasks.benchmark import DeviceRun, benchmark_device  # noqa: E402
from tasks.config import BenchmarkParams, Params, SshDevice  # noqa: E402
from tasks.core.contracts.results import read_result  # noqa: E402
from tasks.core.contracts.variants import read_variant_index, write_variant_index  # noqa: E402
from tasks.core.layout import Layout  # noqa: E402
from tests.sshd import SshServer, keygen, sshd_available, start_sshd, stop_sshd  # noqa: E402
from tests.tiny import build_tiny_project  # noqa: E402

# What the orchestrator does per device (the 2 s target), and what the device's own
# login shell and probe add before the first benchmark.
OVERHEAD_PHASES = ("connect", "push", "fetch")
DEVICE_PHASES = ("check+probe",)
TARGET_SECONDS = 2.0


def default_variants(layout: Layout, out: Path) -> Path:
    """A variants folder holding only the default variants: a filtered index.json and
    symlinks to their artifact files."""
    index = read_variant_index(layout.variants)
    pairs = {(fmt, precision) for fmt, precisions in Params().formats.items() for precision in precisions}
    chosen = [variant for variant in index.variants if variant.source == "base"
              and variant.runnable and (variant.format, variant.precision) in pairs]
    if len(chosen) != len(pairs):
        raise SystemExit(f"benchmarks: {layout.variants} lacks some default variants "
                         f"(found {[variant.name for variant in chosen]})")
    for variant in chosen:
        for entry in variant.files or []:
            link = out / entry.path
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to((layout.variants / entry.path).resolve())
    write_variant_index(out, index.model_copy(update={"variants": chosen}))
    return out


def run_fleet(servers: list[SshServer], protocol: BenchmarkParams, variants: Path,
              prepared: Path, work: Path) -> tuple[float, list[DeviceRun]]:
    """Benchmark on every server at once, one thread per device; the fleet's wall seconds."""
    def one(index: int) -> DeviceRun:
        server, name = servers[index], f"dev{index:02d}"
        device = SshDevice(**server.farm_entry(work / "devices" / name, sys.executable, threads=1))
        return benchmark_device(name, device, protocol, variants, prepared, work / "results" / name)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(servers)) as pool:
        runs = list(pool.map(one, range(len(servers))))
    return time.perf_counter() - started, runs


def cpu_seconds() -> float:
    """CPU time of this process: the orchestrator (SSH crypto, SFTP, hashing, parsing).
    The devices' shells and harnesses are sshd's processes, not counted here."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def seconds_in(run: DeviceRun, phases: tuple[str, ...]) -> float:
    return sum(run.phase_seconds.get(phase, 0.0) for phase in phases)


def launch_seconds(run: DeviceRun) -> float:
    """Harness command time not spent inside the harness's own measurement: the login
    shell, the interpreter and imports on the device."""
    inside = 0.0
    for path in run.results:
        harness = read_result(path).document().get("harness") or {}
        if "started_at" in harness and "finished_at" in harness:
            inside += harness["finished_at"] - harness["started_at"]
    return run.phase_seconds.get("harness", 0.0) - inside


def command_floor(servers: list[SshServer], work: Path) -> float:
    """Wall seconds of one SSH command (``true``) run on every server at once, on open
    connections: what the devices' login shells cost when N of them start together
    (the median of 3 tries)."""
    from tasks.farm.transports import SshConnection

    connections = [SshConnection(SshDevice(**server.farm_entry(work, sys.executable)))
                   for server in servers]
    try:
        with ThreadPoolExecutor(max_workers=len(connections)) as pool:
            list(pool.map(lambda connection: connection.run("true"), connections))
            samples = []
            for _ in range(3):
                started = time.perf_counter()
                list(pool.map(lambda connection: connection.run("true"), connections))
                samples.append(time.perf_counter() - started)
        return statistics.median(samples)
    finally:
        for connection in connections:
            connection.close()


def check_results(runs: list[DeviceRun]) -> tuple[int, list[str]]:
    """The count of ``ok`` result records and one line per record that is not."""
    ok, errors = 0, []
    for run in runs:
        for path in run.results:
            record = read_result(path)
            if record.status == "ok":
                ok += 1
            else:
                errors.append(f"{run.device}/{record.variant}: {record.status}: {record.error}")
    return ok, errors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--seconds", type=float, default=0.05, help="timed seconds per variant")
    args = parser.parse_args()
    if os.geteuid() != 0 or not sshd_available():
        print("benchmarks: needs root and an OpenSSH server (/usr/sbin/sshd)", file=sys.stderr)
        return 2
    protocol = BenchmarkParams(warmup_runs=2, warmup_seconds=0.0, runs=20, seconds=args.seconds,
                               accuracy_samples=50, timeout_seconds=300, lock_timeout_seconds=600)
    cores = os.cpu_count() or 1
    print(f"machine: {cores} cores; harness: {protocol.runs} runs / {protocol.seconds} s, "
          f"{protocol.accuracy_samples} accuracy samples, threads=1")
    print(f"note: on a machine with {cores} cores, N devices that are all this same machine share "
          f"{cores} cores, so wall ratio grows with N for CPU-bound harness work, while the "
          "overhead is what the orchestration costs.")
    servers: list[SshServer] = []
    with tempfile.TemporaryDirectory(prefix="edgeflow-farm-bench-") as temporary:
        work = Path(temporary)
        layout = Layout(args.root.resolve())
        if not layout.variants_index.is_file() or not (layout.prepared / "test.npz").is_file():
            print(f"no variants under {layout.root}: training a tiny model in {work / 'tiny'}")
            layout, _ = build_tiny_project(work / "tiny")
        variants = default_variants(layout, work / "variants")
        names = [variant.name for variant in read_variant_index(variants).variants]
        print(f"variants: {', '.join(names)} (from {layout.variants})")
        try:
            client_key = work / "client_key"
            keygen(client_key)
            for index in range(max(args.sizes)):
                servers.append(start_sshd(work / "sshd" / f"dev{index:02d}", client_key))
            header = (f"{'N':>3} {'wall s':>7} {'ratio':>6} {'ovh mean':>9} {'ovh max':>8} "
                      + " ".join(f"{phase:>8}" for phase in OVERHEAD_PHASES)
                      + f" {'check+probe':>11} {'+ovh max':>8} {'harness':>8} {'launch':>7}"
                      + f" {'cpu/dev':>7} {'shell':>6} {'ok/fail':>7}  <2 s")
            rows, problems, total_ok, first_wall = [], [], 0, None
            for size in args.sizes:
                shell = command_floor(servers[:size], work / "floor")
                cpu_before = cpu_seconds()
                wall, runs = run_fleet(servers[:size], protocol, variants, layout.prepared,
                                       work / f"fleet-{size}")
                orchestrator_cpu = (cpu_seconds() - cpu_before) / size
                first_wall = first_wall or wall
                overheads = [seconds_in(run, OVERHEAD_PHASES) for run in runs]
                with_device = [seconds_in(run, OVERHEAD_PHASES + DEVICE_PHASES) for run in runs]
                phases = [statistics.mean(run.phase_seconds.get(phase, 0.0) for run in runs)
                          for phase in OVERHEAD_PHASES]
                check_probe = statistics.mean(seconds_in(run, DEVICE_PHASES) for run in runs)
                harness = statistics.mean(run.phase_seconds.get("harness", 0.0) for run in runs)
                launch = statistics.mean(launch_seconds(run) for run in runs)
                ok, errors = check_results(runs)
                total_ok += ok
                problems.extend(f"N={size} {error}" for error in errors)
                verdict = "PASS" if max(overheads) < TARGET_SECONDS else "FAIL"
                rows.append(f"{size:>3} {wall:>7.2f} {wall / first_wall:>6.2f} "
                            f"{statistics.mean(overheads):>9.3f} {max(overheads):>8.3f} "
                            + " ".join(f"{seconds:>8.3f}" for seconds in phases)
                            + f" {check_probe:>11.3f} {max(with_device):>8.3f}"
                            + f" {harness:>8.3f} {launch:>7.3f} {orchestrator_cpu:>7.3f} {shell:>6.2f}"
                            + f" {f'{ok}/{len(errors)}':>7}  {verdict}")
                print(f"N={size}: done in {wall:.2f} s", flush=True)
        finally:
            for server in servers:
                stop_sshd(server, kill_sessions=True)
    print()
    print("per-device seconds (mean over the fleet unless max); ratio = wall / wall of the first size")
    print(header)
    print("\n".join(rows))
    print(f"results: {total_ok} ok, {len(problems)} failed")
    for problem in problems:
        print(f"  {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
