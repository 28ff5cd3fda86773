"""A real uvicorn process serving bench/server_app.py on a free loopback port, always stopped.

The HTTP benchmarks time what a client of ``qapten serve`` sees: a separate server process, on
127.0.0.1, with its own event loop, reached over TCP. Its memory is read from outside (`rss`).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

from bench.server_app import DB_ENV, QUEUE_ENV
from tests.servers import running_server

ROOT = Path(__file__).resolve().parent.parent
API = "/api/v1"
FACTORY = "bench.server_app:make_app"


@dataclass(frozen=True)
class Server:
    url: str
    """``http://127.0.0.1:PORT``"""
    token: str
    """The admin token the server was given."""
    pid: int

    @property
    def api(self) -> str:
        return self.url + API

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@contextmanager
def serving(
    db: str, *, log: Path, timeout: float = 120, record_only: bool = False
) -> Iterator[Server]:
    """Serve the bench app on `db` until the block ends; yield once ``/healthz`` answers.
    `record_only` (PostgreSQL): the server records decisions and enqueues the runs, as a
    ``qapten serve --workers`` replica, and no worker advances them.

    The tests' server runner starts it (output to `log`, shown if it dies before answering;
    stopped whatever happens in the block).
    """
    token = secrets.token_urlsafe(24)
    env = {**os.environ, DB_ENV: db, "QAPTEN_ADMIN_TOKEN": token}
    if record_only:
        env[QUEUE_ENV] = "1"
    processes: list[subprocess.Popen[bytes]] = []

    def command(port: int) -> list[str]:
        return [
            *(sys.executable, "-m", "uvicorn", "--factory", FACTORY),
            *("--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"),
        ]

    with running_server(
        command, log=log, env=env, timeout=timeout, started=processes.append
    ) as url:
        yield Server(url, token, processes[0].pid)


def rss(pid: int) -> int:
    """Resident memory of process `pid`, in bytes."""
    return int(psutil.Process(pid).memory_info().rss)


def cpu_seconds(pid: int) -> float:
    """User and system CPU time process `pid` has used so far (all its threads)."""
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)
