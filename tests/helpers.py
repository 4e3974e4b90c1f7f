"""Helpers and assertions shared by the device tests."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tasks.config import BenchmarkParams

if TYPE_CHECKING:
    from tasks.benchmark import DeviceRun
    from tasks.config import SshDevice
    from tests.sshd import SshServer

# A short protocol for the farm tests: they check orchestration, not latency.
FARM_QUICK = BenchmarkParams(warmup_runs=2, warmup_seconds=0.0, runs=10, seconds=0.01,
                             max_seconds=0.05, accuracy_samples=30, timeout_seconds=120)


def records(run: DeviceRun) -> dict[str, dict[str, Any]]:
    """A device run's result records by variant name."""
    from tasks.core.files import read_json

    return {path.stem: read_json(path) for path in run.results}


def with_field(document: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """A deep copy of a JSON ``document`` with one (possibly nested: ``latency_ms.p50``)
    field set to ``value``: a harness result forged one field at a time."""
    copy = json.loads(json.dumps(document))
    *parents, key = dotted.split(".")
    target = copy
    for parent in parents:
        target = target[parent]
    target[key] = value
    return copy


def flip_last_byte(path: Path | str) -> None:
    """Change a file in place, whatever its last byte was (writing a fixed byte would
    change nothing where the file already holds it). In a weights file that is a weight:
    the file still loads, and computes something else."""
    with open(path, "r+b") as handle:
        handle.seek(-1, 2)
        last = handle.read(1)[0]
        handle.seek(-1, 2)
        handle.write(bytes([last ^ 0xFF]))


def index_entries(variants_dir: Path) -> list[dict[str, Any]]:
    """The variants of ``index.json`` in ``variants_dir``, read through their contract,
    as the JSON documents the file holds."""
    from tasks.core.contracts.variants import read_variant_index

    return read_variant_index(variants_dir).document()["variants"]


def ssh_device(server: SshServer, workdir: Path, **changes: Any) -> SshDevice:
    """The server as a farm device that may run tflite and onnxruntime, retrying fast.
    The "board" is this machine: its interpreter has every runtime."""
    from tasks.config import SshDevice

    fields = server.farm_entry(workdir, sys.executable, runtimes=["tflite", "onnxruntime"],
                               retry_backoff_seconds=0.2)
    return SshDevice(**{**fields, **changes})


def fork_safe(function: Any, *args: Any, **kwargs: Any) -> Any:
    """``function(*args, **kwargs)``, or under mutmut (``MUTANT_UNDER_TEST`` set) the same
    call in a spawned interpreter with the same mutant active: mutmut runs each mutant's
    tests in a process forked from one that has run TensorFlow, whose thread pools do not
    survive a fork (Keras there hangs). Arguments, result and exception must pickle."""
    if not os.environ.get("MUTANT_UNDER_TEST"):
        return function(*args, **kwargs)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(function, *args, **kwargs).result()


def mutated_module() -> str | None:
    """The module of the mutant mutmut is testing now (``MUTANT_UNDER_TEST`` is
    ``<module>.x_<function>__mutmut_<n>``); None outside a mutant's test run (no mutmut,
    or its stats and clean runs)."""
    mutant = os.environ.get("MUTANT_UNDER_TEST", "")
    return mutant.rpartition(".")[0] if "__mutmut_" in mutant else None


def _clean_build(build: Any, folder: Path) -> list[str]:
    """In a spawned interpreter: ``build(folder / "project")`` with no mutant active;
    returns the project modules the build imported."""
    os.environ["MUTANT_UNDER_TEST"] = "clean build"  # no module is named so: originals run
    build(folder / "project")
    return sorted(name for name in sys.modules if name.partition(".")[0] in {"tasks", "flows"})


def built_once_per_mutation_run(build: Any, root: Path) -> None:
    """``build(root)``, which writes a project into ``root`` and imports project modules
    to do it. Under mutmut it runs once, with no mutant active, into a folder kept in
    mutmut's working folder (``mutants/``), and each mutant's test run copies that folder,
    unless the mutant's module is one the build imports (it could change what the build
    makes: built again, fork-safe). The tiny project takes 15-60 s to build on two cores,
    once per mutant otherwise."""
    module = mutated_module()
    if module is None:
        fork_safe(build, root)
        return
    kept = Path.cwd() / ".tests-built-once" / build.__name__
    if not (kept / "imported.json").is_file():
        staging = kept.with_name(f"{kept.name}.{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        imported = fork_safe(_clean_build, build, staging)
        (staging / "imported.json").write_text(json.dumps(imported), encoding="utf-8")
        try:
            staging.rename(kept)  # atomic: another mutant's run may have kept one first
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
    if module in json.loads((kept / "imported.json").read_text(encoding="utf-8")):
        fork_safe(build, root)
    else:
        shutil.copytree(kept / "project", root, dirs_exist_ok=True, symlinks=True)


def bench_device(tiny_project: Any, name: str, target: Any, out: Path,
                 params: BenchmarkParams = FARM_QUICK, **kwargs: Any) -> DeviceRun:
    """Benchmark the tiny project's variants on one device."""
    from tasks.benchmark import benchmark_device

    return benchmark_device(name, target, params, tiny_project.layout.variants,
                            tiny_project.layout.prepared, out, **kwargs)


def scripted_python(folder: Path, body: str, probe: str | None = None) -> str:
    """An interpreter on the "device" (a shell script written in ``folder``) that runs
    ``body`` (a shell snippet; $out is the harness's --out path) instead of the harness,
    and the probe for real, or prints ``probe`` (a JSON text) as the probe's answer."""
    probe_branch = (f"cat <<'EOF'\n{probe}\nEOF\nexit 0" if probe is not None
                    else f'exec "{sys.executable}" "$@"')
    script = folder / "device-python"
    script.write_text(
        "#!/bin/sh\n"
        f'case "$*" in *--probe*)\n{probe_branch}\n;; esac\n'
        'out=$(printf "%s\\n" "$@" | sed -n "/^--out$/{n;p}")\n'
        f"{body}\n", encoding="utf-8")
    script.chmod(0o700)
    return str(script)


def assert_device_tidy(workdir: Path) -> None:
    """Only edgeflow's run folders, no half-pushed file, nothing readable by others."""
    from tasks.farm.push import RUN_NAME

    runs = workdir / "runs"
    assert runs.is_dir(), "the device run folder was never created"
    assert all(RUN_NAME.match(run.name) for run in runs.iterdir())
    for path in [workdir, *workdir.rglob("*")]:
        assert not path.name.endswith(".part"), path
        if path.is_symlink():  # a venv's link to the system interpreter: no mode of its own
            continue
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, f"{path} is readable by others"


def processes_mentioning(text: str) -> list[str]:
    """Command lines of the running processes that contain ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(cmdline)
    return found


def processes_left(text: str, within: float = 10.0) -> list[str]:
    """:func:`processes_mentioning` once they are gone, or as they stand after ``within``
    seconds: a stop is asynchronous (a stopper thread signals the board over SSH), and a
    signalled process takes a moment to exit on a busy machine."""
    deadline = time.monotonic() + within
    while (left := processes_mentioning(text)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def harness_cpu_seconds(workdir: str) -> float:
    """CPU seconds used so far by the harness process itself (``python .../harness.py
    --artifact ...``) running under ``workdir``; 0.0 while none runs. Not its shell,
    ``flock`` or ``timeout`` wrappers, whose command lines mention the same arguments."""
    ticks = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if (len(argv) > 2 and argv[1].decode(errors="replace").endswith("/harness.py")
                and workdir in argv[1].decode(errors="replace") and b"--artifact" in argv):
            return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
    return 0.0


def stop_when(work: Any, ready: Any, what: str, timeout: float = 60) -> tuple[BaseException | None, float]:
    """Run ``work()`` in a thread, request a stop (Ctrl-C's path) once ``ready()`` holds,
    and return what ``work`` raised (None if nothing) and the seconds it took to stop."""
    import threading
    import time

    from tasks.core import interrupt

    raised: list[BaseException | None] = [None]

    def run() -> None:
        try:
            work()
        except BaseException as error:  # noqa: BLE001 - the Interrupted is the result
            raised[0] = error

    interrupt.reset()
    worker = threading.Thread(target=run)
    worker.start()
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            assert time.monotonic() < deadline, f"{what} never happened"
            assert worker.is_alive(), f"the work ended before {what}: {raised[0]!r}"
            time.sleep(0.1)
        stopped = time.monotonic()
        interrupt.request_stop()
        worker.join(timeout=30)
        assert not worker.is_alive(), "the work did not stop"
        return raised[0], time.monotonic() - stopped
    finally:
        interrupt.reset()


def copy_project_files(names: tuple[str, ...], project: Path) -> None:
    """Copy these files and folders of this repository (no ``__pycache__``) into
    ``project``: a scratch project that runs the real code."""
    import shutil

    repo = Path(__file__).resolve().parents[1]
    project.mkdir(parents=True, exist_ok=True)
    for name in names:
        source = repo / name
        if source.is_dir():
            shutil.copytree(source, project / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, project / name)


def benchmarked_copy(tiny_project: Any, root: Path, farm_text: str, params: Any) -> Any:
    """A copy of the tiny project at ``root`` (prepared data, variants, base model,
    training metrics) with ``farm_text`` as its farm.yaml, each device benchmarked with
    ``params`` and the results selected: its Layout."""
    from tasks.benchmark import benchmark_device
    from tasks.config import load_farm
    from tasks.core.layout import Layout
    from tasks.select import select

    source, layout = tiny_project.layout, Layout(root)
    shutil.copytree(source.prepared, layout.prepared)
    shutil.copytree(source.variants, layout.variants)
    shutil.copytree(source.base_model, layout.base_model)
    layout.train_metrics.parent.mkdir(parents=True)
    shutil.copyfile(source.train_metrics, layout.train_metrics)
    history = source.train_metrics.with_name("train_history.json")
    shutil.copyfile(history, layout.train_metrics.with_name(history.name))
    (root / "farm.yaml").write_text(farm_text, encoding="utf-8")
    farm = load_farm(root / "farm.yaml")
    for name, device in farm.devices.items():
        benchmark_device(name, device, params, layout.variants, layout.prepared,
                         layout.device_results(name))
    select(tiny_project.params.requirements, farm, layout.results,
           layout.base_model / "reference.json", layout.reports, layout.train_metrics.parent)
    return layout


def final_task_runs(client: Any, flow_run_id: Any, names: Iterable[str] = (),
                    timeout: float = 60) -> list[Any]:
    """The task runs of a finished flow run once every one has a final state and one of
    each of ``names`` (a task run's name less its ``-<id>`` suffix) is there (Prefect's
    sync ``client``). Task runs and their states reach the server as events, recorded a
    moment after the flow run's own final state: read at once, some are missing or have
    no state yet; on a loaded machine the last steps' were missing."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    by_id = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
    deadline = time.monotonic() + timeout
    while True:
        tasks = client.read_task_runs(flow_run_filter=by_id)
        present = {task.name.rsplit("-", 1)[0] for task in tasks}
        if (all(task.state and task.state.is_final() for task in tasks)
                and set(names) <= present) or time.monotonic() > deadline:
            return list(tasks)
        time.sleep(0.2)


@contextmanager
def read_only_tree(root: Path) -> Iterator[None]:
    """``root`` and everything in it made read-only for this process for the block, in a
    way that really refuses writes: ``chmod -R a-w`` for a user; as root, whom permission
    bits do not stop, the immutable attribute (``chattr -R +i``). Skips the test where
    neither is possible (a file system without the attribute, no CAP_LINUX_IMMUTABLE)."""
    import subprocess

    if os.geteuid() != 0:
        modes = {path: path.stat().st_mode for path in [root, *root.rglob("*")]}
        for path, mode in modes.items():
            path.chmod(mode & ~0o222)
        try:
            yield
        finally:
            for path, mode in modes.items():
                path.chmod(mode)
        return
    made = subprocess.run(["chattr", "-R", "+i", str(root)], capture_output=True, text=True)
    if made.returncode != 0:
        subprocess.run(["chattr", "-R", "-i", str(root)], capture_output=True)
        pytest.skip(f"root ignores permission bits and chattr +i failed here: "
                    f"{made.stderr.strip() or made.returncode}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-R", "-i", str(root)], check=True)


def release_folder(folder: Path) -> Path:
    """``folder`` laid out as a release's device code is (tasks/release/bundle.py): the
    predictor's launcher and the package shipped, the release manager, a check image, and
    a manifest listing each with its sha256 and the digest file of the manifest. No
    artifact: what these tests look at is refused before one is loaded."""
    from tasks.core import device_code

    folder.mkdir(parents=True, exist_ok=True)
    files = device_code.ship(folder, ("predict",))
    shutil.copyfile(device_code.RELEASES_PATH, folder / "releases.py")
    (folder / "check").mkdir()
    (folder / "check" / "0000.png").write_bytes(b"an image")
    files += ["releases.py", "check/0000.png"]
    entries = [{"path": name, "sha256": hashlib.sha256((folder / name).read_bytes()).hexdigest()}
               for name in files]
    manifest = json.dumps({"manifest_version": 2, "files": entries}).encode()
    (folder / "manifest.json").write_bytes(manifest)
    (folder / "manifest.sha256").write_text(f"{hashlib.sha256(manifest).hexdigest()}  "
                                            "manifest.json\n")
    return folder
