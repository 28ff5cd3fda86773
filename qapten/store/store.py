"""Durable records of Qapten: runs, proposals and decisions, events, the tool journal, run leases.

One SQLAlchemy Core engine; SQLite (WAL) by default. Every state change writes its event in the
same transaction, so the audit log never disagrees with the records it describes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import event, func, insert, select, tuple_, update
from sqlalchemy.engine import Connection, RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from qapten.errors import ProposalAlreadyDecided, ProposalNotFound, RunNotFound
from qapten.proposals import Proposal, ProposalStatus
from qapten.store import tables as t

Clock = Callable[[], datetime]
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


class Store:
    """Qapten's tables over one database. Use `Store.open(db)`; close with `await store.close()`."""

    def __init__(self, engine: AsyncEngine, *, clock: Clock = utcnow) -> None:
        self.engine = engine
        self.clock = clock
        self._writer = engine.execution_options(qapten_write=True)

    @classmethod
    async def open(cls, db: str, *, clock: Clock = utcnow) -> Store:
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

    # -- runs ---------------------------------------------------------------------------------

    async def create_run(self, run_id: str, org: str, mission: str) -> Run:
        now = self.clock()
        async with self._write() as conn:
            await conn.execute(
                insert(t.runs).values(
                    id=run_id,
                    org=org,
                    mission=mission,
                    status="running",
                    created_at=now,
                    updated_at=now,
                    lease_token=0,
                )
            )
            await self._event(conn, run_id, "run.started", {"mission": mission, "org": org})
        return await self.get_run(run_id)

    async def get_run(self, run_id: str) -> Run:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(t.runs).where(t.runs.c.id == run_id))).first()
        if row is None:
            msg = f"no run with id {run_id!r}"
            raise RunNotFound(msg)
        return _record(Run, row._mapping)

    async def list_runs(
        self,
        status: str | None = None,
        *,
        before: tuple[datetime, str] | None = None,
        limit: int | None = None,
    ) -> list[Run]:
        """Newest first; `before` is the (created_at, id) of the last item of the previous page."""
        c = t.runs.c
        query = select(t.runs).order_by(c.created_at.desc(), c.id.desc()).limit(limit)
        if status:
            query = query.where(c.status == status)
        if before is not None:
            query = query.where(tuple_(c.created_at, c.id) < tuple_(*before))
        async with self.engine.connect() as conn:
            return [_record(Run, row._mapping) for row in await conn.execute(query)]

    async def set_run_status(
        self, run_id: str, status: str, *, result: str | None = None, error: str | None = None
    ) -> bool:
        """Move a run to `status`; returns False (and writes nothing) when it is already there."""
        async with self._write() as conn:
            return await self._move_run(conn, run_id, status, result=result, error=error)

    async def _move_run(
        self,
        conn: AsyncConnection,
        run_id: str,
        status: str,
        *,
        only_from: str | None = None,
        result: str | None = None,
        error: str | None = None,
    ) -> bool:
        query = update(t.runs).where(t.runs.c.id == run_id, t.runs.c.status != status)
        if only_from is not None:
            query = query.where(t.runs.c.status == only_from)
        changed = await conn.execute(
            query.values(status=status, result=result, error=error, updated_at=self.clock())
        )
        if changed.rowcount == 0:
            return False
        data = {k: v for k, v in {"result": result, "error": error}.items() if v is not None}
        await self._event(conn, run_id, f"run.{status}", data)
        return True

    async def retry_run(self, run_id: str, *, by: str, tasks: Sequence[str]) -> bool:
        """Move a failed run back to running (compare-and-set); False when it was not failed."""
        async with self._write() as conn:
            changed = await conn.execute(
                update(t.runs)
                .where(t.runs.c.id == run_id, t.runs.c.status == "failed")
                .values(status="running", result=None, error=None, updated_at=self.clock())
            )
            if changed.rowcount == 0:
                return False
            await self._event(conn, run_id, "run.retried", {"by": by, "tasks": list(tasks)})
        return True

    # -- leases: one writer per run ---------------------------------------------------------------

    async def acquire_lease(self, run_id: str, owner: str, ttl: float) -> int | None:
        """Claim the right to advance `run_id`; returns the fencing token, or None if held."""
        now = self.clock()
        async with self._write() as conn:
            row = (
                await conn.execute(
                    select(
                        t.runs.c.lease_owner, t.runs.c.lease_token, t.runs.c.lease_expires_at
                    ).where(t.runs.c.id == run_id)
                )
            ).first()
            if row is None:
                msg = f"no run with id {run_id!r}"
                raise RunNotFound(msg)
            expires = _in_utc(row.lease_expires_at)
            if row.lease_owner not in (None, owner) and expires is not None and expires > now:
                return None
            token = int(row.lease_token) + 1
            await conn.execute(
                update(t.runs)
                .where(t.runs.c.id == run_id)
                .values(
                    lease_owner=owner,
                    lease_token=token,
                    lease_expires_at=now + timedelta(seconds=ttl),
                )
            )
        return token

    async def renew_lease(self, run_id: str, owner: str, token: int, ttl: float) -> bool:
        async with self._write() as conn:
            result = await conn.execute(
                update(t.runs)
                .where(
                    t.runs.c.id == run_id,
                    t.runs.c.lease_owner == owner,
                    t.runs.c.lease_token == token,
                )
                .values(lease_expires_at=self.clock() + timedelta(seconds=ttl))
            )
        return result.rowcount == 1

    async def release_lease(self, run_id: str, owner: str, token: int) -> None:
        async with self._write() as conn:
            await conn.execute(
                update(t.runs)
                .where(
                    t.runs.c.id == run_id,
                    t.runs.c.lease_owner == owner,
                    t.runs.c.lease_token == token,
                )
                .values(lease_owner=None, lease_expires_at=None)
            )

    # -- proposals ------------------------------------------------------------------------------

    async def find_step_proposal(self, run_id: str, task_id: str, step: int) -> Proposal | None:
        query = select(t.proposals).where(
            t.proposals.c.run_id == run_id,
            t.proposals.c.task_id == task_id,
            t.proposals.c.step == step,
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else _proposal(row._mapping)

    async def create_proposal(self, proposal: Proposal, *, step: int, tokens: int = 0) -> Proposal:
        values = proposal.model_dump()
        auto = proposal.status is ProposalStatus.APPROVED
        async with self._write() as conn:
            await conn.execute(insert(t.proposals).values(step=step, tokens=tokens, **values))
            await self._event(
                conn,
                proposal.run_id,
                "act.auto" if auto else "proposal.created",
                {
                    "proposal_id": proposal.id,
                    "task_id": proposal.task_id,
                    "role": proposal.role,
                    "kind": proposal.kind.value,
                    "act": proposal.act,
                    "title": proposal.title,
                    "tokens": tokens,
                },
            )
        return proposal

    async def get_proposal(self, proposal_id: str) -> Proposal:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(select(t.proposals).where(t.proposals.c.id == proposal_id))
            ).first()
        if row is None:
            msg = f"no proposal with id {proposal_id!r}"
            raise ProposalNotFound(msg)
        return _proposal(row._mapping)

    async def get_proposals(self, ids: Sequence[str]) -> dict[str, Proposal]:
        if not ids:
            return {}
        query = select(t.proposals).where(t.proposals.c.id.in_(list(ids)))
        async with self.engine.connect() as conn:
            return {row.id: _proposal(row._mapping) for row in await conn.execute(query)}

    async def list_proposals(
        self,
        *,
        status: ProposalStatus | None = None,
        run_id: str | None = None,
        kind: str | None = None,
    ) -> list[Proposal]:
        """All matching proposals, oldest first (the order a human works through them)."""
        return await self._proposals(status=status, run_id=run_id, kind=kind, newest_first=False)

    async def page_proposals(
        self,
        *,
        status: ProposalStatus | None = None,
        run_id: str | None = None,
        role: str | None = None,
        kind: str | None = None,
        before: tuple[datetime, str] | None = None,
        limit: int = 50,
    ) -> list[Proposal]:
        """Newest first; `before` is the (created_at, id) of the last item of the previous page."""
        return await self._proposals(
            status=status, run_id=run_id, role=role, kind=kind, before=before, limit=limit
        )

    async def _proposals(
        self,
        *,
        status: ProposalStatus | None = None,
        run_id: str | None = None,
        role: str | None = None,
        kind: str | None = None,
        before: tuple[datetime, str] | None = None,
        limit: int | None = None,
        newest_first: bool = True,
    ) -> list[Proposal]:
        c = t.proposals.c
        order = (c.created_at.desc(), c.id.desc()) if newest_first else (c.created_at, c.id)
        query = select(t.proposals).order_by(*order).limit(limit)
        for column, value in (
            (c.status, status),
            (c.run_id, run_id),
            (c.role, role),
            (c.kind, kind),
        ):
            if value is not None:
                query = query.where(column == value)
        if before is not None:
            query = query.where(tuple_(c.created_at, c.id) < tuple_(*before))
        async with self.engine.connect() as conn:
            return [_proposal(row._mapping) for row in await conn.execute(query)]

    async def tokens_by_role(self, run_id: str | None = None) -> dict[str, int]:
        async with self.engine.connect() as conn:
            return await tokens_by_role(conn, run_id)

    async def decide(
        self,
        proposal_id: str,
        *,
        status: ProposalStatus,
        decided_by: str,
        feedback: str | None = None,
        decided_payload: dict[str, Any] | None = None,
        approved_hash: str | None = None,
    ) -> Proposal:
        """Compare-and-set: record the decision only if the proposal is still pending."""
        async with self._write() as conn:
            result = await conn.execute(
                update(t.proposals)
                .where(
                    t.proposals.c.id == proposal_id,
                    t.proposals.c.status == ProposalStatus.PENDING.value,
                )
                .values(
                    status=status.value,
                    decided_at=self.clock(),
                    decided_by=decided_by,
                    feedback=feedback,
                    decided_payload=decided_payload,
                    approved_hash=approved_hash,
                )
            )
            row = (
                await conn.execute(select(t.proposals).where(t.proposals.c.id == proposal_id))
            ).first()
            if row is None:
                msg = f"no proposal with id {proposal_id!r}"
                raise ProposalNotFound(msg)
            current = _proposal(row._mapping)
            if result.rowcount == 0:
                await self._event(
                    conn,
                    current.run_id,
                    "decision.refused",
                    {
                        "proposal_id": proposal_id,
                        "by": decided_by,
                        "wanted": status.value,
                        "reason": f"already {current.status.value}",
                    },
                )
            else:
                await self._event(
                    conn,
                    current.run_id,
                    "proposal.decided",
                    {
                        "proposal_id": proposal_id,
                        "task_id": current.task_id,
                        "role": current.role,
                        "status": status.value,
                        "by": decided_by,
                        "feedback": feedback,
                    },
                )
                # The run has work again; a restart resumes exactly the runs marked running.
                await self._move_run(conn, current.run_id, "running", only_from="waiting")
        if result.rowcount == 0:
            raise ProposalAlreadyDecided(proposal_id, current.status.value, current.decided_by)
        return current

    async def cancel_pending(self, run_id: str, *, by: str) -> int:
        async with self._write() as conn:
            result = await conn.execute(
                update(t.proposals)
                .where(
                    t.proposals.c.run_id == run_id,
                    t.proposals.c.status == ProposalStatus.PENDING.value,
                )
                .values(
                    status=ProposalStatus.CANCELLED.value, decided_at=self.clock(), decided_by=by
                )
            )
        return int(result.rowcount)

    # -- events ---------------------------------------------------------------------------------

    async def events(
        self, *, run_id: str | None = None, after: int = 0, limit: int = 1000
    ) -> list[Event]:
        query = select(t.events).where(t.events.c.id > after).order_by(t.events.c.id).limit(limit)
        if run_id is not None:
            query = query.where(t.events.c.run_id == run_id)
        async with self.engine.connect() as conn:
            return [_record(Event, row._mapping) for row in await conn.execute(query)]

    # -- tool journal ---------------------------------------------------------------------------

    async def get_tool_call(self, call_id: str) -> ToolCall | None:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(select(t.tool_calls).where(t.tool_calls.c.call_id == call_id))
            ).first()
        return None if row is None else _record(ToolCall, row._mapping)

    async def tool_calls(self, run_id: str) -> list[ToolCall]:
        query = (
            select(t.tool_calls)
            .where(t.tool_calls.c.run_id == run_id)
            .order_by(t.tool_calls.c.started_at)
        )
        async with self.engine.connect() as conn:
            return [_record(ToolCall, row._mapping) for row in await conn.execute(query)]

    async def start_tool_call(
        self,
        call_id: str,
        *,
        run_id: str,
        task_id: str,
        role: str,
        tool: str,
        args: dict[str, Any],
    ) -> None:
        async with self._write() as conn:
            await conn.execute(
                insert(t.tool_calls).values(
                    call_id=call_id,
                    run_id=run_id,
                    task_id=task_id,
                    role=role,
                    tool=tool,
                    args=args,
                    status="started",
                    started_at=self.clock(),
                )
            )
            await self._event(
                conn,
                run_id,
                "tool.started",
                {"call_id": call_id, "task_id": task_id, "role": role, "tool": tool},
            )

    async def finish_tool_call(self, call_id: str, *, status: str, result: str) -> None:
        async with self._write() as conn:
            await conn.execute(
                update(t.tool_calls)
                .where(t.tool_calls.c.call_id == call_id)
                .values(status=status, result=result, finished_at=self.clock())
            )
            row = (
                await conn.execute(
                    select(t.tool_calls.c.run_id, t.tool_calls.c.tool).where(
                        t.tool_calls.c.call_id == call_id
                    )
                )
            ).one()
            await self._event(
                conn,
                row.run_id,
                f"tool.{status}",
                {"call_id": call_id, "tool": row.tool, "result": result[:500]},
            )


async def tokens_by_role(conn: AsyncConnection, run_id: str | None = None) -> dict[str, int]:
    """Tokens spent per role (in one run, or in all), summed by the database."""
    c = t.proposals.c
    query = select(c.role, func.sum(c.tokens)).group_by(c.role)
    if run_id is not None:
        query = query.where(c.run_id == run_id)
    return {role: int(total or 0) for role, total in await conn.execute(query)}


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
