"""LangGraph's checkpointers as Qapten opens them: SQLite's called right on the event loop, and
PostgreSQL's over a connection pool.

`SqliteSaver` holds the SQL and the serialisation; its async twin, `AsyncSqliteSaver`, sends
every statement and commit through aiosqlite's thread and back. Qapten's store runs SQLite on
the event loop (see `qapten.store.base.StoreBase`), so the checkpointer does too: a checkpoint
of a local file is written in less time than the hand-offs take, and since every transaction of
the process then runs whole on one thread, none waits for a lock that another holds halfway.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import ChannelVersions, Checkpoint, CheckpointMetadata
from langgraph.checkpoint.base import CheckpointTuple as Tuple
from langgraph.checkpoint.sqlite import SqliteSaver

from qapten.store.wal import NO_AUTOCHECKPOINT

SETUP_LOCK = (
    0x5141_5054_4350  # the PostgreSQL advisory lock held while checkpoint tables are set up
)

if TYPE_CHECKING:  # the postgres extra
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver


class InlineSqliteSaver(SqliteSaver):
    """`SqliteSaver` whose async methods (the ones an async graph calls) run inline."""

    async def aget_tuple(self, config: RunnableConfig) -> Tuple | None:
        return self.get_tuple(config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[Tuple]:
        for item in self.list(config, filter=filter, before=before, limit=limit):
            yield item

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return self.put(config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        self.put_writes(config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        self.delete_thread(thread_id)


def open_checkpointer(path: str) -> InlineSqliteSaver:
    """The checkpointer of the SQLite file at `path`, set up as the store sets its own
    connections (WAL, commits without fsync, writers queueing for the lock). Open the store of
    the same file first: its thread copies the log into the file for both (qapten.store.wal)."""
    connection = sqlite3.connect(path, timeout=30, check_same_thread=False)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.execute(NO_AUTOCHECKPOINT)
        saver = InlineSqliteSaver(connection)
        saver.setup()
    except BaseException:
        connection.close()
        raise
    return saver


async def open_postgres_checkpointer(
    conninfo: str, *, max_connections: int = 10
) -> tuple[AsyncPostgresSaver, Callable[[], Awaitable[None]]]:
    """LangGraph's PostgreSQL checkpointer over a pool of connections to `conninfo`, with its
    tables set up; and the function that closes the pool."""
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
    from psycopg.rows import dict_row
    from psycopg_pool import AsyncConnectionPool

    # The settings LangGraph's saver expects of its connections (see its from_conn_string).
    settings = {"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row}
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        conninfo, min_size=1, max_size=max_connections, kwargs=settings, open=False
    )
    await pool.open(wait=True, timeout=30)
    try:
        saver = AsyncPostgresSaver(pool)
        # Servers and workers starting together would race through LangGraph's migrations:
        # they take turns under a lock held on a connection of their own.
        async with pool.connection() as conn:
            await conn.execute("SELECT pg_advisory_lock(%s)", (SETUP_LOCK,))
            try:
                await saver.setup()
            finally:
                await conn.execute("SELECT pg_advisory_unlock(%s)", (SETUP_LOCK,))
    except BaseException:
        await pool.close()
        raise
    return saver, pool.close
