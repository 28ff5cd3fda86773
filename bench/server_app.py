"""The app a real uvicorn process serves in the HTTP benchmarks (P3, P4, P5), set by environment.

QAPTEN_BENCH_DB      database URL (``sqlite:///FILE``, or ``postgresql://...``)
QAPTEN_BENCH_QUEUE   set (PostgreSQL): the server only records and enqueues, as a replica of
                     ``qapten serve --workers`` does; no worker takes the jobs
QAPTEN_ADMIN_TOKEN   the admin token (read by ApiSettings, like every ``QAPTEN_`` setting)

Serve it with ``python -m uvicorn --factory bench.server_app:make_app``; bench/http_server.py
does, on a free loopback port.
"""

from __future__ import annotations

import os

from fastapi import FastAPI

from bench.mission import chart, model, note
from qapten import Swarm
from qapten.api import ApiSettings, create_app
from qapten.queue import RunQueue

DB_ENV = "QAPTEN_BENCH_DB"
QUEUE_ENV = "QAPTEN_BENCH_QUEUE"


def make_app() -> FastAPI:
    """The bench org on the endless scripted model, so that any number of runs can advance."""
    db = os.environ[DB_ENV]
    swarm = Swarm(
        chart(),
        model=model(),
        db=db,
        tools=[note],
        sweep_interval=None,
        queue=RunQueue(db) if os.environ.get(QUEUE_ENV) else None,
    )
    # The load comes from one token, far over the default 600/minute: the limit would measure
    # itself (429s) instead of the server. Settings given in code win over the environment.
    settings = ApiSettings(rate_limit="off")
    return create_app(swarm, settings)
