"""A real PostgreSQL for tests: Debian's ``postgresql`` binaries (initdb, pg_ctl) make a
cluster in a temporary folder and serve it on a free loopback port, with password
(scram-sha-256) logins. PostgreSQL refuses to run as root: as root the cluster belongs to
the ``postgres`` system user (``runuser``). Started and stopped by whoever starts it."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.sshd import free_port

USER, PASSWORD = "mlflow", "mlflow-team-password"


@dataclass(frozen=True)
class Postgres:
    host: str
    port: int
    root: Path
    bin: Path
    runner: tuple[str, ...]  # how its commands run: as the postgres user when we are root

    def uri(self, database: str) -> str:
        """The database's SQLAlchemy URI, without its password (``PGPASSWORD`` gives it)."""
        return f"postgresql://{USER}@{self.host}:{self.port}/{database}"


def unavailable() -> str | None:
    """Why no PostgreSQL can start here, None when one can."""
    if postgres_bin() is None:
        return "PostgreSQL is not installed (Debian's postgresql; `make system-deps` as root)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root without a postgres user to run PostgreSQL as"
    return None


def postgres_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                   key=lambda path: int(path.parts[-3]) if path.parts[-3].isdigit() else 0)
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def start_postgres(databases: tuple[str, ...]) -> Postgres:
    """A new cluster with ``databases`` (owned by :data:`USER`), listening on 127.0.0.1.
    Its folder is made under the system's temporary folder: the postgres user cannot
    reach pytest's (mode 0700, root's)."""
    root = Path(tempfile.mkdtemp(prefix="edgeflow-postgres-"))
    runner: tuple[str, ...] = ()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        runner = ("runuser", "-u", "postgres", "--")
    binaries = postgres_bin()
    assert binaries is not None, unavailable()
    password_file = root / "password"
    password_file.write_text(PASSWORD + "\n")
    if runner:
        shutil.chown(password_file, "postgres")
    server = Postgres("127.0.0.1", free_port(), root, binaries, runner)
    _run(server, "initdb", "-D", str(root / "data"), "-U", USER, "--auth=scram-sha-256",
         f"--pwfile={password_file}", "--no-sync", "-E", "UTF8")
    _run(server, "pg_ctl", "-D", str(root / "data"), "-l", str(root / "log"), "-w", "-t", "60",
         "-o", f"-p {server.port} -k {root} -c listen_addresses={server.host} -c fsync=off "
               "-c full_page_writes=off", "start")
    import psycopg

    with psycopg.connect(host=server.host, port=server.port, user=USER, password=PASSWORD,
                         dbname="postgres", autocommit=True) as connection:
        for database in databases:
            connection.execute(f'CREATE DATABASE "{database}"')
    return server


def _run(server: Postgres, program: str, *args: str) -> None:
    done = subprocess.run([*server.runner, str(server.bin / program), *args],
                          capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{program} failed: {done.stderr[-800:]}{done.stdout[-400:]}")


def stop_postgres(server: Postgres) -> None:
    """Stop it at once (a test cluster: nothing to keep) and remove its folder."""
    try:
        _run(server, "pg_ctl", "-D", str(server.root / "data"), "-m", "immediate", "stop")
    finally:
        shutil.rmtree(server.root, ignore_errors=True)
