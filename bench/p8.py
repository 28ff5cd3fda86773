"""P8: missions per minute with 1, 2 and 4 worker processes: how throughput scales out.

Issue 7's deployment, as a user runs it: one ``qapten serve --workers`` process that records and
enqueues, and W ``qapten worker`` processes that advance the runs, all on one PostgreSQL
database (a throwaway cluster, a fresh database for each W). The chart, bench/farm/, is the
bench mission's shape with every act automatic, so that no human decision is waited for: the CEO
delegates to three roles, each writes one file in the run's workspace and delivers, the CEO
delivers the synthesis. Its scripted model answers each call after a fixed 50 ms, as a remote
model would: 8 calls a mission, 4 of them one after another (at least 200 ms a mission).

In each round, M missions are started over HTTP at once (a few connections), then ``GET /runs``
is polled until every one has ended. A round's throughput is M over the time from its first
run's creation to its last run's end, both as the server recorded them (so the polling interval
does not count); the figure is the median of the rounds, which run on the same processes one
after another. A run that fails or does not end in time is an error.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.http_server import cpu_seconds
from bench.mission import MODEL_CALLS_PER_MISSION, WORKERS
from bench.report import Row
from bench.sizes import Sizes
from bench.stats import median, ms
from tests.postgres import Cluster, available, running_cluster
from tests.servers import running_process, running_server

FARM = Path(__file__).resolve().parent / "farm"
CHART = FARM / "org.yaml"
SCRIPT = FARM / "script.json"
LATENCY_MS = float(json.loads(SCRIPT.read_text(encoding="utf-8"))["latency_ms"])
CONCURRENCY = 8
"""Runs each worker process advances at once (the same for every worker count)."""
FILES_PER_MISSION = len(WORKERS)
"""Each of the three reports writes one file in the run's workspace."""
START_CONNECTIONS = 8
"""Connections that start the missions over HTTP."""
POLL = 0.2
READY_TIMEOUT = 120.0
"""Seconds for the server to answer and the workers to register with the queue."""
MAX_SECONDS = 120.0
"""How long the missions of one round may take before the rest count as errors."""
ENDED = ("done", "failed", "cancelled")
MISSION = "Launch the product in Europe."
TARGET = "scales with workers (report)"


def qapten() -> str:
    """The venv's ``qapten`` executable, next to this Python."""
    return str(Path(sys.executable).parent / "qapten")


async def measure(sizes: Sizes) -> list[Row]:
    reason = available()
    if reason is not None:
        return [
            Row("P8", "missions/min by worker processes", f"not measured: {reason}", TARGET, None,
                {"measured": 0})
        ]  # fmt: skip
    results: dict[int, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="qapten-bench-") as tmp, running_cluster() as cluster:
        for workers in sizes.farm_workers:
            folder = Path(tmp) / f"w{workers}"
            folder.mkdir()
            results[workers] = await _one_count(
                cluster, folder, workers, sizes.farm_missions, sizes.farm_rounds
            )
    return _rows(results)


async def _one_count(
    cluster: Cluster, folder: Path, workers: int, missions: int, rounds: int
) -> dict[str, Any]:
    """Serve, start `workers` workers, run `rounds` rounds of `missions` missions; every process
    stopped after."""
    db = cluster.new_database("p8")
    token = secrets.token_urlsafe(24)
    env = {**os.environ, "QAPTEN_ADMIN_TOKEN": token, "QAPTEN_RATE_LIMIT": "off"}
    data_dir = folder / "data"
    common = ["--db", db, "--model", f"scripted:{SCRIPT}", "--data-dir", str(data_dir)]

    def serve(port: int) -> list[str]:
        return [qapten(), "serve", str(CHART), "--workers", *common, "--port", str(port)]

    server: list[subprocess.Popen[bytes]] = []
    with (
        running_server(
            serve, log=folder / "server.log", env=env, timeout=READY_TIMEOUT, started=server.append
        ) as url,
        ExitStack() as stack,
    ):
        procs = [
            stack.enter_context(_worker(common, folder / f"worker-{i}.log", env))
            for i in range(workers)
        ]
        await _registered(db, procs, folder)
        groups = {
            "workers": [p.pid for p in procs],
            "server": [server[0].pid],
            "postgres": _cluster_pids(cluster),
        }
        before, machine = _cpu(groups), psutil.cpu_times()
        wall = time.perf_counter()
        outcomes = [await _run_missions(f"{url}/api/v1", token, missions) for _ in range(rounds)]
        wall = time.perf_counter() - wall
        groups["postgres"] = _cluster_pids(cluster)  # backends that came since count in full
        after, idle = _cpu(groups), psutil.cpu_times().idle - machine.idle
    written = sum(1 for p in (data_dir / "workspaces").glob("*/*") if p.is_file())
    cores = psutil.cpu_count() or 1
    rates = [o["missions_per_min"] for o in outcomes]
    return {
        "workers": workers,
        "concurrency": CONCURRENCY,
        "latency_ms": LATENCY_MS,
        "rounds": rounds,
        "missions_per_round": missions,
        "missions": missions * rounds,
        "done": sum(o["done"] for o in outcomes),
        "errors": sum(o["errors"] for o in outcomes),
        "missions_per_min": median(rates),
        "missions_per_min_min": min(rates),
        "missions_per_min_max": max(rates),
        "round_s": median([o["elapsed_s"] for o in outcomes]),
        "start_requests_s": median([o["start_requests_s"] for o in outcomes]),
        "files_written": written,
        # The CPU the workers, the server and PostgreSQL used while the missions ran, and how
        # busy the whole machine was (anything else running included): what bounds the figure
        # once the model's latency no longer does.
        **{
            f"{group}_cpu_per_mission_s": sum(
                seconds - before[group].get(pid, 0.0) for pid, seconds in after[group].items()
            )
            / (missions * rounds)
            for group in after
        },
        "machine_busy": min(1.0, max(0.0, 1 - idle / (wall * cores))),
        "statuses": {s: sum(o["statuses"][s] for o in outcomes) for s in ENDED},
    }


def _cluster_pids(cluster: Cluster) -> list[int]:
    """The cluster's postmaster and every process it runs (a backend per connection)."""
    postmaster = int((cluster.folder / "data" / "postmaster.pid").read_text().split()[0])
    return [postmaster, *(p.pid for p in psutil.Process(postmaster).children(recursive=True))]


def _cpu(groups: dict[str, list[int]]) -> dict[str, dict[int, float]]:
    """CPU seconds used so far by each process of each group (processes gone are left out)."""
    found: dict[str, dict[int, float]] = {}
    for group, pids in groups.items():
        found[group] = {}
        for pid in pids:
            with suppress(psutil.Error):
                found[group][pid] = cpu_seconds(pid)
    return found


@contextmanager
def _worker(common: list[str], log: Path, env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """A ``qapten worker`` process, stopped (SIGTERM, then SIGKILL) when the block ends."""
    command = [qapten(), "worker", str(CHART), *common]
    command += ["--concurrency", str(CONCURRENCY), "--shutdown-timeout", "5"]
    with running_process(command, log=log, env=env) as proc:
        yield proc


async def _registered(db: str, procs: list[subprocess.Popen[bytes]], folder: Path) -> None:
    """Wait until every worker has registered with procrastinate (it then takes jobs)."""
    import psycopg

    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        for i, proc in enumerate(procs):
            if proc.poll() is not None:
                log = (folder / f"worker-{i}.log").read_text(encoding="utf-8")
                raise RuntimeError(f"worker {i} exited with {proc.returncode}:\n{log}")
        async with await psycopg.AsyncConnection.connect(db, autocommit=True) as conn:
            cursor = await conn.execute("SELECT count(*) FROM procrastinate_workers")
            row = await cursor.fetchone()
        if row is not None and row[0] >= len(procs):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"the workers did not register within {READY_TIMEOUT} s")
        await asyncio.sleep(0.1)


async def _run_missions(api: str, token: str, missions: int) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=START_CONNECTIONS)
    async with httpx.AsyncClient(headers=headers, limits=limits, timeout=60) as client:
        started_at = time.perf_counter()
        gate = asyncio.Semaphore(START_CONNECTIONS)

        async def start() -> str:
            async with gate:
                response = await client.post(f"{api}/runs", json={"mission": MISSION})
                response.raise_for_status()
                return str(response.json()["id"])

        ids = set(await asyncio.gather(*(start() for _ in range(missions))))
        start_s = time.perf_counter() - started_at
        runs: dict[str, dict[str, Any]] = {}
        deadline = started_at + MAX_SECONDS
        while True:
            runs = {r["id"]: r for r in await _list_runs(client, api) if r["id"] in ids}
            if all(r["status"] in ENDED for r in runs.values()) and len(runs) == len(ids):
                break
            if time.perf_counter() > deadline:
                break
            await asyncio.sleep(POLL)
        observed_s = time.perf_counter() - started_at
    done = [r for r in runs.values() if r["status"] == "done"]
    ended = [r for r in runs.values() if r["status"] in ENDED]
    first = min(_at(r["created_at"]) for r in runs.values())
    last = max((_at(r["updated_at"]) for r in ended), default=first)
    elapsed = (last - first).total_seconds()
    return {
        "missions": missions,
        "done": len(done),
        "errors": missions - len(done),
        "statuses": {s: sum(1 for r in runs.values() if r["status"] == s) for s in ENDED},
        "start_requests_s": start_s,
        "elapsed_s": elapsed,
        "observed_s": observed_s,
        "missions_per_min": len(done) / elapsed * 60 if elapsed > 0 else 0.0,
    }


async def _list_runs(client: httpx.AsyncClient, api: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 500}
    while True:
        response = await client.get(f"{api}/runs", params=params)
        response.raise_for_status()
        page = response.json()
        found.extend(page["items"])
        if not page.get("next_cursor"):
            return found
        params["cursor"] = page["next_cursor"]


def _at(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp)


def _rows(results: dict[int, dict[str, Any]]) -> list[Row]:
    how = f"{CONCURRENCY} runs at once a worker, model {LATENCY_MS:.0f} ms a call"
    rows = []
    for workers, r in results.items():
        complete = r["errors"] == 0 and r["files_written"] == FILES_PER_MISSION * r["missions"]
        spread = (
            f"median of {r['rounds']} rounds of {r['missions_per_round']} missions, "
            f"{r['missions_per_min_min']:,.0f}-{r['missions_per_min_max']:,.0f}"
            if r["rounds"] > 1
            else f"{r['missions_per_round']} missions"
        )
        figure = (
            f"{r['missions_per_min']:,.0f} missions/min ({spread}; {r['errors']} errors; "
            f"{MODEL_CALLS_PER_MISSION} model calls a mission, {how}); CPU a mission: workers "
            f"{ms(r['workers_cpu_per_mission_s'])}, server {ms(r['server_cpu_per_mission_s'])}, "
            f"PostgreSQL {ms(r['postgres_cpu_per_mission_s'])}; machine "
            f"{r['machine_busy']:.0%} busy"
        )
        if r["errors"]:
            figure += f"; ended: {r['statuses']}"
        rows.append(
            Row(
                "P8",
                f"missions/min, {workers} worker process{'es' if workers > 1 else ''}",
                figure,
                TARGET,
                None if complete else False,
                {k: v for k, v in r.items() if k != "statuses"},
            )
        )
    base = results.get(1)
    if base and base["missions_per_min"] > 0:
        ratios = {
            w: r["missions_per_min"] / base["missions_per_min"]
            for w, r in results.items()
            if w != 1
        }
        figure = ", ".join(f"{w} workers / 1 = {x:.2f}x" for w, x in ratios.items())
        rows.append(
            Row(
                "P8",
                "missions/min scaling with worker processes",
                f"{figure} ({how}; {psutil.cpu_count()} cores)",
                TARGET,
                None,
                {f"ratio_{w}_to_1": x for w, x in ratios.items()},
            )
        )
    return rows
