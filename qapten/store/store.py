"""Durable records of Qapten: runs, proposals and decisions, events. `Store` also has the
proposals' deadlines (deadlines.py) and the run moves they share with decisions (moves.py), the
run leases (leases.py), the tool journal (journal.py), the notes (notes.py), what a role's step
reads and writes at once (steps.py), the used decision links (links.py) and the chat channels'
deliveries (deliveries.py), on the base in base.py.

One SQLAlchemy Core engine; SQLite (WAL) by default. Every state change writes its event in the
same transaction, so the audit log never disagrees with the records it describes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, bindparam, func, insert, or_, select, tuple_, update
from sqlalchemy.engine import Connection

from qapten.errors import ProposalAlreadyDecided, ProposalNotFound, RunNotFound
from qapten.proposals import (
    DEADLINE_DECIDER,
    AlreadyApproved,
    Approval,
    Proposal,
    ProposalStatus,
)
from qapten.store import tables as t
from qapten.store.base import (
    Event,
    Run,
    _about,
    _proposal,
    _record,
    _terms_shown,
    where_given,
)
from qapten.store.deadlines import Deadlines
from qapten.store.deliveries import Deliveries
from qapten.store.leases import Leases
from qapten.store.links import Links
from qapten.store.steps import Steps

# The statements of the hot path, built once: building one per call costs as much as running
# it. Parameters named b_* are the WHERE's; the others name the columns that an update sets.
_RUN = select(t.runs).where(t.runs.c.id == bindparam("b_run"))
_RUN_STATUS = select(t.runs.c.status).where(t.runs.c.id == bindparam("b_run"))
_INSERT_RUN = insert(t.runs)
_PROPOSAL = select(t.proposals).where(t.proposals.c.id == bindparam("b_id"))
_DECIDED = select(t.proposals.c.id).where(
    t.proposals.c.id.in_(bindparam("b_ids", expanding=True)),
    t.proposals.c.status != ProposalStatus.PENDING.value,
)
_INSERT_PROPOSAL = insert(t.proposals)
_EVENT = select(t.events).where(t.events.c.id == bindparam("b_id"))
# A decision lands on a proposal still pending and before its deadline (the compare-and-set);
# the row comes back as decided, in the same statement.
_DECIDE = (
    update(t.proposals)
    .where(
        t.proposals.c.id == bindparam("b_id"),
        t.proposals.c.status == ProposalStatus.PENDING.value,
        or_(t.proposals.c.expires_at.is_(None), t.proposals.c.expires_at > bindparam("b_now")),
    )
    .returning(*t.proposals.c)
)
_DECIDE_AS_PROPOSED = _DECIDE.values(
    decided_payload=t.proposals.c.payload, approved_hash=t.proposals.c.payload_hash
)


class Store(Deadlines, Leases, Steps, Links, Deliveries):
    """Qapten's tables over one database. Use `Store.open(db)`; close with `await store.close()`.

    `clock` gives every time the store writes (tests pass a fake one). `terms`, when set, gives
    each new pending proposal its deadline and quorum (the swarm sets it from its chart), in the
    insert itself: no proposal is ever open without them.
    """

    # -- runs ---------------------------------------------------------------------------------

    async def create_run(self, run_id: str, org: str, mission: str) -> Run:
        now = self.clock()

        def create(conn: Connection) -> None:
            conn.execute(
                _INSERT_RUN,
                {
                    "id": run_id,
                    "org": org,
                    "mission": mission,
                    "status": "running",
                    "created_at": now,
                    "updated_at": now,
                    "lease_token": 0,
                },
            )
            self._event(conn, run_id, "run.started", {"mission": mission, "org": org})

        await self.write(create)
        return await self.get_run(run_id)

    async def get_run(self, run_id: str) -> Run:
        row = await self.read(lambda conn: self._execute(conn, _RUN, {"b_run": run_id}).first)
        if row is None:
            msg = f"no run with id {run_id!r}"
            raise RunNotFound(msg)
        return _record(Run, row)

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
        rows = await self.read(lambda conn: conn.execute(query).all())
        return [_record(Run, row._mapping) for row in rows]

    async def set_run_status(
        self, run_id: str, status: str, *, result: str | None = None, error: str | None = None
    ) -> bool:
        """Move a run to `status`; returns False (and writes nothing) when it is already there."""
        return await self.write(
            lambda conn: self._move_run(conn, run_id, status, result=result, error=error)
        )

    async def park_run(self, run_id: str, proposal_ids: Sequence[str]) -> bool:
        """Move a running run to ``waiting`` unless one of `proposal_ids` (what it waits on)
        was decided meanwhile; returns False then, and the run stays ``running``.

        The check and the move are one transaction, serialised with `decide`'s: a decision
        either lands first (the run keeps its work in hand) or finds the run waiting and moves
        it back. Read, then write, could put a just-decided run to sleep, and a crash before the
        next step would leave it asleep for good: a restart resumes only ``running`` runs.
        """

        def park(conn: Connection) -> bool:
            if conn.execute(_DECIDED, {"b_ids": list(proposal_ids)}).first() is not None:
                return False
            self._move_run(conn, run_id, "waiting", only_from="running")
            return True

        return await self.write(park)

    async def retry_run(self, run_id: str, *, by: str, tasks: Sequence[str]) -> bool:
        """Move a failed run back to running (compare-and-set); False when it was not failed."""

        def retry(conn: Connection) -> bool:
            changed = conn.execute(
                update(t.runs)
                .where(t.runs.c.id == run_id, t.runs.c.status == "failed")
                .values(status="running", result=None, error=None, updated_at=self.clock())
            )
            if changed.rowcount == 0:
                return False
            self._event(conn, run_id, "run.retried", {"by": by, "tasks": list(tasks)})
            return True

        return await self.write(retry)

    # -- proposals ------------------------------------------------------------------------------

    async def create_proposal(self, proposal: Proposal, *, step: int, tokens: int = 0) -> Proposal:
        auto = proposal.status is ProposalStatus.APPROVED
        if proposal.status is ProposalStatus.PENDING and self.terms is not None:
            proposal = self.terms(proposal)
        values = {**proposal.model_dump(), **proposal.model_dump(mode="json", include=_JSON)}

        def create(conn: Connection) -> Proposal:
            created = proposal
            # A step that was thinking when its run was cancelled must not leave a proposal
            # waiting in the inbox: it is recorded, as cancelled (`Swarm.cancel` marks the run
            # first, then its pending proposals, so one of the two always catches it).
            run_status = self._execute(conn, _RUN_STATUS, {"b_run": created.run_id}).scalar
            if run_status == "cancelled" and created.status is ProposalStatus.PENDING:
                created = created.model_copy(
                    update={"status": ProposalStatus.CANCELLED, "decided_at": self.clock()}
                )
                values.update(status=ProposalStatus.CANCELLED.value, decided_at=created.decided_at)
            self._execute(conn, _INSERT_PROPOSAL, {**values, "step": step, "tokens": tokens})
            self._event(
                conn,
                created.run_id,
                "act.auto" if auto else "proposal.created",
                {
                    "proposal_id": created.id,
                    "task_id": created.task_id,
                    "role": created.role,
                    "kind": created.kind.value,
                    "act": created.act,
                    "title": created.title,
                    "tokens": tokens,
                    **_terms_shown(created),
                },
            )
            return created

        return await self.write(create)

    async def get_proposal(self, proposal_id: str) -> Proposal:
        row = await self.read(lambda conn: conn.execute(_PROPOSAL, {"b_id": proposal_id}).first())
        if row is None:
            msg = f"no proposal with id {proposal_id!r}"
            raise ProposalNotFound(msg)
        return _proposal(row._mapping)

    async def run_status_and_decided(
        self, run_id: str, proposal_ids: Sequence[str]
    ) -> tuple[str, set[str]]:
        """The run's status, and which of `proposal_ids` are no longer pending: what a run's
        every superstep needs to know, in one read."""

        def look(conn: Connection) -> tuple[str, set[str]]:
            status = self._execute(conn, _RUN_STATUS, {"b_run": run_id}).scalar
            if status is None:
                msg = f"no run with id {run_id!r}"
                raise RunNotFound(msg)
            ids = {"b_ids": list(proposal_ids)}
            decided = set(conn.execute(_DECIDED, ids).scalars()) if proposal_ids else set()
            return status, decided

        return await self.read(look, snapshot=bool(proposal_ids))

    async def list_proposals(
        self,
        *,
        status: ProposalStatus | None = None,
        run_id: str | None = None,
        kind: str | None = None,
    ) -> list[Proposal]:
        """All matching proposals, oldest first (the order a human works through them)."""
        query = proposals_query(status=status, run_id=run_id, kind=kind, newest_first=False)
        return await self._proposals(query)

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
        query = proposals_query(
            status=status, run_id=run_id, role=role, kind=kind, before=before, limit=limit
        )
        return await self._proposals(query)

    async def _proposals(self, query: Select[Any]) -> list[Proposal]:
        rows = await self.read(lambda conn: conn.execute(query).all())
        return [_proposal(row._mapping) for row in rows]

    async def tokens_by_role(self, run_id: str | None = None) -> dict[str, int]:
        return await self.read(lambda conn: tokens_by_role(conn, run_id))

    async def decide(
        self,
        proposal_id: str,
        *,
        status: ProposalStatus,
        decided_by: str,
        feedback: str | None = None,
        decided_payload: dict[str, Any] | None = None,
        approved_hash: str | None = None,
        as_proposed: bool = False,
        vet: Callable[[Proposal], None] | None = None,
    ) -> Proposal:
        """Compare-and-set: record the decision only if the proposal is still pending, and
        before its deadline (a late decision loses to the deadline even before a sweep).

        `as_proposed`: the decided payload and its hash are the proposal's own, copied in the
        same statement (an approval needs no read first). `vet` sees the proposal inside the
        transaction, decided or not; whatever it raises undoes the decision and propagates.
        """
        now = self.clock()
        statement = _DECIDE_AS_PROPOSED if as_proposed else _DECIDE
        values: dict[str, Any] = {
            "status": status.value,
            "decided_at": now,
            "decided_by": decided_by,
            "feedback": feedback,
        }
        if not as_proposed:
            values |= {"decided_payload": decided_payload, "approved_hash": approved_hash}

        def decide(conn: Connection) -> tuple[Proposal, bool]:
            params = {"b_id": proposal_id, "b_now": now, **values}
            rows = self._execute(conn, statement, params).rows
            recorded = bool(rows)
            if not rows:
                rows = self._execute(conn, _PROPOSAL, {"b_id": proposal_id}).rows
                if not rows:
                    msg = f"no proposal with id {proposal_id!r}"
                    raise ProposalNotFound(msg)
            current = _proposal(rows[0])
            if vet is not None:
                vet(current)
            if recorded:
                self._decided(conn, current, decided_by, feedback)
            else:
                self._refused(conn, current, decided_by, status.value)
            return current, recorded

        current, recorded = await self.write(decide)
        if not recorded:
            raise _already_decided(current)
        return current

    def _refused(
        self, conn: Connection, current: Proposal, by: str, wanted: str, reason: str = ""
    ) -> None:
        if not reason:  # still pending: only its deadline can have refused the decision
            pending = current.status is ProposalStatus.PENDING
            reason = "past its deadline" if pending else f"already {current.status.value}"
        data = {"proposal_id": current.id, "by": by, "wanted": wanted, "reason": reason}
        self._event(conn, current.run_id, "decision.refused", data)

    def _decided(self, conn: Connection, current: Proposal, by: str, feedback: str | None) -> None:
        data = {
            "proposal_id": current.id,
            "task_id": current.task_id,
            "role": current.role,
            "status": current.status.value,
            "by": by,
            "feedback": feedback,
        }
        self._wake(conn, (current.run_id, "proposal.decided", data))

    async def approve(self, proposal_id: str, *, by: str) -> Proposal:
        """Record `by`'s approval of an act that needs a quorum; the approval that completes
        the quorum approves it. One transaction on the locked row, so that two approvers at
        once are both counted and one approver counts once (`AlreadyApproved` the second time).
        """
        now = self.clock()
        this = t.proposals.c.id == proposal_id
        rows = select(t.proposals).where(this)

        def approve(conn: Connection) -> tuple[Proposal, Exception | None]:
            refused: Exception | None = None
            # FOR UPDATE locks the row where the database has row locks; SQLite's write
            # transaction (BEGIN IMMEDIATE) already serialises every writer.
            row = conn.execute(rows.with_for_update()).first()
            if row is None:
                msg = f"no proposal with id {proposal_id!r}"
                raise ProposalNotFound(msg)
            current = _proposal(row._mapping)
            quorum = current.quorum
            assert quorum is not None, "only acts with a quorum gather approvals"
            if current.status is not ProposalStatus.PENDING or _past_deadline(current, now):
                refused = _already_decided(current)
            elif by in (approval.by for approval in current.approvals):
                count = f"{len(current.approvals)} of {quorum.required} approvals"
                refused = AlreadyApproved(f"{by} approved proposal {proposal_id} already ({count})")
            if refused is not None:
                reason = "approved already" if isinstance(refused, AlreadyApproved) else ""
                self._refused(conn, current, by, "approved", reason)
            else:
                approvals = [*current.approvals, Approval(by=by, at=now)]
                values: dict[str, Any] = {
                    "approvals": [approval.model_dump(mode="json") for approval in approvals]
                }
                reached = len(approvals) >= quorum.required
                if reached:
                    values.update(
                        status=ProposalStatus.APPROVED.value,
                        decided_at=now,
                        decided_by=", ".join(approval.by for approval in approvals),
                        decided_payload=current.payload,
                        approved_hash=current.payload_hash,
                    )
                conn.execute(update(t.proposals).where(this).values(**values))
                current = _proposal(conn.execute(rows).one()._mapping)
                tally = {"by": by, "approvals": len(approvals), "required": quorum.required}
                data = {**_about(current), **tally}
                self._event(conn, current.run_id, "approval.recorded", data)
                if reached:
                    self._decided(conn, current, current.decided_by or by, None)
            return current, refused

        current, refused = await self.write(approve)
        if refused is not None:
            raise refused
        return current

    async def cancel_pending(self, run_id: str, *, by: str) -> int:
        """Cancel the run's pending proposals, each with a ``proposal.cancelled`` event (the
        chat channels close its messages on it)."""
        c = t.proposals.c
        statement = (
            update(t.proposals)
            .where(c.run_id == run_id, c.status == ProposalStatus.PENDING.value)
            .values(status=ProposalStatus.CANCELLED.value, decided_at=self.clock(), decided_by=by)
            .returning(c.id, c.task_id, c.role)
        )

        def cancel(conn: Connection) -> int:
            cancelled = conn.execute(statement).all()
            for proposal_id, task_id, role in cancelled:
                data = {"proposal_id": proposal_id, "task_id": task_id, "role": role, "by": by}
                self._event(conn, run_id, "proposal.cancelled", data)
            return len(cancelled)

        return await self.write(cancel)

    # -- events ---------------------------------------------------------------------------------

    async def events(
        self, *, run_id: str | None = None, after: int = 0, limit: int = 1000
    ) -> list[Event]:
        query = select(t.events).where(t.events.c.id > after).order_by(t.events.c.id).limit(limit)
        if run_id is not None:
            query = query.where(t.events.c.run_id == run_id)
        rows = await self.read(lambda conn: conn.execute(query).all())
        return [_record(Event, row._mapping) for row in rows]

    async def event(self, event_id: int) -> Event | None:
        row = await self.read(lambda conn: conn.execute(_EVENT, {"b_id": event_id}).first())
        return None if row is None else _record(Event, row._mapping)


def proposals_query(
    *,
    status: ProposalStatus | None = None,
    run_id: str | None = None,
    role: str | None = None,
    kind: str | None = None,
    before: tuple[datetime, str] | None = None,
    limit: int | None = None,
    newest_first: bool = True,
) -> Select[Any]:
    """The proposals that match, in creation order (`Store.list_proposals`, `page_proposals`)."""
    c = t.proposals.c
    # A run's proposals (a few dozen) are found by the run's index. Without statistics, SQLite
    # would rather walk the status index, which gives the order too but holds the pending
    # proposals of every run: a run's inbox took 26 ms at 100,000 pending. A term on an
    # expression of the column (`status || ''`) cannot use an index, so the planner keeps off it.
    status_term = c.status if run_id is None else c.status.concat("")
    order = (c.created_at.desc(), c.id.desc()) if newest_first else (c.created_at, c.id)
    query = select(t.proposals).order_by(*order).limit(limit)
    query = where_given(
        query, (status_term, status), (c.run_id, run_id), (c.role, role), (c.kind, kind)
    )
    if before is not None:
        query = query.where(tuple_(c.created_at, c.id) < tuple_(*before))
    return query


def tokens_by_role(conn: Connection, run_id: str | None = None) -> dict[str, int]:
    """Tokens spent per role (in one run, or in all), summed by the database."""
    c = t.proposals.c
    query = select(c.role, func.sum(c.tokens)).group_by(c.role)
    if run_id is not None:
        query = query.where(c.run_id == run_id)
    return {role: int(total or 0) for role, total in conn.execute(query)}


_JSON = {"quorum", "approvals"}
"""Proposal fields kept as JSON that hold datetimes or models: dumped as JSON-ready data."""


def _past_deadline(proposal: Proposal, now: datetime) -> bool:
    return proposal.expires_at is not None and proposal.expires_at <= now


def _already_decided(current: Proposal) -> ProposalAlreadyDecided:
    if current.status is ProposalStatus.PENDING:  # past its deadline: it is expiring
        return ProposalAlreadyDecided(current.id, ProposalStatus.EXPIRED.value, DEADLINE_DECIDER)
    return ProposalAlreadyDecided(current.id, current.status.value, current.decided_by)
