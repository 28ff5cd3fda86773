"""Deadlines of pending proposals, as the store records them: which are due, the reminder, the
expiry (which gives the run work again) and the escalation. qapten/deadlines.py decides when
each applies; every change here is a compare-and-set on the proposal as the sweeper read it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, select, update
from sqlalchemy.engine import Connection

from qapten.proposals import DEADLINE_DECIDER, Proposal, ProposalStatus
from qapten.store import tables as t
from qapten.store.base import _about, _proposal, _terms_shown
from qapten.store.moves import RunMoves


class Deadlines(RunMoves):
    async def due_proposals(self, now: datetime, *, limit: int = 500) -> list[Proposal]:
        """Pending proposals whose deadline, then those whose reminder, is at or before `now`."""
        queries = due_queries(now, limit=limit)
        rows = await self.read(
            lambda conn: [row for q in queries for row in conn.execute(q)], snapshot=True
        )
        found: dict[str, Proposal] = {}
        for row in rows:
            found.setdefault(row.id, _proposal(row._mapping))
        return list(found.values())

    async def remind(self, proposal: Proposal) -> bool:
        """Record the reminder of `proposal`'s deadline once: False if it was sent already."""
        c = t.proposals.c

        def remind(conn: Connection) -> bool:
            changed = conn.execute(
                update(t.proposals)
                .where(_unchanged(proposal), c.remind_at == proposal.remind_at)
                .values(remind_at=None)
            )
            if changed.rowcount:
                data = {**_about(proposal), **_terms_shown(proposal), "to": proposal.escalated_to}
                self._event(conn, proposal.run_id, "proposal.reminder", data)
            return bool(changed.rowcount)

        return await self.write(remind)

    async def expire(self, proposal: Proposal, *, reason: str) -> bool:
        """Compare-and-set: `proposal` expires if it is still pending on the deadline seen and
        that deadline has passed. False when a decision, or another sweeper, came first."""
        now = self.clock()

        def expire(conn: Connection) -> bool:
            changed = conn.execute(
                update(t.proposals)
                .where(_unchanged(proposal), t.proposals.c.expires_at <= now)
                .values(
                    status=ProposalStatus.EXPIRED.value,
                    decided_at=now,
                    decided_by=DEADLINE_DECIDER,
                    feedback=reason,
                    remind_at=None,
                )
            )
            if changed.rowcount:
                data = {**_about(proposal), "reason": reason}
                self._wake(conn, (proposal.run_id, "proposal.expired", data))
            return bool(changed.rowcount)

        return await self.write(expire)

    async def escalate(
        self, proposal: Proposal, *, to: str, expires_at: datetime, remind_at: datetime | None
    ) -> bool:
        """Compare-and-set: hand `proposal` to the deciders of `to`, with a new deadline."""

        def escalate(conn: Connection) -> bool:
            changed = conn.execute(
                update(t.proposals)
                .where(_unchanged(proposal))
                .values(escalated_to=to, expires_at=expires_at, remind_at=remind_at)
            )
            if changed.rowcount:
                data = {"from": proposal.escalated_to or proposal.role, "to": to}
                data = {**_about(proposal), **data, "expires_at": expires_at.isoformat()}
                self._event(conn, proposal.run_id, "proposal.escalated", data)
            return bool(changed.rowcount)

        return await self.write(escalate)


def due_queries(now: datetime, *, limit: int) -> list[Select[Any]]:
    """The pending proposals past their deadline, then past their reminder: one query per
    time column, each a range of its partial (status, time) index. An OR of the two would
    read every pending proposal."""
    c = t.proposals.c
    return [
        select(t.proposals)
        .where(c.status == ProposalStatus.PENDING.value, column <= now)
        .order_by(column, c.id)
        .limit(limit)
        for column in (c.expires_at, c.remind_at)
    ]


def _unchanged(proposal: Proposal) -> ColumnElement[bool]:
    """The row is still pending on the deadline `proposal` was read with: the sweeper's CAS."""
    c = t.proposals.c
    deadline = (
        c.expires_at.is_(None)
        if proposal.expires_at is None
        else c.expires_at == proposal.expires_at
    )
    return (c.id == proposal.id) & (c.status == ProposalStatus.PENDING.value) & deadline
