"""P5: a server's memory and the database's bytes for many paused runs, against one paused run.

Both servers answer the same warm-up requests before their memory is read: the inbox, the run
list, one run's detail (its board from the checkpoints) and /metrics (aggregates over every
table). The runs are real (started through the swarm, paused at the approval of the CEO's
plan); the baseline holds one such run, so that the detail request takes the same path.
"""

from __future__ import annotations

import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import qapten_swarm, start_paused_runs
from bench.http_server import Server, rss, serving
from bench.report import Row
from bench.sizes import Sizes

TARGET_RSS = 20 * 2**20
TARGET_BYTES_PER_RUN = 5 * 1024
WARM_UP_ROUNDS = 20
TABLES = ("checkpoints", "writes", "qapten_proposals", "qapten_events", "qapten_runs")


async def measure(sizes: Sizes) -> list[Row]:
    with (
        tempfile.TemporaryDirectory(prefix="qapten-bench-") as one,
        tempfile.TemporaryDirectory(prefix="qapten-bench-") as many,
    ):
        base = await _state(Path(one), 1)
        full = await _state(Path(many), sizes.paused_runs)
    runs = sizes.paused_runs - 1  # what the many have over the baseline's one
    growth = full["rss"] - base["rss"]
    per_run = (full["bytes"] - base["bytes"]) / runs
    split = {
        table: (full["tables"].get(table, 0) - base["tables"].get(table, 0)) / runs
        for table in sorted({*full["tables"], *base["tables"]})
    }
    rows_per_run = {
        table: (full["rows"][table] - base["rows"][table]) / runs for table in full["rows"]
    }
    numbers: dict[str, Any] = {
        "paused_runs": sizes.paused_runs,
        "paused_runs_made_in_s": full["made_s"],
        "rss_baseline_bytes": base["rss"],
        "rss_bytes": full["rss"],
        "rss_growth_bytes": growth,
        "db_baseline_bytes": base["bytes"],
        "db_bytes": full["bytes"],
        "db_bytes_per_run": per_run,
        "bytes_per_run_by_table": split,
        "rows_per_run_by_table": rows_per_run,
        "split_method": full["method"],
    }
    shown = ", ".join(
        f"{table} {split.get(table, 0) / 1024:.1f}"
        for table in sorted(split, key=lambda name: -split[name])
        if split[table] >= 0.05 * 1024
    )
    figure = (
        f"RSS +{growth / 2**20:.1f} MB ({base['rss'] / 2**20:.0f} -> {full['rss'] / 2**20:.0f} MB) "
        f"with {sizes.paused_runs:,} paused runs; {per_run / 1024:.1f} KB a run in the "
        f"database (KB by table and its indexes: {shown})"
    )
    return [
        Row(
            "P5",
            "server memory and DB bytes, paused runs",
            figure,
            "< 20 MB; <= 5 KB a run",
            growth < TARGET_RSS and per_run <= TARGET_BYTES_PER_RUN,
            numbers,
        )
    ]


async def _state(folder: Path, count: int) -> dict[str, Any]:
    """Make `count` paused runs in a new database in `folder`, then read a warmed-up server's
    memory and the database's bytes."""
    async with qapten_swarm(folder) as swarm:
        started = time.perf_counter()
        await start_paused_runs(swarm, count)
        made = time.perf_counter() - started
        run_id = (await swarm.runs())[0].id
    db_file = folder / "qapten.db"
    with serving(f"sqlite:///{db_file}", log=folder / "server.log") as server:
        await _warm_up(server, run_id)
        memory = rss(server.pid)
    size, tables, method = _bytes(db_file)
    return {
        "rss": memory,
        "made_s": made,
        "bytes": size,
        "tables": tables,
        "method": method,
        "rows": _rows(db_file),
    }


async def _warm_up(server: Server, run_id: str) -> None:
    paths = ("/proposals?status=pending", "/runs", f"/runs/{run_id}", "/metrics")
    async with httpx.AsyncClient(base_url=server.api, headers=server.headers, timeout=60) as client:
        for _ in range(WARM_UP_ROUNDS):
            for path in paths:
                (await client.get(path)).raise_for_status()


def _bytes(db_file: Path) -> tuple[int, dict[str, int], str]:
    """The database's size once its WAL is folded in, and its bytes by table (each table with
    its indexes): from SQLite's dbstat table where it is compiled in, else the sum of the
    rows' lengths (which leaves out page overhead and indexes)."""
    db = sqlite3.connect(db_file, isolation_level=None)
    try:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        (pages,) = db.execute("PRAGMA page_count").fetchone()
        (page_size,) = db.execute("PRAGMA page_size").fetchone()
        try:
            found = db.execute(
                "SELECT coalesce(m.tbl_name, s.name), sum(s.pgsize) FROM dbstat AS s "
                "LEFT JOIN sqlite_master AS m ON m.name = s.name GROUP BY 1"
            ).fetchall()
            method = "dbstat (pages of each table and its indexes)"
        except sqlite3.OperationalError:  # no dbstat in this SQLite build
            found = [(table, _row_bytes(db, table)) for table in _tables(db)]
            method = "sum of row lengths (no dbstat in this SQLite)"
    finally:
        db.close()
    return int(pages) * int(page_size), {str(name): int(n) for name, n in found}, method


def _tables(db: sqlite3.Connection) -> list[str]:
    rows = db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return [str(name) for (name,) in rows]


def _row_bytes(db: sqlite3.Connection, table: str) -> int:
    columns = [row[1] for row in db.execute(f'PRAGMA table_info("{table}")')]
    total = " + ".join(f'coalesce(length("{c}"), 0)' for c in columns) or "0"
    (size,) = db.execute(f'SELECT coalesce(sum({total}), 0) FROM "{table}"').fetchone()
    return int(size)


def _rows(db_file: Path) -> dict[str, int]:
    db = sqlite3.connect(db_file, isolation_level=None)
    try:
        present = set(_tables(db))
        return {
            table: int(db.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0])
            for table in TABLES
            if table in present
        }
    finally:
        db.close()
