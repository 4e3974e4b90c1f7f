"""What a fleet of boards costs the orchestrator: edgeflow's benchmark fan-out over N real
OpenSSH boards on loopback (N = 1, 10, 50, 100 by default), each board's harness a
stand-in that sleeps a fixed time.

One OpenSSH server per board (``tests/sshd.py``: its own port, host key and workdir;
all log in as this user with one client key). Each board's farm.yaml entry names as its
``python`` a stand-in script (:func:`write_stand_in`), the way a board's harness
interpreter is configured: asked for the probe, it prints a probe the real harness wrote
once on this machine; asked to benchmark, it sleeps ``--sleep`` seconds and writes a
result the real harness wrote once (so every result is a checked ``ok`` one and the
boards' CPU is no bottleneck). Everything else is edgeflow's own path: the flow's
per-device fan-out (:func:`flows.lifecycle._per_device`: one Prefect task per board,
at most farm.yaml's ``max_parallel`` at once, each task's cache key), the SSH session
(connect, run folder, verified pushes, the check+probe command, the variant pushed, the
harness under the device lock, the result fetched and checked), the result files.

Per N it prints the fan-out's wall time and its ratio to one board's (goal: <= 2 at
N = 100), the orchestrator process's CPU seconds per board (goal: <= 0.05; its own CPU
time, not the boards' sshd/shell processes nor the Prefect server's), the peak count of
SSH connections open from this process (``/proc/net/tcp``), its peak resident
memory during the fan-out (the sampling thread's own CPU is not counted), and the
boards' own CPU per board (their sshd and sessions: on this machine's cores). The tiny
project (one onnx fp32 variant) is built once under
``--root``. Needs root and sshd.

    .venv/bin/python benchmarks/fleet.py [--sizes 1 10 50 100] [--sleep 3]
                                         [--max-parallel N] [--root DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.sshd import SshServer, keygen, sshd_available, start_sshd, stop_sshd  # noqa: E402
from tests.tiny import TINY_PARAMS  # noqa: E402

VARIANT = "onnx-fp32"
GOAL_RATIO, GOAL_CPU = 2.0, 0.05
DEFAULT_PROJECT = Path.home() / ".cache" / "edgeflow" / "fleet-bench" / "tiny"


def tiny_project(root: Path) -> Path:
    """The tiny project (prepare, train, convert) built once under ``root``."""
    from tests.tiny import build_tiny_project

    if not (root / "models" / "variants" / "index.json").is_file() \
            or not (root / "data" / "prepared" / "test.npz").is_file():
        shutil.rmtree(root, ignore_errors=True)
        print(f"building the tiny project in {root} (once)", flush=True)
        build_tiny_project(root)
    return root


def one_variant(project: Path, out: Path) -> Path:
    """A variants folder holding only :data:`VARIANT`: a filtered index and links."""
    from tasks.core.contracts.variants import read_variant_index, write_variant_index

    index = read_variant_index(project / "models" / "variants")
    chosen = [variant for variant in index.variants if variant.name == VARIANT]
    if not chosen:
        raise SystemExit(f"fleet: no {VARIANT} variant in {project}")
    for entry in chosen[0].files or []:
        link = out / entry.path
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to((project / "models" / "variants" / entry.path).resolve())
    write_variant_index(out, index.model_copy(update={"variants": chosen}))
    return out


def canned_answers(project: Path, variants: Path, work: Path) -> tuple[Path, Path]:
    """The real harness's probe and its result for :data:`VARIANT`, from one benchmark
    on this machine (a local board): what the stand-in answers with."""
    from tasks.benchmark import benchmark_device
    from tasks.config import LocalDevice, load_params

    params = load_params(project / "params.yaml").benchmark
    device = LocalDevice(workdir=work / "local", threads=1)
    run = benchmark_device("local", device, params, variants, project / "data" / "prepared",
                           work / "local-results")
    run_dir = Path(run.remote_run_dir or "")
    probe, result = run_dir / "probe.json", run_dir / VARIANT / "result.json"
    if json.loads(result.read_text()).get("status") != "ok":
        raise SystemExit(f"fleet: the real harness did not measure {VARIANT}: {result}")
    shutil.copy(probe, work / "probe.json")
    shutil.copy(result, work / "result.json")
    return work / "probe.json", work / "result.json"


def write_stand_in(path: Path, probe: Path, result: Path, sleep: float) -> Path:
    """A board's harness interpreter stand-in (farm.yaml ``python``), called as the
    harness is (``<python> harness.py --probe`` or ``<python> harness.py ... --out F``)."""
    path.write_text(f"""#!/bin/sh
# edgeflow fleet benchmark: a board's harness stand-in (sleeps; no CPU work)
for arg in "$@"; do
  [ "$arg" = --probe ] && exec cat {shlex.quote(str(probe))}
  [ "$prev" = --out ] && out=$arg
  prev=$arg
done
sleep {sleep}
exec cp {shlex.quote(str(result))} "$out"
""", encoding="utf-8")
    path.chmod(0o755)
    return path


def fleet_project(folder: Path, project: Path, variants: Path, servers: list[SshServer],
                  stand_in: Path, max_parallel: int | None) -> Path:
    """An experiment folder whose farm.yaml holds one SSH board per server (farm.yaml is
    written as JSON, which YAML reads); its data and variants link to the tiny project's."""
    (folder / "data").mkdir(parents=True)
    (folder / "models").mkdir()
    (folder / "data" / "prepared").symlink_to(project / "data" / "prepared")
    (folder / "models" / "variants").symlink_to(variants)
    params = TINY_PARAMS.replace("formats: {tflite: [fp32], onnx: [fp32], openvino: [fp32]}",
                                 "formats: {onnx: [fp32]}")
    (folder / "params.yaml").write_text(params, encoding="utf-8")
    devices = {f"b{index:03d}": {**server.farm_entry(folder / "boards" / f"b{index:03d}",
                                                     str(stand_in), threads=1)}
               for index, server in enumerate(servers)}
    for entry in devices.values():
        entry.update({key: str(value) for key, value in entry.items() if isinstance(value, Path)})
    farm: dict[str, object] = {"devices": devices}
    if max_parallel is not None:
        farm["max_parallel"] = max_parallel
    (folder / "farm.yaml").write_text(json.dumps(farm, indent=1), encoding="utf-8")
    return folder


class Sampler:
    """Samples, every ``period`` s, the SSH connections this process has open to the
    boards' ports (ESTABLISHED in /proc/net/tcp, remote port a board's) and its resident
    memory; keeps the peaks."""

    def __init__(self, ports: set[int], period: float = 0.05) -> None:
        self.ports, self.period = ports, period
        self.peak_connections, self.peak_rss_mb, self.cpu_seconds = 0, 0.0, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _connections(self) -> int:
        inodes = set()
        for fd in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
        count = 0
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                lines = Path(table).read_text().splitlines()[1:]
            except OSError:
                continue
            for line in lines:
                fields = line.split()
                remote_port = int(fields[2].rsplit(":", 1)[1], 16)
                if fields[3] == "01" and remote_port in self.ports and fields[9] in inodes:
                    count += 1
        return count

    def _rss_mb(self) -> float:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak_connections = max(self.peak_connections, self._connections())
            self.peak_rss_mb = max(self.peak_rss_mb, self._rss_mb())
            # This thread's CPU is the measurement's, not the orchestrator's: subtracted.
            self.cpu_seconds = time.thread_time()
            self._stop.wait(self.period)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass(frozen=True)
class FleetRun:
    boards: int
    max_parallel: str
    wall: float
    cpu: float
    board_cpu: float
    connections: int
    rss_mb: float
    ok: int
    problems: tuple[str, ...]


def boards_cpu_seconds(pids: list[int]) -> float:
    """CPU seconds of the boards' sshd listeners and of their finished sessions (the
    sessions' shells, sftp-servers and stand-ins, reaped by their sshd: ``cutime`` and
    ``cstime`` in /proc/<pid>/stat). On a real fleet each board spends its own CPU;
    here every board's shares this machine's cores with the orchestrator."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
    return total / ticks


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_fleet(folder: Path, servers: list[SshServer]) -> FleetRun:
    """edgeflow's benchmark fan-out over the folder's farm, in a Prefect flow run as the
    lifecycle does it; wall and CPU seconds of the fan-out alone."""
    from prefect import flow

    from flows.lifecycle import LifecycleOutcome, _per_device
    from flows.steps import Context
    from tasks.core.contracts.results import read_result

    @flow(name="edgeflow-fleet-benchmark", persist_result=False)
    def fan_out(params_path: str, farm_path: str) -> dict[str, object]:
        ctx = Context.load(Path(params_path), Path(farm_path))
        outcome = LifecycleOutcome()
        with Sampler(ports) as sampler:
            cpu_before, started = cpu_seconds(), time.perf_counter()
            _per_device(ctx, "benchmark", ["benchmark"], outcome)
            wall, cpu = time.perf_counter() - started, cpu_seconds() - cpu_before
        cpu -= sampler.cpu_seconds
        return {"wall": wall, "cpu": cpu, "connections": sampler.peak_connections,
                "rss": sampler.peak_rss_mb, "executed": len(outcome.executed),
                "parallel": ctx.farm.parallelism.boards}

    ports, pids = {server.port for server in servers}, [server.pid for server in servers]
    boards_before = boards_cpu_seconds(pids)
    measured = fan_out(str(folder / "params.yaml"), str(folder / "farm.yaml"))
    time.sleep(0.5)  # the last sessions reaped by their sshd
    boards_cpu = boards_cpu_seconds(pids) - boards_before
    ok, problems = 0, []
    for result in sorted((folder / "results").glob("*/*.json")):
        record = read_result(result)
        if record.status == "ok":
            ok += 1
        else:
            problems.append(f"{result.parent.name}: {record.status}: {record.error}")
    boards = len(json.loads((folder / "farm.yaml").read_text())["devices"])
    return FleetRun(boards, str(measured["parallel"]), float(measured["wall"]),
                    float(measured["cpu"]) / boards, boards_cpu / boards,
                    int(measured["connections"]), float(measured["rss"]), ok, tuple(problems))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 10, 50, 100],
                        help="fleet sizes; the first is the baseline of the ratio")
    parser.add_argument("--sleep", type=float, default=3.0, help="the stand-in's seconds")
    parser.add_argument("--max-parallel", type=int, default=None,
                        help="farm.yaml max_parallel (absent: the default for this machine)")
    parser.add_argument("--root", type=Path, default=DEFAULT_PROJECT,
                        help="a project with the tiny project's onnx-fp32 variant and prepared "
                             "data (tests.tiny); built there once when it has none")
    args = parser.parse_args()
    if os.geteuid() != 0 or not sshd_available():
        print("fleet: needs root and an OpenSSH server (/usr/sbin/sshd)", file=sys.stderr)
        return 2
    from flows.server import launch, prefect_server
    from tasks.config import default_parallelism

    server = launch()
    project = tiny_project(args.root.resolve())
    bound = (default_parallelism().line() if args.max_parallel is None
             else f"farm.yaml max_parallel: {args.max_parallel}")
    print(f"machine: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; stand-in harness "
          f"sleeps {args.sleep} s; one sshd per board; {bound}", flush=True)
    servers: list[SshServer] = []
    runs: list[FleetRun] = []
    with tempfile.TemporaryDirectory(prefix="edgeflow-fleet-") as temporary, prefect_server(server):
        work = Path(temporary)
        variants = one_variant(project, work / "variants")
        probe, result = canned_answers(project, variants, work)
        stand_in = write_stand_in(work / "stand-in-python", probe, result, args.sleep)
        try:
            client_key = work / "client_key"
            keygen(client_key)
            started = time.perf_counter()
            for index in range(max(args.sizes)):
                servers.append(start_sshd(work / "sshd" / f"b{index:03d}", client_key))
            print(f"{len(servers)} sshd started in {time.perf_counter() - started:.1f} s",
                  flush=True)
            # Unreported: the first fan-out imports the SSH and result code and warms
            # Prefect's client; the baseline is a fleet of one on a warm orchestrator.
            run_fleet(fleet_project(work / "warm-up", project, variants, servers[:1], stand_in,
                                    args.max_parallel), servers[:1])
            for size in args.sizes:
                folder = fleet_project(work / f"fleet-{size}", project, variants, servers[:size],
                                       stand_in, args.max_parallel)
                run = run_fleet(folder, servers[:size])
                runs.append(run)
                print(f"N={size}: {run.wall:.2f} s, {run.ok} ok, {len(run.problems)} failed",
                      flush=True)
        finally:
            for ssh in servers:
                stop_sshd(ssh, kill_sessions=True)
    base = runs[0].wall
    print()
    print(f"ratio = wall / wall of N={runs[0].boards}; goals: ratio <= {GOAL_RATIO:g} at the "
          f"largest N, cpu/board <= {GOAL_CPU:g} s")
    print("board cpu/board: the boards' own CPU (sshd, shells, sftp-server, stand-in), "
          "which a real fleet spends on its boards and this machine on its cores")
    print(f"{'N':>4} {'parallel':>8} {'wall s':>7} {'ratio':>6} {'cpu/board s':>11} "
          f"{'peak conns':>10} {'peak RSS MB':>11} {'ok/fail':>8} {'board cpu/board s':>17}")
    for run in runs:
        print(f"{run.boards:>4} {run.max_parallel:>8} {run.wall:>7.2f} {run.wall / base:>6.2f} "
              f"{run.cpu:>11.3f} {run.connections:>10} {run.rss_mb:>11.0f} "
              f"{f'{run.ok}/{len(run.problems)}':>8} {run.board_cpu:>17.3f}")
    problems = [problem for run in runs for problem in run.problems]
    for problem in problems[:10]:
        print(f"  {problem}")
    last = runs[-1]
    verdict = last.wall / base <= GOAL_RATIO and all(run.cpu <= GOAL_CPU for run in runs)
    print(f"goal at N={last.boards}: {'PASS' if verdict else 'FAIL'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
