"""The run lease: one writer at a time, fenced."""

from __future__ import annotations

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
