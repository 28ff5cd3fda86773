"""The run lease: one writer at a time, fenced."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from qapten.store import Store


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


async def test_a_store_offloaded_to_threads_works_off_the_event_loop(db: str) -> None:
    """The path a database server takes (PostgreSQL in production), tried on SQLite: every
    operation runs in a worker thread, never on the event loop's."""
    store = await Store.open(db, offload=True)
    loop_thread = threading.get_ident()
    try:
        await store.create_run("r1", "org", "Ship it")
        worked_in = await store.read(lambda _conn: threading.get_ident())
        written_in = await store.write(lambda _conn: threading.get_ident())
        assert loop_thread not in (worked_in, written_in)
        assert (await store.get_run("r1")).mission == "Ship it"
        assert [e.type for e in await store.events(run_id="r1")] == ["run.started"]
    finally:
        await store.close()
