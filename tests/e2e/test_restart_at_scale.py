"""Restart at scale: a server restarted on 10,000 pending proposals is ready at once, the inbox
pages through all of them, and any live run's proposal can be decided and its run goes on.

100 runs are real (started through the engine, each waiting on its CEO's deliverable); the other
9,900 proposals are copies of theirs with new ids, so that seeding takes seconds, not minutes.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from qapten import Swarm
from qapten.testing import ScriptedChatModel, deliver

from ..conftest import ORG
from ..servers import free_port
from .conftest import ADMIN_TOKEN, HEADERS

QAPTEN = str(Path(sys.executable).with_name("qapten"))
LIVE_RUNS = 100
PENDING = 10_000


async def _seed(data_dir: Path) -> list[str]:
    """LIVE_RUNS real runs waiting on a proposal, then copies up to PENDING pending proposals."""
    model = ScriptedChatModel({"ceo": [deliver(f"plan {i}") for i in range(LIVE_RUNS)]})
    db = data_dir / "qapten.db"
    async with Swarm.from_yaml(ORG, model=model, db=f"sqlite:///{db}") as swarm:
        runs = [(await swarm.start(f"Mission {i}")).id for i in range(LIVE_RUNS)]
        await swarm.idle()
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        live = [dict(row) for row in conn.execute("SELECT * FROM qapten_proposals")]
        assert len(live) == LIVE_RUNS
        columns = list(live[0])
        copies = []
        for i in range(PENDING - LIVE_RUNS):
            row = {**live[i % LIVE_RUNS], "id": f"p_copy{i:06d}", "step": 1000 + i}
            copies.append([row[c] for c in columns])
        marks = ", ".join("?" for _ in columns)
        conn.executemany(
            f"INSERT INTO qapten_proposals ({', '.join(columns)}) VALUES ({marks})", copies
        )
    return runs


@contextmanager
def _serving(data_dir: Path, script: Path, log: Path) -> Iterator[tuple[str, float]]:
    """`qapten serve` on `data_dir`: yields its API URL and the seconds it took to answer."""
    port = free_port()
    env = {**os.environ, "QAPTEN_ADMIN_TOKEN": ADMIN_TOKEN}
    command = [QAPTEN, "serve", str(ORG), "--port", str(port), "--data-dir", str(data_dir)]
    command += ["--model", f"scripted:{script}"]
    api = f"http://127.0.0.1:{port}/api/v1"
    with log.open("w") as out:
        started = time.monotonic()
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        while True:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() - started < 60, f"not ready within 60 s:\n{log.read_text()}"
            try:
                if httpx.get(f"{api}/healthz", timeout=1).is_success:
                    break
            except httpx.TransportError:
                time.sleep(0.02)
        yield api, time.monotonic() - started
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _all_pending(client: httpx.Client, api: str) -> list[str]:
    seen: list[str] = []
    params: dict[str, str | int] = {"status": "pending", "limit": 500}
    for _ in range(PENDING // 500 + 2):  # bounded: one page more than needed
        page = client.get(f"{api}/proposals", params=params).json()
        seen += [p["id"] for p in page["items"]]
        if not page.get("next_cursor"):
            break
        params["cursor"] = page["next_cursor"]
    return seen


@pytest.mark.slow
def test_ten_thousand_pending_proposals_survive_a_restart(tmp_path: Path) -> None:
    full, empty = tmp_path / "full", tmp_path / "empty"
    full.mkdir()
    empty.mkdir()
    live_runs = asyncio.run(_seed(full))
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"ceo": [deliver("never needed")]}), encoding="utf-8")

    # Side by side, interleaved: the machine's speed drifts, the ratio is what tells.
    loaded, fresh = [], []
    for i in range(3):
        with _serving(full, script, tmp_path / f"full{i}.log") as (_, seconds):
            loaded.append(seconds)
        with _serving(empty, script, tmp_path / f"empty{i}.log") as (_, seconds):
            fresh.append(seconds)
    ready, baseline = statistics.median(loaded), statistics.median(fresh)

    with (
        _serving(full, script, tmp_path / "serve.log") as (api, _),
        httpx.Client(headers=HEADERS, timeout=30) as client,
    ):
        paged = time.monotonic()
        seen = _all_pending(client, api)
        paged = time.monotonic() - paged
        assert len(seen) == len(set(seen)) == PENDING

        run_id = random.choice(live_runs)
        proposals = client.get(f"{api}/runs/{run_id}").json()["proposals"]
        [waiting] = [p for p in proposals if not p["id"].startswith("p_copy")]
        decided = client.post(
            f"{api}/proposals/{waiting['id']}/decision", json={"decision": "approve"}
        )
        assert decided.status_code == 200, decided.text
        for _ in range(200):
            run = client.get(f"{api}/runs/{run_id}").json()
            if run["status"] == "done":
                break
            time.sleep(0.05)
        assert run["status"] == "done"
        assert run["result"].startswith("plan ")
    print(
        f"\nrestart at scale: {PENDING} pending ({LIVE_RUNS} live runs); ready in {ready:.2f} s "
        f"(empty database {baseline:.2f} s, ratio {ready / baseline:.2f}); "
        f"paged through all in {paged:.2f} s; a decided run finished"
    )
    assert ready <= baseline + 1.0  # the backlog costs start-up at most a second
