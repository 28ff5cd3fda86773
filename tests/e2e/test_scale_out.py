"""Scale-out on loopback: PostgreSQL, two `qapten serve --workers` replicas that only record and
enqueue, two `qapten worker` processes that advance the runs; one worker is SIGKILLed while it
holds a run. Every run must end, every external effect must happen once, and the event stream
of each replica must show every event of every run, in order and without a gap.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from httpx_sse import aconnect_sse

from ..postgres import Cluster
from ..servers import ROOT, running_process, running_server

pytestmark = pytest.mark.slow

MISSIONS = 50
CHART = ROOT / "tests" / "charts" / "farm" / "launch.yaml"
TOKEN = "scale-out-admin-token"
HEADERS = {"Authorization": f"Bearer {TOKEN}"}
QAPTEN = str(Path(sys.executable).with_name("qapten"))
# A model call takes this long, so that workers hold runs for a while and the kill lands inside.
LATENCY_MS = 60
DEADLINE = 150.0


def _script(folder: Path) -> Path:
    script = json.loads((CHART.parent / "script.json").read_text(encoding="utf-8"))
    script["latency_ms"] = LATENCY_MS
    path = folder / "script.json"
    path.write_text(json.dumps(script), encoding="utf-8")
    return path


async def test_fifty_missions_on_two_replicas_and_two_workers_one_killed(
    postgres: Cluster, tmp_path: Path
) -> None:
    db = postgres.new_database()
    effects = tmp_path / "effects.txt"
    model = f"scripted:{_script(tmp_path)}"
    env = {
        **os.environ,
        "QAPTEN_ADMIN_TOKEN": TOKEN,
        "QAPTEN_RATE_LIMIT": "off",
        "QAPTEN_TEST_EFFECTS": str(effects),
    }
    worker_options = ["--lease-seconds", "2", "--heartbeat", "0.5", "--stalled-after", "3"]
    with ExitStack() as stack:
        replicas = [
            stack.enter_context(
                running_server(
                    lambda port, name=name: [
                        QAPTEN, "serve", str(CHART), "--workers", "--db", db, "--model", model,
                        "--port", str(port), "--data-dir", str(tmp_path / name),
                    ],
                    log=tmp_path / f"{name}.log",
                    env=env,
                )
            )
            for name in ("replica-a", "replica-b")
        ]  # fmt: skip
        workers = [
            stack.enter_context(
                running_process(
                    [
                        QAPTEN, "worker", str(CHART), "--db", db, "--model", model,
                        "--data-dir", str(tmp_path / "workspaces"), "--concurrency", "8",
                        *worker_options,
                    ],
                    log=tmp_path / f"worker-{n}.log",
                    env=env,
                )
            )
            for n in (1, 2)
        ]  # fmt: skip
        async with httpx.AsyncClient(headers=HEADERS, timeout=30) as client:
            streams: list[list[dict[str, Any]]] = [[], []]
            followers = [
                asyncio.create_task(_follow(client, url, seen))
                for url, seen in zip(replicas, streams, strict=True)
            ]
            run_ids = [
                await _start(client, replicas[n % 2], f"Launch number {n}") for n in range(MISSIONS)
            ]
            killed = await _decide_until_done(client, replicas, run_ids, db, workers[0])
            runs = await _runs(client, replicas[1], run_ids)
            await _until_streams_show(streams, run_ids)
            for follower in followers:
                follower.cancel()
            log = await _whole_log(client, replicas[0])

    assert workers[0].returncode == -signal.SIGKILL
    assert {run["status"] for run in runs.values()} == {"done"}, runs
    assert killed in run_ids  # the killed worker held this run when it died; it ended anyway
    # One effect per run: none lost, none repeated by the worker that took the runs up.
    lines = effects.read_text(encoding="utf-8").splitlines()
    assert Counter(line.split()[0] for line in lines) == Counter(dict.fromkeys(run_ids, 1))
    # Each replica streamed the events that the workers wrote, all of them, in order.
    for seen in streams:
        ids = [event["id"] for event in seen]
        assert ids == log[: len(ids)]
        assert {e["run_id"] for e in seen if e["type"] == "run.done"} == set(run_ids)


async def _start(client: httpx.AsyncClient, url: str, mission: str) -> str:
    response = await client.post(f"{url}/api/v1/runs", json={"mission": mission})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def _decide_until_done(
    client: httpx.AsyncClient,
    replicas: list[str],
    run_ids: list[str],
    db: str,
    victim: Any,
) -> str:
    """Approve every pending proposal, through both replicas in turn, until every run ends;
    once half the runs had a decision, SIGKILL `victim` the first time it is seen holding a
    run (that run's id is returned)."""
    deadline = time.monotonic() + DEADLINE
    killed = ""
    turn = decisions = 0
    while time.monotonic() < deadline:
        if not killed and decisions >= len(run_ids) // 2 and (held := _held_by(db, victim.pid)):
            victim.send_signal(signal.SIGKILL)
            victim.wait(timeout=10)
            killed = held
        url = replicas[turn % 2]
        turn += 1
        page = await client.get(f"{url}/api/v1/proposals", params={"status": "pending"})
        for proposal in page.json()["items"]:
            decided = await client.post(
                f"{replicas[turn % 2]}/api/v1/proposals/{proposal['id']}/decision",
                json={"decision": "approve"},
            )
            assert decided.status_code in (200, 409), decided.text
            decisions += 1
        runs = await _runs(client, url, run_ids)
        if killed and all(run["status"] == "done" for run in runs.values()):
            return killed
        await asyncio.sleep(0.02 if not killed else 0.1)
    pytest.fail(f"not every run ended within {DEADLINE} s (killed while holding: {killed!r})")


def _held_by(db: str, pid: int) -> str:
    """A run whose lease the worker process `pid` holds now ('' if none): lease owners are
    host:pid:id."""
    with psycopg.connect(db) as conn:
        row = conn.execute(
            "SELECT id FROM qapten_runs WHERE lease_owner LIKE %s AND lease_expires_at > now()",
            (f"%:{pid}:%",),
        ).fetchone()
    return str(row[0]) if row else ""


async def _runs(client: httpx.AsyncClient, url: str, run_ids: list[str]) -> dict[str, Any]:
    page = await client.get(f"{url}/api/v1/runs", params={"limit": 500})
    return {run["id"]: run for run in page.json()["items"] if run["id"] in run_ids}


async def _follow(client: httpx.AsyncClient, url: str, seen: list[dict[str, Any]]) -> None:
    headers = {"Accept": "text/event-stream"}
    async with aconnect_sse(client, "GET", f"{url}/api/v1/events", headers=headers) as source:
        async for sse in source.aiter_sse():
            if not sse.data:  # the keep-alive comment, every 15 s: no event of the log
                continue
            seen.append({"id": int(sse.id), "type": sse.event, **json.loads(sse.data)})


async def _until_streams_show(streams: list[list[dict[str, Any]]], run_ids: list[str]) -> None:
    deadline = time.monotonic() + 30
    wanted = set(run_ids)
    while True:
        done = [{e["run_id"] for e in seen if e["type"] == "run.done"} for seen in streams]
        if all(wanted <= d for d in done):
            return
        if time.monotonic() > deadline:
            lacking = [sorted(wanted - d) for d in done]
            last = [seen[-1]["id"] if seen else None for seen in streams]
            pytest.fail(f"after 30 s the streams lack run.done of {lacking} (last ids {last})")
        await asyncio.sleep(0.1)


async def _whole_log(client: httpx.AsyncClient, url: str) -> list[int]:
    ids: list[int] = []
    after = 0
    while True:
        page = await client.get(f"{url}/api/v1/events", params={"after": after, "limit": 1000})
        items = page.json()["items"]
        ids += [item["id"] for item in items]
        if not items:
            return ids
        after = ids[-1]
