"""The notices owed to chat channels and webhooks, and the log of their delivery
(qapten.channels.notifier).

The notifier reads the events table past its cursor and plans one delivery per event and
destination, moving the cursor in the same transaction; a replica that read the same events
plans nothing twice (one row per destination and event). A delivery is then claimed by a
compare-and-set on its try count, which also pushes its next try into the future: two
notifiers never send it at once, and one that dies mid-send leaves it to be tried again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from qapten.store import tables as t
from qapten.store.base import StoreBase, _record, where_given

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"

_d = t.deliveries.c
_PLAN = {
    "sqlite": sqlite_insert(t.deliveries).on_conflict_do_nothing(),
    "postgresql": postgresql_insert(t.deliveries).on_conflict_do_nothing(),
}
_CURSOR = select(t.cursors.c.event_id).where(t.cursors.c.name == bindparam("b_name"))
_MOVE_CURSOR = (
    update(t.cursors)
    .where(t.cursors.c.name == bindparam("b_name"), t.cursors.c.event_id == bindparam("b_from"))
    .values(event_id=bindparam("b_to"))
)
_CLAIM = (
    update(t.deliveries)
    .where(
        _d.id == bindparam("b_id"),
        _d.status == PENDING,
        _d.attempts == bindparam("b_attempts"),
    )
    .values(attempts=_d.attempts + 1, next_attempt_at=bindparam("b_until"))
)
_SETTLE = update(t.deliveries).where(_d.id == bindparam("b_id"))
# Where the first message about a proposal went, at one destination: later notices update it.
_POSTED = (
    select(_d.message)
    .where(
        _d.proposal_id == bindparam("b_proposal"),
        _d.destination == bindparam("b_destination"),
        _d.status == DELIVERED,
        _d.message.is_not(None),
    )
    .order_by(_d.id)
    .limit(1)
)


@dataclass(frozen=True)
class Delivery:
    id: int
    destination: str
    """``slack:CHANNEL``, ``telegram:CHAT_ID`` or ``webhook:NAME``."""
    event_id: int
    event_type: str
    run_id: str | None
    proposal_id: str | None
    status: str
    """``pending`` (to try, or trying), ``delivered``, or ``failed`` for good."""
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    message: dict[str, Any] | None
    """Where the channel posted it (its message id), once delivered."""
    created_at: datetime
    delivered_at: datetime | None


@dataclass(frozen=True)
class Planned:
    """A delivery to plan: one event, one destination."""

    destination: str
    event_id: int
    event_type: str
    run_id: str | None
    proposal_id: str | None


class Deliveries(StoreBase):
    async def cursor(self, name: str) -> int | None:
        """How far the reader `name` has read the events (None: it never read)."""
        found = await self.read(lambda conn: conn.scalar(_CURSOR, {"b_name": name}))
        return None if found is None else int(found)

    async def start_cursor(self, name: str) -> int:
        """The cursor of `name`, made at the newest event if it had none: a reader that starts
        on an old database begins with what happens from now on, not with its history."""

        def start(conn: Connection) -> int:
            found = conn.scalar(_CURSOR, {"b_name": name})
            if found is not None:
                return int(found)
            newest = int(conn.scalar(select(func.coalesce(func.max(t.events.c.id), 0))) or 0)
            conn.execute(insert(t.cursors), {"name": name, "event_id": newest})
            return newest

        return await self.write(start)

    async def plan_deliveries(
        self, cursor: str, read_from: int, read_to: int, planned: Sequence[Planned]
    ) -> bool:
        """Plan `planned` and move `cursor` from `read_from` to `read_to`, in one transaction.
        False, and nothing planned, when another reader moved the cursor meanwhile."""
        now = self.clock()
        rows = [
            {
                "destination": p.destination,
                "event_id": p.event_id,
                "event_type": p.event_type,
                "run_id": p.run_id,
                "proposal_id": p.proposal_id,
                "status": PENDING,
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
            }
            for p in planned
        ]
        statement = _PLAN[self.engine.dialect.name]

        def plan(conn: Connection) -> bool:
            moved = conn.execute(
                _MOVE_CURSOR, {"b_name": cursor, "b_from": read_from, "b_to": read_to}
            )
            if moved.rowcount != 1:
                return False
            if rows:
                conn.execute(statement, rows)
            return True

        return await self.write(plan)

    async def due_deliveries(self, *, limit: int = 100) -> list[Delivery]:
        """Pending deliveries whose next try is due, oldest first."""
        query = (
            select(t.deliveries)
            .where(_d.status == PENDING, _d.next_attempt_at <= self.clock())
            .order_by(_d.id)
            .limit(limit)
        )
        rows = await self.read(lambda conn: conn.execute(query).all())
        return [_record(Delivery, row._mapping) for row in rows]

    async def claim_delivery(self, delivery: Delivery, *, hold: timedelta) -> bool:
        """Take `delivery` for one try (its try count goes up, its next try `hold` away, in
        case this sender dies). False when another sender took it first."""
        params = {
            "b_id": delivery.id,
            "b_attempts": delivery.attempts,
            "b_until": self.clock() + hold,
        }
        claimed = await self.write(lambda conn: conn.execute(_CLAIM, params).rowcount)
        return bool(claimed == 1)

    async def delivered(self, delivery_id: int, message: dict[str, Any] | None) -> None:
        values = {"status": DELIVERED, "message": message, "delivered_at": self.clock()}
        await self.write(lambda conn: conn.execute(_SETTLE.values(**values), {"b_id": delivery_id}))

    async def retry_delivery(self, delivery: Delivery, error: str, *, at: datetime | None) -> None:
        """Record a failed try: tried again `at`, or, with None, failed for good (with a
        ``notice.failed`` event, for whoever watches the log)."""
        values: dict[str, Any] = {"last_error": error[:2000]}
        if at is None:
            values["status"] = FAILED
        else:
            values["next_attempt_at"] = at
        statement = _SETTLE.values(**values)

        def settle(conn: Connection) -> None:
            conn.execute(statement, {"b_id": delivery.id})
            if at is None:
                data = {
                    "destination": delivery.destination,
                    "event_id": delivery.event_id,
                    "event_type": delivery.event_type,
                    "proposal_id": delivery.proposal_id,
                    "attempts": delivery.attempts + 1,
                    "error": error[:500],
                }
                self._event(conn, delivery.run_id, "notice.failed", data)

        await self.write(settle)

    async def posted_message(self, proposal_id: str, destination: str) -> dict[str, Any] | None:
        """Where the first message about `proposal_id` went at `destination`, if it went."""
        params = {"b_proposal": proposal_id, "b_destination": destination}
        found = await self.read(lambda conn: conn.scalar(_POSTED, params))
        return None if found is None else dict(found)

    async def waiting_before(self, delivery: Delivery) -> bool:
        """Whether an earlier delivery about the same proposal, to the same destination, is
        still pending: a closing notice waits for the message it closes."""
        if delivery.proposal_id is None:
            return False
        query = select(func.count()).where(
            _d.proposal_id == delivery.proposal_id,
            _d.destination == delivery.destination,
            _d.status == PENDING,
            _d.id < delivery.id,
        )
        return bool(await self.read(lambda conn: conn.scalar(query)))

    async def deliveries(
        self,
        *,
        status: str | None = None,
        proposal_id: str | None = None,
        destination: str | None = None,
        before: int | None = None,
        limit: int = 50,
    ) -> list[Delivery]:
        """The delivery log, newest first; `before` is the id of the last row of a page."""
        query = select(t.deliveries).order_by(_d.id.desc()).limit(limit)
        query = where_given(
            query,
            (_d.status, status),
            (_d.proposal_id, proposal_id),
            (_d.destination, destination),
        )
        if before is not None:
            query = query.where(_d.id < before)
        rows = await self.read(lambda conn: conn.execute(query).all())
        return [_record(Delivery, row._mapping) for row in rows]
