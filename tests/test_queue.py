"""The run queue of scale-out (qapten.queue) on a real PostgreSQL: what the rescue loop picks up,
and a worker's graceful shutdown handing its run straight to another worker."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

import httpx
import psycopg
import pytest

from qapten import Swarm
from qapten.errors import ConfigurationError
from qapten.queue import RunQueue, WorkerOptions
from qapten.testing import ScriptedChatModel

from .postgres import Cluster
from .servers import ROOT, running_process, running_server

CHART = ROOT / "tests" / "charts" / "farm" / "launch.yaml"
QAPTEN = str(Path(sys.executable).with_name("qapten"))
FAST = WorkerOptions(concurrency=2, heartbeat=0.2, stalled_after=0.5, rescue_interval=0.2)


def _swarm(db: str, queue: RunQueue) -> Swarm:
    model = ScriptedChatModel.from_file(CHART.parent / "script.json")
    return Swarm.from_yaml(CHART, model=model, db=db, queue=queue, sweep_interval=None)


async def test_a_run_whose_recorder_died_before_enqueuing_is_rescued_and_advanced(
    postgres: Cluster,
) -> None:
    db = postgres.new_database()
    queue = RunQueue(db)
    await queue.open()
    swarm = _swarm(db, queue)
    await swarm.open()
    try:
        # Recorded but never enqueued: what a server killed between the two steps leaves.
        run = await swarm.store.create_run("r_orphan", swarm.chart.name, "Launch")
        teams = {"": swarm}
        assert await queue.rescue(teams, FAST) == []  # too fresh: its recorder may enqueue it
        await asyncio.sleep(FAST.stalled_after + 0.1)
        assert await queue.rescue(teams, FAST) == ["/r_orphan"]
        assert await queue.rescue(teams, FAST) == ["/r_orphan"]  # again, and still one job
        jobs = await queue.app.job_manager.list_jobs_async()
        assert [(job.task_kwargs, job.status) for job in jobs] == [
            ({"team": "", "run_id": run.id}, "todo")
        ]
        worker = asyncio.create_task(queue.work({"": swarm}, FAST, signals=False))
        try:
            deadline = time.monotonic() + 20
            while not await swarm.pending(run.id, settle=False):
                assert time.monotonic() < deadline, "the rescued run never reached its plan"
                await asyncio.sleep(0.05)
        finally:
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)
        [plan] = await swarm.pending(run.id, settle=False)
        assert (plan.role, plan.kind.value) == ("ceo", "plan")
    finally:
        await swarm.close()
        await queue.close()


async def test_workers_need_postgres(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="workers need PostgreSQL"):
        RunQueue(f"sqlite:///{tmp_path / 'q.db'}")


@pytest.mark.slow
def test_sigterm_hands_the_run_in_hand_to_another_worker_at_once(
    postgres: Cluster, tmp_path: Path
) -> None:
    """A worker told to stop while a slow model call is in flight stops the run and enqueues
    it again: the other worker finishes it long before the run's lease would have lapsed."""
    db = postgres.new_database()
    script = json.loads((CHART.parent / "script.json").read_text(encoding="utf-8"))
    script["latency_ms"] = 1500
    (tmp_path / "slow.json").write_text(json.dumps(script), encoding="utf-8")
    model = f"scripted:{tmp_path / 'slow.json'}"
    env = {**os.environ, "QAPTEN_ADMIN_TOKEN": "t", "QAPTEN_TEST_EFFECTS": str(tmp_path / "e")}
    lease = 60

    def worker(name: str) -> list[str]:
        return [
            QAPTEN, "worker", str(CHART), "--db", db, "--model", model,
            "--data-dir", str(tmp_path / "w"), "--lease-seconds", str(lease),
            "--shutdown-timeout", "0.2", "--heartbeat", "0.5", "--stalled-after", "3",
        ]  # fmt: skip

    def serve(port: int) -> list[str]:
        return [
            QAPTEN, "serve", str(CHART), "--workers", "--db", db, "--model", model,
            "--port", str(port), "--data-dir", str(tmp_path / "s"),
        ]  # fmt: skip

    headers = {"Authorization": "Bearer t"}
    with running_server(serve, log=tmp_path / "serve.log", env=env) as url:
        with running_process(worker("first"), log=tmp_path / "first.log", env=env) as first:
            run_id = httpx.post(
                f"{url}/api/v1/runs", json={"mission": "Launch"}, headers=headers
            ).json()["id"]
            _until(lambda: _lease_owner(db, run_id) is not None, "the first worker's claim")
            assert f":{first.pid}:" in str(_lease_owner(db, run_id))
            first.send_signal(signal.SIGTERM)
            stopped_at = time.monotonic()
            assert first.wait(timeout=20) == 0
        # Handed back at once: its lease is released, not left to lapse in a minute.
        assert _lease_owner(db, run_id) is None
        with running_process(worker("second"), log=tmp_path / "second.log", env=env):

            def planned() -> bool:
                page = httpx.get(f"{url}/api/v1/proposals", headers=headers).json()
                return bool(page["items"])

            _until(planned, "the plan, made by the second worker")
        assert time.monotonic() - stopped_at < lease / 2


def _lease_owner(db: str, run_id: str) -> str | None:
    with psycopg.connect(db) as conn:
        row = conn.execute(
            "SELECT lease_owner FROM qapten_runs WHERE id = %s", (run_id,)
        ).fetchone()
    return None if row is None or row[0] is None else str(row[0])


def _until(condition: object, what: str, timeout: float = 30) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"waited {timeout} s for {what}"
        time.sleep(0.05)
