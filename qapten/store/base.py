"""What every part of the store shares: the records it returns, the engine and its write
transactions, and the event written with each change."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any, Self, TypeVar

from sqlalchemy import ColumnElement, Select, create_engine, event, insert, make_url
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from qapten.proposals import Proposal
from qapten.store import tables as t
from qapten.store.prepared import (
    Executed,
    Params,
    PreparedStatements,
    Statement,
    through_sqlalchemy,
)
from qapten.store.schema import upgrade
from qapten.store.wal import NO_AUTOCHECKPOINT, WalCheckpoints

Clock = Callable[[], datetime]
Terms = Callable[[Proposal], Proposal]
R = TypeVar("R")

POOL_CONNECTIONS = 10
"""Pooled connections to a database server (and as many more at a peak)."""

WRITE_LOCK = 0x5141_5054  # "QAPT": with the schema, the PostgreSQL advisory lock ordering writes


# Built once: building one costs as much as running it.
_INSERT_EVENT = insert(t.events)
_INSERT_EVENT_ID = _INSERT_EVENT.returning(t.events.c.id)


def utcnow() -> datetime:
    return datetime.now(UTC)


FINISHED_RUN = frozenset({"done", "failed", "cancelled"})
"""The statuses a run ends in; `running` and `waiting` are the others."""


@dataclass(frozen=True)
class Run:
    id: str
    org: str
    mission: str
    status: str
    result: str | None
    error: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Event:
    id: int
    run_id: str | None
    type: str
    data: dict[str, Any]
    created_at: datetime


NewEvent = tuple[str | None, str, Mapping[str, Any]]
"""An event to record: its run's id (None for the whole org), its type and its data."""


@dataclass(frozen=True)
class ToolCall:
    call_id: str
    run_id: str
    task_id: str
    role: str
    tool: str
    args: dict[str, Any]
    status: str
    result: str | None
    started_at: datetime
    finished_at: datetime | None


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers run beside the writer; busy_timeout makes writers queue instead of failing.
    # The driver's own transaction handling is turned off: the store says BEGIN itself
    # (`Transactions`), without an event listener, which would slow every statement down.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute(NO_AUTOCHECKPOINT)  # the store's `WalCheckpoints` thread does it
    cursor.close()


class StoreBase:
    """The engine, the clock and the transactions the parts of `Store` build on.

    Each store operation is one plain function over a synchronous SQLAlchemy connection, run
    whole at once.

    A SQLite file is read and written right on the event loop, as the checkpointer does
    (qapten.checkpoints), over one connection kept open: a local file answers in less time
    than a hand-off to a thread takes (aiosqlite makes one for every cursor, execute, fetch
    and close), and with every transaction of this process run whole on one thread, none ever
    waits for a lock that another of this process holds.

    A database server, which answers over the network, is worked through SQLAlchemy's asyncio
    engine over psycopg's asyncio connections: the same functions run through `run_sync`, and
    each statement waits for its answer without blocking the loop or handing off to a thread.
    Single-statement reads take autocommit connections from a pool of their own: one round
    trip, where a transaction adds a BEGIN and a ROLLBACK.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        clock: Clock = utcnow,
        server: AsyncEngine | None = None,
        server_reads: AsyncEngine | None = None,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.terms: Terms | None = None
        self._begin = _Begin.for_dialect(engine.dialect.name)
        self._server = server
        self._server_reads = server_reads
        # SQLite's one connection: checking one out of the pool and back in (with its reset)
        # for each operation would cost more than most of the operations themselves.
        self._inline: Connection | None = None
        self._prepared = PreparedStatements(engine.dialect) if server is None else None
        self._wal: WalCheckpoints | None = None

    @classmethod
    async def open(cls, db: str, *, clock: Clock = utcnow) -> Self:
        """The store of `db` (SQLAlchemy's URL), its tables created or upgraded."""
        server = reads = None
        if make_url(db).get_dialect().name == "sqlite":
            engine = create_engine(db)
            event.listen(engine, "connect", _sqlite_pragmas)
        else:
            server = create_async_engine(db, pool_size=POOL_CONNECTIONS)
            # Its own pool: a connection switched to autocommit and back at each checkout
            # would cost more round trips than the read.
            reads = create_async_engine(
                db, pool_size=POOL_CONNECTIONS, isolation_level="AUTOCOMMIT"
            )
            engine = server.sync_engine
        store = cls(engine, clock=clock, server=server, server_reads=reads)
        try:
            await store.write(upgrade)
        except BaseException:
            await store.close()
            raise
        if server is None and engine.url.database not in (None, "", ":memory:"):
            store._wal = WalCheckpoints(engine.url.database).start()
        return store

    async def close(self) -> None:
        if self._inline is not None:
            self._inline.close()
            self._inline = None
        for server in (self._server, self._server_reads):
            if server is not None:
                await server.dispose()
        if self._server is None:
            self.engine.dispose()
        if self._wal is not None:
            self._wal.stop()
            self._wal = None

    async def read(self, work: Callable[[Connection], R], *, snapshot: bool = False) -> R:
        """Run `work` on a connection; with `snapshot`, its statements see one moment of the
        database (a read of a single statement always does)."""
        if self._server_reads is not None and not snapshot:
            async with self._server_reads.connect() as conn:
                return await conn.run_sync(work)
        return await self._transact(self._begin.snapshot if snapshot else None, work, False)

    async def write(self, work: Callable[[Connection], R]) -> R:
        """Run `work` in one write transaction (committed, or rolled back if it raises).

        Once started it runs to its end even if the awaiting task is cancelled: a write is
        recorded whole or not at all, never cut in the middle by a cancellation.
        """
        if self._server is not None:
            # Shielded: a cancelled caller does not cut the transaction short.
            return await asyncio.shield(self._transact(self._begin.write, work, True))
        return await self._transact(self._begin.write, work, True)

    async def _transact(
        self, begin: str | None, work: Callable[[Connection], R], commit: bool
    ) -> R:
        if self._server is not None:
            async with self._server.connect() as conn:
                return await conn.run_sync(_transact, begin, work, commit)
        if self._inline is None or self._inline.closed or self._inline.invalidated:
            self._inline = self.engine.connect()
        return _transact(self._inline, begin, work, commit)

    def _execute(
        self, conn: Connection, statement: Statement, params: Params | Sequence[Params]
    ) -> Executed:
        """Run `statement` on SQLite straight on the driver, compiled once for as long as the
        statement lives (qapten.store.prepared: build it once, at import); on a database
        server, through SQLAlchemy. The statements of decisions and steps go this way."""
        if self._prepared is not None:
            return self._prepared.run(conn, statement, params)
        return through_sqlalchemy(conn, statement, params)

    def _event(
        self, conn: Connection, run_id: str | None, type_: str, data: Mapping[str, Any]
    ) -> int:
        row = _event_row(run_id, type_, data, self.clock())
        return int(self._execute(conn, _INSERT_EVENT_ID, row).scalar)

    def _events(self, conn: Connection, events: Sequence[NewEvent]) -> None:
        """Record `events` in their order, in one statement: one round trip for several."""
        now = self.clock()
        rows = [_event_row(run_id, type_, data, now) for run_id, type_, data in events]
        self._execute(conn, _INSERT_EVENT, rows)

    async def add_event(self, run_id: str | None, type_: str, data: Mapping[str, Any]) -> int:
        return await self.write(lambda conn: self._event(conn, run_id, type_, data))


@dataclass(frozen=True)
class _Begin:
    """What starts a transaction, where the driver does not (None: the driver does)."""

    write: str | None
    snapshot: str | None

    @classmethod
    def for_dialect(cls, dialect: str) -> _Begin:
        if dialect == "sqlite":
            # A write takes the write lock at once (BEGIN IMMEDIATE): a read-then-write
            # transaction that upgraded later could fail with "database is locked" instead of
            # waiting. A read of one statement needs no transaction at all.
            return cls(write="BEGIN IMMEDIATE", snapshot="BEGIN")
        if dialect == "postgresql":
            # Writes to Qapten's tables take turns, as they do on SQLite: each operation was
            # written as one read-then-write that nothing interleaves with, and event ids then
            # become visible in the order they were given, so a stream that reads "after id N"
            # never skips an event that commits late (LangGraph's checkpoints, the bulk of the
            # bytes, are not concerned). One lock per schema: the teams of a farm
            # (qapten.teams), each in a schema of its own, do not wait for each other.
            # A snapshot is a repeatable read.
            return cls(
                write=f"SELECT pg_advisory_xact_lock({WRITE_LOCK}, hashtext(current_schema()))",
                snapshot="SET TRANSACTION ISOLATION LEVEL REPEATABLE READ",
            )
        return cls(write=None, snapshot=None)


def _transact(
    conn: Connection, begin: str | None, work: Callable[[Connection], R], commit: bool
) -> R:
    """`work` on `conn` after `begin`; then committed (`commit`) or rolled back, and rolled back
    if it raises: the connection is left with no transaction open either way."""
    try:
        if begin is not None and conn.dialect.name == "sqlite":
            # Said to the driver itself: SQLAlchemy's way through a statement costs more than
            # SQLite's BEGIN. `conn.begin()` tells SQLAlchemy that a transaction is open.
            conn.begin()
            conn.connection.driver_connection.execute(begin)  # type: ignore[union-attr]
        elif begin is not None:
            conn.exec_driver_sql(begin)
        result = work(conn)
    except BaseException:
        conn.rollback()
        raise
    if commit:
        conn.commit()
    else:
        conn.rollback()
    return result


def where_given(query: Select[Any], *filters: tuple[ColumnElement[Any], object]) -> Select[Any]:
    """`query` narrowed to rows whose column equals its value, for each value that is given
    (not None): the optional filters of a listing."""
    for column, value in filters:
        if value is not None:
            query = query.where(column == value)
    return query


def _event_row(
    run_id: str | None, type_: str, data: Mapping[str, Any], now: datetime
) -> dict[str, Any]:
    return {"run_id": run_id, "type": type_, "data": dict(data), "created_at": now}


def _record(cls: type[R], row: Mapping[Any, Any]) -> R:
    """A dataclass from a row with the same column names; datetimes come back in UTC."""
    return cls(**{f.name: _in_utc(row[f.name]) for f in fields(cls)})  # type: ignore[arg-type]


def _proposal(row: Mapping[Any, Any]) -> Proposal:
    skip = ("step", "tokens")
    return Proposal.model_validate({k: _in_utc(v) for k, v in row.items() if k not in skip})


def _in_utc(value: Any) -> Any:
    # SQLite hands datetimes back without their zone; every time Qapten writes is UTC.
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _about(proposal: Proposal) -> dict[str, Any]:
    return {"proposal_id": proposal.id, "task_id": proposal.task_id, "role": proposal.role}


def _terms_shown(proposal: Proposal) -> dict[str, Any]:
    """The deadline and quorum of a proposal, for its events (when it has them)."""
    return proposal.model_dump(mode="json", include={"expires_at", "quorum"}, exclude_none=True)
