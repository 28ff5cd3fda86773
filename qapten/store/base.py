"""What every part of the store shares: the records it returns, the engine and its write
transactions, and the event written with each change."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any, Self, TypeVar

from sqlalchemy import event, insert
from sqlalchemy.engine import Connection, RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from qapten.proposals import Proposal
from qapten.store import tables as t

Clock = Callable[[], datetime]
Terms = Callable[[Proposal], Proposal]
R = TypeVar("R")


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


def sqlalchemy_url(db: str) -> str:
    """Map the user's ``sqlite:///file.db`` to the async driver SQLAlchemy needs."""
    if db.startswith("sqlite:///") or db == "sqlite://":
        return db.replace("sqlite://", "sqlite+aiosqlite://", 1)
    return db


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers run beside the writer; busy_timeout makes writers queue instead of failing.
    # The driver's own transaction handling is turned off so that `_begin` below decides.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _begin(conn: Connection) -> None:
    # A write transaction takes the write lock at once (BEGIN IMMEDIATE): a read-then-write
    # transaction that upgraded later could fail with "database is locked" instead of waiting.
    immediate = conn.get_execution_options().get("qapten_write", False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


class StoreBase:
    """The engine, the clock and the write transaction the parts of `Store` build on."""

    def __init__(self, engine: AsyncEngine, *, clock: Clock = utcnow) -> None:
        self.engine = engine
        self.clock = clock
        self.terms: Terms | None = None
        self._writer = engine.execution_options(qapten_write=True)

    @classmethod
    async def open(cls, db: str, *, clock: Clock = utcnow) -> Self:
        url = sqlalchemy_url(db)
        engine = create_async_engine(url)
        if engine.dialect.name == "sqlite":
            event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
            event.listen(engine.sync_engine, "begin", _begin)
        async with engine.begin() as conn:
            await conn.run_sync(t.metadata.create_all)
        return cls(engine, clock=clock)

    async def close(self) -> None:
        await self.engine.dispose()

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        async with self._writer.begin() as conn:
            yield conn

    async def _event(
        self, conn: AsyncConnection, run_id: str | None, type_: str, data: Mapping[str, Any]
    ) -> int:
        result = await conn.execute(
            insert(t.events).values(
                run_id=run_id, type=type_, data=dict(data), created_at=self.clock()
            )
        )
        return int(result.inserted_primary_key[0])  # type: ignore[index]

    async def add_event(self, run_id: str | None, type_: str, data: Mapping[str, Any]) -> int:
        async with self._write() as conn:
            return await self._event(conn, run_id, type_, data)


def _record(cls: type[R], row: RowMapping) -> R:
    """A dataclass from a row with the same column names; datetimes come back in UTC."""
    return cls(**{f.name: _in_utc(row[f.name]) for f in fields(cls)})  # type: ignore[arg-type]


def _proposal(row: RowMapping) -> Proposal:
    skip = ("step", "tokens")
    return Proposal.model_validate({k: _in_utc(v) for k, v in row.items() if k not in skip})


def _in_utc(value: Any) -> Any:
    # SQLite hands datetimes back without their zone; every time Qapten writes is UTC.
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value
