"""A throwaway PostgreSQL cluster for tests and benchmarks: made in a temporary folder, started
on a free loopback port, and stopped and deleted at the end.

`initdb` and `pg_ctl` refuse to run as root, so as root they run as the ``postgres`` user (the
folder is handed to that user). Run as a module to keep one up by hand::

    python -m tests.postgres        # prints its URL; Ctrl-C stops and deletes it
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.servers import free_port

PG_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
# Durability is not wanted from a cluster that is deleted after the tests: no fsync, no waiting
# for the WAL at commit. Connections: several servers, workers and their pools at once.
SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "500",
    "shared_buffers": "128MB",
}


def pg_tool(name: str) -> str | None:
    """The path of a PostgreSQL server program (initdb, pg_ctl), or None if not installed."""
    found = shutil.which(name)
    if found:
        return found
    for folder in PG_BIN_DIRS:
        if (folder / name).exists():
            return str(folder / name)
    return None


def available() -> str | None:
    """None when a cluster can be made here, else why not."""
    missing = [name for name in ("initdb", "pg_ctl") if pg_tool(name) is None]
    if missing:
        return f"PostgreSQL's server programs are not installed ({', '.join(missing)})"
    return None


def _as_server_user(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


class Cluster:
    """A running cluster; `new_database()` gives each test a database of its own."""

    def __init__(self, folder: Path, port: int) -> None:
        self.folder = folder
        self.port = port
        self._names = itertools.count(1)

    @property
    def url(self) -> str:
        return self.database_url("postgres")

    def database_url(self, name: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def new_database(self, prefix: str = "t") -> str:
        """Create an empty database and return its URL."""
        import psycopg

        name = f"{prefix}_{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            # FILE_COPY: copying the tiny template's files beats WAL-logging them block by block.
            conn.execute(f'CREATE DATABASE "{name}" STRATEGY FILE_COPY')
        return self.database_url(name)


@contextmanager
def running_cluster() -> Iterator[Cluster]:
    """Make, start, yield, and finally stop and delete a PostgreSQL cluster."""
    reason = available()
    if reason is not None:
        raise RuntimeError(reason)
    initdb, pg_ctl = pg_tool("initdb"), pg_tool("pg_ctl")
    assert initdb is not None and pg_ctl is not None
    folder = Path(tempfile.mkdtemp(prefix="qapten-pg-"))
    data = folder / "data"
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    port = free_port()
    started = False
    try:
        _run(
            _as_server_user(
                [initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"]
            )
        )
        options = " ".join(f"-c {k}={v}" for k, v in SETTINGS.items())
        options += f" -p {port} -k {folder} -c listen_addresses=127.0.0.1"
        log = folder / "server.log"
        _run(
            _as_server_user(
                [pg_ctl, "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60", "start"]
            )
        )
        started = True
        cluster = Cluster(folder, port)
        _wait_until_ready(cluster)
        yield cluster
    finally:
        if started:
            subprocess.run(
                _as_server_user([pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"]),
                capture_output=True,
                check=False,
            )
        shutil.rmtree(folder, ignore_errors=True)


def _run(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}")


def _wait_until_ready(cluster: Cluster, timeout: float = 30) -> None:
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        try:
            with psycopg.connect(cluster.url, connect_timeout=2):
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


if __name__ == "__main__":
    with running_cluster() as cluster:
        print(cluster.url, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
