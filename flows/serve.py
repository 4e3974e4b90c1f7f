"""``edgeflow serve`` / ``edgeflow stop`` (``make serve`` / ``make stop``): the project's
deployments running locally, in the background.

``serve`` starts, in this order, and says for each what it did:

1. a Prefect server on 127.0.0.1 (``prefect server start``; its database is in
   ``PREFECT_HOME``, ``~/.prefect`` unless set), waited for until its API answers;
2. the work pool(s) ``prefect.yaml``'s deployments name, created when missing
   (type ``process``: flow runs are subprocesses of the worker, on this machine);
3. the deployments: ``prefect --no-prompt deploy --all`` in the project folder, the
   command a person would type (Prefect records that folder as where runs start);
   skipped when this server already has the deployments of this very ``prefect.yaml``
   and flow file (``deployed.json`` records what they were made from);
4. a worker on that pool (``prefect worker start --pool NAME``).

Each process is started in a session of its own (it outlives the ``make`` that started
it) with its log and a record (pid, kernel start time, command) under
``<project>/.edgeflow/serve/``. A server or worker whose record names a live process is
left running and reused: ``serve`` twice changes nothing but the deployments (which
``prefect deploy`` updates in place). ``stop`` signals exactly the recorded processes, by
pid, after checking that the pid still names the process started (the kernel's start
time: a pid re-used by another program is never signalled), and their process groups
(uvicorn and flow runs started under them); it waits for them to exit. Nothing is
looked up by name.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from flows.server import api_healthy
from tasks.config import parse_yaml
from tasks.core.errors import EdgeflowError

DEFAULT_PORT = 4200
HOST = "127.0.0.1"
SERVER_START_TIMEOUT = 180.0  # a first start migrates the database: slow on 2 busy cores
STOP_TIMEOUT = 30.0
# How often the worker asks for scheduled runs (Prefect's default is 10 s): a triggered
# run starts within this, not within ten seconds.
WORKER_QUERY_SECONDS = "1"


class ServeError(EdgeflowError):
    """The local Prefect server, pool, deployments or worker could not be started."""


@dataclass(frozen=True)
class Service:
    """A background process ``serve`` starts and ``stop`` stops."""

    name: str
    folder: Path

    @property
    def record(self) -> Path:
        return self.folder / f"{self.name}.json"

    @property
    def log(self) -> Path:
        return self.folder / f"{self.name}.log"

    def read(self) -> dict[str, Any] | None:
        try:
            record = json.loads(self.record.read_text(encoding="utf-8"))
            return record if isinstance(record, dict) and isinstance(record.get("pid"), int) \
                else None
        except (OSError, ValueError):
            return None

    def running(self) -> dict[str, Any] | None:
        """The record, when its process is alive and is the one started (not a re-used
        pid); None otherwise."""
        record = self.read()
        if record is None or not _alive(record["pid"], record.get("start_time")):
            return None
        return record


def serve_folder(project: Path) -> Path:
    return project / ".edgeflow" / "serve"


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (``/proc/PID/stat`` field 22):
    with the pid, it names one process for the life of the machine."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[19]) if fields[0] != "Z" else None  # a zombie has exited


def _prefect(*args: str) -> list[str]:
    return [sys.executable, "-m", "prefect", *args]


def api_url(port: int) -> str:
    return f"http://{HOST}:{port}/api"


def _environment(url: str) -> dict[str, str]:
    env = {**os.environ, "PREFECT_API_URL": url, "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_WORKER_QUERY_SECONDS": WORKER_QUERY_SECONDS}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def _spawn(service: Service, argv: list[str], env: dict[str, str], cwd: Path,
           **facts: Any) -> dict[str, Any]:
    service.folder.mkdir(parents=True, exist_ok=True)
    with service.log.open("ab") as log:
        process = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                   stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    record = {"pid": process.pid, "start_time": _start_time(process.pid),
              "command": argv, **facts}
    service.record.write_text(json.dumps(record, indent=1), encoding="utf-8")
    return record


def _port_taken(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex((HOST, port)) == 0


def _tail(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    return lines[-1].strip()[:300] if lines else "empty log"


def _start_server(service: Service, port: int,
                  project: Path) -> tuple[dict[str, Any], str]:
    """The running server's record and what was done."""
    running = service.running()
    if running is not None:
        url = running["api_url"]
        if not api_healthy(url):
            raise ServeError(f"server (pid {running['pid']}) does not answer at {url}: "
                             f"`edgeflow stop`, then serve again (log: {service.log})")
        return running, f"server: already running (pid {running['pid']}) at {url}"
    if _port_taken(port):
        raise ServeError(f"port {port} on {HOST} is taken by another program: "
                         "serve --port PORT picks another")
    url = api_url(port)
    record = _spawn(service, _prefect("server", "start", "--host", HOST, "--port", str(port)),
                    _environment(url), project, api_url=url)
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while not api_healthy(url):
        if service.running() is None:
            raise ServeError(f"the Prefect server exited at start: {_tail(service.log)} "
                             f"(log: {service.log})")
        if time.monotonic() > deadline:
            raise ServeError(f"the Prefect server did not answer at {url} within "
                             f"{SERVER_START_TIMEOUT:.0f} s (log: {service.log})")
        time.sleep(0.3)
    return record, f"server: started (pid {record['pid']}) at {url}, log {service.log}"


def work_pools(project: Path) -> list[str]:
    """The work pools ``prefect.yaml``'s deployments name, in order."""
    path = project / "prefect.yaml"
    try:
        document = parse_yaml(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ServeError(f"{path}: cannot be read ({error})") from None
    pools = [((deployment or {}).get("work_pool") or {}).get("name")
             for deployment in document.get("deployments") or []]
    if not pools or not all(isinstance(pool, str) and pool for pool in pools):
        raise ServeError(f"{path}: every deployment needs work_pool.name")
    return list(dict.fromkeys(pools))


@contextmanager
def _client(url: str) -> Iterator[Any]:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: url}), get_client(sync_client=True) as client:
        yield client


def _reset_device_slots(url: str) -> str:
    """A server started afresh holds no lease: slots its database still counts as held
    (a run it was serving when it stopped) would never be freed (:mod:`flows.devices`)."""
    from flows.devices import reset_device_slots

    with _client(url) as client:
        tags = reset_device_slots(client)
    return f"device limits: {', '.join(tags) or 'none yet'} (slots freed)"


def _ensure_pool(url: str, pool: str) -> str:
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.process import ProcessWorker

    with _client(url) as client:
        try:
            found = client.read_work_pool(pool)
            return f"work pool {pool}: exists ({found.type})"
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(
                name=pool, type="process",
                base_job_template=ProcessWorker.get_default_base_job_template()))
            return f"work pool {pool}: created (process)"


def _deployment_inputs(project: Path, server: dict[str, Any]) -> dict[str, Any]:
    """What the deployments on the server follow from: the server process, prefect.yaml
    and the flow files it names (their parameters become the deployments' schema)."""
    import hashlib

    text = (project / "prefect.yaml").read_text(encoding="utf-8")
    entrypoints = sorted({(deployment or {}).get("entrypoint", "").split(":")[0]
                          for deployment in (parse_yaml(text) or {}).get("deployments") or []})
    digest = hashlib.sha256(text.encode())
    for entry in entrypoints:
        path = project / entry
        digest.update(entry.encode() + (path.read_bytes() if path.is_file() else b"missing"))
    return {"server": [server["pid"], server["start_time"]], "project": str(project),
            "sha256": digest.hexdigest()}


def _deployed_names(url: str) -> list[str]:
    with _client(url) as client:
        return sorted(f"{client.read_flow(deployment.flow_id).name}/{deployment.name}"
                      for deployment in client.read_deployments())


def _deploy(folder: Path, url: str, project: Path, server: dict[str, Any]) -> str:
    """``prefect --no-prompt deploy --all`` in ``project``, unless this server already has
    the deployments of this very prefect.yaml and flow code (then nothing to do)."""
    stamp = folder / "deployed.json"
    inputs = _deployment_inputs(project, server)
    try:
        up_to_date = json.loads(stamp.read_text(encoding="utf-8")) == inputs
    except (OSError, ValueError):
        up_to_date = False
    if up_to_date:
        return f"deployments: up to date: {', '.join(_deployed_names(url))} (run from {project})"
    log = folder / "deploy.log"
    with log.open("wb") as out:
        done = subprocess.run(_prefect("--no-prompt", "deploy", "--all"), cwd=project,
                              env=_environment(url), stdin=subprocess.DEVNULL, stdout=out,
                              stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        raise ServeError(f"`prefect deploy --all` failed: {_tail(log)} (log: {log})")
    stamp.write_text(json.dumps(inputs), encoding="utf-8")
    return f"deployments: {', '.join(_deployed_names(url))} (run from {project})"


# How long a worker just started must stay up to count as started: one that exits sooner
# (no such pool, a bad API URL) is an error, with its log's last line.
WORKER_SETTLE_SECONDS = 0.5


def _start_worker(service: Service, url: str, pool: str, project: Path) -> str:
    running = service.running()
    if running is not None:
        if running.get("api_url") == url:
            return f"worker: already running (pid {running['pid']}) on pool {pool}"
        _stop(service)  # a worker of an earlier server: it would poll nothing
    record = _spawn(service, _prefect("worker", "start", "--pool", pool), _environment(url),
                    project, api_url=url, pool=pool)
    time.sleep(WORKER_SETTLE_SECONDS)
    if service.running() is None:
        raise ServeError(f"the worker exited at start: {_tail(service.log)} "
                         f"(log: {service.log})")
    return f"worker: started (pid {record['pid']}) on pool {pool}, log {service.log}"


def serve(project: Path, port: int = DEFAULT_PORT,
          say: Callable[[str], None] = print) -> str:
    """Start (or find running) the server, pools, deployments and worker of ``project``;
    returns the API URL. One line per part through ``say``."""
    project = project.resolve()
    pools = work_pools(project)
    folder = serve_folder(project)
    folder.mkdir(parents=True, exist_ok=True)
    server, line = _start_server(Service("server", folder), port, project)
    say(line)
    url = server["api_url"]
    if line.startswith("server: started"):
        say(_reset_device_slots(url))
    for pool in pools:
        say(_ensure_pool(url, pool))
    say(_deploy(folder, url, project, server))
    # One worker serves the first pool (the project's deployments share one).
    say(_start_worker(Service("worker", folder), url, pools[0], project))
    say(f"export PREFECT_API_URL={url}   # then `prefect deployment run ...`, "
        "`edgeflow run` on this server; UI at " + url.removesuffix("/api"))
    return url


def _alive(pid: int, start_time: Any) -> bool:
    return _start_time(pid) == start_time


def _stop(service: Service) -> str:
    record = service.read()
    if record is None:
        return f"{service.name}: not running"
    pid = record["pid"]
    if not _alive(pid, record.get("start_time")):
        service.record.unlink(missing_ok=True)
        return (f"{service.name}: not running (pid {pid} is no longer the process started; "
                "record removed)")
    # Started with a session of its own, so its process group is its pid: that reaches
    # the children it started (uvicorn, flow runs) and nothing else.
    group = pid if os.getpgid(pid) == pid else None
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(group, sig) if group is not None else os.kill(pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + STOP_TIMEOUT
        while _alive(pid, record.get("start_time")) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not _alive(pid, record.get("start_time")):
            break
    if _alive(pid, record.get("start_time")):
        raise ServeError(f"{service.name} (pid {pid}) did not exit after SIGKILL")
    service.record.unlink(missing_ok=True)
    return f"{service.name}: stopped (pid {pid})"


def stop(project: Path, say: Callable[[str], None] = print) -> None:
    """Stop the worker, then the server, that ``serve`` started for ``project``."""
    folder = serve_folder(project.resolve())
    for name in ("worker", "server"):
        say(_stop(Service(name, folder)))
