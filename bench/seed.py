"""Fill a Qapten database with many pending proposals quickly, straight into its tables.

The rows look like the ones a swarm writes (runs waiting for a human, each with ten pending
deliverables by the bench org's roles); they have no checkpoints, so nothing tries to advance
them. Benchmarks use them as the crowd around the proposals they time.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert
from sqlalchemy.engine import Connection

from qapten.proposals import payload_hash
from qapten.store import Store
from qapten.store import tables as t

PER_RUN = 10
CHUNK = 5_000
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


async def seed_pending(db: str, count: int, *, prefix: str = "seed") -> list[str]:
    """Insert `count` pending proposals (oldest first, one millisecond apart) and their
    waiting runs; returns the proposal ids in creation order."""
    store = await Store.open(db)
    ids = [f"p_{prefix}{i:07d}" for i in range(count)]
    try:
        runs = [_run(f"r_{prefix}{i:06d}", i) for i in range((count + PER_RUN - 1) // PER_RUN)]
        proposals = [
            _proposal(pid, f"r_{prefix}{i // PER_RUN:06d}", i) for i, pid in enumerate(ids)
        ]

        def insert_all(conn: Connection) -> None:
            for table, rows in ((t.runs, runs), (t.proposals, proposals)):
                for start in range(0, len(rows), CHUNK):
                    conn.execute(insert(table), rows[start : start + CHUNK])

        await store.write(insert_all)
    finally:
        await store.close()
    return ids


def _run(run_id: str, i: int) -> dict[str, Any]:
    at = EPOCH + timedelta(milliseconds=i * PER_RUN)
    return {
        "id": run_id,
        "org": "Bench Corp",
        "mission": "A seeded mission that waits for its human.",
        "status": "waiting",
        "created_at": at,
        "updated_at": at,
        "lease_token": 0,
    }


def _proposal(proposal_id: str, run_id: str, i: int) -> dict[str, Any]:
    payload = {"result": f"Seeded deliverable number {i}."}
    return {
        "id": proposal_id,
        "run_id": run_id,
        "task_id": f"t1.{i % PER_RUN + 1}",
        "step": 1,
        "role": ("cto", "marketcom", "support")[i % 3],
        "kind": "deliverable",
        "act": "deliver",
        "title": f"Deliver: seeded deliverable number {i}",
        "payload": payload,
        "payload_hash": payload_hash(payload),
        "status": "pending",
        "created_at": EPOCH + timedelta(milliseconds=i),
        "tokens": 0,
        "approvals": [],
    }
