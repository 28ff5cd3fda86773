"""P4: decisions per second over HTTP, sent by a second process to one uvicorn server.

Every decision approves the plan of a real run (started through the swarm, checkpoints and all,
waiting for a human), so each one also wakes its run: the CEO delegates and the three reports
each think and propose a tool call, in the same server process that records the decisions. Two
figures come out: how fast decisions are recorded (200 answered) while that work piles up
behind them, and how long until every woken run had settled again (waiting on its next three
proposals), from the first decision sent: the rate at which the server carries decisions all
the way through.

Recording and advancing share the server's one event loop: the more woken runs advance at
once, the longer each decision waits for its turn, so the first figure says how responsive the
server stays under the work its own decisions made, not what recording alone would cost.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import qapten_swarm, start_paused_runs
from bench.http_server import ROOT, cpu_seconds, serving
from bench.load import TOKEN_ENV
from bench.report import Row
from bench.sizes import Sizes
from bench.stats import ms
from tests.postgres import available as postgres_available
from tests.postgres import running_cluster

TARGET_RATE = 1_000.0
CONNECTIONS = 16
MAX_LOAD_SECONDS = 300.0
"""The load stops by itself after this long, decided or not."""
MAX_SETTLE_SECONDS = 3_600.0
"""How long the woken runs may take to settle before the benchmark gives up on them."""
POLL = 0.05
PROPOSALS_AFTER_PLAN = 3
"""A woken run settles waiting on one `note` call per report."""


async def measure(sizes: Sizes) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="qapten-bench-") as tmp:
        folder = Path(tmp)
        prepared = folder / "qapten.db"
        started = time.perf_counter()
        async with qapten_swarm(folder) as swarm:
            plans = await start_paused_runs(swarm, sizes.decisions)
        setup = time.perf_counter() - started
        # One set of paused runs, copied for each round: the rounds differ by the moment only.
        ids_file = folder / "plans.txt"
        ids_file.write_text("\n".join(plans) + "\n", encoding="utf-8")
        rounds = [
            await _round(folder, prepared, ids_file, number)
            for number in range(sizes.decision_rounds)
        ]
    middle = sorted(rounds, key=lambda r: r["load_rate_per_s"])[len(rounds) // 2]
    errors = sum(sum(r["load_errors"].values()) for r in rounds)
    carried = all(r["carried"] for r in rounds)
    rates = ", ".join(f"{r['load_rate_per_s']:,.0f}" for r in rounds)
    numbers: dict[str, Any] = {
        "decisions": sizes.decisions,
        "connections": CONNECTIONS,
        "setup_paused_runs_s": setup,
        "rounds": rounds,
        "median_round": middle,
    }
    settle = middle["settle_s"]
    figure = (
        f"{middle['load_rate_per_s']:,.0f} decisions/s recorded, median of "
        f"{len(rounds)} rounds ({rates}); that round: p50 {ms(middle['load_latency_p50_s'])}, "
        f"p99 {ms(middle['load_latency_p99_s'])}, {errors} errors in all rounds, "
        f"{sizes.decisions:,} decisions, {CONNECTIONS} connections; all woken runs settled "
        f"{settle:.1f} s after the load began = {middle['settled_rate_per_s']:,.0f} "
        "decisions/s carried through"
        + ("" if carried else " (INCOMPLETE: see the JSON's rounds)")
        + f"; server CPU {ms(middle['server_cpu_per_decision_s'])} a decision carried "
        f"through; {sizes.decisions:,} paused runs made in {setup:.0f} s"
    )
    return [
        Row(
            "P4",
            "decisions/s over HTTP, load from a 2nd process",
            figure,
            f">= {TARGET_RATE:,.0f}/s, 0 errors",
            middle["load_rate_per_s"] >= TARGET_RATE and errors == 0 and carried,
            numbers,
        ),
        await _record_only(sizes),
    ]


async def _round(folder: Path, prepared: Path, ids_file: Path, number: int) -> dict[str, Any]:
    """One load of decisions on a fresh copy of the prepared runs, then their settling."""
    db_file = folder / f"round-{number}.db"
    await asyncio.to_thread(_copy_database, prepared, db_file)
    with serving(f"sqlite:///{db_file}", log=folder / f"server-{number}.log") as server:
        cpu = [cpu_seconds(server.pid)]
        load = await _run_load(server.api, server.token, ids_file)
        cpu.append(cpu_seconds(server.pid))
        settled_at = await _settled(db_file, load)
        cpu.append(cpu_seconds(server.pid))
    outcome = await asyncio.to_thread(_outcome, db_file)
    settle = settled_at - load["started_at"] if settled_at is not None else float("nan")
    expected = PROPOSALS_AFTER_PLAN * load["ok"]
    return {
        **{f"load_{key}": value for key, value in load.items()},
        "settle_s": settle,
        "settled_rate_per_s": load["ok"] / settle if settled_at is not None else 0.0,
        **outcome,
        "expected_next_proposals": expected,
        "carried": settled_at is not None and outcome["next_proposals"] == expected,
        # The server's CPU while the load ran, and in all until the runs settled: what each
        # decision costs carried all the way through, on one core.
        "server_cpu_load_s": cpu[1] - cpu[0],
        "server_cpu_total_s": cpu[2] - cpu[0],
        "server_cpu_per_decision_s": (cpu[2] - cpu[0]) / max(1, load["ok"]),
    }


async def _record_only(sizes: Sizes) -> Row:
    """The same load against a replica of a scaled-out deployment (issue 7): PostgreSQL, and a
    server that only records each decision and enqueues its run for the workers (none run
    here: what is timed is the replica alone, the jobs wait in the queue)."""
    what = "decisions/s over HTTP, record-only replica (PostgreSQL)"
    target = f">= {TARGET_RATE:,.0f}/s, 0 errors"
    if (missing := postgres_available()) is not None:
        return Row("P4", what, f"not measured: {missing}", target, False, {})
    with tempfile.TemporaryDirectory(prefix="qapten-bench-") as tmp, running_cluster() as pg:
        folder = Path(tmp)
        db = pg.new_database()
        started = time.perf_counter()
        async with qapten_swarm(folder, db=db) as swarm:
            plans = await start_paused_runs(swarm, sizes.decisions)
        setup = time.perf_counter() - started
        ids_file = folder / "plans.txt"
        ids_file.write_text("\n".join(plans) + "\n", encoding="utf-8")
        with serving(db, log=folder / "server.log", record_only=True) as server:
            cpu = cpu_seconds(server.pid)
            load = await _run_load(server.api, server.token, ids_file)
            cpu = cpu_seconds(server.pid) - cpu
        jobs = await asyncio.to_thread(_jobs_waiting, db)
    errors = sum(load["errors"].values())
    numbers: dict[str, Any] = {
        "decisions": sizes.decisions,
        "connections": CONNECTIONS,
        "setup_paused_runs_s": setup,
        **{f"load_{key}": value for key, value in load.items()},
        "server_cpu_per_decision_s": cpu / max(1, load["ok"]),
        "jobs_enqueued": jobs,
    }
    figure = (
        f"{load['rate_per_s']:,.0f} decisions/s recorded and enqueued (p50 "
        f"{ms(load['latency_p50_s'])}, p99 {ms(load['latency_p99_s'])}, {errors} errors, "
        f"{load['ok']:,} decisions, {CONNECTIONS} connections); {jobs:,} runs enqueued for "
        f"workers; server CPU {ms(numbers['server_cpu_per_decision_s'])} a decision"
    )
    met = load["rate_per_s"] >= TARGET_RATE and errors == 0 and jobs == load["ok"]
    return Row("P4", what, figure, target, met, numbers)


def _copy_database(source: Path, target: Path) -> None:
    """SQLite's online backup: the whole database, whatever its WAL still holds."""
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    src.close()
    dst.close()


def _jobs_waiting(db: str) -> int:
    import psycopg

    with psycopg.connect(db) as conn:
        row = conn.execute(
            "SELECT count(*) FROM procrastinate_jobs WHERE status = 'todo'"
        ).fetchone()
    return int(row[0]) if row else 0


async def _run_load(api: str, token: str, ids_file: Path) -> dict[str, Any]:
    """bench/load.py in its own process, so that the client does not share the server's loop
    (nor the GIL of this process)."""
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "bench.load", api, str(ids_file)),
        *("--connections", str(CONNECTIONS), "--max-seconds", str(MAX_LOAD_SECONDS)),
        cwd=ROOT,
        env={**os.environ, TOKEN_ENV: token},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"the load generator failed ({proc.returncode}):\n{err.decode()}")
    result: dict[str, Any] = json.loads(out)
    return result


async def _settled(db_file: Path, load: dict[str, Any]) -> float | None:
    """The wall-clock time when no run is left ``running``: each decided run has either gone
    round to its next proposals (``waiting``) or ended. None if that takes too long."""
    deadline = load["started_at"] + MAX_SETTLE_SECONDS
    while time.time() < deadline:
        if await asyncio.to_thread(_running, db_file) == 0:
            return time.time()
        await asyncio.sleep(POLL)
    return None


def _running(db_file: Path) -> int:
    # A connection per look, in autocommit: no read transaction stays open to hold back the
    # server's WAL checkpoints.
    db = sqlite3.connect(db_file, isolation_level=None)
    try:
        (count,) = db.execute(
            "SELECT count(*) FROM qapten_runs WHERE status = 'running'"
        ).fetchone()
    finally:
        db.close()
    return int(count)


def _outcome(db_file: Path) -> dict[str, int]:
    """What the woken runs did: their next proposals (one `note` call per report), failures."""
    db = sqlite3.connect(db_file, isolation_level=None)
    try:
        (proposals,) = db.execute(
            "SELECT count(*) FROM qapten_proposals WHERE status = 'pending' AND act = 'note'"
        ).fetchone()
        (failed,) = db.execute(
            "SELECT count(*) FROM qapten_runs WHERE status = 'failed'"
        ).fetchone()
    finally:
        db.close()
    return {"next_proposals": int(proposals), "failed_runs": int(failed)}
