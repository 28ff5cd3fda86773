"""The run lease: one writer at a time, fenced; the tool journal's start and end."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from qapten.store import Store
from qapten.store.journal import FinishedCall
from qapten.store.notes import Note, step_key


async def test_lease_is_exclusive_expires_and_fences(db: str) -> None:
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    store = await Store.open(db, clock=lambda: now[0])
    try:
        await store.create_run("r1", "org", "mission")
        token_a = await store.acquire_lease("r1", "A", ttl=10)
        assert token_a == 1
        assert await store.acquire_lease("r1", "B", ttl=10) is None
        assert await store.renew_lease("r1", "A", token_a, ttl=10)
        now[0] += timedelta(seconds=11)  # A stopped renewing: its lease lapses
        token_b = await store.acquire_lease("r1", "B", ttl=10)
        assert token_b == 2
        assert not await store.renew_lease("r1", "A", token_a, ttl=10)  # A is fenced off
        await store.release_lease("r1", "A", token_a)  # a stale release changes nothing
        assert await store.acquire_lease("r1", "C", ttl=10) is None
        await store.release_lease("r1", "B", token_b)
        assert await store.acquire_lease("r1", "C", ttl=10) == 3
    finally:
        await store.close()


async def test_a_tool_call_starts_once_and_ends_with_its_step(db: str) -> None:
    store = await Store.open(db)
    try:
        await store.create_run("r1", "org", "mission")
        call = {"run_id": "r1", "task_id": "t1", "role": "cto", "tool": "note", "args": {}}
        assert await store.start_tool_call("p1", **call) is None
        replayed = await store.start_tool_call("p1", **call)  # a replay finds the first start
        assert replayed is not None
        assert (replayed.status, replayed.args) == ("started", {})
        finished = FinishedCall("p1", "r1", "note", "done", "noted")
        note = Note("t1", step_key(1), "You called note: done: noted")
        await store.record_act(
            "r1", finished=finished, notes=[note], events=[("task.done", {"task_id": "t1"})]
        )
        [done] = await store.tool_calls("r1")
        assert (done.call_id, done.status, done.result) == ("p1", "done", "noted")
        assert await store.run_notes("r1") == {"t1": [note.text]}
        types = [e.type for e in await store.events(run_id="r1")]
        assert types == ["run.started", "tool.started", "tool.done", "task.done"]
    finally:
        await store.close()
