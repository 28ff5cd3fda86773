"""The indexes SQLite plans the store's listings with. SQLite has no statistics on a fresh
database, so the plan follows the query's shape: these pin the shapes that keep a run's inbox
and the deadline sweeper off the indexes that hold every pending proposal."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select
from sqlalchemy.engine import Connection

from qapten.proposals import ProposalStatus
from qapten.store import Store
from qapten.store.deadlines import due_queries
from qapten.store.store import proposals_query

NOW = datetime(2026, 12, 3, 16, 30, tzinfo=UTC)


async def test_a_runs_inbox_is_found_by_the_runs_index(sqlite_store: Store) -> None:
    """Not by the status index, which holds the pending proposals of every run: with many of
    them, reading one run's inbox took as long as walking them all."""
    inbox = proposals_query(status=ProposalStatus.PENDING, run_id="run-1", newest_first=False)
    every_inbox = proposals_query(status=ProposalStatus.PENDING, limit=50)
    run_plan, every_plan = await _plans(sqlite_store, inbox, every_inbox)

    assert "ix_qapten_proposals_run" in run_plan, run_plan
    assert "ix_qapten_proposals_status" not in run_plan, run_plan
    # Without a run, the inbox of every run is what the status index is for.
    assert "ix_qapten_proposals_status" in every_plan, every_plan


async def test_the_sweeper_finds_due_proposals_by_the_partial_indexes(sqlite_store: Store) -> None:
    """The deadline indexes hold only proposals with a deadline (migration 0005); the sweeper's
    `time <= now` implies that, so each of its two queries still ranges over its own index."""
    expires_plan, remind_plan = await _plans(sqlite_store, *due_queries(NOW, limit=500))

    assert "ix_qapten_proposals_expires" in expires_plan, expires_plan
    assert "ix_qapten_proposals_remind" in remind_plan, remind_plan


async def _plans(store: Store, *queries: Select[Any]) -> list[str]:
    """SQLite's plan of each query, its steps' details joined."""

    def plan(conn: Connection, query: Select[Any]) -> str:
        sql = query.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True})
        return " ".join(str(row[-1]) for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}"))

    return await store.read(lambda conn: [plan(conn, query) for query in queries])
